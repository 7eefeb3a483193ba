//! Reciprocal rank fusion of the keyword and vector lists.
//!
//! Each item scores `Σ 1 / (k + rank)` over the lists it appears in (Cormack, Clarke & Büttcher,
//! 2009), so only ranks matter: BM25 and cosine scores, which live on unrelated scales, are carried
//! along for explanation but never added. The fused list keeps each item's rank and score in each
//! list, which the personal reranker and the explanations downstream use.

use std::collections::HashMap;

/// The usual `k`: it damps the head of each list so one list's first place cannot outvote both
/// lists' agreement a few places down.
pub const DEFAULT_K: f32 = 60.0;

/// One item of the fused list.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    /// The item.
    pub item_id: String,
    /// Its 1-based position in the keyword list, if there.
    pub keyword_rank: Option<u32>,
    /// Its score in the keyword list (BM25), if there.
    pub keyword_score: Option<f32>,
    /// Its 1-based position in the vector list, if there.
    pub vector_rank: Option<u32>,
    /// Its score in the vector list (cosine), if there.
    pub vector_score: Option<f32>,
    /// `Σ 1 / (k + rank)` over the lists it is in.
    pub fused: f32,
}

impl Fused {
    /// The better of its ranks.
    pub fn best_rank(&self) -> u32 {
        match (self.keyword_rank, self.vector_rank) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => u32::MAX,
        }
    }
}

/// Fuses the keyword and vector lists (each best first, as `(item id, score)`) by reciprocal rank,
/// and returns the best `limit`.
///
/// An item's rank in a list is its 1-based position there; if an id appears more than once in a
/// list, its first occurrence counts and the others are ignored. The result is sorted by fused
/// score, then by the better best rank, then by item id, so it is deterministic. A `k` that is
/// negative or not finite is replaced by [`DEFAULT_K`].
///
/// ```
/// use attune_search::fusion::{rrf, DEFAULT_K};
///
/// let keyword = vec![("oat-milk".to_string(), 7.1), ("oat-bar".to_string(), 5.0)];
/// let vector = vec![("soy-milk".to_string(), 0.92), ("oat-milk".to_string(), 0.90)];
/// let fused = rrf(&keyword, &vector, DEFAULT_K, 10);
///
/// assert_eq!(fused[0].item_id, "oat-milk"); // in both lists
/// assert_eq!((fused[0].keyword_rank, fused[0].vector_rank), (Some(1), Some(2)));
/// assert_eq!(fused[1].item_id, "soy-milk"); // first in one list beats second in one
/// assert_eq!(fused[2].item_id, "oat-bar");
/// ```
pub fn rrf(
    keyword: &[(String, f32)],
    vector: &[(String, f32)],
    k: f32,
    limit: usize,
) -> Vec<Fused> {
    rrf_weighted(keyword, vector, k, 1.0, limit)
}

/// [`rrf`] with the vector list's votes weighted: an item scores `1 / (k + keyword rank) +
/// vector_weight / (k + vector rank)`. A weight below 1 lets the vector list add candidates and
/// break ties while the keyword list leads (a cheaper, less precise query encoder); a weight
/// that is not finite or not above 0 is replaced by 1.
///
/// ```
/// use attune_search::fusion::{rrf_weighted, DEFAULT_K};
///
/// let keyword = vec![("oat-bar".to_string(), 7.1), ("oat-milk".to_string(), 5.0)];
/// let vector = vec![("oat-milk".to_string(), 0.92), ("soy-milk".to_string(), 0.90)];
/// // At full weight, second in both lists beats first in one.
/// let fused = rrf_weighted(&keyword, &vector, DEFAULT_K, 1.0, 10);
/// assert_eq!(fused[0].item_id, "oat-milk");
/// // At a quarter, the vector list's first place is worth less than keyword's first place.
/// let fused = rrf_weighted(&keyword, &vector, 0.0, 0.25, 10);
/// assert_eq!(fused[0].item_id, "oat-bar");
/// assert_eq!(fused[2].item_id, "soy-milk");
/// ```
pub fn rrf_weighted(
    keyword: &[(String, f32)],
    vector: &[(String, f32)],
    k: f32,
    vector_weight: f32,
    limit: usize,
) -> Vec<Fused> {
    if limit == 0 {
        return Vec::new();
    }
    let k = if k.is_finite() && k >= 0.0 {
        f64::from(k)
    } else {
        f64::from(DEFAULT_K)
    };
    let vector_weight = if vector_weight.is_finite() && vector_weight > 0.0 {
        f64::from(vector_weight)
    } else {
        1.0
    };

    // Sums in f64 (rounded once to f32 at the end), so the order sees one rounding per item.
    let mut entries: Vec<(Fused, f64)> = Vec::with_capacity(keyword.len() + vector.len());
    let mut at: HashMap<&str, usize> = HashMap::with_capacity(keyword.len() + vector.len());
    for (list, items) in [(List::Keyword, keyword), (List::Vector, vector)] {
        for (position, (id, score)) in items.iter().enumerate() {
            let rank = u32::try_from(position + 1).unwrap_or(u32::MAX);
            let slot = *at.entry(id.as_str()).or_insert_with(|| {
                entries.push((
                    Fused {
                        item_id: id.clone(),
                        keyword_rank: None,
                        keyword_score: None,
                        vector_rank: None,
                        vector_score: None,
                        fused: 0.0,
                    },
                    0.0,
                ));
                entries.len() - 1
            });
            let (entry, sum) = &mut entries[slot];
            let (rank_slot, score_slot) = match list {
                List::Keyword => (&mut entry.keyword_rank, &mut entry.keyword_score),
                List::Vector => (&mut entry.vector_rank, &mut entry.vector_score),
            };
            if rank_slot.is_some() {
                continue; // a repeat within this list
            }
            *rank_slot = Some(rank);
            *score_slot = Some(*score);
            let weight = match list {
                List::Keyword => 1.0,
                List::Vector => vector_weight,
            };
            *sum += weight / (k + f64::from(rank));
        }
    }

    let mut fused: Vec<Fused> = entries
        .into_iter()
        .map(|(mut f, sum)| {
            f.fused = sum as f32;
            f
        })
        .collect();
    // Sorted on the reported score, so the order and the scores a caller sees agree.
    fused.sort_by(|a, b| {
        b.fused
            .total_cmp(&a.fused)
            .then_with(|| a.best_rank().cmp(&b.best_rank()))
            .then_with(|| a.item_id.cmp(&b.item_id))
    });
    fused.truncate(limit);
    fused
}

#[derive(Clone, Copy)]
enum List {
    Keyword,
    Vector,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn list(ids: &[&str]) -> Vec<(String, f32)> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| ((*id).to_owned(), 10.0 - i as f32))
            .collect()
    }

    fn order(fused: &[Fused]) -> Vec<&str> {
        fused.iter().map(|f| f.item_id.as_str()).collect()
    }

    #[test]
    fn fuses_by_rank_and_keeps_both_ranks() {
        let fused = rrf(&list(&["a", "b", "c"]), &list(&["c", "d"]), DEFAULT_K, 10);
        // b and d tie (rank 2 in one list each) and go by id.
        assert_eq!(order(&fused), ["c", "a", "b", "d"]);
        let c = &fused[0];
        assert_eq!((c.keyword_rank, c.vector_rank), (Some(3), Some(1)));
        assert_eq!((c.keyword_score, c.vector_score), (Some(8.0), Some(10.0)));
        assert!((c.fused - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-7);
        let b = &fused[2];
        assert_eq!(
            (b.keyword_rank, b.vector_rank, b.vector_score),
            (Some(2), None, None)
        );
    }

    #[test]
    fn ties_go_to_the_better_best_rank_then_the_id() {
        // Equal sums at equal best ranks: by id.
        let fused = rrf(&list(&["b"]), &list(&["a"]), DEFAULT_K, 10);
        assert_eq!(order(&fused), ["a", "b"]);
        // With k = 0, x (ranks 2 and 2) sums to 1, as do y and w (rank 1 in one list): x, whose
        // best rank is 2, comes last.
        let fused = rrf(&list(&["y", "x"]), &list(&["w", "x"]), 0.0, 10);
        assert_eq!(order(&fused), ["w", "y", "x"]);
        assert!(fused.iter().all(|f| f.fused == 1.0));
    }

    #[test]
    fn repeats_within_a_list_count_once() {
        let fused = rrf(&list(&["a", "a", "b"]), &[], DEFAULT_K, 10);
        assert_eq!(order(&fused), ["a", "b"]);
        assert_eq!(fused[0].keyword_rank, Some(1));
        assert_eq!(fused[0].keyword_score, Some(10.0));
        assert!((fused[0].fused - 1.0 / 61.0).abs() < 1e-7);
        assert_eq!(fused[1].keyword_rank, Some(3));
    }

    #[test]
    fn the_vector_weight_scales_the_vector_votes() {
        let fused = rrf_weighted(&list(&["a"]), &list(&["b", "a"]), DEFAULT_K, 0.5, 10);
        assert_eq!(order(&fused), ["a", "b"]);
        assert!((fused[0].fused - (1.0 / 61.0 + 0.5 / 62.0)).abs() < 1e-7);
        assert!((fused[1].fused - 0.5 / 61.0).abs() < 1e-7);
        // A weight that is not finite or not positive counts as 1: the same as `rrf`.
        for w in [f32::NAN, f32::INFINITY, 0.0, -1.0] {
            let fused = rrf_weighted(&list(&["a"]), &list(&["b", "a"]), DEFAULT_K, w, 10);
            assert_eq!(
                fused,
                rrf(&list(&["a"]), &list(&["b", "a"]), DEFAULT_K, 10),
                "w = {w}"
            );
        }
    }

    #[test]
    fn limit_and_bad_k() {
        assert!(rrf(&list(&["a"]), &list(&["b"]), DEFAULT_K, 0).is_empty());
        assert_eq!(rrf(&list(&["a", "b", "c"]), &[], DEFAULT_K, 2).len(), 2);
        for k in [f32::NAN, f32::INFINITY, -61.0] {
            let fused = rrf(&list(&["a"]), &[], k, 5);
            assert!((fused[0].fused - 1.0 / 61.0).abs() < 1e-7, "k = {k}");
        }
    }

    fn ids() -> impl Strategy<Value = Vec<(String, f32)>> {
        // Ids from a small alphabet, so lists overlap and repeat.
        prop::collection::vec(("[a-p]{1,2}", -10.0f32..10.0), 0..40)
    }

    proptest! {
        #[test]
        fn fused_lists_keep_their_invariants(
            keyword in ids(),
            vector in ids(),
            k in 0.0f32..200.0,
            limit in 0usize..100,
        ) {
            let fused = rrf(&keyword, &vector, k, limit);
            prop_assert!(fused.len() <= limit);
            for f in &fused {
                prop_assert!(f.fused.is_finite() && f.fused > 0.0);
                prop_assert!(f.keyword_rank.is_some() || f.vector_rank.is_some());
            }
            for w in fused.windows(2) {
                prop_assert!(w[0].fused >= w[1].fused);
                if w[0].fused == w[1].fused {
                    prop_assert!(
                        (w[0].best_rank(), &w[0].item_id) < (w[1].best_rank(), &w[1].item_id)
                    );
                }
            }
            // Ranks and scores are the first occurrence's.
            for f in &fused {
                if let Some(r) = f.keyword_rank {
                    let first = keyword.iter().position(|(id, _)| *id == f.item_id).unwrap();
                    prop_assert_eq!(r as usize, first + 1);
                    prop_assert_eq!(f.keyword_score, Some(keyword[first].1));
                } else {
                    prop_assert!(keyword.iter().all(|(id, _)| *id != f.item_id));
                }
                if let Some(r) = f.vector_rank {
                    let first = vector.iter().position(|(id, _)| *id == f.item_id).unwrap();
                    prop_assert_eq!(r as usize, first + 1);
                    prop_assert_eq!(f.vector_score, Some(vector[first].1));
                } else {
                    prop_assert!(vector.iter().all(|(id, _)| *id != f.item_id));
                }
            }
        }

        #[test]
        fn every_id_appears_once_when_the_limit_allows(keyword in ids(), vector in ids()) {
            let fused = rrf(&keyword, &vector, DEFAULT_K, usize::MAX);
            let mut got: Vec<&str> = fused.iter().map(|f| f.item_id.as_str()).collect();
            got.sort_unstable();
            let mut want: Vec<&str> =
                keyword.iter().chain(&vector).map(|(id, _)| id.as_str()).collect();
            want.sort_unstable();
            want.dedup();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn both_lists_beat_one_at_equal_ranks(
            rank in 1usize..40,
            other_rank in 1usize..40,
            k in 0.0f32..200.0,
            swap in any::<bool>(),
        ) {
            // "both" is at `rank` in one list and at `other_rank` in the other; "one" is at `rank`
            // in that other list only. Fillers take the remaining places.
            prop_assume!(rank != other_rank);
            let len = rank.max(other_rank);
            let mut first: Vec<(String, f32)> = (0..len).map(|i| (format!("f{i}"), 1.0)).collect();
            let mut second: Vec<(String, f32)> = (0..len).map(|i| (format!("s{i}"), 1.0)).collect();
            first[rank - 1].0 = "both".into();
            second[rank - 1].0 = "one".into();
            second[other_rank - 1].0 = "both".into();
            let (keyword, vector) = if swap { (second, first) } else { (first, second) };
            let fused = rrf(&keyword, &vector, k, usize::MAX);
            let pos = |id: &str| fused.iter().position(|f| f.item_id == id).unwrap();
            prop_assert!(pos("both") < pos("one"));
            prop_assert!(fused[pos("both")].fused > fused[pos("one")].fused);
        }
    }
}
