//! The `sequential` recommendation source: a trained SASRec model (`attune train --model
//! sasrec`) served from the session's recent items, wired into the engine as a
//! [`CandidateSource`] the way the MiniLM encoder is wired as its `TextEncoder`.
//!
//! The model is loaded once at start against the catalog: a model that can recommend items the
//! catalog lacks is refused (how many, and a few of them), so the server never starts with a
//! mismatched model. Items the catalog loses later are filtered by the pipeline's exclusions.
//!
//! The model is served from its frozen form ([`Serving`], built once at load; the candle model
//! is dropped): plain weights, one sequence at a time, no candle or thread pool per request.
//!
//! A request maps the context's `recent` items (oldest first) to the model's indices, dropping
//! those the model does not know (the model keeps the last `max_len`), and asks the model for
//! the best `budget` accepted items ([`Serving::top_accepted`]: the same items and logits as
//! scoring every item, sorting and filtering, found by bounding every score from an i8 copy of
//! the item table and scoring exactly only the items that can make the list). Scores are
//! returned as strengths `exp(logit − best logit)`: positive, finite, at most 1, and comparable
//! within one list (the model's softmax probabilities divided by the best one's). `score` then
//! reuses the state the network computed for `candidates` (kept per thread for the last
//! sequence), so a request runs the network once.
//!
//! With `recommend.model_cache` above 0 (4,096 by default) the source keeps, per sequence as
//! the model reads it, the state and the best 256 items over the whole catalog
//! ([`RankCache`], oldest evicted first): a session asked about again with no new event (a
//! reload, the `home` and `next` lists of one page, the load benchmark's repeated reads) walks
//! the kept items through the exclusions and scores the other sources' proposals from the kept
//! state, without the network or the scan; when the exclusions reject too many of the kept
//! items the selection runs again from the kept state. The answer is the uncached one, scores
//! bit for bit (tests; `examples/rec_golden.rs --model` with and without the cache). A new
//! event makes a new sequence, so an entry never goes stale, and the model never changes.
//! With the cache, every engagement's new sequence is also computed into it ahead of the
//! request, on a background thread (`sasrec-warm`, fed by `observe` through a bounded queue;
//! the latest sequence per session when several wait; a full queue skips warming, never the
//! ingest), so a session's next request usually finds its answer ready.
//!
//! Cost over DIGINETICA's 43,097 items with the shipped config (hidden 128, 2 blocks, 2 heads,
//! max_len 20, cosine output), release build on 2 cores shared with other jobs (load 3 to 6),
//! `cargo bench -p attune-model --bench sasrec -- sasrec_serve`: the best 200 of a session take
//! about 0.35–0.4 ms at 5 items and 0.45–0.5 ms at 20 (scoring every item alone took 2.1–2.4 ms
//! on the candle path, and the selection 0.25 ms more; scoring every item on the frozen form
//! takes 0.85–0.9 ms, bound by reading the 22 MB f32 table); the network alone is about 25 µs
//! at 5 items and 90 µs at 20; `score` of 400 items after it about 16 µs. On an epoch-8
//! DIGINETICA checkpoint with test prefixes (4 items on average) the best 200 take about 0.4 ms,
//! with 234 items (median; 308 at the 99th percentile) of the 43,097 scored exactly. Memory: the
//! f32 table and its i8 copy, about 28 MB.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use attune_core::{ItemId, SessionId};
use attune_engine::{
    CandidateSource, Observation, Proposal, RecContext, SourceError, is_engagement,
};
use attune_model::sasrec::{RankCache, SasRec, Serving};
use attune_model::scorer::SequenceScorer;
use rustc_hash::FxHashMap;

/// The source's name in rules, reasons and the `sources` parameter.
pub(crate) const NAME: &str = "sequential";

/// The best items kept per cached sequence: the budgets of the shipped recipes (at most 200)
/// with room for the items the exclusions reject; a request that needs more is answered from
/// the kept state by a new selection (the same answer).
const CACHE_DEPTH: usize = 256;

/// Sequences waiting for the warming thread; past this, an event's sequence is not warmed (its
/// first request computes it).
const WARM_QUEUE: usize = 4096;

/// SASRec over the session's recent items. See the module docs.
pub(crate) struct SequentialSource {
    /// The model's serving form (the candle model is dropped once it is built).
    model: Arc<Serving>,
    /// The catalog id of each model index: `ids[i]` is index `i + 1` (0 is padding).
    ids: Vec<ItemId>,
    /// Model index of each known item.
    index: FxHashMap<ItemId, u32>,
    /// Each recent sequence's state and best items, so that asking about a session again
    /// (no new event) runs neither the network nor the selection (`None`: no cache).
    cache: Option<Arc<RankCache>>,
    /// The warming thread's queue: each engagement's new sequence, computed into the cache in
    /// the background (`None`: no cache, or the thread could not start).
    warm: Option<SyncSender<(SessionId, Vec<u32>)>>,
}

/// What loading a model found.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// The model directory.
    pub(crate) dir: PathBuf,
    /// Items the model knows.
    pub(crate) items: usize,
    /// The longest sequence the model reads.
    pub(crate) max_len: usize,
    /// How long loading took.
    pub(crate) took: Duration,
}

impl SequentialSource {
    /// Loads the SASRec model in `dir`, refusing it (with the reason) if any of its items is
    /// not in the catalog (`in_catalog`), or if it is not a SASRec model this build can read.
    /// `cache` sequences keep their best items (`recommend.model_cache`; 0: none).
    pub(crate) fn load(
        dir: &Path,
        in_catalog: &dyn Fn(&str) -> bool,
        cache: usize,
    ) -> Result<(SequentialSource, Loaded), attune_model::Error> {
        let started = Instant::now();
        let (model, manifest) = SasRec::load(dir, Some(in_catalog))?;
        let source = SequentialSource::new(model.serving()?, &manifest.item_ids, cache).map_err(
            |reason| attune_model::Error::ManifestMismatch {
                path: dir.to_owned(),
                field: "item_ids",
                manifest: format!("{} items", manifest.item_ids.len()),
                found: reason,
            },
        )?;
        let loaded = Loaded {
            dir: dir.to_owned(),
            items: source.ids.len(),
            max_len: source.model.config().max_len,
            took: started.elapsed(),
        };
        Ok((source, loaded))
    }

    /// A source over a model and the catalog id of each of its indices (`item_ids[i]` is index
    /// `i + 1`), keeping the best items of `cache` sequences. `Err` names an id that is not a
    /// valid item id, or one listed twice.
    fn new(model: Serving, item_ids: &[String], cache: usize) -> Result<SequentialSource, String> {
        if item_ids.len() != model.num_items() {
            return Err(format!(
                "{} item ids for a model of {} items",
                item_ids.len(),
                model.num_items()
            ));
        }
        let mut ids = Vec::with_capacity(item_ids.len());
        let mut index = FxHashMap::default();
        index.reserve(item_ids.len());
        for (i, raw) in item_ids.iter().enumerate() {
            let id = ItemId::new(raw).map_err(|e| format!("item id {raw:?}: {e}"))?;
            let at = u32::try_from(i + 1).map_err(|_| "too many items".to_owned())?;
            if index.insert(id.clone(), at).is_some() {
                return Err(format!("item id {raw:?} is listed twice"));
            }
            ids.push(id);
        }
        let model = Arc::new(model);
        let cache = (cache > 0).then(|| Arc::new(RankCache::new(cache, CACHE_DEPTH)));
        let warm = cache.as_ref().and_then(|cache| {
            let (tx, rx) = std::sync::mpsc::sync_channel(WARM_QUEUE);
            let (model, cache) = (Arc::clone(&model), Arc::clone(cache));
            match std::thread::Builder::new()
                .name("sasrec-warm".into())
                .spawn(move || warm(&model, &cache, &rx))
            {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::warn!(error = %e, "no SASRec warming thread: sequences computed when asked");
                    None
                }
            }
        });
        Ok(SequentialSource {
            model,
            ids,
            index,
            cache,
            warm,
        })
    }

    /// The model indices of the items the model knows, oldest first.
    fn sequence(&self, recent: &[ItemId]) -> Vec<u32> {
        recent
            .iter()
            .filter_map(|id| self.index.get(id.as_str()).copied())
            .collect()
    }

    /// The catalog id of a model index (`1..=n`).
    fn id(&self, index: u32) -> Option<&ItemId> {
        self.ids.get((index as usize).checked_sub(1)?)
    }
}

/// The warming thread: computes each queued sequence into the cache, the latest of each
/// session only when several wait (a batch of events). Ends when the source is dropped.
fn warm(model: &Serving, cache: &RankCache, rx: &Receiver<(SessionId, Vec<u32>)>) {
    let mut latest: Vec<Vec<u32>> = Vec::new();
    let mut at: FxHashMap<SessionId, usize> = FxHashMap::default();
    while let Ok((session, sequence)) = rx.recv() {
        latest.clear();
        at.clear();
        at.insert(session, 0);
        latest.push(sequence);
        while let Ok((session, sequence)) = rx.try_recv() {
            match at.get(&session) {
                Some(&i) => latest[i] = sequence,
                None => {
                    at.insert(session, latest.len());
                    latest.push(sequence);
                }
            }
        }
        for sequence in &latest {
            cache.get(model, sequence);
        }
    }
}

impl CandidateSource for SequentialSource {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Learns nothing (the model is frozen), but warms the cache: an engagement gives the
    /// session a new sequence, computed in the background so the session's next request finds
    /// it ready.
    fn learns(&self) -> bool {
        self.warm.is_some()
    }

    fn observe(&self, event: &Observation<'_>) {
        let Some(warm) = &self.warm else {
            return;
        };
        if !is_engagement(event.kind) {
            return;
        }
        // The session's engagements up to this one, as the request will read them.
        let sequence: Vec<u32> = event
            .earlier
            .iter()
            .filter(|(kind, _)| is_engagement(*kind))
            .map(|(_, id)| id)
            .chain(std::iter::once(event.item_id))
            .filter_map(|id| self.index.get(id.as_str()).copied())
            .collect();
        if sequence.is_empty() {
            return;
        }
        match warm.try_send((event.session_id.clone(), sequence)) {
            Ok(()) | Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
        }
    }

    fn candidates(
        &self,
        ctx: &RecContext<'_>,
        budget: usize,
        accept: &dyn Fn(&ItemId) -> bool,
    ) -> Result<Vec<Proposal>, SourceError> {
        let sequence = self.sequence(ctx.recent);
        if sequence.is_empty() || budget == 0 {
            return Ok(Vec::new());
        }
        let mut accept = |i| self.id(i).is_some_and(accept);
        let best = match &self.cache {
            Some(cache) => {
                cache
                    .get(&self.model, &sequence)
                    .top_accepted(&self.model, budget, &mut accept)
            }
            None => self.model.top_accepted(&sequence, budget, &mut accept),
        };
        let Some(&(_, top)) = best.first() else {
            return Ok(Vec::new());
        };
        Ok(best
            .into_iter()
            .filter_map(|(i, logit)| {
                Some(Proposal {
                    item_id: self.id(i)?.clone(),
                    score: strength(logit, top),
                })
            })
            .collect())
    }

    /// The strengths of `items`, relative to the best of them (items the model does not know
    /// get 0, and so does every item for a sequence the model knows nothing of). In the
    /// pipeline `items` are every source's proposals, all passing the same exclusions, so the
    /// best of them is this source's first proposal and both calls share one scale.
    fn score(
        &self,
        ctx: &RecContext<'_>,
        items: &[ItemId],
    ) -> Option<Result<Vec<f32>, SourceError>> {
        let sequence = self.sequence(ctx.recent);
        if sequence.is_empty() {
            return Some(Ok(vec![0.0; items.len()]));
        }
        let indices: Vec<u32> = items
            .iter()
            .map(|id| self.index.get(id.as_str()).copied().unwrap_or(0))
            .collect();
        let mut logits = Vec::new();
        match &self.cache {
            Some(cache) => cache.get(&self.model, &sequence).score_candidates_into(
                &self.model,
                &indices,
                &mut logits,
            ),
            None => self
                .model
                .score_candidates_into(&sequence, &indices, &mut logits),
        }
        let known = |i: usize| indices.get(i).is_some_and(|&x| x != 0);
        let top = logits
            .iter()
            .enumerate()
            .filter(|&(i, l)| known(i) && l.is_finite())
            .map(|(_, &l)| l)
            .fold(f32::NEG_INFINITY, f32::max);
        Some(Ok((0..items.len())
            .map(|i| match logits.get(i) {
                Some(&l) if known(i) && l.is_finite() => strength(l, top),
                _ => 0.0,
            })
            .collect()))
    }
}

/// `exp(logit − top)`: in `(0, 1]` for `logit <= top` (an underflow is kept as the smallest
/// positive value, so a proposal never scores 0).
fn strength(logit: f32, top: f32) -> f32 {
    let s = (logit - top).exp();
    if s.is_finite() {
        s.clamp(f32::MIN_POSITIVE, 1.0)
    } else {
        f32::MIN_POSITIVE
    }
}

#[cfg(test)]
mod tests {
    use attune_core::Timestamp;
    use attune_core::rules::Surface;
    use attune_model::sasrec::SasRecConfig;

    use super::*;

    /// A random model over items `item-1..=item-n`, its source (keeping the best items of
    /// `cache` sequences), and the candle model itself.
    fn source(n: usize, cache: usize) -> (SasRec, SequentialSource) {
        let config = SasRecConfig {
            max_len: 6,
            hidden: 16,
            heads: 2,
            cosine_scale: 8.0,
            seed: 4,
            ..SasRecConfig::default()
        };
        let model = SasRec::new(&config, n).expect("model");
        let ids: Vec<String> = (1..=n).map(|i| format!("item-{i}")).collect();
        let source =
            SequentialSource::new(model.serving().expect("serving"), &ids, cache).expect("ids");
        (model, source)
    }

    fn id(s: &str) -> ItemId {
        ItemId::new(s).expect("id")
    }

    fn ctx(recent: &[ItemId]) -> RecContext<'_> {
        RecContext {
            surface: Surface::Next,
            session_id: None,
            recent,
            anchors: &[],
            intents: &[],
            now: Timestamp::from_millis(0),
        }
    }

    #[test]
    fn candidates_are_the_models_own_ranking_of_accepted_items() {
        for cache in [0, 64] {
            candidates_rank_as_the_model(cache);
        }
    }

    fn candidates_rank_as_the_model(cache: usize) {
        let n = 300;
        let (model, source) = source(n, cache);
        // An item the model does not know, in the middle, is left out of the sequence.
        let recent = [id("item-7"), id("unknown"), id("item-42"), id("item-7")];
        let logits = model.score_all(&[&[7, 42, 7]]).expect("scores").remove(0);
        let accept = |i: &ItemId| !i.as_str().ends_with('3');
        let mut order: Vec<usize> = (1..=n)
            .filter(|&i| accept(&id(&format!("item-{i}"))))
            .collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        let got = source
            .candidates(&ctx(&recent), 25, &accept)
            .expect("candidates");
        assert_eq!(got.len(), 25);
        let top = logits[order[0]];
        for (k, (p, &want)) in got.iter().zip(&order).enumerate() {
            let at = p.item_id.as_str()["item-".len()..]
                .parse::<usize>()
                .expect("index");
            // Ties aside (scores equal within float rounding), the same order.
            assert!(
                at == want || (logits[at] - logits[want]).abs() < 1e-4,
                "position {k}: item {at} where the model ranks {want}"
            );
            let expected = (logits[at] - top).exp();
            assert!((p.score - expected).abs() < 1e-4, "position {k}");
        }
        // Nothing for a session the model knows nothing of, or for no budget.
        let unknown = [id("unknown")];
        assert!(
            source
                .candidates(&ctx(&unknown), 5, &accept)
                .expect("empty")
                .is_empty()
        );
        assert!(
            source
                .candidates(&ctx(&recent), 0, &accept)
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn scores_are_strengths_relative_to_the_best_known_item() {
        for cache in [0, 64] {
            scores_are_relative_strengths(cache);
        }
    }

    fn scores_are_relative_strengths(cache: usize) {
        let (model, source) = source(50, cache);
        let recent = [id("item-3"), id("item-9")];
        let items = [id("item-5"), id("unknown"), id("item-12"), id("item-40")];
        let logits = model.score_all(&[&[3, 9]]).expect("scores").remove(0);
        let got = source
            .score(&ctx(&recent), &items)
            .expect("scores")
            .expect("ok");
        let top = [5, 12, 40]
            .map(|i| logits[i])
            .into_iter()
            .fold(f32::MIN, f32::max);
        for (&i, g) in [5usize, 0, 12, 40].iter().zip(&got) {
            if i == 0 {
                assert_eq!(*g, 0.0);
            } else {
                assert!((g - (logits[i] - top).exp()).abs() < 1e-4, "{i}: {g}");
            }
        }
        let none = source
            .score(&ctx(&[id("unknown")]), &items)
            .expect("scores")
            .expect("ok");
        assert_eq!(none, vec![0.0; 4]);
    }

    #[test]
    fn a_cached_source_answers_as_an_uncached_one_bit_for_bit() {
        let n = 500;
        let (_, plain) = source(n, 0);
        // A cache smaller than the sessions asked about, so entries are evicted and computed
        // again; each session asked twice, and its candidates scored as the pipeline does.
        let (_, cached) = source(n, 16);
        let sessions: Vec<Vec<ItemId>> = (0..40)
            .map(|s| {
                (0..1 + s % 9)
                    .map(|k| id(&format!("item-{}", 1 + (s * 37 + k * 11) % n)))
                    .collect()
            })
            .collect();
        let accept = |i: &ItemId| !i.as_str().ends_with('1');
        for round in 0..2 {
            for (s, recent) in sessions.iter().enumerate() {
                let budget = [10, 200, 300][s % 3];
                let want = plain
                    .candidates(&ctx(recent), budget, &accept)
                    .expect("candidates");
                let got = cached
                    .candidates(&ctx(recent), budget, &accept)
                    .expect("candidates");
                assert_eq!(got, want, "round {round}, session {s}");
                let items: Vec<ItemId> = (1..=60).map(|i| id(&format!("item-{}", i * 7))).collect();
                let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
                let want = plain
                    .score(&ctx(recent), &items)
                    .expect("some")
                    .expect("ok");
                let got = cached
                    .score(&ctx(recent), &items)
                    .expect("some")
                    .expect("ok");
                assert_eq!(bits(got), bits(want), "round {round}, session {s}");
            }
        }
    }

    #[test]
    fn an_engagement_warms_the_sessions_next_sequence_in_the_background() {
        use attune_core::EventKind;
        let (_, source) = source(60, 64);
        let cache = source.cache.clone().expect("a cache");
        let session = SessionId::new("s1").expect("session");
        let earlier = [
            (EventKind::View, id("item-4")),
            (EventKind::RemoveFromCart, id("item-9")),
            (EventKind::Click, id("unknown")),
        ];
        let item = id("item-11");
        source.observe(&Observation {
            session_id: &session,
            kind: EventKind::View,
            item_id: &item,
            quantity: 1,
            at: Timestamp::from_millis(0),
            earlier: &earlier,
        });
        // The thread computes [4, 11] (the engagements the model knows) soon.
        let deadline = Instant::now() + Duration::from_secs(20);
        while cache.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(cache.len(), 1);
        // A request reading the same engagements finds it: nothing new is computed.
        let recent = [id("item-4"), id("unknown"), id("item-11")];
        source
            .candidates(&ctx(&recent), 5, &|_| true)
            .expect("candidates");
        assert_eq!(cache.len(), 1);
        // An event that is not an engagement warms nothing.
        source.observe(&Observation {
            session_id: &session,
            kind: EventKind::RemoveFromCart,
            item_id: &item,
            quantity: 1,
            at: Timestamp::from_millis(0),
            earlier: &earlier,
        });
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn strengths_are_positive_finite_and_at_most_one() {
        assert_eq!(strength(3.0, 3.0), 1.0);
        assert!((strength(2.0, 3.0) - (-1.0f32).exp()).abs() < 1e-7);
        assert_eq!(strength(-1e6, 3.0), f32::MIN_POSITIVE);
        assert_eq!(strength(f32::NAN, 3.0), f32::MIN_POSITIVE);
        assert_eq!(strength(4.0, 3.0), 1.0);
    }
}
