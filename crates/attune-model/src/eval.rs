//! Offline evaluation protocols (leave-one-out sampled and full ranking, SR-GNN's session
//! protocol) over any [`crate::scorer::SequenceScorer`].
//!
//! The protocols, exactly as `shared/data/README.md` defines them:
//!
//! - [`Protocol::Sampled`]: rank the target among itself and `N` negatives drawn uniformly,
//!   without repetition, from the items the user never interacted with (any of their items,
//!   held-out ones included). `N` = 100 for amazon-games (SASRec paper), 99 for amazon-beauty
//!   (S3-Rec). Each case draws from its own generator seeded by `(seed, case index)`, so the
//!   negatives do not depend on batching or threads.
//! - [`Protocol::Full`]: rank the target among all items, leaving out the items of the input
//!   (the user's earlier items), except the target itself when it is among them.
//! - [`Protocol::SrGnn`]: rank the label of each test prefix among all items, nothing left out;
//!   the report adds P@20 and MRR@20 as percentages (`srgnn_p@20`, `srgnn_mrr@20`), as the
//!   papers print them (their "P@20" is the hit rate at 20).
//!
//! Ranks break ties pessimistically ([`attune_core::metrics::rank_of_target`]). Cases are scored
//! in batches (one `score_candidates` or `score_all` call per batch) and, when the model allows,
//! batches run in parallel with rayon; the metrics are summed in case order, so a report does not
//! depend on the batch size or the number of threads.
//!
//! ```
//! use attune_model::data::{Dataset, split::{self, Split}};
//! use attune_model::eval::{self, EvalOptions, Protocol};
//! use attune_model::popularity::{Popularity, PopularityConfig};
//!
//! let data = Dataset { name: "tiny".into(), sequences: vec![vec![1, 2, 3, 1]; 4],
//!     timestamps: None, num_items: 3, item_ids: vec!["a".into(), "b".into(), "c".into()],
//!     checksum: String::new(), test: vec![] };
//! let model = Popularity::train(&split::training(&data), &PopularityConfig::default())?;
//! let cases = split::cases(&data, Split::Test);
//! let report = eval::evaluate(&model, &cases, data.num_items, &Protocol::Full,
//!     &EvalOptions::default())?;
//! // Item 1 is the most popular in training and the target: rank 0 among items 1 and 3 (item 2 is
//! // in the input and left out; item 1 too, but it is the target).
//! assert_eq!(report.metrics["hr@1"], 1.0);
//! # Ok::<(), attune_model::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use attune_core::metrics::{RankAccumulator, rank_of_target};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;

use crate::data::Dataset;
use crate::data::split::{self, Case, Split};
use crate::scorer::SequenceScorer;
use crate::{Error, Result};

/// The cut-offs every report computes.
pub const CUTOFFS: [usize; 4] = [1, 5, 10, 20];

/// The metrics a report keeps (beyond the SR-GNN percentages), in print order.
pub const REPORTED: [&str; 8] = [
    "hr@1", "hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr",
];

/// How candidates are chosen for each case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The target and `negatives` items drawn uniformly from those the user never touched.
    Sampled {
        /// How many negatives per case.
        negatives: usize,
    },
    /// Every item except the input's (the target always stays).
    Full,
    /// Every item, nothing left out; P@20 and MRR@20 (×100) added.
    SrGnn,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Sampled { negatives } => write!(f, "sampled ({negatives} negatives)"),
            Protocol::Full => f.write_str("full"),
            Protocol::SrGnn => f.write_str("srgnn"),
        }
    }
}

/// Knobs of an evaluation run that do not change the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalOptions {
    /// Seed of the sampled negatives.
    pub seed: u64,
    /// Cases per scorer call.
    pub batch_size: usize,
    /// Score batches in parallel (rayon); turn off for models that parallelize inside.
    pub parallel: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            seed: 42,
            batch_size: 256,
            parallel: true,
        }
    }
}

/// The result of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// The protocol, as [`Protocol`] prints it.
    pub protocol: String,
    /// `valid`, `test`, or `prefixes` for test cases that come with the data.
    pub split: String,
    /// How many cases were ranked.
    pub cases: usize,
    /// The seed of the sampled negatives (`None` for protocols without sampling).
    pub seed: Option<u64>,
    /// Metric name to mean value ([`REPORTED`], plus `srgnn_p@20` and `srgnn_mrr@20` in percent
    /// for [`Protocol::SrGnn`]).
    pub metrics: BTreeMap<String, f64>,
}

impl EvalReport {
    /// The metrics as a two-column text table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "protocol {}, split {}, {} cases\n",
            self.protocol, self.split, self.cases
        );
        for (name, value) in &self.metrics {
            out.push_str(&format!("{name:<14} {value:>9.4}\n"));
        }
        out
    }
}

/// Evaluates a model on `data`: leave-one-out `split` when the data has no test cases of its own,
/// its test prefixes otherwise (`split` is then ignored).
pub fn evaluate_dataset(
    model: &dyn SequenceScorer,
    data: &Dataset,
    split: Split,
    protocol: &Protocol,
    options: &EvalOptions,
) -> Result<EvalReport> {
    let (cases, name) = if data.test.is_empty() {
        (split::cases(data, split), split.as_str())
    } else {
        (split::prefix_cases(&data.test), "prefixes")
    };
    let mut report = evaluate(model, &cases, data.num_items, protocol, options)?;
    report.split = name.to_owned();
    Ok(report)
}

/// Ranks every case's target by `protocol` and averages the metrics.
pub fn evaluate(
    model: &dyn SequenceScorer,
    cases: &[Case<'_>],
    num_items: usize,
    protocol: &Protocol,
    options: &EvalOptions,
) -> Result<EvalReport> {
    if model.num_items() != num_items {
        return Err(Error::InvalidArgument {
            name: "model",
            value: model.name().to_owned(),
            reason: format!(
                "it scores {} items but the data has {num_items}",
                model.num_items()
            ),
        });
    }
    if options.batch_size == 0 {
        return Err(Error::InvalidArgument {
            name: "batch_size",
            value: "0".to_owned(),
            reason: "must be at least 1".to_owned(),
        });
    }
    let batch = |chunk: &[Case<'_>]| ranks(model, chunk, num_items, protocol, options.seed);
    let parts: Vec<Vec<usize>> = if options.parallel {
        cases
            .par_chunks(options.batch_size)
            .map(batch)
            .collect::<Result<_>>()?
    } else {
        cases
            .chunks(options.batch_size)
            .map(batch)
            .collect::<Result<_>>()?
    };
    // Summed in case order, so the floating-point result does not depend on the batching.
    let mut total = RankAccumulator::new(&CUTOFFS);
    for rank in parts.into_iter().flatten() {
        total.add_rank(rank);
    }
    let summary = total.summary();
    let mut metrics: BTreeMap<String, f64> = REPORTED
        .iter()
        .filter_map(|&name| summary.get(name).map(|&v| (name.to_owned(), v)))
        .collect();
    if *protocol == Protocol::SrGnn {
        metrics.insert("srgnn_p@20".to_owned(), 100.0 * summary["hr@20"]);
        metrics.insert("srgnn_mrr@20".to_owned(), 100.0 * summary["mrr@20"]);
    }
    Ok(EvalReport {
        protocol: protocol.to_string(),
        split: String::new(),
        cases: cases.len(),
        seed: matches!(protocol, Protocol::Sampled { .. }).then_some(options.seed),
        metrics,
    })
}

/// The 0-based rank of each case's target under `protocol`, scoring all cases in one call.
pub fn ranks(
    model: &dyn SequenceScorer,
    cases: &[Case<'_>],
    num_items: usize,
    protocol: &Protocol,
    seed: u64,
) -> Result<Vec<usize>> {
    for case in cases {
        if case.target == 0 || case.target as usize > num_items {
            return Err(Error::InvalidArgument {
                name: "target",
                value: case.target.to_string(),
                reason: format!("not an item of 1..={num_items} (case {})", case.user),
            });
        }
    }
    let inputs: Vec<&[u32]> = cases.iter().map(|c| c.input).collect();
    match *protocol {
        Protocol::Sampled { negatives } => {
            let candidates: Vec<Vec<u32>> = cases
                .iter()
                .map(|c| {
                    let mut cands = Vec::with_capacity(negatives + 1);
                    cands.push(c.target);
                    cands.extend(sample_negatives(c, num_items, negatives, seed)?);
                    Ok(cands)
                })
                .collect::<Result<_>>()?;
            let refs: Vec<&[u32]> = candidates.iter().map(Vec::as_slice).collect();
            let scores = model.score_candidates(&inputs, &refs)?;
            Ok(scores
                .iter()
                .map(|s| rank_of_target(s[0], s[1..].iter().copied()))
                .collect())
        }
        Protocol::Full | Protocol::SrGnn => {
            let exclude = *protocol == Protocol::Full;
            let scores = model.score_all(&inputs)?;
            Ok(cases
                .iter()
                .zip(&scores)
                .map(|(c, s)| full_rank(c, s, num_items, exclude))
                .collect())
        }
    }
}

/// The rank of the target among items `1..=num_items` by `scores`, leaving out the input's items
/// (other than the target) when `exclude`. Ties and NaN count against the target.
fn full_rank(case: &Case<'_>, scores: &[f32], num_items: usize, exclude: bool) -> usize {
    let target = case.target as usize;
    let items = scores.get(1..=num_items).unwrap_or(&[]);
    let t = scores.get(target).copied().unwrap_or(f32::NAN);
    let at_least = |s: f32| s >= t || s.is_nan() || t.is_nan();
    // One tight pass over every score (the target counts itself once: taken off below).
    let all = items
        .iter()
        .map(|&s| usize::from(at_least(s)))
        .sum::<usize>();
    let all = all.saturating_sub(usize::from(target <= items.len()));
    if !exclude {
        return all;
    }
    let mut earlier: Vec<u32> = case
        .input
        .iter()
        .copied()
        .filter(|&i| i as usize != target && i >= 1 && i as usize <= num_items)
        .collect();
    earlier.sort_unstable();
    earlier.dedup();
    let left_out = earlier
        .iter()
        .filter(|&&i| at_least(scores.get(i as usize).copied().unwrap_or(f32::NAN)))
        .count();
    all - left_out
}

/// `n` distinct items drawn uniformly from `1..=num_items` minus the case's `interacted` items,
/// from a generator seeded by `(seed, case.user)`: the same case and seed always get the same
/// negatives. Fails when fewer than `n` items are left to draw from.
pub fn sample_negatives(
    case: &Case<'_>,
    num_items: usize,
    n: usize,
    seed: u64,
) -> Result<Vec<u32>> {
    let mut taken: Vec<u32> = case.interacted.to_vec();
    taken.push(case.target);
    taken.sort_unstable();
    taken.dedup();
    let in_range = taken
        .iter()
        .filter(|&&i| i >= 1 && i as usize <= num_items)
        .count();
    let available = num_items - in_range;
    if available < n {
        return Err(Error::InvalidArgument {
            name: "negatives",
            value: n.to_string(),
            reason: format!(
                "case {} leaves only {available} items to draw from",
                case.user
            ),
        });
    }
    let mut rng = StdRng::seed_from_u64(mix(seed, case.user as u64));
    let mut out: Vec<u32> = Vec::with_capacity(n);
    if n * 2 > available {
        // Dense draw: a partial shuffle of the free items.
        let mut free: Vec<u32> = (1..=num_items as u32)
            .filter(|i| taken.binary_search(i).is_err())
            .collect();
        for k in 0..n {
            let j = rng.random_range(k..free.len());
            free.swap(k, j);
        }
        free.truncate(n);
        return Ok(free);
    }
    while out.len() < n {
        let item = rng.random_range(1..=num_items as u32);
        if taken.binary_search(&item).is_err() && !out.contains(&item) {
            out.push(item);
        }
    }
    Ok(out)
}

/// A 64-bit mix of the seed and the case (splitmix64's finalizer), so neighbouring cases get
/// unrelated generators.
fn mix(seed: u64, case: u64) -> u64 {
    let mut z = seed ^ case.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
