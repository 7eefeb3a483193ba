//! Wall time and CPU time of SASRec train steps, for a machine shared with other work: the CPU
//! seconds this process spends per step (`/proc/self/stat`, Linux) barely move when other
//! processes compete for the cores, while wall time does. Same steps as the criterion bench
//! (`benches/sasrec.rs`): batch 128 × length 200, hidden 50, 2 blocks, 1 head, dropout 0.2,
//! BCE with one negative, on the real amazon-games sequences, in two layouts:
//!
//! - `padded`: 128 users per batch (a seeded permutation), ~96% of the 128 × 200 layout
//!   padding, which Attune never computes;
//! - `full`: rows of 201 real consecutive items (every sequence concatenated in file order and
//!   cut into windows), no padding: the arithmetic PyTorch does on the padded layout.
//!
//! ```text
//! cargo run --release -p attune-model --example sasrec_step_time -- [steps] [warmup]
//! ```
//! Threads: `SASREC_THREADS` (default all cores); `SASREC_LAYOUT=padded|full` runs one layout.
//! Prints one JSON line per layout.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;
use std::time::Instant;

use attune_model::sasrec::{SasRecConfig, SasRecLoss, Trainer};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn data_path() -> PathBuf {
    std::env::var_os("SASREC_DATA").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/data/amazon-games/sequences.txt")
        },
        PathBuf::from,
    )
}

fn sequences() -> (Vec<Vec<u32>>, usize) {
    let dir = data_path()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let games = attune_model::data::amazon::load_games(&dir).unwrap();
    (games.sequences, games.num_items)
}

/// The same permutation as the criterion bench.
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

/// This process's user + system CPU seconds (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which ends with the last ')'): utime is the 12th, stime
    // the 13th, in clock ticks (100 per second on Linux).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let steps = args.first().copied().unwrap_or(20);
    let warmup = args.get(1).copied().unwrap_or(3);
    let threads = std::env::var("SASREC_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let only = std::env::var("SASREC_LAYOUT").ok();
    let (seqs, num_items) = sequences();
    let config = SasRecConfig {
        max_len: 200,
        hidden: 50,
        blocks: 2,
        heads: 1,
        dropout: 0.2,
        batch: 128,
        loss: SasRecLoss::Bce,
        negatives: 1,
        threads,
        ..SasRecConfig::default()
    };
    let stream: Vec<u32> = seqs.iter().flatten().copied().collect();
    let full_rows: Vec<Vec<u32>> = stream
        .chunks_exact(config.max_len + 1)
        .map(<[u32]>::to_vec)
        .collect();
    let order = shuffled(seqs.len(), 42);
    let padded_rows: Vec<Vec<u32>> = order.iter().map(|&u| seqs[u].clone()).collect();
    for (layout, rows) in [("padded", &padded_rows), ("full", &full_rows)] {
        if only.as_deref().is_some_and(|o| o != layout) {
            continue;
        }
        let mut trainer = Trainer::new(&config, num_items).unwrap();
        let batches: Vec<_> = rows
            .chunks_exact(config.batch)
            .take(16)
            .map(|rows| {
                let batch: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
                trainer.prepare(&batch)
            })
            .collect();
        for i in 0..warmup {
            trainer.step(&batches[i % batches.len()], i as u64).unwrap();
        }
        let (wall, cpu) = (Instant::now(), cpu_seconds());
        let mut loss = 0f32;
        for i in 0..steps {
            loss = trainer
                .step(&batches[(warmup + i) % batches.len()], (warmup + i) as u64)
                .unwrap();
        }
        let wall = wall.elapsed().as_secs_f64() / steps as f64;
        let cpu = (cpu_seconds() - cpu) / steps as f64;
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "{{\"layout\": \"{layout}\", \"threads\": {}, \"steps\": {steps}, \"wall_s_per_step\": {wall:.4}, \
             \"cpu_s_per_step\": {cpu:.4}, \"loss_last\": {loss:.4}, \"loadavg\": \"{}\"}}",
            config.effective_threads(),
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}
