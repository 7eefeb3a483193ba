//! The `sequential` source end to end: a tiny SASRec trained by `attune train` on a slice of
//! DIGINETICA, served by `attune serve` over a catalog of its items, answering in the order the
//! model itself ranks.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use attune_model::sasrec::SasRec;
use attune_model::scorer::SequenceScorer;
use serde_json::{Value, json};

use crate::support::*;

/// Trains a tiny SASRec on the first DIGINETICA sessions (the last 3,000 of them validate).
fn train(data: &Path) -> std::path::PathBuf {
    train_seeded(data, "sasrec", 42)
}

/// [`train`] into `data/<name>` with this seed.
fn train_seeded(data: &Path, name: &str, seed: u64) -> std::path::PathBuf {
    let model = data.join(name);
    let config = data.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "max_len: 20\nhidden: 16\nbatch: 64\nnegatives: 32\neval_every: 1\nthreads: 1\nseed: {seed}\n"
        ),
    )
    .unwrap();
    ok(&run(&[
        "train",
        "--model",
        "sasrec",
        "--dataset",
        "diginetica",
        "--data-dir",
        s(data),
        "--config",
        s(&config),
        "--epochs",
        "1",
        "--out",
        s(&model),
    ]));
    model
}

/// NDJSON bare items, one per id.
fn write_catalog(path: &Path, ids: &[&str]) {
    let lines: Vec<String> = ids
        .iter()
        .map(|id| json!({"id": id, "title": format!("Item {id}")}).to_string())
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

fn manifest_ids(model: &Path) -> Vec<String> {
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("manifest.json")).unwrap())
            .unwrap();
    manifest["item_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// The model's own ranking for a sequence of catalog ids: every item by score (best first,
/// equal scores by index), with its logit.
fn model_ranking(model: &Path, ids: &[String], sequence: &[&str]) -> Vec<(String, f32)> {
    let (sasrec, _) = SasRec::load(model, None).unwrap();
    let indices: Vec<u32> = sequence
        .iter()
        .filter_map(|s| ids.iter().position(|id| id == s))
        .map(|i| i as u32 + 1)
        .collect();
    let scores = sasrec.score_all(&[&indices]).unwrap().remove(0);
    let mut order: Vec<usize> = (1..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .map(|i| (ids[i - 1].clone(), scores[i]))
        .collect()
}

#[test]
fn sasrec_serves_the_next_items_of_a_session_in_the_models_own_order() {
    // 3,500 sessions: 500 train, 3,000 validate; the test prefixes are not needed (header only).
    let data = slice(
        "sequential",
        &[
            ("diginetica/train_sessions.txt", 3_500),
            ("diginetica/test.tsv", 1),
        ],
    );
    let model = train(&data);
    let ids = manifest_ids(&model);
    assert!(ids.len() > 1_000, "{} items", ids.len());

    // The catalog holds every item of the model, and one it does not know.
    let catalog = data.join("items.ndjson");
    let mut all: Vec<&str> = ids.iter().map(String::as_str).collect();
    all.push("not-in-the-model");
    write_catalog(&catalog, &all);
    let env = [
        ("ATTUNE__CATALOG__PATH", s(&catalog)),
        ("ATTUNE__RECOMMEND__MODEL", s(&model)),
        ("ATTUNE__SEARCH__MODEL", "off"),
    ];
    let server = Server::start(&["serve"], &env);
    let log = server.log_text();
    assert!(
        log.contains("sequential model loaded") && log.contains(&format!("items={}", ids.len())),
        "{log}"
    );
    // The metrics name the model's version (its dataset and checksum) and its age.
    let (_, metrics) = server.http("GET", "/metrics", None);
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("attune_model_info{source=\"sequential\",version=\"diginetica@"),
        "{metrics}"
    );
    assert!(
        metrics.contains("attune_model_age_seconds{source=\"sequential\"}"),
        "{metrics}"
    );

    // A session walks the first training session's items, with an item the model does not
    // know in the middle (left out of the sequence).
    let first = std::fs::read_to_string(data.join("diginetica/train_sessions.txt")).unwrap();
    let walk: Vec<&str> = first
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|s| s.len() >= 3)
        .unwrap();
    let mut viewed: Vec<&str> = walk.clone();
    viewed.insert(1, "not-in-the-model");
    let events: Vec<Value> = viewed
        .iter()
        .map(|id| json!({"type": "view", "session_id": "seq-1", "item_id": id}))
        .collect();
    let (status, body) = server.http("POST", "/v1/events", Some(&json!({ "events": events })));
    assert_eq!(status, 200, "{body}");

    let (status, out) = server.http(
        "GET",
        "/v1/recommendations/next?session_id=seq-1&sources=sequential&limit=20&explain=true",
        None,
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["strategy"], "pipeline", "{out}");
    assert_eq!(out["sources"], json!(["sequential"]), "{out}");
    let items = out["items"].as_array().unwrap();
    assert_eq!(items.len(), 20, "{out}");

    let ranking = model_ranking(&model, &ids, &walk);
    let logit = |id: &str| ranking.iter().find(|(i, _)| i == id).unwrap().1;
    let top = ranking[0].1;
    for (k, (item, (want, _))) in items.iter().zip(&ranking).enumerate() {
        let got = item["item"]["id"].as_str().unwrap();
        // Ties aside: an item in another place must score the same as the one expected there.
        assert!(
            got == want || (logit(got) - logit(want)).abs() < 1e-5,
            "position {k}: {got} ({}) where the model ranks {want} ({})",
            logit(got),
            logit(want)
        );
        let hit = &item["explanation"]["sources"][0];
        assert_eq!(hit["source"], "sequential", "{item}");
        assert_eq!(hit["rank"], k + 1, "{item}");
        let strength = hit["score"].as_f64().unwrap();
        let expected = f64::from((logit(got) - top).exp());
        assert!(
            (strength - expected).abs() < 2e-4 && strength > 0.0 && strength <= 1.0,
            "position {k}: strength {strength}, exp(logit - best) {expected}"
        );
    }

    // A visitor the model knows nothing about gets nothing from this source.
    let (status, body) = server.http(
        "POST",
        "/v1/events",
        Some(&json!({"type": "view", "session_id": "seq-2", "item_id": "not-in-the-model"})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, out) = server.http(
        "GET",
        "/v1/recommendations/next?session_id=seq-2&sources=sequential&limit=20",
        None,
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["items"], json!([]), "{out}");
    server.stop();

    // A catalog lacking most of the model's items: the server does not start, and says why.
    let partial = data.join("partial.ndjson");
    write_catalog(&partial, &all[..100]);
    let mut child = attune()
        .args(["serve", "--listen", &free_addr().to_string()])
        .env("ATTUNE__CATALOG__PATH", s(&partial))
        .env("ATTUNE__RECOMMEND__MODEL", s(&model))
        .env("ATTUNE__SEARCH__MODEL", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("attune serve started with a model whose items are not in the catalog");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    let missing = ids.len() - 100;
    assert!(
        stderr.contains("recommend.model")
            && stderr.contains(&format!(
                "{missing} of the model's {} items are not in the catalog",
                ids.len()
            )),
        "{stderr}"
    );
    std::fs::remove_dir_all(&data).ok();
}

/// Replaces `file` in `dir` with `from`'s, as `attune train` writes: a copy renamed into place.
fn put(from: &Path, dir: &Path, file: &str) {
    let tmp = dir.join(format!("{file}.tmp"));
    std::fs::copy(from.join(file), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

/// The `sequential` model's version in the metrics.
fn served_version(server: &Server) -> String {
    let (_, metrics) = server.http("GET", "/metrics", None);
    let text = metrics.as_str().unwrap_or_default().to_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("attune_model_info{source=\"sequential\""))
        .unwrap_or_else(|| panic!("no model_info: {text}"));
    line.split("version=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn a_newer_model_is_swapped_in_without_dropping_a_request() {
    let data = slice(
        "sequential-swap",
        &[
            ("diginetica/train_sessions.txt", 3_500),
            ("diginetica/test.tsv", 1),
        ],
    );
    let a = train_seeded(&data, "a", 42);
    let b = train_seeded(&data, "b", 7);
    let ids = manifest_ids(&a);
    assert_eq!(ids, manifest_ids(&b), "one data, one item set");
    let catalog = data.join("items.ndjson");
    write_catalog(
        &catalog,
        &ids.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let served = data.join("served");
    std::fs::create_dir_all(&served).unwrap();
    put(&a, &served, "model.safetensors");
    put(&a, &served, "manifest.json");
    let env = [
        ("ATTUNE__CATALOG__PATH", s(&catalog)),
        ("ATTUNE__RECOMMEND__MODEL", s(&served)),
        ("ATTUNE__RECOMMEND__MODEL_POLL_SECS", "1"),
        ("ATTUNE__SEARCH__MODEL", "off"),
    ];
    let server = std::sync::Arc::new(Server::start(&["serve"], &env));
    let first_version = served_version(&server);

    let first = std::fs::read_to_string(data.join("diginetica/train_sessions.txt")).unwrap();
    let walk: Vec<&str> = first
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|s| s.len() >= 3)
        .unwrap();
    let events: Vec<Value> = walk
        .iter()
        .map(|id| json!({"type": "view", "session_id": "swap", "item_id": id}))
        .collect();
    let (status, body) = server.http("POST", "/v1/events", Some(&json!({ "events": events })));
    assert_eq!(status, 200, "{body}");
    let ask = "/v1/recommendations/next?session_id=swap&sources=sequential&limit=10";
    let top = |server: &Server| -> Vec<String> {
        let (status, out) = server.http("GET", ask, None);
        assert_eq!(status, 200, "{out}");
        out["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["item"]["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let expect = |model: &Path| -> Vec<String> {
        model_ranking(model, &ids, &walk)
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !walk.contains(&id.as_str()))
            .take(10)
            .collect()
    };
    assert_eq!(top(&server), expect(&a), "model a serves");

    // Readers all along: not one request fails across the swaps.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (server, stop) = (std::sync::Arc::clone(&server), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut answered = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (status, out) = server.http("GET", ask, None);
                    assert_eq!(status, 200, "{out}");
                    assert_eq!(out["items"].as_array().unwrap().len(), 10, "{out}");
                    answered += 1;
                }
                answered
            })
        })
        .collect();

    // A manifest that cannot be served is refused: the old model goes on.
    let tmp = served.join("manifest.json.tmp");
    std::fs::write(&tmp, "{ not a manifest").unwrap();
    std::fs::rename(&tmp, served.join("manifest.json")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.log_text().contains("cannot be served") {
        assert!(Instant::now() < deadline, "{}", server.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(served_version(&server), first_version);

    // Model b written as `attune train` writes: the weights, then the manifest.
    put(&b, &served, "model.safetensors");
    put(&b, &served, "manifest.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while served_version(&server) == first_version {
        assert!(Instant::now() < deadline, "{}", server.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(answered > 10, "{answered} answers while swapping");
    assert!(
        server.log_text().contains("swapped in"),
        "{}",
        server.log_text()
    );
    assert_ne!(expect(&a), expect(&b), "the seeds give two models");
    assert_eq!(top(&server), expect(&b), "model b serves now");
    match std::sync::Arc::try_unwrap(server) {
        Ok(server) => server.stop(),
        Err(_) => panic!("the readers still hold the server"),
    }
    std::fs::remove_dir_all(&data).ok();
}
