//! Ranking metrics for offline evaluation of next-item models: hit rate, NDCG, MRR and precision
//! at a cut-off, all computed from the rank of the one target item among its candidates.
//!
//! Ranks are 0-based (`0` is the top). [`rank_of_target`] breaks ties pessimistically: every
//! other candidate scoring *equal* to the target counts as ranked above it, so a model that gives
//! every item the same score ranks the target last and scores worst, not best. A NaN score (on
//! either side) also counts against the target.
//!
//! With one relevant item per case, the metrics at cut-off `k` for a target at rank `r` are:
//! hit rate `HR@k = [r < k]`, `NDCG@k = [r < k] / log2(r + 2)`, `MRR = 1 / (r + 1)` (and `MRR@k`,
//! which counts 0 beyond `k`), `P@k = [r < k] / k`. (SR-GNN's "P@20" is the hit rate `HR@20`,
//! not this precision.) A [`RankAccumulator`] sums them over cases and averages.
//!
//! ```
//! use attune_core::metrics::{rank_of_target, RankAccumulator};
//!
//! // The target scores 0.7; one candidate is above it, one ties with it (counted above).
//! let rank = rank_of_target(0.7, [0.9, 0.7, 0.1]);
//! assert_eq!(rank, 2);
//! let mut acc = RankAccumulator::new(&[1, 5]);
//! acc.add_rank(rank);
//! acc.add_rank(0);
//! assert_eq!(acc.hit_rate(1), Some(0.5));
//! assert_eq!(acc.hit_rate(5), Some(1.0));
//! assert!((acc.mrr() - (1.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
//! ```

use std::collections::BTreeMap;

/// The 0-based rank of a target scoring `target` among candidates scoring `others` (the target
/// itself not among them): how many of the others score at least as high. Ties and NaN count
/// against the target (pessimistic).
pub fn rank_of_target(target: f32, others: impl IntoIterator<Item = f32>) -> usize {
    others
        .into_iter()
        .filter(|s| s.partial_cmp(&target) != Some(std::cmp::Ordering::Less))
        .count()
}

/// Whether a target at `rank` is within the top `k`.
pub fn hit_at(rank: usize, k: usize) -> f64 {
    if rank < k { 1.0 } else { 0.0 }
}

/// NDCG at `k` of a single relevant item at `rank` (the ideal DCG is 1).
pub fn ndcg_at(rank: usize, k: usize) -> f64 {
    if rank < k {
        1.0 / ((rank + 2) as f64).log2()
    } else {
        0.0
    }
}

/// Reciprocal rank of a target at `rank`.
pub fn reciprocal_rank(rank: usize) -> f64 {
    1.0 / (rank + 1) as f64
}

/// Reciprocal rank cut at `k`: 0 when the target is not in the top `k`.
pub fn reciprocal_rank_at(rank: usize, k: usize) -> f64 {
    if rank < k { reciprocal_rank(rank) } else { 0.0 }
}

/// Precision at `k` with one relevant item: `1/k` if it is in the top `k`, else 0.
pub fn precision_at(rank: usize, k: usize) -> f64 {
    if k == 0 {
        0.0
    } else {
        hit_at(rank, k) / k as f64
    }
}

/// Sums of the metrics over evaluation cases (users, test prefixes) at a fixed set of cut-offs.
/// Two accumulators over the same cut-offs [`merge`](RankAccumulator::merge), so cases can be
/// split across threads.
#[derive(Debug, Clone, PartialEq)]
pub struct RankAccumulator {
    ks: Vec<usize>,
    cases: u64,
    hits: Vec<f64>,
    ndcg: Vec<f64>,
    rr_at: Vec<f64>,
    rr: f64,
}

impl RankAccumulator {
    /// An empty accumulator for the cut-offs `ks` (sorted and deduplicated; 0 is dropped).
    pub fn new(ks: &[usize]) -> Self {
        let mut ks: Vec<usize> = ks.iter().copied().filter(|&k| k > 0).collect();
        ks.sort_unstable();
        ks.dedup();
        let n = ks.len();
        RankAccumulator {
            ks,
            cases: 0,
            hits: vec![0.0; n],
            ndcg: vec![0.0; n],
            rr_at: vec![0.0; n],
            rr: 0.0,
        }
    }

    /// The cut-offs, ascending.
    pub fn ks(&self) -> &[usize] {
        &self.ks
    }

    /// Adds one case whose target is at 0-based `rank`.
    pub fn add_rank(&mut self, rank: usize) {
        self.cases += 1;
        self.rr += reciprocal_rank(rank);
        for (i, &k) in self.ks.iter().enumerate() {
            if rank < k {
                self.hits[i] += 1.0;
                self.ndcg[i] += ndcg_at(rank, k);
                self.rr_at[i] += reciprocal_rank(rank);
            }
        }
    }

    /// Adds the cases of `other`, which must have the same cut-offs (else it is ignored and
    /// `false` returned).
    pub fn merge(&mut self, other: &RankAccumulator) -> bool {
        if self.ks != other.ks {
            return false;
        }
        self.cases += other.cases;
        self.rr += other.rr;
        for i in 0..self.ks.len() {
            self.hits[i] += other.hits[i];
            self.ndcg[i] += other.ndcg[i];
            self.rr_at[i] += other.rr_at[i];
        }
        true
    }

    /// How many cases were added.
    pub fn cases(&self) -> u64 {
        self.cases
    }

    fn mean(&self, sum: f64) -> f64 {
        if self.cases == 0 {
            0.0
        } else {
            sum / self.cases as f64
        }
    }

    fn at(&self, k: usize, sums: &[f64]) -> Option<f64> {
        let i = self.ks.iter().position(|&x| x == k)?;
        Some(self.mean(sums[i]))
    }

    /// Mean hit rate at `k` (`None` if `k` is not one of the cut-offs; 0 with no cases).
    pub fn hit_rate(&self, k: usize) -> Option<f64> {
        self.at(k, &self.hits)
    }

    /// Mean NDCG at `k`.
    pub fn ndcg(&self, k: usize) -> Option<f64> {
        self.at(k, &self.ndcg)
    }

    /// Mean reciprocal rank cut at `k`.
    pub fn mrr_at(&self, k: usize) -> Option<f64> {
        self.at(k, &self.rr_at)
    }

    /// Mean precision at `k` (one relevant item per case: the hit rate over `k`).
    pub fn precision(&self, k: usize) -> Option<f64> {
        self.hit_rate(k).map(|h| h / k as f64)
    }

    /// Mean reciprocal rank over the full ranking.
    pub fn mrr(&self) -> f64 {
        self.mean(self.rr)
    }

    /// Every metric by name: `hr@k`, `ndcg@k`, `mrr@k`, `precision@k` for each cut-off, and
    /// `mrr`.
    pub fn summary(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (i, &k) in self.ks.iter().enumerate() {
            out.insert(format!("hr@{k}"), self.mean(self.hits[i]));
            out.insert(format!("ndcg@{k}"), self.mean(self.ndcg[i]));
            out.insert(format!("mrr@{k}"), self.mean(self.rr_at[i]));
            out.insert(format!("precision@{k}"), self.mean(self.hits[i]) / k as f64);
        }
        out.insert("mrr".to_owned(), self.mrr());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn ties_count_against_the_target() {
        assert_eq!(rank_of_target(1.0, []), 0);
        assert_eq!(rank_of_target(1.0, [0.5, 0.2]), 0);
        assert_eq!(rank_of_target(1.0, [1.0, 0.2]), 1);
        assert_eq!(rank_of_target(1.0, [2.0, 1.0, 1.0, 0.0]), 3);
        // A constant model ranks the target last among 101 candidates.
        assert_eq!(rank_of_target(0.0, [0.0; 100]), 100);
        // NaN on either side counts against the target.
        assert_eq!(rank_of_target(1.0, [f32::NAN, 0.0]), 1);
        assert_eq!(rank_of_target(f32::NAN, [0.0, -1.0]), 2);
    }

    #[test]
    fn hand_computed_single_cases() {
        // rank 0: everything is 1.
        assert!(close(ndcg_at(0, 10), 1.0));
        assert!(close(reciprocal_rank(0), 1.0));
        // rank 2 (third place): NDCG = 1/log2(4) = 0.5, RR = 1/3.
        assert!(close(ndcg_at(2, 10), 0.5));
        assert!(close(ndcg_at(2, 3), 0.5));
        assert!(close(ndcg_at(2, 2), 0.0));
        assert!(close(reciprocal_rank(2), 1.0 / 3.0));
        assert!(close(reciprocal_rank_at(2, 2), 0.0));
        // rank 6 (seventh): NDCG = 1/log2(8) = 1/3.
        assert!(close(ndcg_at(6, 10), 1.0 / 3.0));
        assert!(close(hit_at(6, 7), 1.0));
        assert!(close(hit_at(7, 7), 0.0));
        assert!(close(precision_at(3, 5), 0.2));
        assert!(close(precision_at(5, 5), 0.0));
        assert!(close(precision_at(0, 0), 0.0));
    }

    #[test]
    fn accumulator_means_hand_computed() {
        // Three users: ranks 0, 2, 30.
        let mut acc = RankAccumulator::new(&[10, 1, 5, 5, 0]);
        assert_eq!(acc.ks(), &[1, 5, 10]);
        for r in [0, 2, 30] {
            acc.add_rank(r);
        }
        assert_eq!(acc.cases(), 3);
        assert!(close(acc.hit_rate(1).unwrap(), 1.0 / 3.0));
        assert!(close(acc.hit_rate(5).unwrap(), 2.0 / 3.0));
        assert!(close(acc.hit_rate(10).unwrap(), 2.0 / 3.0));
        assert!(close(acc.ndcg(10).unwrap(), (1.0 + 0.5) / 3.0));
        assert!(close(acc.ndcg(1).unwrap(), 1.0 / 3.0));
        assert!(close(acc.mrr(), (1.0 + 1.0 / 3.0 + 1.0 / 31.0) / 3.0));
        assert!(close(acc.mrr_at(5).unwrap(), (1.0 + 1.0 / 3.0) / 3.0));
        assert!(close(acc.precision(5).unwrap(), 2.0 / 15.0));
        assert_eq!(acc.hit_rate(20), None);
        let summary = acc.summary();
        assert!(close(summary["hr@5"], 2.0 / 3.0));
        assert!(close(summary["ndcg@10"], 0.5));
        assert!(close(summary["mrr"], acc.mrr()));
        assert_eq!(summary.len(), 3 * 4 + 1);
    }

    #[test]
    fn empty_accumulator_is_zero_and_merge_checks_cutoffs() {
        let acc = RankAccumulator::new(&[10]);
        assert_eq!(acc.hit_rate(10), Some(0.0));
        assert_eq!(acc.mrr(), 0.0);
        let mut a = RankAccumulator::new(&[10]);
        a.add_rank(0);
        let mut b = RankAccumulator::new(&[10]);
        b.add_rank(20);
        assert!(a.merge(&b));
        assert_eq!(a.cases(), 2);
        assert!(close(a.hit_rate(10).unwrap(), 0.5));
        assert!(!a.merge(&RankAccumulator::new(&[5])));
        assert_eq!(a.cases(), 2);
    }

    proptest! {
        #[test]
        fn metrics_are_in_unit_range_and_monotone_in_k(
            ranks in proptest::collection::vec(0usize..200, 1..50),
        ) {
            let ks = [1, 2, 5, 10, 20, 50, 100, 500];
            let mut acc = RankAccumulator::new(&ks);
            for &r in &ranks {
                acc.add_rank(r);
            }
            let mut prev = (0.0, 0.0, 0.0);
            for &k in &ks {
                let (h, n, m) = (
                    acc.hit_rate(k).unwrap(),
                    acc.ndcg(k).unwrap(),
                    acc.mrr_at(k).unwrap(),
                );
                for v in [h, n, m, acc.precision(k).unwrap()] {
                    prop_assert!((0.0..=1.0).contains(&v));
                }
                // NDCG and MRR@k never exceed the hit rate, and all grow with k.
                prop_assert!(n <= h + 1e-12 && m <= n + 1e-12);
                prop_assert!(h >= prev.0 && n >= prev.1 - 1e-12 && m >= prev.2 - 1e-12);
                prev = (h, n, m);
            }
            // Beyond every rank, MRR@k is the full MRR.
            prop_assert!((acc.mrr_at(500).unwrap() - acc.mrr()).abs() < 1e-9);
            prop_assert!((0.0..=1.0).contains(&acc.mrr()));
        }

        #[test]
        fn split_and_merged_equals_whole(
            ranks in proptest::collection::vec(0usize..100, 0..40),
            cut in 0usize..40,
        ) {
            let cut = cut.min(ranks.len());
            let ks = [1, 10];
            let mut whole = RankAccumulator::new(&ks);
            let mut left = RankAccumulator::new(&ks);
            let mut right = RankAccumulator::new(&ks);
            for (i, &r) in ranks.iter().enumerate() {
                whole.add_rank(r);
                if i < cut { left.add_rank(r) } else { right.add_rank(r) }
            }
            prop_assert!(left.merge(&right));
            prop_assert_eq!(left.cases(), whole.cases());
            for (name, v) in whole.summary() {
                prop_assert!((left.summary()[&name] - v).abs() < 1e-9);
            }
        }

        #[test]
        fn rank_counts_the_scores_not_below_the_target(
            target in -10.0f32..10.0,
            others in proptest::collection::vec(-10.0f32..10.0, 0..50),
        ) {
            let rank = rank_of_target(target, others.iter().copied());
            prop_assert!(rank <= others.len());
            let strictly_below = others.iter().filter(|&&s| s < target).count();
            prop_assert_eq!(rank + strictly_below, others.len());
        }
    }
}
