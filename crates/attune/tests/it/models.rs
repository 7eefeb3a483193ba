//! `attune train` and `attune eval` on slices of the real data (copied to a temporary data
//! directory for the run, never into the repository).

use std::path::Path;

use serde_json::Value;

use crate::support::*;

#[test]
fn train_and_evaluate_baselines_on_a_beauty_slice() {
    let data = slice("beauty", &[("amazon-beauty/sequences.txt", 2_000)]);
    let pop = data.join("models/pop");
    let cooc = data.join("models/cooc");
    let common = ["--dataset", "amazon-beauty", "--data-dir", s(&data)];
    ok(&run(&[
        &["train", "--model", "popularity", "--out", s(&pop)],
        &common[..],
    ]
    .concat()));
    let config = data.join("cooc.yaml");
    std::fs::write(&config, "window: 2\nhistory: 2\n").unwrap();
    ok(&run(&[
        &["train", "--model", "cooccurrence", "--out", s(&cooc)],
        &common[..],
        &["--config", s(&config), "--history", "3"],
    ]
    .concat()));

    // The manifest records the training part only (2,000 users, 2 items held out each).
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(cooc.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["kind"], "cooccurrence");
    assert_eq!(manifest["dataset"]["sequences"], 2_000);
    assert_eq!(manifest["hyper_parameters"]["window"], 2);
    assert_eq!(
        manifest["hyper_parameters"]["history"], 3,
        "flags override the file"
    );
    let total: usize = std::fs::read_to_string(data.join("amazon-beauty/sequences.txt"))
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().count() - 1)
        .sum();
    assert_eq!(manifest["dataset"]["interactions"], total - 2 * 2_000);

    let mut hr10 = Vec::new();
    for (model, protocol) in [(&pop, "sampled"), (&cooc, "sampled"), (&pop, "full")] {
        let json = data.join(format!("{protocol}.json"));
        let stdout = ok(&run(&[
            &[
                "eval",
                "--model",
                s(model),
                "--protocol",
                protocol,
                "--json",
                s(&json),
            ],
            &common[..],
        ]
        .concat()));
        for label in ["HR@1", "HR@10", "NDCG@10", "NDCG@20", "MRR"] {
            assert!(stdout.contains(label), "{stdout}");
        }
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(report["cases"], 2_000);
        assert_eq!(report["split"], "test");
        let v = report["metrics"]["hr@10"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v));
        hr10.push(v);
        if protocol == "sampled" {
            assert_eq!(report["protocol"], "sampled (99 negatives)");
            assert_eq!(report["seed"], 42);
        } else {
            assert_eq!(report["protocol"], "full");
        }
    }
    // Co-occurrence beats popularity; full ranking is much harder than 99 sampled negatives.
    assert!(hr10[1] > hr10[0], "{hr10:?}");
    assert!(hr10[2] < hr10[0] / 2.0, "{hr10:?}");

    // Training on the held-out items too is possible (to reproduce a leaky published baseline),
    // recorded, and warned about.
    let leaky = data.join("models/leaky");
    ok(&run(&[
        &[
            "train",
            "--model",
            "popularity",
            "--include-held-out",
            "--out",
            s(&leaky),
        ],
        &common[..],
    ]
    .concat()));
    let json = data.join("leaky.json");
    let out = run(&[
        &[
            "eval",
            "--model",
            s(&leaky),
            "--protocol",
            "full",
            "--json",
            s(&json),
        ],
        &common[..],
    ]
    .concat());
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("not an honest"),
        "{stderr}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["trained_on_held_out"], true);
    assert!(
        report["metrics"]["hr@10"].as_f64().unwrap() > hr10[2],
        "the leak helps"
    );
    std::fs::remove_dir_all(&data).ok();
}

#[test]
fn evaluate_diginetica_by_the_srgnn_protocol() {
    let data = slice(
        "digi",
        &[
            ("diginetica/train_sessions.txt", 20_000),
            ("diginetica/test.tsv", 1_001),
        ],
    );
    let model = data.join("cooc");
    let common = ["--dataset", "diginetica", "--data-dir", s(&data)];
    ok(&run(&[
        &["train", "--model", "cooccurrence", "--out", s(&model)],
        &common[..],
    ]
    .concat()));
    let json = data.join("out.json");
    let stdout = ok(&run(&[
        &["eval", "--model", s(&model), "--json", s(&json)],
        &common[..],
    ]
    .concat()));
    assert!(
        stdout.contains("P@20 (%)") && stdout.contains("MRR@20 (%)"),
        "{stdout}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["protocol"], "srgnn");
    assert_eq!(report["split"], "prefixes");
    assert_eq!(report["cases"], 1_000);
    let p20 = report["metrics"]["srgnn_p@20"].as_f64().unwrap();
    assert!(p20 > 5.0 && p20 <= 100.0, "{report}");
    std::fs::remove_dir_all(&data).ok();
}

#[test]
fn bad_flags_and_paths_give_clear_errors() {
    let data = slice("bad", &[("amazon-games/sequences.txt", 3_000)]);
    let model = data.join("pop");
    let games = ["--dataset", "amazon-games", "--data-dir", s(&data)];
    ok(&run(&[
        &["train", "--model", "popularity", "--out", s(&model)],
        &games[..],
    ]
    .concat()));

    let err = fails(&run(&[
        "train",
        "--model",
        "popularity",
        "--dataset",
        "movielens",
        "--out",
        s(&model),
    ]));
    assert!(
        err.contains("movielens") && err.contains("amazon-games"),
        "{err}"
    );

    let missing = data.join("no-such-dir");
    let err = fails(&run(&[
        "train",
        "--model",
        "popularity",
        "--dataset",
        "amazon-games",
        "--data-dir",
        s(&missing),
        "--out",
        s(&model),
    ]));
    assert!(
        err.contains("no-such-dir") && err.contains("--data-dir"),
        "{err}"
    );

    let err = fails(&run(&[
        "train",
        "--model",
        "transformer",
        "--dataset",
        "amazon-games",
        "--out",
        s(&model),
    ]));
    assert!(err.contains("transformer"), "{err}");

    let config = data.join("bad.yaml");
    std::fs::write(&config, "windw: 3\n").unwrap();
    let err = fails(&run(&[
        &[
            "train",
            "--model",
            "cooccurrence",
            "--out",
            s(&data.join("c")),
        ],
        &games[..],
        &["--config", s(&config)],
    ]
    .concat()));
    assert!(err.contains("bad.yaml") && err.contains("windw"), "{err}");

    let err = fails(&run(&[
        &["eval", "--model", s(&data.join("nothing"))],
        &games[..],
    ]
    .concat()));
    assert!(
        err.contains("nothing") && err.contains("not a model directory"),
        "{err}"
    );

    let err = fails(&run(&[
        &[
            "eval",
            "--model",
            s(&model),
            "--protocol",
            "full",
            "--negatives",
            "10",
        ],
        &games[..],
    ]
    .concat()));
    assert!(err.contains("--negatives"), "{err}");

    // A model trained on one slice is refused on other data.
    let other = slice("other", &[("amazon-games/sequences.txt", 3_100)]);
    let err = fails(&run(&[
        "eval",
        "--model",
        s(&model),
        "--dataset",
        "amazon-games",
        "--data-dir",
        s(&other),
    ]));
    assert!(err.contains("checksum") && err.contains("honest"), "{err}");

    // A bad line of the data is named by file and line.
    std::fs::write(data.join("amazon-games/sequences.txt"), "1 5\n1 five\n").unwrap();
    let err = fails(&run(&[
        &["train", "--model", "popularity", "--out", s(&model)],
        &games[..],
    ]
    .concat()));
    assert!(err.contains("sequences.txt, line 2"), "{err}");
    std::fs::remove_dir_all(&data).ok();
    std::fs::remove_dir_all(&other).ok();
}

#[test]
fn train_and_evaluate_on_an_event_log() {
    let dir = temp_dir("events");
    let log = dir.join("events.ndjson");
    // 60 sessions walking a ring of 12 items: a → a+1 → a+2 → a+3 → a+4.
    let mut lines = Vec::new();
    for s in 0..60 {
        for k in 0..5 {
            let item = (s + k) % 12;
            lines.push(format!(
                r#"{{"type":"view","session_id":"s{s}","item_id":"sku-{item}","timestamp":{}}}"#,
                1_000 * (s * 10 + k)
            ));
        }
    }
    std::fs::write(&log, lines.join("\n")).unwrap();
    let dataset = format!("events:{}", log.display());
    let model = dir.join("cooc");
    ok(&run(&[
        "train",
        "--model",
        "cooccurrence",
        "--dataset",
        &dataset,
        "--out",
        s(&model),
    ]));
    let json = dir.join("eval.json");
    ok(&run(&[
        "eval",
        "--model",
        s(&model),
        "--dataset",
        &dataset,
        "--protocol",
        "full",
        "--json",
        s(&json),
    ]));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["cases"], 60);
    // The next item of the ring follows every session's last item: always ranked first.
    assert_eq!(report["metrics"]["hr@1"], 1.0, "{report}");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["item_ids"][0], "sku-0");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn train_and_evaluate_sasrec_on_a_small_slice() {
    let data = slice("sasrec", &[("amazon-beauty/sequences.txt", 400)]);
    let model = data.join("sasrec");
    let config = data.join("sasrec.yaml");
    std::fs::write(
        &config,
        "max_len: 20\nhidden: 16\nbatch: 64\nnegatives: 32\neval_every: 1\nthreads: 1\n",
    )
    .unwrap();
    let common = ["--dataset", "amazon-beauty", "--data-dir", s(&data)];
    let out = run(&[
        &[
            "train",
            "--model",
            "sasrec",
            "--config",
            s(&config),
            "--epochs",
            "2",
        ],
        &common[..],
        &["--out", s(&model)],
    ]
    .concat());
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("valid HR@10"), "{stderr}");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["kind"], "sasrec");
    assert_eq!(manifest["hyper_parameters"]["hidden"], 16);
    assert_eq!(manifest["metrics"]["epochs"], 2.0);
    assert!(
        manifest["metrics"]["valid.ndcg@10"].as_f64().is_some(),
        "{manifest}"
    );
    assert_eq!(manifest["dataset"]["sequences"], 400);

    let json = data.join("out.json");
    ok(&run(&[
        &["eval", "--model", s(&model), "--json", s(&json)],
        &common[..],
    ]
    .concat()));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["kind"], "sasrec");
    assert_eq!(report["cases"], 400);
    let hr10 = report["metrics"]["hr@10"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&hr10), "{report}");

    // The loss and the negatives are chosen by flag, over the config, and recorded.
    for (loss, negatives) in [("softmax", "32"), ("bce", "3")] {
        let other = data.join(format!("sasrec-{loss}"));
        ok(&run(&[
            &["train", "--model", "sasrec", "--config", s(&config)][..],
            &["--epochs", "1", "--loss", loss, "--negatives", negatives],
            &common[..],
            &["--out", s(&other)],
        ]
        .concat()));
        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(other.join("manifest.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["hyper_parameters"]["loss"], loss, "{manifest}");
        assert_eq!(
            manifest["hyper_parameters"]["negatives"].to_string(),
            negatives
        );
    }
    let err = fails(&run(&[
        &["train", "--model", "sasrec", "--loss", "hinge"],
        &common[..],
        &["--out", s(&model)],
    ]
    .concat()));
    assert!(err.contains("hinge") && err.contains("softmax"), "{err}");
    let err = fails(&run(&[
        &["train", "--model", "sasrec", "--negatives", "99999999999"][..],
        &common[..],
        &["--out", s(&model)],
    ]
    .concat()));
    assert!(
        err.contains("negatives") && err.contains("at most"),
        "{err}"
    );

    // Weight averages: `--out` is the candidate that validated best, and `--keep-candidates`
    // writes each candidate beside it with its own validation.
    let averaged = data.join("sasrec-ema.yaml");
    std::fs::write(
        &averaged,
        "max_len: 20\nhidden: 16\nbatch: 64\nnegatives: 32\neval_every: 1\nthreads: 1\nema_decays: [0.9]\n",
    )
    .unwrap();
    let best = data.join("ema");
    let out = run(&[
        &["train", "--model", "sasrec", "--config", s(&averaged)][..],
        &["--epochs", "2", "--keep-candidates"],
        &common[..],
        &["--out", s(&best)],
    ]
    .concat());
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ema0.9: best epoch"), "{stderr}");
    let metrics = |dir: &Path| -> Value {
        let m: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
                .unwrap();
        m["metrics"].clone()
    };
    let (chosen, weights, ema) = (
        metrics(&best),
        metrics(&data.join("ema-weights")),
        metrics(&data.join("ema-ema0.9")),
    );
    let valid = |m: &Value| m["valid.ndcg@10"].as_f64().unwrap();
    assert_eq!(ema["ema_decay"], 0.9, "{ema}");
    assert!(weights.get("ema_decay").is_none(), "{weights}");
    assert_eq!(valid(&chosen), valid(&weights).max(valid(&ema)));
    assert_eq!(
        chosen["ema_decay"].as_f64(),
        (valid(&ema) > valid(&weights)).then_some(0.9)
    );

    // Bad SASRec settings are named.
    std::fs::write(&config, "hidden: 16\nema_decays: [1.5]\n").unwrap();
    let err = fails(&run(&[
        &["train", "--model", "sasrec", "--config", s(&config)],
        &common[..],
        &["--out", s(&model)],
    ]
    .concat()));
    assert!(err.contains("ema_decays"), "{err}");
    std::fs::write(&config, "hidden: 16\nheads: 3\n").unwrap();
    let err = fails(&run(&[
        &["train", "--model", "sasrec", "--config", s(&config)],
        &common[..],
        &["--out", s(&model)],
    ]
    .concat()));
    assert!(err.contains("heads"), "{err}");
    std::fs::remove_dir_all(&data).ok();
}
