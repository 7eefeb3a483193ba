//! SASRec on small slices of the real data (amazon-games): training lowers the loss and beats
//! popularity on held-out last items, save → load gives identical scores, foreign or mismatching
//! manifests are refused, bad configs name the field, an interrupted run resumes where it
//! stopped and ends exactly where an uninterrupted one does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use attune_model::Error;
use attune_model::data::split::Case;
use attune_model::eval::{self, EvalOptions, Protocol};
use attune_model::manifest::{DatasetInfo, Manifest, ModelKind};
use attune_model::sasrec::{
    ModelInfo, Progress, SasRec, SasRecConfig, SasRecLoss, TrainOptions, train,
};
use attune_model::scorer::SequenceScorer;

const GAMES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/amazon-games/sequences.txt"
);

/// The first `USERS` users of amazon-games, keeping the items they share (at least `MIN_COUNT`
/// interactions among them) and then the users left with at least 3 items; items renumbered
/// densely `1..=n` in order of appearance, with their dataset ids.
struct Slice {
    sequences: Vec<Vec<u32>>,
    item_ids: Vec<String>,
}

const USERS: usize = 4000;
const MIN_COUNT: usize = 5;

fn slice() -> &'static Slice {
    static S: OnceLock<Slice> = OnceLock::new();
    S.get_or_init(|| {
        let text = std::fs::read_to_string(GAMES).expect("amazon-games sequences");
        let mut users: Vec<Vec<&str>> = Vec::new();
        let mut last = None;
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(u), Some(i)) = (it.next(), it.next()) else {
                continue;
            };
            if last != Some(u) {
                if users.len() == USERS + 1 {
                    break;
                }
                users.push(Vec::new());
                last = Some(u);
            }
            users.last_mut().unwrap().push(i);
        }
        users.truncate(USERS);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for &i in users.iter().flatten() {
            *counts.entry(i).or_default() += 1;
        }
        for u in &mut users {
            u.retain(|i| counts[i] >= MIN_COUNT);
        }
        users.retain(|s| s.len() >= 3);
        let mut index: HashMap<&str, u32> = HashMap::new();
        let mut item_ids = Vec::new();
        let sequences = users
            .iter()
            .map(|s| {
                s.iter()
                    .map(|&i| {
                        *index.entry(i).or_insert_with(|| {
                            item_ids.push(i.to_string());
                            u32::try_from(item_ids.len()).unwrap()
                        })
                    })
                    .collect()
            })
            .collect();
        Slice {
            sequences,
            item_ids,
        }
    })
}

/// Leave-one-out: the training part (all but the last two), validation and test cases.
fn train_part(s: &Slice) -> Vec<Vec<u32>> {
    s.sequences
        .iter()
        .map(|q| q[..q.len() - 2].to_vec())
        .collect()
}

/// HR@10 of each case's target among it and 100 sampled items the user never had (the
/// crate's evaluation, `Protocol::Sampled`), for cases `history` (what the model sees) →
/// `target` of users `all`.
fn hit_rate_at_10(
    scorer: &dyn SequenceScorer,
    cases: &[(Vec<u32>, u32)],
    all: &[Vec<u32>],
    seed: u64,
) -> f64 {
    let cases: Vec<Case<'_>> = cases
        .iter()
        .zip(all)
        .enumerate()
        .map(|(user, ((input, target), full))| Case {
            user,
            input,
            target: *target,
            interacted: full,
        })
        .collect();
    let options = EvalOptions {
        seed,
        ..EvalOptions::default()
    };
    let protocol = Protocol::Sampled { negatives: 100 };
    let report = eval::evaluate(scorer, &cases, scorer.num_items(), &protocol, &options).unwrap();
    report.metrics["hr@10"]
}

/// Item counts in the training part, as a scorer.
struct Popularity(Vec<f32>);

impl SequenceScorer for Popularity {
    fn name(&self) -> &str {
        "popularity"
    }
    fn num_items(&self) -> usize {
        self.0.len() - 1
    }
    fn score_all(&self, sequences: &[&[u32]]) -> attune_model::Result<Vec<Vec<f32>>> {
        Ok(sequences.iter().map(|_| self.0.clone()).collect())
    }
}

fn small_config() -> SasRecConfig {
    SasRecConfig {
        max_len: 20,
        hidden: 32,
        blocks: 2,
        heads: 1,
        dropout: 0.3,
        learning_rate: 0.002,
        batch: 64,
        epochs: 2,
        loss: SasRecLoss::SampledSoftmax,
        negatives: 128,
        eval_every: 1,
        patience: 0,
        seed: 7,
        threads: 2,
        ..SasRecConfig::default()
    }
}

fn quiet() -> TrainOptions {
    TrainOptions {
        progress: Progress::Quiet,
        ..TrainOptions::default()
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("attune-sasrec-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

fn info(s: &Slice) -> ModelInfo {
    ModelInfo {
        item_ids: s.item_ids.clone(),
        dataset: DatasetInfo {
            name: "amazon-games (test slice)".into(),
            checksum: "none".into(),
            sequences: s.sequences.len(),
            interactions: s.sequences.iter().map(Vec::len).sum(),
        },
        metrics: BTreeMap::new(),
    }
}

#[test]
fn training_lowers_the_loss_and_beats_popularity() {
    let s = slice();
    let n = s.item_ids.len();
    let train_seqs = train_part(s);
    // Validation: the history up to the item before last predicts it; test: the whole history
    // but the last predicts the last.
    let valid: Vec<(Vec<u32>, u32)> = s
        .sequences
        .iter()
        .map(|q| (q[..q.len() - 2].to_vec(), q[q.len() - 2]))
        .collect();
    let test: Vec<(Vec<u32>, u32)> = s
        .sequences
        .iter()
        .map(|q| (q[..q.len() - 1].to_vec(), q[q.len() - 1]))
        .collect();
    let config = SasRecConfig {
        epochs: 6,
        eval_every: 2,
        ..small_config()
    };
    let mut metrics = Vec::new();
    let (model, report) = train(&config, n, &train_seqs, &quiet(), &mut |m| {
        let hr = hit_rate_at_10(m, &valid, &s.sequences, 1);
        metrics.push(hr);
        Ok(hr)
    })
    .unwrap();
    assert_eq!(report.epoch_losses.len(), 6);
    assert!(
        report.epoch_losses[5] < report.epoch_losses[0] * 0.9,
        "loss did not fall: {:?}",
        report.epoch_losses
    );
    assert_eq!(report.evaluations.len(), 3);
    assert_eq!(metrics.len(), 3);
    let best = report.best_metric.unwrap();
    assert!(metrics.iter().all(|&m| m <= best));

    let mut counts = vec![0f32; n + 1];
    for q in &train_seqs {
        for &i in q {
            counts[i as usize] += 1.0;
        }
    }
    let pop = hit_rate_at_10(&Popularity(counts), &test, &s.sequences, 2);
    let ours = hit_rate_at_10(&model, &test, &s.sequences, 2);
    eprintln!(
        "{} users, {n} items: test HR@10 sasrec {ours:.4} vs popularity {pop:.4}; losses {:?}",
        s.sequences.len(),
        report.epoch_losses
    );
    assert!(ours > pop + 0.02, "sasrec {ours} vs popularity {pop}");

    // score_all and score_candidates agree.
    let seq = test[0].0.as_slice();
    let all = model.score_all(&[seq]).unwrap();
    assert_eq!(all[0].len(), n + 1);
    assert!(all[0].iter().all(|v| v.is_finite()));
    let cands = [3u32, 1, 7];
    let some = model.score_candidates(&[seq], &[&cands]).unwrap();
    for (k, &c) in cands.iter().enumerate() {
        assert!((some[0][k] - all[0][c as usize]).abs() < 1e-4);
    }
}

#[test]
fn save_then_load_gives_identical_scores_and_foreign_manifests_are_refused() {
    let s = slice();
    let n = s.item_ids.len();
    let config = SasRecConfig {
        epochs: 1,
        ..small_config()
    };
    let (model, _) = train(&config, n, &train_part(s), &quiet(), &mut |_| Ok(0.0)).unwrap();
    let dir = temp_dir("save");
    let manifest = model.save(&dir, &info(s)).unwrap();
    assert_eq!(manifest.kind, ModelKind::Sasrec);
    assert_eq!(manifest.item_ids.len(), n);
    assert_eq!(manifest.files, vec!["model.safetensors".to_string()]);

    let ids: HashSet<&str> = s.item_ids.iter().map(String::as_str).collect();
    let in_catalog = |id: &str| ids.contains(id);
    let (loaded, read) = SasRec::load(&dir, Some(&in_catalog)).unwrap();
    assert_eq!(read, manifest);
    assert_eq!(loaded.config(), model.config());
    let seqs: Vec<&[u32]> = s.sequences.iter().take(20).map(Vec::as_slice).collect();
    assert_eq!(
        loaded.score_all(&seqs).unwrap(),
        model.score_all(&seqs).unwrap()
    );

    // A catalog lacking some of the model's items.
    let partial = |id: &str| ids.contains(id) && id != s.item_ids[3];
    match SasRec::load(&dir, Some(&partial)) {
        Err(e @ Error::ManifestMismatch { field, .. }) => {
            assert_eq!(field, "item_ids");
            let msg = e.to_string();
            assert!(msg.contains(&s.item_ids[3]), "{msg}");
            assert!(msg.contains("not in the catalog"), "{msg}");
        }
        other => panic!("expected a catalog mismatch, got {other:?}"),
    }

    // A manifest of another kind.
    let mut other = Manifest::read(&dir, ModelKind::Sasrec).unwrap();
    other.kind = ModelKind::Popularity;
    other.write(&dir).unwrap();
    let err = SasRec::load(&dir, None).expect_err("another kind");
    assert!(err.to_string().contains("kind"), "{err}");

    // Weights of another shape than the config says.
    let mut wrong = manifest.clone();
    wrong.hyper_parameters["hidden"] = serde_json::json!(16);
    wrong.write(&dir).unwrap();
    match SasRec::load(&dir, None) {
        Err(Error::TensorShape { name, .. }) => assert_eq!(name, "item_emb.weight"),
        other => panic!("expected a shape error, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_config_values_name_the_field() {
    let n = 10;
    let seqs = vec![vec![1, 2, 3]];
    for (field, config) in [
        (
            "heads",
            SasRecConfig {
                heads: 3,
                ..small_config()
            },
        ),
        (
            "dropout",
            SasRecConfig {
                dropout: 1.5,
                ..small_config()
            },
        ),
        (
            "batch",
            SasRecConfig {
                batch: 0,
                ..small_config()
            },
        ),
        (
            "learning_rate",
            SasRecConfig {
                learning_rate: 0.0,
                ..small_config()
            },
        ),
    ] {
        match train(&config, n, &seqs, &quiet(), &mut |_| Ok(0.0)) {
            Err(e @ Error::InvalidArgument { name, .. }) => {
                assert_eq!(name, field);
                assert!(e.to_string().contains(field), "{e}");
            }
            other => panic!("{field}: expected InvalidArgument, got {other:?}"),
        }
    }
    let err = SasRecConfig::from_json(r#"{"hidden": 32, "blocs": 2}"#, "cfg.json".as_ref())
        .expect_err("unknown field");
    assert!(err.to_string().contains("blocs"), "{err}");
}

#[test]
fn an_interrupted_run_resumes_from_its_last_epoch() {
    let s = slice();
    let n = s.item_ids.len();
    let seqs = train_part(s);
    let seqs = &seqs[..800];
    let config = SasRecConfig {
        epochs: 3,
        eval_every: 1,
        ..small_config()
    };
    // The metric: a fixed function of the weights, so both runs agree on it.
    let probe: Vec<&[u32]> = seqs.iter().take(8).map(Vec::as_slice).collect();
    let mut metric = |m: &SasRec| -> attune_model::Result<f64> {
        let s = m.score_all(&probe)?;
        Ok(f64::from(s[0][1].sin()))
    };
    let (whole, whole_report) = train(&config, n, seqs, &quiet(), &mut metric).unwrap();

    let dir = temp_dir("resume");
    let options = TrainOptions {
        checkpoint_dir: Some(dir.clone()),
        progress: Progress::Quiet,
        max_epochs_this_run: Some(2),
        init_from: None,
    };
    let (_, first) = train(&config, n, seqs, &options, &mut metric).unwrap();
    assert_eq!(first.epochs_completed, 2);
    assert_eq!(first.resumed_from, 0);
    let options = TrainOptions {
        max_epochs_this_run: None,
        ..options
    };
    let (resumed, report) = train(&config, n, seqs, &options, &mut metric).unwrap();
    assert_eq!(report.resumed_from, 2);
    assert_eq!(report.epochs_completed, 3);
    assert_eq!(report.epoch_losses, whole_report.epoch_losses);
    assert_eq!(report.evaluations, whole_report.evaluations);
    assert_eq!(report.best_epoch, whole_report.best_epoch);
    assert_eq!(
        resumed.score_all(&probe).unwrap(),
        whole.score_all(&probe).unwrap()
    );
    // Training time and speed count every part of the run, so a run finished from its last
    // checkpoint reports them as the run that trained.
    assert!(first.step_seconds > 0.0 && first.sequences_per_second > 0.0);
    assert!(report.step_seconds > first.step_seconds);
    let (_, again) = train(&config, n, seqs, &options, &mut metric).unwrap();
    assert_eq!(again.resumed_from, 3);
    assert_eq!(again.step_seconds, report.step_seconds);
    assert_eq!(again.sequences_per_second, report.sequences_per_second);
    // 3 epochs of every sequence of at least two items, in the speed's numerator.
    let trained = seqs.iter().filter(|q| q.len() >= 2).count() * 3;
    #[allow(clippy::cast_precision_loss)]
    let expected = trained as f64 / report.step_seconds;
    assert!((report.sequences_per_second - expected).abs() <= 1e-9 * expected);

    // A checkpoint of another run is refused, naming what differs.
    let other = SasRecConfig {
        hidden: 16,
        ..config
    };
    match train(&other, n, seqs, &options, &mut metric) {
        Err(Error::ManifestMismatch { field, .. }) => assert_eq!(field, "config"),
        other => panic!("expected a config mismatch, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_run_that_stopped_early_goes_on_with_more_patience() {
    let s = slice();
    let n = s.item_ids.len();
    let seqs = train_part(s);
    let seqs = &seqs[..400];
    // A metric that only falls: the first evaluation stays the best, so patience 1 stops the
    // run at its second.
    let mut calls = 0.0;
    let mut falling = |_: &SasRec| -> attune_model::Result<f64> {
        calls += 1.0;
        Ok(-calls)
    };
    let impatient = SasRecConfig {
        epochs: 4,
        eval_every: 1,
        patience: 1,
        ..small_config()
    };
    let dir = temp_dir("patience");
    let options = TrainOptions {
        checkpoint_dir: Some(dir.clone()),
        progress: Progress::Quiet,
        max_epochs_this_run: None,
        init_from: None,
    };
    let (_, first) = train(&impatient, n, seqs, &options, &mut falling).unwrap();
    assert!(first.stopped_early);
    assert_eq!(first.epochs_completed, 2);
    // The same patience again: nothing more to do.
    let (_, again) = train(&impatient, n, seqs, &options, &mut falling).unwrap();
    assert!(again.stopped_early);
    assert_eq!((again.resumed_from, again.epochs_completed), (2, 2));
    // More patience: it goes on from its checkpoint, and stops when that patience runs out.
    let patient = SasRecConfig {
        patience: 2,
        ..impatient
    };
    let (_, more) = train(&patient, n, seqs, &options, &mut falling).unwrap();
    assert_eq!((more.resumed_from, more.epochs_completed), (2, 3));
    assert!(more.stopped_early);
    assert_eq!(more.best_epoch, Some(1));
    assert_eq!(more.evaluations.len(), 3);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_plateau_steps_the_learning_rate_down_before_stopping() {
    let s = slice();
    let n = s.item_ids.len();
    let seqs = train_part(s);
    let seqs = &seqs[..400];
    // A metric that only falls: every evaluation after the first is a bad one.
    let falling = || {
        let mut calls = 0.0;
        move |_: &SasRec| -> attune_model::Result<f64> {
            calls += 1.0;
            Ok(-calls)
        }
    };
    let base = SasRecConfig {
        epochs: 6,
        eval_every: 1,
        patience: 1,
        ..small_config()
    };
    let stepped = SasRecConfig {
        lr_steps: 2,
        lr_step_factor: 0.5,
        ..base.clone()
    };
    // Uninterrupted: best at 1; a bad evaluation at 2 and at 3 each take a step; the one at 4
    // has none left and stops.
    let (_, whole) = train(&stepped, n, seqs, &quiet(), &mut falling()).unwrap();
    assert_eq!(whole.epochs_completed, 4);
    assert!(whole.stopped_early);
    // The steps changed the training: without them the third epoch's loss differs.
    let never_stops = SasRecConfig {
        patience: 0,
        ..base.clone()
    };
    let (_, plain) = train(&never_stops, n, seqs, &quiet(), &mut falling()).unwrap();
    assert_eq!(plain.epoch_losses[..2], whole.epoch_losses[..2]);
    assert_ne!(plain.epoch_losses[2], whole.epoch_losses[2]);

    // A run without steps stops at 2; resumed with them, it goes on exactly as the
    // uninterrupted run did.
    let dir = temp_dir("lr-steps");
    let options = TrainOptions {
        checkpoint_dir: Some(dir.clone()),
        progress: Progress::Quiet,
        max_epochs_this_run: None,
        init_from: None,
    };
    let mut metric = falling();
    let (_, first) = train(&base, n, seqs, &options, &mut metric).unwrap();
    assert_eq!((first.epochs_completed, first.stopped_early), (2, true));
    let (_, resumed) = train(&stepped, n, seqs, &options, &mut metric).unwrap();
    assert_eq!(resumed.resumed_from, 2);
    assert_eq!(resumed.epoch_losses, whole.epoch_losses);
    assert_eq!(resumed.evaluations, whole.evaluations);
    assert!(resumed.stopped_early);
    std::fs::remove_dir_all(&dir).ok();

    let bad = SasRecConfig {
        lr_step_factor: 1.0,
        ..stepped
    };
    match train(&bad, n, seqs, &quiet(), &mut falling()) {
        Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, "lr_step_factor"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn a_run_can_start_from_a_trained_models_weights() {
    let s = slice();
    let n = s.item_ids.len();
    let seqs = train_part(s);
    let seqs = &seqs[..400];
    let config = SasRecConfig {
        epochs: 2,
        ..small_config()
    };
    let (trained, first) = train(&config, n, seqs, &quiet(), &mut |_| Ok(0.0)).unwrap();
    // Fine-tuning at a learning rate too small to move anything: it starts where the trained
    // model ended (its first epoch's loss is near the trained model's last, far below a fresh
    // start's) and keeps its scores.
    let fine = SasRecConfig {
        epochs: 1,
        learning_rate: 1e-12,
        ..config.clone()
    };
    let options = TrainOptions {
        init_from: Some(trained.clone()),
        ..quiet()
    };
    let (tuned, report) = train(&fine, n, seqs, &options, &mut |_| Ok(0.0)).unwrap();
    assert!(
        report.epoch_losses[0] < first.epoch_losses[0],
        "{report:?} against {first:?}"
    );
    let probe: Vec<&[u32]> = seqs.iter().take(4).map(Vec::as_slice).collect();
    let (a, b) = (
        trained.score_all(&probe).unwrap(),
        tuned.score_all(&probe).unwrap(),
    );
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() < 1e-4, "{x} against {y}");
    }
    // Weights of other shapes are refused, naming the option.
    let wider = SasRecConfig {
        hidden: 16,
        ..config
    };
    match train(&wider, n, seqs, &options, &mut |_| Ok(0.0)) {
        Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, "init_from"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

/// A metric per call: the `k`-th validation returns `values[k]` (the weights are validated
/// first at each evaluation, then each average in `ema_decays` order).
fn scripted(values: Vec<f64>) -> impl FnMut(&SasRec) -> attune_model::Result<f64> {
    let mut calls = 0;
    move |_| {
        calls += 1;
        Ok(values[calls - 1])
    }
}

#[test]
fn weight_averages_never_change_training_and_are_returned_only_when_they_validate_best() {
    let s = slice();
    let n = s.item_ids.len();
    let seqs = train_part(s);
    let seqs = &seqs[..400];
    let plain = SasRecConfig {
        epochs: 2,
        eval_every: 1,
        patience: 0,
        ..small_config()
    };
    let averaged = SasRecConfig {
        ema_decays: vec![0.9, 0.99],
        ..plain.clone()
    };
    let probe: Vec<&[u32]> = seqs.iter().take(4).map(Vec::as_slice).collect();
    let (raw, raw_report) =
        train(&plain, n, seqs, &quiet(), &mut scripted(vec![0.5, 0.6])).unwrap();
    assert_eq!(raw_report.candidates.len(), 1);
    assert_eq!(raw_report.averaged, None);

    // Epoch 1: weights 0.5, averages 0.1 and 0.2; epoch 2: weights 0.6, averages 0.7 and 0.65.
    let values = vec![0.5, 0.1, 0.2, 0.6, 0.7, 0.65];
    let (model, report) = train(&averaged, n, seqs, &quiet(), &mut scripted(values)).unwrap();
    // The same steps: the same losses, the same validations of the weights.
    assert_eq!(report.epoch_losses, raw_report.epoch_losses);
    assert_eq!(report.evaluations, raw_report.evaluations);
    let labels: Vec<&str> = report.candidates.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(labels, ["weights", "ema0.9", "ema0.99"]);
    assert_eq!(report.candidates[0].evaluations, vec![(1, 0.5), (2, 0.6)]);
    assert_eq!(report.candidates[1].evaluations, vec![(1, 0.1), (2, 0.7)]);
    assert_eq!(
        (
            report.candidates[2].best_epoch,
            report.candidates[2].best_metric
        ),
        (Some(2), Some(0.65))
    );
    // The 0.9 average validated best, at epoch 2: it is returned, and it is not the weights.
    assert_eq!(report.averaged, Some(0.9));
    assert_eq!(
        (report.best_epoch, report.best_metric),
        (Some(2), Some(0.7))
    );
    let scores = model.score_all(&probe).unwrap();
    assert_eq!(
        scores,
        report.candidates[1].model.score_all(&probe).unwrap()
    );
    assert_eq!(
        raw.score_all(&probe).unwrap(),
        report.candidates[0].model.score_all(&probe).unwrap()
    );
    assert_ne!(scores, raw.score_all(&probe).unwrap());

    // When the weights validate best they are returned, ties included.
    let values = vec![0.5, 0.1, 0.2, 0.6, 0.6, 0.3];
    let (model, report) = train(&averaged, n, seqs, &quiet(), &mut scripted(values)).unwrap();
    assert_eq!(report.averaged, None);
    assert_eq!(
        (report.best_epoch, report.best_metric),
        (Some(2), Some(0.6))
    );
    assert_eq!(
        model.score_all(&probe).unwrap(),
        raw.score_all(&probe).unwrap()
    );

    // Bad decays name the field.
    for decays in [vec![1.0], vec![0.0], vec![f64::NAN], vec![0.9, 0.9]] {
        let bad = SasRecConfig {
            ema_decays: decays.clone(),
            ..plain.clone()
        };
        match train(&bad, n, seqs, &quiet(), &mut |_| Ok(0.0)) {
            Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, "ema_decays"),
            other => panic!("{decays:?}: expected InvalidArgument, got {other:?}"),
        }
    }
}

#[test]
fn weight_averages_resume_from_a_checkpoint_as_if_uninterrupted() {
    let s = slice();
    let n = s.item_ids.len();
    let seqs = train_part(s);
    let seqs = &seqs[..400];
    let config = SasRecConfig {
        epochs: 3,
        eval_every: 1,
        patience: 0,
        ema_decays: vec![0.95],
        ..small_config()
    };
    let probe: Vec<&[u32]> = seqs.iter().take(8).map(Vec::as_slice).collect();
    // A fixed function of the weights, so both runs agree on every validation.
    let mut metric = |m: &SasRec| -> attune_model::Result<f64> {
        let s = m.score_all(&probe)?;
        Ok(f64::from(s[0][1].sin() + s[1][2].cos()))
    };
    let (whole, whole_report) = train(&config, n, seqs, &quiet(), &mut metric).unwrap();

    let dir = temp_dir("ema-resume");
    let options = TrainOptions {
        checkpoint_dir: Some(dir.clone()),
        progress: Progress::Quiet,
        max_epochs_this_run: Some(2),
        init_from: None,
    };
    let (_, first) = train(&config, n, seqs, &options, &mut metric).unwrap();
    assert_eq!(first.epochs_completed, 2);
    let options = TrainOptions {
        max_epochs_this_run: None,
        ..options
    };
    let (resumed, report) = train(&config, n, seqs, &options, &mut metric).unwrap();
    assert_eq!(report.resumed_from, 2);
    assert_eq!(report.epoch_losses, whole_report.epoch_losses);
    for (a, b) in report.candidates.iter().zip(&whole_report.candidates) {
        assert_eq!(a.label, b.label);
        assert_eq!(a.evaluations, b.evaluations);
        assert_eq!(a.best_epoch, b.best_epoch);
        assert_eq!(
            a.model.score_all(&probe).unwrap(),
            b.model.score_all(&probe).unwrap()
        );
    }
    assert_eq!(report.averaged, whole_report.averaged);
    assert_eq!(
        resumed.score_all(&probe).unwrap(),
        whole.score_all(&probe).unwrap()
    );
    // The checkpoint's averages are part of the run: other decays are another run.
    let other = SasRecConfig {
        ema_decays: vec![0.9],
        ..config
    };
    match train(&other, n, seqs, &options, &mut metric) {
        Err(Error::ManifestMismatch { field, .. }) => assert_eq!(field, "config"),
        other => panic!("expected a config mismatch, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).ok();
}
