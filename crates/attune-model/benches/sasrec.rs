//! SASRec speed on the real amazon-games sequences (`../shared/data/amazon-games/sequences.txt`
//! beside the repository; `SASREC_DATA` overrides the path):
//!
//! - `sasrec_train_step/b128_l200_h50`: one forward + backward + Adam step, batch 128 × length
//!   200, hidden 50, 2 blocks, 1 head, dropout 0.2, the paper's BCE with one negative (the shape
//!   `bench/sasrec_torch.py` times in PyTorch; batches are built before the clock, as there).
//!   amazon-games users have ~9 items, so this batch is ~96% padding, which Attune never
//!   computes (packed rows) while the PyTorch script computes the padded layout in full.
//! - `sasrec_train_step/b128_l200_h50_full`: the same step on rows with no padding at all, so
//!   both do the same arithmetic: every user's sequence concatenated in file order and cut into
//!   consecutive windows of 201 real items (200 inputs, 200 targets); batch `b` is windows
//!   `128·b .. 128·b + 128` (`sasrec_torch.py --full-rows` builds the same rows).
//! - `sasrec_forward/serve_len50_items{12k,43k}`: one sequence of 50 scored against every item;
//!   `…43k_cosine` with the cosine output (every item's norm computed per call).
//!
//! - `sasrec_serve/…`: serving one sequence on a DIGINETICA-sized model (43,097 items, hidden
//!   128, 2 blocks, 2 heads, max_len 20, cosine output scale 16, random weights; no data file):
//!   `len{5,20}_candle` is [`SasRec`]'s own `score_all` (the candle path training and `attune
//!   eval` use), `len{5,20}_serving` the frozen [`Serving`] form's `score_all_into`, both over
//!   every item; `len{5,20}_top200_serving` the 200 best of the items `accept` takes (nine in
//!   ten) by [`Serving::top_accepted`]; `len{5,20}_candidates400_{candle,serving}` score 400
//!   candidates; `len{5,20}_top200_candidates400_{uncached,cached}` a request's two calls (the
//!   best 200 accepted, then 400 candidates scored), computed, or read from a [`RankCache`]
//!   entry of the same sequence (a session asked about again with no new event).
//!
//! `cargo bench -p attune-model --bench sasrec` (`-- sasrec_serve` for the serving group
//! alone). Threads: `SASREC_THREADS` (default: all cores).
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use attune_model::sasrec::{RankCache, SasRec, SasRecConfig, SasRecLoss, Serving, Trainer};
use attune_model::scorer::SequenceScorer;
use criterion::{Criterion, criterion_group, criterion_main};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn data_path() -> PathBuf {
    match std::env::var_os("SASREC_DATA") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/amazon-games/sequences.txt"),
    }
}

/// Item sequences per user in file order (the crate's amazon-games loader; ids as in the file).
fn sequences() -> (Vec<Vec<u32>>, usize) {
    let dir = data_path()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let games = attune_model::data::amazon::load_games(&dir).unwrap();
    (games.sequences, games.num_items)
}

fn threads() -> usize {
    std::env::var("SASREC_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// A deterministic permutation (users drawn without replacement, as the PyTorch script does).
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = seed;
    for i in (1..n).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = (state >> 33) as usize % (i + 1);
        order.swap(i, j);
    }
    order
}

/// The benchmark's train-step config: batch 128 × length 200, hidden 50, 2 blocks, BCE.
fn step_config() -> SasRecConfig {
    SasRecConfig {
        max_len: 200,
        hidden: 50,
        blocks: 2,
        heads: 1,
        dropout: 0.2,
        batch: 128,
        loss: SasRecLoss::Bce,
        negatives: 1,
        threads: threads(),
        ..SasRecConfig::default()
    }
}

/// Rows of `len + 1` real consecutive items: every sequence concatenated in file order, cut
/// into windows (the last partial window dropped).
fn full_rows(seqs: &[Vec<u32>], len: usize) -> Vec<Vec<u32>> {
    let stream: Vec<u32> = seqs.iter().flatten().copied().collect();
    stream.chunks_exact(len + 1).map(<[u32]>::to_vec).collect()
}

fn train_step(c: &mut Criterion) {
    let (seqs, num_items) = sequences();
    let config = step_config();
    let mut trainer = Trainer::new(&config, num_items).unwrap();
    let order = shuffled(seqs.len(), 42);
    let batches: Vec<_> = order
        .chunks(config.batch)
        .take(16)
        .map(|users| {
            let batch: Vec<&[u32]> = users.iter().map(|&u| seqs[u].as_slice()).collect();
            trainer.prepare(&batch)
        })
        .collect();
    let mut group = c.benchmark_group("sasrec_train_step");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(15));
    let mut i = 0u64;
    group.bench_function("b128_l200_h50", |b| {
        b.iter(|| {
            i += 1;
            let batch = &batches[i as usize % batches.len()];
            black_box(trainer.step(batch, i).unwrap())
        })
    });
    // No padding: the same step on 128 rows of 200 real positions each.
    let mut trainer = Trainer::new(&config, num_items).unwrap();
    let rows = full_rows(&seqs, config.max_len);
    let full: Vec<_> = rows
        .chunks_exact(config.batch)
        .take(8)
        .map(|rows| {
            let batch: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
            trainer.prepare(&batch)
        })
        .collect();
    assert_eq!(full.len(), 8, "too few items for 8 unpadded batches");
    let mut i = 0u64;
    group.bench_function("b128_l200_h50_full", |b| {
        b.iter(|| {
            i += 1;
            let batch = &full[i as usize % full.len()];
            black_box(trainer.step(batch, i).unwrap())
        })
    });
    group.finish();
}

fn forward(c: &mut Criterion) {
    let (seqs, _) = sequences();
    let history: Vec<u32> = seqs
        .iter()
        .find(|s| s.len() >= 50)
        .map(|s| s[s.len() - 50..].to_vec())
        .unwrap();
    let mut group = c.benchmark_group("sasrec_forward");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (name, items, cosine_scale) in [
        ("serve_len50_items12k", 12_101, 0.0),
        ("serve_len50_items43k", 43_097, 0.0),
        ("serve_len50_items43k_cosine", 43_097, 16.0),
    ] {
        let config = SasRecConfig {
            threads: threads(),
            cosine_scale,
            ..SasRecConfig::default()
        };
        let model = SasRec::new(&config, items).unwrap();
        let seq: Vec<u32> = history
            .iter()
            .map(|&i| 1 + (i - 1) % items as u32)
            .collect();
        group.bench_function(name, |b| {
            b.iter(|| black_box(model.score_all(&[seq.as_slice()]).unwrap()))
        });
    }
    group.finish();
}

/// Serving one sequence, the candle path and the frozen form side by side (same model, same
/// sequences, same run). Each iteration scores the next of two sequences of the same length,
/// so [`Serving`]'s per-thread cache of the last state never answers.
fn serve(c: &mut Criterion) {
    let items = 43_097u32;
    let config = SasRecConfig {
        max_len: 20,
        hidden: 128,
        blocks: 2,
        heads: 2,
        cosine_scale: 16.0,
        threads: threads(),
        ..SasRecConfig::default()
    };
    let model = SasRec::new(&config, items as usize).unwrap();
    let serving: Serving = model.serving().unwrap();
    // Spread-out item indices (a fixed multiplicative walk from `start`).
    let walk = |len: u32, start: u32| -> Vec<u32> {
        (start..start + len)
            .map(|i| 1 + (i.wrapping_mul(2_654_435_761) >> 7) % items)
            .collect()
    };
    let candidates: Vec<u32> = (0..400).map(|i| 1 + (i * 107) % items).collect();
    let mut group = c.benchmark_group("sasrec_serve");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut scores = Vec::new();
    for len in [5, 20] {
        let seqs = [walk(len, 0), walk(len, 1000)];
        let mut turn = 0usize;
        let mut next = || {
            turn += 1;
            seqs[turn % 2].as_slice()
        };
        group.bench_function(format!("len{len}_candle"), |b| {
            b.iter(|| black_box(model.score_all(&[next()]).unwrap()))
        });
        group.bench_function(format!("len{len}_serving"), |b| {
            b.iter(|| {
                serving.score_all_into(next(), &mut scores);
                black_box(scores[1])
            })
        });
        group.bench_function(format!("len{len}_top200_serving"), |b| {
            b.iter(|| black_box(serving.top_accepted(next(), 200, &mut |i| i % 10 != 0)))
        });
        group.bench_function(format!("len{len}_candidates400_candle"), |b| {
            b.iter(|| {
                black_box(
                    model
                        .score_candidates(&[next()], &[candidates.as_slice()])
                        .unwrap(),
                )
            })
        });
        group.bench_function(format!("len{len}_candidates400_serving"), |b| {
            b.iter(|| {
                serving.score_candidates_into(next(), &candidates, &mut scores);
                black_box(scores[0])
            })
        });
        // A request for a sequence seen before (no new event): the cached entry's best 256
        // walked for the best 200 accepted, then the 400 candidates scored from its state.
        let cache = RankCache::new(16, 256);
        group.bench_function(format!("len{len}_top200_candidates400_cached"), |b| {
            b.iter(|| {
                let ranked = cache.get(&serving, next());
                let best = ranked.top_accepted(&serving, 200, &mut |i| i % 10 != 0);
                ranked.score_candidates_into(&serving, &candidates, &mut scores);
                black_box((best, scores[0]))
            })
        });
        group.bench_function(format!("len{len}_top200_candidates400_uncached"), |b| {
            b.iter(|| {
                let seq = next();
                let best = serving.top_accepted(seq, 200, &mut |i| i % 10 != 0);
                serving.score_candidates_into(seq, &candidates, &mut scores);
                black_box((best, scores[0]))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, serve, train_step, forward);
criterion_main!(benches);
