//! Trains SASRec on the whole amazon-games set and reports HR@10 / NDCG@10 on the paper's
//! protocol (leave-one-out; the test item ranked among 100 items the user never had, drawn
//! uniformly), validating on the item before last for early stopping. Resumable: rerunning the
//! same command continues from the checkpoint.
//!
//! ```text
//! cargo run --release -p attune-model --example sasrec_games -- [config.json] [checkpoint dir]
//! ```
//! The config (JSON, `SasRecConfig` fields) defaults to the crate's defaults; the checkpoint
//! directory to `/tmp/sasrec-games-ckpt`. `SASREC_DATA` overrides the data file.
//! `SASREC_SAVE=<dir>` also writes the best model as a model directory (`attune eval --model`
//! reads it); rerunning a finished command only restores the best weights, so this exports a
//! finished run in seconds. The model trains only on each user's items before the validation
//! and test ones, so `attune eval` on it is honest (its training set leaves out the 112 users
//! with fewer than three items, which `attune train` keeps whole).
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use attune_model::data::{self, Source};
use attune_model::sasrec::{ModelInfo, Progress, SasRecConfig, TrainOptions, train};
use attune_model::scorer::SequenceScorer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn sequences(path: &std::path::Path) -> (Vec<Vec<u32>>, usize) {
    let dir = path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let games = data::amazon::load_games(&dir).unwrap();
    (games.sequences, games.num_items)
}

/// (HR@10, NDCG@10) of `target` among itself + 100 sampled unseen items.
fn sampled(model: &dyn SequenceScorer, cases: &[(&[u32], u32, &[u32])], seed: u64) -> (f64, f64) {
    let n = model.num_items() as u32;
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut hr, mut ndcg) = (0f64, 0f64);
    for chunk in cases.chunks(512) {
        let hist: Vec<&[u32]> = chunk.iter().map(|c| c.0).collect();
        let cands: Vec<Vec<u32>> = chunk
            .iter()
            .map(|&(_, target, full)| {
                let had: HashSet<u32> = full.iter().copied().collect();
                let mut c = vec![target];
                while c.len() < 101 {
                    let i = rng.random_range(1..=n);
                    if !had.contains(&i) {
                        c.push(i);
                    }
                }
                c
            })
            .collect();
        let refs: Vec<&[u32]> = cands.iter().map(Vec::as_slice).collect();
        for s in model.score_candidates(&hist, &refs).unwrap() {
            let rank = s[1..].iter().filter(|&&x| x >= s[0]).count();
            if rank < 10 {
                hr += 1.0;
                ndcg += 1.0 / (rank as f64 + 2.0).log2();
            }
        }
    }
    (hr / cases.len() as f64, ndcg / cases.len() as f64)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match args.first() {
        Some(p) => {
            SasRecConfig::from_json(&std::fs::read_to_string(p).unwrap(), p.as_ref()).unwrap()
        }
        None => SasRecConfig::default(),
    };
    let ckpt = PathBuf::from(args.get(1).map_or("/tmp/sasrec-games-ckpt", String::as_str));
    let data = std::env::var_os("SASREC_DATA").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/data/amazon-games/sequences.txt")
        },
        PathBuf::from,
    );
    let (seqs, n) = sequences(&data);
    let users: Vec<&Vec<u32>> = seqs.iter().filter(|s| s.len() >= 3).collect();
    let train_seqs: Vec<Vec<u32>> = users.iter().map(|s| s[..s.len() - 2].to_vec()).collect();
    let valid: Vec<(&[u32], u32, &[u32])> = users
        .iter()
        .map(|s| (&s[..s.len() - 2], s[s.len() - 2], s.as_slice()))
        .collect();
    let test: Vec<(&[u32], u32, &[u32])> = users
        .iter()
        .map(|s| (&s[..s.len() - 1], s[s.len() - 1], s.as_slice()))
        .collect();
    eprintln!(
        "{} users, {n} items; config {}",
        users.len(),
        serde_json::to_string(&config).unwrap()
    );
    let started = Instant::now();
    let options = TrainOptions {
        checkpoint_dir: Some(ckpt),
        progress: Progress::Auto,
        max_epochs_this_run: None,
        init_from: None,
    };
    let (model, report) = train(&config, n, &train_seqs, &options, &mut |m| {
        let (hr, ndcg) = sampled(m, &valid, 1);
        eprintln!("  valid HR@10 {hr:.4} NDCG@10 {ndcg:.4}");
        Ok(ndcg)
    })
    .unwrap();
    if let Some(dir) = std::env::var_os("SASREC_SAVE") {
        let dataset = data::load(
            &Source::AmazonGames,
            data.parent().unwrap().parent().unwrap(),
        )
        .unwrap();
        assert_eq!(dataset.num_items, n, "the dataset loader sees other items");
        let mut metrics = std::collections::BTreeMap::new();
        if let (Some(e), Some(m)) = (report.best_epoch, report.best_metric) {
            metrics.insert("best_epoch".to_owned(), e as f64);
            metrics.insert("valid.ndcg@10".to_owned(), m);
        }
        metrics.insert("epochs".to_owned(), report.epochs_completed as f64);
        let info = ModelInfo {
            item_ids: dataset.item_ids.clone(),
            dataset: dataset.info(),
            metrics,
        };
        model.save(std::path::Path::new(&dir), &info).unwrap();
        eprintln!("wrote {}", PathBuf::from(dir).display());
    }
    let (hr, ndcg) = sampled(&model, &test, 2);
    println!(
        "{{\"test_hr@10\": {hr:.4}, \"test_ndcg@10\": {ndcg:.4}, \"best_epoch\": {:?}, \
         \"valid_ndcg@10\": {:?}, \"epochs\": {}, \"seq_per_s\": {:.0}, \"wall_s\": {:.0}}}",
        report.best_epoch,
        report.best_metric,
        report.epochs_completed,
        report.sequences_per_second,
        started.elapsed().as_secs_f64()
    );
}
