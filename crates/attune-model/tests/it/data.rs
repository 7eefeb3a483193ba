//! Dataset loaders, evaluation protocols and the baselines on slices of the real data.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use attune_model::Error;
use attune_model::cooccurrence::{Cooccurrence, CooccurrenceConfig};
use attune_model::data::split::{self, Case, Split};
use attune_model::data::{self, Dataset, Source, beauty, events};
use attune_model::eval::{self, EvalOptions, Protocol};
use attune_model::manifest::{MANIFEST_FILE, Manifest, ModelKind};
use attune_model::popularity::{Popularity, PopularityConfig};
use attune_model::scorer::SequenceScorer;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

fn data_dir() -> &'static Path {
    Path::new(DATA)
}

fn games() -> &'static Dataset {
    static D: OnceLock<Dataset> = OnceLock::new();
    D.get_or_init(|| data::load(&Source::AmazonGames, data_dir()).unwrap())
}

fn beauty_data() -> &'static Dataset {
    static D: OnceLock<Dataset> = OnceLock::new();
    D.get_or_init(|| data::load(&Source::AmazonBeauty, data_dir()).unwrap())
}

fn diginetica() -> &'static Dataset {
    static D: OnceLock<Dataset> = OnceLock::new();
    D.get_or_init(|| data::load(&Source::Diginetica, data_dir()).unwrap())
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("attune-data-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn is_hex_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Scores every item by a fixed table (index = item), whatever the sequence.
struct Table(Vec<f32>);

impl SequenceScorer for Table {
    fn name(&self) -> &str {
        "table"
    }
    fn num_items(&self) -> usize {
        self.0.len() - 1
    }
    fn score_all(&self, sequences: &[&[u32]]) -> attune_model::Result<Vec<Vec<f32>>> {
        Ok(sequences.iter().map(|_| self.0.clone()).collect())
    }
}

/// Scores items by a hash of (sequence, item): a deterministic stand-in for a random model.
struct Random(usize);

impl SequenceScorer for Random {
    fn name(&self) -> &str {
        "random"
    }
    fn num_items(&self) -> usize {
        self.0
    }
    fn score_all(&self, sequences: &[&[u32]]) -> attune_model::Result<Vec<Vec<f32>>> {
        Ok(sequences
            .iter()
            .map(|s| {
                let h0 = s.iter().fold(17u64, |h, &i| {
                    h.wrapping_mul(0x100_0000_01b3) ^ u64::from(i)
                });
                (0..=self.0 as u64)
                    .map(|i| {
                        let mut z = (h0 ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                        z ^= z >> 29;
                        z = z.wrapping_mul(0xbf58_476d_1ce4_e5b9);
                        (z >> 40) as f32
                    })
                    .collect()
            })
            .collect())
    }
}

#[test]
fn amazon_games_loads_with_the_published_counts() {
    let d = games();
    assert_eq!(d.name, "amazon-games");
    assert_eq!(d.sequences.len(), 31_013);
    assert_eq!(d.interactions(), 287_107);
    assert_eq!(d.num_items, 23_715);
    assert_eq!(d.item_ids.len(), 23_715);
    assert_eq!(d.item_ids[0], "1");
    assert_eq!(d.item_ids[23_714], "23715");
    // User 1's first items, as in the file (ids kept as they are).
    assert_eq!(&d.sequences[0][..3], &[6393, 13504, 14087]);
    assert!(
        d.sequences
            .iter()
            .flatten()
            .all(|&i| i >= 1 && i as usize <= d.num_items)
    );
    assert!(is_hex_sha256(&d.checksum), "{}", d.checksum);
    assert!(d.test.is_empty() && d.timestamps.is_none());
    // Loading again gives the same checksum; another dataset another one.
    let again = data::amazon::load_games(&data_dir().join("amazon-games")).unwrap();
    assert_eq!(again.checksum, d.checksum);
    assert_ne!(beauty_data().checksum, d.checksum);
}

#[test]
fn amazon_beauty_loads_with_the_published_counts() {
    let d = beauty_data();
    assert_eq!(d.sequences.len(), 22_363);
    assert_eq!(d.interactions(), 198_502);
    assert_eq!(d.num_items, 12_101);
    assert_eq!(&d.sequences[0], &[1, 2, 3, 4, 5]);
    assert_eq!(&d.sequences[1], &[6, 7, 8, 9, 10, 4, 11]);
    assert!(d.sequences.iter().all(|s| s.len() >= 5), "5-core");
}

#[test]
fn beauty_item_features_load() {
    let c = beauty::load(&data_dir().join("amazon-beauty")).unwrap();
    assert_eq!(c.items.len(), 12_101);
    assert_eq!(c.items.iter().filter(|i| i.brand.is_none()).count(), 4_627);
    let first = &c.items[0];
    assert_eq!(first.asin, "B004756YJA");
    assert_eq!(first.brand.as_deref(), Some("OPI"));
    assert_eq!(first.categories, ["Makeup", "Nails", "Nail Polish"]);
    assert_eq!(first.attributes, [173, 1, 162, 171]);
    let fourth = &c.items[3];
    assert_eq!(fourth.brand, None);
    assert_eq!(fourth.attributes, [1, 2, 3]);
    assert_eq!(c.attributes.len(), 637);
    assert_eq!(
        c.attributes.values().filter(|a| a.kind == "brand").count(),
        435
    );
    assert_eq!(
        c.attributes
            .values()
            .filter(|a| a.kind == "category")
            .count(),
        202
    );
    assert_eq!(c.attributes[&1].name, "Makeup");
    assert!(is_hex_sha256(&c.checksum));
    // As an Attune item: brand and category path carried over.
    let item = first.to_item("1").unwrap();
    assert_eq!(item.brand.as_deref(), Some("OPI"));
    assert_eq!(item.category_path(), "Makeup > Nails > Nail Polish");
}

#[test]
fn diginetica_loads_with_the_published_counts() {
    let d = diginetica();
    assert_eq!(d.sequences.len(), 186_670);
    assert_eq!(d.test.len(), 60_858);
    assert_eq!(d.num_items, 43_097);
    assert_eq!(d.expanded_prefixes().len(), 719_470);
    assert_eq!(&d.sequences[0], &[1, 2]);
    assert_eq!(d.test[0].target, 21_566);
    assert_eq!(d.test[0].input, [21_553, 20_071, 8_762, 21_566, 6_381]);
    assert_eq!(d.test[1].target, 6_381);
}

#[test]
fn leave_one_out_splits_every_user_with_three_items() {
    let d = games();
    let train = split::training(d);
    let test = split::cases(d, Split::Test);
    let valid = split::cases(d, Split::Validation);
    // 112 users have fewer than 3 items: all training, not evaluated.
    assert_eq!(test.len(), 30_901);
    assert_eq!(valid.len(), 30_901);
    assert_eq!(train.sequences.len(), 31_013);
    assert_eq!(train.interactions(), 287_107 - 2 * 30_901);
    assert_eq!(train.checksum, d.checksum);
    for (t, v) in test.iter().zip(&valid) {
        let full = &d.sequences[t.user];
        assert_eq!(t.user, v.user);
        assert_eq!(t.target, *full.last().unwrap());
        assert_eq!(v.target, full[full.len() - 2]);
        // Validation input = training part; test input = training part + validation item.
        assert_eq!(v.input, &train.sequences[t.user][..]);
        assert_eq!(&t.input[..t.input.len() - 1], v.input);
        assert_eq!(t.input[t.input.len() - 1], v.target);
        assert_eq!(t.interacted, &full[..]);
    }
    for (s, full) in train.sequences.iter().zip(&d.sequences) {
        if full.len() < 3 {
            assert_eq!(s, full);
        }
    }
}

#[test]
fn sampled_negatives_avoid_the_users_items_and_follow_the_seed() {
    let d = beauty_data();
    let cases = split::cases(d, Split::Test);
    for case in cases.iter().take(300) {
        let negs = eval::sample_negatives(case, d.num_items, 99, 7).unwrap();
        assert_eq!(negs.len(), 99);
        let mut distinct = negs.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 99, "distinct");
        assert!(negs.iter().all(|n| !case.interacted.contains(n)));
        assert!(negs.iter().all(|&n| n >= 1 && n as usize <= d.num_items));
        assert_eq!(
            eval::sample_negatives(case, d.num_items, 99, 7).unwrap(),
            negs
        );
        assert_ne!(
            eval::sample_negatives(case, d.num_items, 99, 8).unwrap(),
            negs
        );
    }
    // Two users with the same seed get different negatives.
    assert_ne!(
        eval::sample_negatives(&cases[0], d.num_items, 99, 7).unwrap(),
        eval::sample_negatives(&cases[1], d.num_items, 99, 7).unwrap()
    );
    // A tiny catalog: the dense path draws all that is left, and asking for more fails.
    let seq = [1, 2, 3];
    let case = Case {
        user: 0,
        input: &seq[..2],
        target: 3,
        interacted: &seq,
    };
    let mut all = eval::sample_negatives(&case, 6, 3, 1).unwrap();
    all.sort_unstable();
    assert_eq!(all, [4, 5, 6]);
    let err = eval::sample_negatives(&case, 6, 4, 1).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                name: "negatives",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn protocols_rank_hand_computed_cases() {
    // Items 1..=5 scored 0.5, 0.9, 0.1, 0.9, 0.3 by every sequence.
    let model = Table(vec![0.0, 0.5, 0.9, 0.1, 0.9, 0.3]);
    let a = [2u32, 5, 1];
    let b = [1u32, 4];
    let cases = [
        // Target 1 (0.5) after [2, 5]: full leaves out 2 → only item 4 is above: rank 1.
        Case {
            user: 0,
            input: &a[..2],
            target: 1,
            interacted: &a,
        },
        // Target 4 (0.9) after [1]: item 2 ties (pessimistic): rank 1 in both.
        Case {
            user: 1,
            input: &b[..1],
            target: 4,
            interacted: &b,
        },
    ];
    let full = eval::ranks(&model, &cases, 5, &Protocol::Full, 0).unwrap();
    assert_eq!(full, [1, 1]);
    let all = eval::ranks(&model, &cases, 5, &Protocol::SrGnn, 0).unwrap();
    assert_eq!(all, [2, 1]);
    // Sampled with every free item as a negative: case 0 draws {3, 4}, case 1 draws {2, 3, 5}.
    let sampled = eval::ranks(
        &model,
        &cases[..1],
        5,
        &Protocol::Sampled { negatives: 2 },
        0,
    );
    assert_eq!(sampled.unwrap(), [1]);
    let sampled = eval::ranks(
        &model,
        &cases[1..],
        5,
        &Protocol::Sampled { negatives: 3 },
        0,
    );
    assert_eq!(sampled.unwrap(), [1]);

    let report =
        eval::evaluate(&model, &cases, 5, &Protocol::SrGnn, &EvalOptions::default()).unwrap();
    assert_eq!(report.cases, 2);
    assert_eq!(report.metrics["hr@1"], 0.0);
    assert_eq!(report.metrics["hr@5"], 1.0);
    let ndcg = (1.0 / 3f64.log2() + 1.0 / 4f64.log2()) / 2.0;
    assert!((report.metrics["ndcg@5"] - ndcg).abs() < 1e-12);
    assert!((report.metrics["mrr"] - (1.0 / 3.0 + 0.5) / 2.0).abs() < 1e-12);
    assert!((report.metrics["srgnn_p@20"] - 100.0).abs() < 1e-9);
    assert!((report.metrics["srgnn_mrr@20"] - 100.0 * (1.0 / 3.0 + 0.5) / 2.0).abs() < 1e-9);

    // A model of another item count is refused.
    let err =
        eval::evaluate(&model, &cases, 6, &Protocol::Full, &EvalOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { name: "model", .. }),
        "{err}"
    );
}

#[test]
fn a_constant_model_scores_zero_and_reports_do_not_depend_on_batching() {
    let d = beauty_data().head(500);
    let constant = Table(vec![1.0; d.num_items + 1]);
    let cases = split::cases(&d, Split::Test);
    let report = eval::evaluate(
        &constant,
        &cases,
        d.num_items,
        &Protocol::Sampled { negatives: 99 },
        &EvalOptions::default(),
    )
    .unwrap();
    assert_eq!(report.metrics["hr@20"], 0.0);
    assert_eq!(report.metrics["ndcg@10"], 0.0);
    assert!(
        (report.metrics["mrr"] - 0.01).abs() < 1e-12,
        "rank 100 of 100"
    );

    let model = Popularity::train(&split::training(&d), &PopularityConfig::default()).unwrap();
    let protocol = Protocol::Sampled { negatives: 99 };
    let one = EvalOptions {
        batch_size: 1,
        parallel: false,
        ..EvalOptions::default()
    };
    let a = eval::evaluate(&model, &cases, d.num_items, &protocol, &one).unwrap();
    let b = eval::evaluate(
        &model,
        &cases,
        d.num_items,
        &protocol,
        &EvalOptions::default(),
    )
    .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.seed, Some(42));
}

#[test]
fn popularity_beats_random_and_cooccurrence_beats_popularity_on_games() {
    let d = games().head(4_000);
    let train = split::training(&d);
    let pop = Popularity::train(&train, &PopularityConfig::default()).unwrap();
    let cooc = Cooccurrence::train(&train, &CooccurrenceConfig::default()).unwrap();
    let protocol = Protocol::Sampled { negatives: 100 };
    let opts = EvalOptions::default();
    let run = |m: &dyn SequenceScorer| {
        eval::evaluate_dataset(m, &d, Split::Test, &protocol, &opts).unwrap()
    };
    let random = run(&Random(d.num_items));
    let pop_r = run(&pop);
    let cooc_r = run(&cooc);
    assert_eq!(pop_r.split, "test");
    assert_eq!(pop_r.cases, split::cases(&d, Split::Test).len());
    // Random ranks the target uniformly among 101: HR@10 ≈ 0.099.
    assert!(
        (random.metrics["hr@10"] - 10.0 / 101.0).abs() < 0.03,
        "{random:?}"
    );
    assert!(
        pop_r.metrics["hr@10"] > 2.0 * random.metrics["hr@10"],
        "{pop_r:?}"
    );
    assert!(
        cooc_r.metrics["hr@10"] > pop_r.metrics["hr@10"],
        "{cooc_r:?} vs {pop_r:?}"
    );
    assert!(cooc_r.metrics["ndcg@10"] > pop_r.metrics["ndcg@10"]);
}

#[test]
fn cooccurrence_beats_popularity_on_diginetica_sessions() {
    // Trained on the first 40,000 sessions, tested on the first 2,000 test prefixes.
    let mut d = diginetica().head(40_000);
    d.test.truncate(2_000);
    let pop = Popularity::train(&d, &PopularityConfig::default()).unwrap();
    let cooc = Cooccurrence::train(&d, &CooccurrenceConfig::default()).unwrap();
    let opts = EvalOptions::default();
    let pop_r = eval::evaluate_dataset(&pop, &d, Split::Test, &Protocol::SrGnn, &opts).unwrap();
    let cooc_r = eval::evaluate_dataset(&cooc, &d, Split::Test, &Protocol::SrGnn, &opts).unwrap();
    assert_eq!(pop_r.split, "prefixes");
    assert_eq!(pop_r.cases, 2_000);
    assert!(pop_r.metrics["srgnn_p@20"] > 0.5, "{pop_r:?}");
    assert!(
        cooc_r.metrics["srgnn_p@20"] > 3.0 * pop_r.metrics["srgnn_p@20"],
        "{cooc_r:?} vs {pop_r:?}"
    );
    assert!(cooc_r.metrics["srgnn_mrr@20"] > pop_r.metrics["srgnn_mrr@20"]);
}

#[test]
fn popularity_decay_favours_recent_items() {
    // Item 1 early in every sequence, item 2 last: equal counts, decay prefers 2.
    let d = Dataset {
        name: "t".into(),
        sequences: vec![vec![1, 3, 3, 2]; 3],
        timestamps: None,
        num_items: 3,
        item_ids: vec!["a".into(), "b".into(), "c".into()],
        checksum: "x".into(),
        test: vec![],
    };
    let plain = Popularity::train(&d, &PopularityConfig::default()).unwrap();
    assert_eq!(plain.scores(), [0.0, 3.0, 3.0, 6.0]);
    let decayed = Popularity::train(
        &d,
        &PopularityConfig {
            half_life_positions: Some(1.0),
            ..PopularityConfig::default()
        },
    )
    .unwrap();
    // Per sequence: item 2 weighs 1, item 3 0.5 + 0.25, item 1 0.125.
    assert_eq!(decayed.scores(), [0.0, 0.375, 3.0, 2.25]);
    // With timestamps and a time half-life, the time decides.
    let mut timed = d.clone();
    timed.timestamps = Some(vec![vec![4_000, 1_000, 1_000, 0]; 3]);
    let by_time = Popularity::train(
        &timed,
        &PopularityConfig {
            half_life_secs: Some(1.0),
            ..PopularityConfig::default()
        },
    )
    .unwrap();
    assert!(by_time.scores()[1] > by_time.scores()[3] && by_time.scores()[3] > by_time.scores()[2]);
    let err = Popularity::train(
        &d,
        &PopularityConfig {
            half_life_secs: Some(0.0),
            ..PopularityConfig::default()
        },
    )
    .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidArgument {
            name: "half_life_secs",
            ..
        }
    ));
}

#[test]
fn cooccurrence_scores_neighbours_of_recent_items_and_falls_back_to_popularity() {
    let d = Dataset {
        name: "t".into(),
        sequences: vec![vec![1, 2], vec![1, 2], vec![3, 4], vec![5, 5, 5, 5]],
        timestamps: None,
        num_items: 6,
        item_ids: (1..=6).map(|i| i.to_string()).collect(),
        checksum: "x".into(),
        test: vec![],
    };
    let m = Cooccurrence::train(&d, &CooccurrenceConfig::default()).unwrap();
    let scores = &m.score_all(&[&[1], &[6], &[]]).unwrap();
    // After 1, item 2 (its only follower) wins; after an unknown 6 or nothing, popularity (5).
    let best = |s: &Vec<f32>| (1..s.len()).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap();
    assert_eq!(best(&scores[0]), 2);
    assert_eq!(best(&scores[1]), 5);
    assert_eq!(best(&scores[2]), 5);
    // Repeats of one item are not pairs; 2 → 1 counts backwards.
    assert_eq!(m.neighbors(5).count(), 0);
    assert_eq!(m.neighbors(2).map(|(b, _)| b).collect::<Vec<_>>(), [1]);
    // score_candidates agrees with score_all.
    let cands = m.score_candidates(&[&[3, 1]], &[&[2, 4, 5, 6]]).unwrap();
    let all = m.score_all(&[&[3, 1]]).unwrap();
    assert_eq!(cands[0], [all[0][2], all[0][4], all[0][5], all[0][6]]);
    assert!(all.iter().flatten().all(|s| s.is_finite()));
}

#[test]
fn baselines_save_load_and_refuse_a_mismatching_manifest() {
    let d = beauty_data().head(300);
    let train = split::training(&d);
    let dir = temp_dir("baselines");

    let mut pop = Popularity::train(
        &train,
        &PopularityConfig {
            half_life_positions: Some(5.0),
            ..PopularityConfig::default()
        },
    )
    .unwrap();
    pop.metrics_mut().insert("test.hr@10".into(), 0.25);
    let pop_dir = dir.join("pop");
    pop.save(&pop_dir).unwrap();
    let back = Popularity::load(&pop_dir).unwrap();
    assert_eq!(back, pop);
    assert_eq!(back.manifest().metrics["test.hr@10"], 0.25);
    assert_eq!(back.manifest().dataset.interactions, train.interactions());

    let cooc = Cooccurrence::train(&train, &CooccurrenceConfig::default()).unwrap();
    let cooc_dir = dir.join("cooc");
    cooc.save(&cooc_dir).unwrap();
    let back = Cooccurrence::load(&cooc_dir).unwrap();
    assert_eq!(back, cooc);
    let seqs: Vec<&[u32]> = d.sequences.iter().map(Vec::as_slice).take(20).collect();
    assert_eq!(
        back.score_all(&seqs).unwrap(),
        cooc.score_all(&seqs).unwrap()
    );

    // Another kind is refused.
    let err = Popularity::load(&cooc_dir).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedConfig { field: "kind", .. }),
        "{err}"
    );

    // A manifest edited to another item count, checksum or config is refused, naming the field.
    let original = Manifest::read(&pop_dir, ModelKind::Popularity).unwrap();
    let mut fewer = original.clone();
    fewer.item_ids.pop();
    let mut other_data = original.clone();
    other_data.dataset.checksum = "0".repeat(64);
    let mut other_config = original.clone();
    other_config.hyper_parameters = serde_json::json!({"half_life_positions": 50.0});
    let mut not_a_config = original.clone();
    not_a_config.hyper_parameters = serde_json::json!({"window": 3});
    for (manifest, field) in [
        (fewer, "item_ids"),
        (other_data, "dataset.checksum"),
        (other_config, "hyper_parameters"),
        (not_a_config, "hyper_parameters"),
    ] {
        manifest.write(&pop_dir).unwrap();
        let err = Popularity::load(&pop_dir).unwrap_err();
        match &err {
            Error::ManifestMismatch { field: f, .. } => assert_eq!(*f, field, "{err}"),
            other => panic!("expected a mismatch on {field}, got {other}"),
        }
        assert!(err.to_string().contains("pop"), "{err}");
    }
    // A truncated data file is refused.
    original.write(&pop_dir).unwrap();
    let bin = pop_dir.join(attune_model::popularity::DATA_FILE);
    let bytes = std::fs::read(&bin).unwrap();
    std::fs::write(&bin, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        Popularity::load(&pop_dir).unwrap_err(),
        Error::Encoding { .. }
    ));
    assert!(std::fs::exists(pop_dir.join(MANIFEST_FILE)).unwrap());
    std::fs::remove_dir_all(&dir).ok();
}

#[track_caller]
fn assert_bad_line(err: Error, file: &Path, line: usize) {
    let text = err.to_string();
    match &err {
        Error::BadLine { path, line: l, .. } => {
            assert_eq!(path, file, "{text}");
            assert_eq!(*l, line, "{text}");
        }
        other => panic!("expected a bad line, got {other}"),
    }
    assert!(
        text.contains(&file.display().to_string()) && text.contains(&format!("line {line}")),
        "{text}"
    );
}

#[test]
fn bad_lines_are_named_by_file_and_line() {
    let dir = temp_dir("bad-lines");
    let games_dir = dir.join("games");
    std::fs::create_dir_all(&games_dir).unwrap();
    let file = games_dir.join("sequences.txt");
    for (text, line) in [
        ("1 5\n1 6\n1 x\n", 3),
        ("1 5\n1\n", 2),
        ("1 5\n1 0\n", 2),
        ("1 5\n2 6\n1 7\n", 3),
        ("1 5 6\n", 1),
    ] {
        std::fs::write(&file, text).unwrap();
        assert_bad_line(
            data::amazon::load_games(&games_dir).unwrap_err(),
            &file,
            line,
        );
    }

    let beauty_dir = dir.join("beauty");
    std::fs::create_dir_all(&beauty_dir).unwrap();
    let file = beauty_dir.join("sequences.txt");
    for (text, line) in [("1 2 3\n2 4 -5\n", 2), ("1 2 3\n2\n", 2), ("1 2\n1 3\n", 2)] {
        std::fs::write(&file, text).unwrap();
        assert_bad_line(
            data::amazon::load_beauty(&beauty_dir).unwrap_err(),
            &file,
            line,
        );
    }

    let digi = dir.join("digi");
    std::fs::create_dir_all(&digi).unwrap();
    std::fs::write(digi.join("train_sessions.txt"), "1 2\n3 4 5\n").unwrap();
    let test = digi.join("test.tsv");
    std::fs::write(&test, "# comment\n2\t1\n3 4\n").unwrap();
    assert_bad_line(data::diginetica::load(&digi).unwrap_err(), &test, 3);
    std::fs::write(&test, "# comment\n2\t1\n4\t\n").unwrap();
    assert_bad_line(data::diginetica::load(&digi).unwrap_err(), &test, 3);
    std::fs::write(digi.join("train_sessions.txt"), "1 2\n3 four\n").unwrap();
    assert_bad_line(
        data::diginetica::load(&digi).unwrap_err(),
        &digi.join("train_sessions.txt"),
        2,
    );

    let log = dir.join("events.ndjson");
    let ok = r#"{"kind":"view","session_id":"s","item_id":"a","timestamp":1}"#;
    for (text, line) in [
        (format!("{ok}\n{{not json\n"), 2),
        (
            format!(
                "{ok}\n\n{}\n",
                r#"{"kind":"click","session_id":"s","timestamp":2}"#
            ),
            3,
        ),
        (
            format!(
                "{}\n",
                r#"{"kind":"teleport","session_id":"s","item_id":"a","timestamp":2}"#
            ),
            1,
        ),
        (
            format!(
                "{}\n",
                r#"{"kind":"view","session_id":"s","item_id":"a","timestamp":"yesterday"}"#
            ),
            1,
        ),
    ] {
        std::fs::write(&log, text).unwrap();
        assert_bad_line(
            events::load(&log, events::Grouping::Session).unwrap_err(),
            &log,
            line,
        );
    }

    // A missing file is named too.
    let err = data::amazon::load_games(&dir.join("nowhere")).unwrap_err();
    assert!(err.to_string().contains("nowhere"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn event_logs_group_item_events_by_session_in_time_order() {
    let dir = temp_dir("events");
    let log = dir.join("events.ndjson");
    let lines = [
        // Session s2 starts first in the file; s1's events arrive out of order.
        r#"{"kind":"view","session_id":"s2","user_id":"u1","item_id":"shoe","timestamp":100}"#,
        r#"{"type":"click","session_id":"s1","item_id":"hat","timestamp":"1970-01-01T00:00:00.300Z"}"#,
        r#"{"kind":"view","session_id":"s1","item_id":"sock","timestamp":200,"quantity":1}"#,
        r#"{"kind":"add_to_cart","session_id":"s1","item_id":"hat","timestamp":301,"quantity":2}"#,
        r#"{"kind":"search","session_id":"s1","timestamp":150,"search":{"query":"hats","filters":{}}}"#,
        r#"{"kind":"skip","session_id":"s1","item_id":"scarf","timestamp":400}"#,
        "",
        r#"{"kind":"purchase","session_id":"s3","user_id":"u1","item_id":"hat","timestamp":500}"#,
    ];
    std::fs::write(&log, lines.join("\n")).unwrap();
    let d = events::load(&log, events::Grouping::Session).unwrap();
    assert_eq!(d.item_ids, ["shoe", "hat", "sock"]);
    assert_eq!(d.num_items, 3);
    // s2: shoe; s1: sock (200), hat (300; the add-to-cart at 301 repeats it); s3: hat.
    assert_eq!(d.sequences, [vec![1], vec![3, 2], vec![2]]);
    assert_eq!(d.timestamps.as_ref().unwrap()[1], [200, 300]);
    assert!(d.name.starts_with("events:"));
    assert!(is_hex_sha256(&d.checksum));

    // By user: u1's two sessions become one sequence; s1 (no user) stays a session.
    let by_user = events::load(&log, events::Grouping::User).unwrap();
    assert_eq!(by_user.sequences, [vec![1, 2], vec![3, 2]]);

    // The source syntax of the command line.
    let source: Source = format!("events:{}", log.display()).parse().unwrap();
    assert_eq!(data::load(&source, data_dir()).unwrap(), d);
    assert!("amazon-games".parse::<Source>().is_ok());
    let err = "movielens".parse::<Source>().unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidArgument {
            name: "dataset",
            ..
        }
    ));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn diginetica_validation_holds_out_the_last_sessions() {
    let d = diginetica();
    let (train, valid) = split::hold_out_last(d, 3_000);
    assert_eq!(train.sequences.len(), 186_670 - 3_000);
    assert_eq!(&train.sequences[..], &d.sequences[..186_670 - 3_000]);
    assert!(
        train.test.is_empty(),
        "test prefixes never reach training or validation"
    );
    let held = &d.sequences[186_670 - 3_000..];
    assert_eq!(valid.len(), held.iter().map(|s| s.len() - 1).sum::<usize>());
    assert_eq!(valid[0].input, held[0][..1]);
    assert_eq!(valid[0].target, held[0][1]);
    assert_eq!(Source::Diginetica.sampled_negatives(), 100);
    assert_eq!(Source::AmazonBeauty.sampled_negatives(), 99);
    assert!(!Source::Diginetica.is_leave_one_out());
}

#[test]
fn a_stream_directory_reads_its_gzipped_and_plain_segments_in_order_without_served_lists() {
    use std::io::Write as _;
    let dir = std::env::temp_dir().join(format!("attune-stream-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sealed = [
        r#"{"record":"event","kind":"view","session_id":"s1","item_id":"hat","timestamp":100,"quantity":1}"#,
        r#"{"record":"served","surface":"home","session_id":"s1","user_id":null,"items":["sock","hat"],"timestamp":110}"#,
    ]
    .join("\n")
        + "\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(sealed.as_bytes()).unwrap();
    std::fs::write(
        dir.join("events-00000000000000000000-00000000000000000002.jsonl.gz"),
        gz.finish().unwrap(),
    )
    .unwrap();
    // The current segment ends in a torn line (cut by a crash).
    std::fs::write(
        dir.join("current.jsonl"),
        concat!(
            r#"{"record":"event","kind":"click","session_id":"s1","item_id":"sock","timestamp":200,"quantity":1}"#,
            "\n",
            r#"{"record":"event","kind":"view","session_id":"s1","item_id":"sc"#
        ),
    )
    .unwrap();
    let d = events::load(&dir, events::Grouping::Session).unwrap();
    assert_eq!(d.item_ids, ["hat", "sock"]);
    assert_eq!(d.sequences, [vec![1, 2]]);
    std::fs::remove_dir_all(&dir).unwrap();
}
