//! `content`: items whose text and features resemble the anchors'. With the search side's item
//! vectors (the sentence embeddings search already computes), the nearest neighbours of the
//! anchors' weighted mean vector; without them (no embedding model), the items sharing the most
//! weighted features (deepest category, brand, attribute values) with the anchors.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use attune_core::{ItemId, Key};
use attune_search::vector::VectorIndex;
use rustc_hash::FxHashMap;

use super::source::{CandidateSource, Proposal, RecContext, SourceError};
use crate::catalog::{Catalog, CatalogItem};

/// Anchors taken into account, strongest first; each weighs a fifth less than the one before.
const MAX_ANCHORS: usize = 5;

/// What a searched feature (an intent of affinity 1 or more) weighs, against an anchor's 1.
const INTENT_WEIGHT: f32 = 2.0;

/// See the module docs.
pub(crate) struct ContentSource {
    catalog: Arc<dyn Catalog>,
    vectors: ArcSwapOption<VectorIndex>,
}

impl ContentSource {
    pub(crate) fn new(catalog: Arc<dyn Catalog>) -> Self {
        ContentSource {
            catalog,
            vectors: ArcSwapOption::empty(),
        }
    }

    pub(crate) fn set_vectors(&self, index: Arc<VectorIndex>) {
        self.vectors.store(Some(index));
    }

    /// The anchors' weighted mean vector, if any anchor has a vector.
    fn query_vector(&self, index: &VectorIndex, anchors: &[ItemId]) -> Option<Vec<f32>> {
        let mut sum: Option<Vec<f32>> = None;
        for (i, a) in anchors.iter().take(MAX_ANCHORS).enumerate() {
            let Some(v) = index.get(a.as_str()) else {
                continue;
            };
            let w = anchor_weight(i);
            match &mut sum {
                Some(s) => s.iter_mut().zip(&v).for_each(|(s, x)| *s += w * x),
                None => sum = Some(v.iter().map(|x| w * x).collect()),
            }
        }
        sum
    }

    fn by_vectors(
        &self,
        index: &VectorIndex,
        anchors: &[ItemId],
        budget: usize,
        accept: &dyn Fn(&ItemId) -> bool,
    ) -> Result<Option<Vec<Proposal>>, SourceError> {
        let Some(query) = self.query_vector(index, anchors) else {
            return Ok(None);
        };
        let keep = |id: &str| {
            !anchors.iter().any(|a| a.as_str() == id) && ItemId::new(id).is_ok_and(|id| accept(&id))
        };
        let hits = index
            .search(&query, budget, &keep)
            .map_err(|e| SourceError {
                source_name: "content",
                reason: e.to_string(),
            })?;
        Ok(Some(
            hits.into_iter()
                .filter_map(|h| {
                    Some(Proposal {
                        item_id: ItemId::new(&h.item_id).ok()?,
                        score: h.score.max(0.0),
                    })
                })
                .filter(|p| p.score > 0.0)
                .collect(),
        ))
    }

    /// Weighted shared features with the anchors: the deepest category counts most, then the
    /// brand, the upper category levels and each attribute value.
    fn by_features(
        &self,
        anchors: &[ItemId],
        intents: &[(Key, f32)],
        budget: usize,
        accept: &dyn Fn(&ItemId) -> bool,
    ) -> Vec<Proposal> {
        let anchor_ids: Vec<&str> = anchors
            .iter()
            .take(MAX_ANCHORS)
            .map(ItemId::as_str)
            .collect();
        let found = self.catalog.get_many(&anchor_ids);
        let mut weights: FxHashMap<u32, f32> = FxHashMap::default();
        for (i, anchor) in found.iter().enumerate() {
            let Some(anchor) = anchor else { continue };
            for (id, w) in feature_weights(anchor) {
                *weights.entry(id).or_insert(0.0) += w * anchor_weight(i);
            }
        }
        // A searched brand, category or attribute value counts like a feature of a strong
        // anchor (its weight grows with the intent's affinity, up to twice an anchor's).
        self.catalog.visit_ids(&mut |ids| {
            for (key, affinity) in intents {
                if let Some((_, id)) = ids.intent_of(key) {
                    *weights.entry(id).or_insert(0.0) += INTENT_WEIGHT * affinity.clamp(0.0, 1.0);
                }
            }
        });
        if weights.is_empty() {
            return Vec::new();
        }
        let mut scored: Vec<Proposal> = self
            .catalog
            .all()
            .into_iter()
            .filter(|c| !anchors.iter().any(|a| a == &c.item.id))
            .filter_map(|c| {
                let score: f32 = feature_weights(&c)
                    .filter_map(|(id, w)| weights.get(&id).map(|a| a * w))
                    .sum();
                (score > 0.0 && accept(&c.item.id)).then(|| Proposal {
                    item_id: c.item.id.clone(),
                    score,
                })
            })
            .collect();
        sort_best_first(&mut scored);
        scored.truncate(budget);
        scored
    }
}

fn anchor_weight(i: usize) -> f32 {
    1.0 - 0.2 * i as f32
}

/// An item's feature ids with their weights: brand 1, category levels from 0.5 (top) to 2
/// (deepest), attribute values 0.5.
fn feature_weights(c: &CatalogItem) -> impl Iterator<Item = (u32, f32)> + '_ {
    let f = &c.features;
    let brand = usize::from(f.brand.is_some());
    let levels = f.categories.len();
    c.feature_ids.iter().enumerate().map(move |(i, &id)| {
        let w = if i < brand {
            1.0
        } else if i < brand + levels {
            let depth = i - brand + 1;
            if depth == levels { 2.0 } else { 0.5 }
        } else {
            0.5
        };
        (id, w)
    })
}

/// Best first; equal scores by item id, so answers are deterministic.
pub(crate) fn sort_best_first(list: &mut [Proposal]) {
    list.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.item_id.as_str().cmp(b.item_id.as_str()))
    });
}

impl CandidateSource for ContentSource {
    fn name(&self) -> &'static str {
        "content"
    }

    fn candidates(
        &self,
        ctx: &RecContext<'_>,
        budget: usize,
        accept: &dyn Fn(&ItemId) -> bool,
    ) -> Result<Vec<Proposal>, SourceError> {
        if ctx.anchors.is_empty() && ctx.intents.is_empty() {
            return Ok(Vec::new());
        }
        // Vectors know the items' text, not the visitor's intents: with intents to follow, the
        // features decide.
        if ctx.intents.is_empty()
            && let Some(index) = self.vectors.load_full()
            && !index.is_empty()
            && let Some(found) = self.by_vectors(&index, ctx.anchors, budget, accept)?
        {
            return Ok(found);
        }
        Ok(self.by_features(ctx.anchors, ctx.intents, budget, accept))
    }

    fn score(
        &self,
        ctx: &RecContext<'_>,
        items: &[ItemId],
    ) -> Option<Result<Vec<f32>, SourceError>> {
        let index = self.vectors.load_full()?;
        let query = self.query_vector(&index, ctx.anchors)?;
        let norm = query.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        Some(Ok(items
            .iter()
            .map(|id| {
                index.get(id.as_str()).map_or(0.0, |v| {
                    let dot: f32 = v.iter().zip(&query).map(|(a, b)| a * b).sum();
                    (dot / norm).max(0.0)
                })
            })
            .collect()))
    }
}
