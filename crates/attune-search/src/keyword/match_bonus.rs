//! [`MatchBonusQuery`]: a query's score plus a constant for every document it matches.
//!
//! Wrapped around each query term, it makes the number of matched terms weigh like a
//! coordination factor: for "oat milk", an oat drink filed under Milk (both terms) outranks a
//! dog biscuit named "Milk-Bone" (one term, twice, in rare fields). Tantivy has no such query;
//! this is [`tantivy::query::BoostQuery`] with an addition instead of a product.

use std::fmt;

use tantivy::query::{EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::{
    COLLECT_BLOCK_BUFFER_LEN, DocId, DocSet, Score, SeekDangerResult, SegmentReader, Term,
};

/// `query`, scoring `bonus` more on every match.
pub(super) struct MatchBonusQuery {
    query: Box<dyn Query>,
    bonus: Score,
}

impl MatchBonusQuery {
    pub(super) fn new(query: Box<dyn Query>, bonus: Score) -> Self {
        MatchBonusQuery { query, bonus }
    }
}

impl Clone for MatchBonusQuery {
    fn clone(&self) -> Self {
        MatchBonusQuery {
            query: self.query.box_clone(),
            bonus: self.bonus,
        }
    }
}

impl fmt::Debug for MatchBonusQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MatchBonus(query={:?}, bonus={})",
            self.query, self.bonus
        )
    }
}

impl Query for MatchBonusQuery {
    fn weight(&self, enable_scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        let weight = self.query.weight(enable_scoring)?;
        Ok(if enable_scoring.is_scoring_enabled() {
            Box::new(MatchBonusWeight {
                weight,
                bonus: self.bonus,
            })
        } else {
            weight
        })
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a Term, bool)) {
        self.query.query_terms(visitor);
    }
}

struct MatchBonusWeight {
    weight: Box<dyn Weight>,
    bonus: Score,
}

impl Weight for MatchBonusWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(Box::new(MatchBonusScorer {
            scorer: self.weight.scorer(reader, boost)?,
            bonus: self.bonus * boost,
        }))
    }

    fn scorer_danger(
        &self,
        reader: &SegmentReader,
        target: DocId,
        boost: Score,
    ) -> tantivy::Result<(SeekDangerResult, Box<dyn Scorer>)> {
        let (found, scorer) = self.weight.scorer_danger(reader, target, boost)?;
        Ok((
            found,
            Box::new(MatchBonusScorer {
                scorer,
                bonus: self.bonus * boost,
            }),
        ))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let inner = self.weight.explain(reader, doc)?;
        let mut explanation = Explanation::new_with_string(
            format!("MatchBonus +{} to ...", self.bonus),
            inner.value() + self.bonus,
        );
        explanation.add_detail(inner);
        Ok(explanation)
    }

    fn count(&self, reader: &SegmentReader) -> tantivy::Result<u32> {
        self.weight.count(reader)
    }
}

struct MatchBonusScorer {
    scorer: Box<dyn Scorer>,
    bonus: Score,
}

impl DocSet for MatchBonusScorer {
    fn advance(&mut self) -> DocId {
        self.scorer.advance()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        self.scorer.seek(target)
    }

    fn seek_danger(&mut self, target: DocId) -> SeekDangerResult {
        self.scorer.seek_danger(target)
    }

    fn fill_buffer(&mut self, buffer: &mut [DocId; COLLECT_BLOCK_BUFFER_LEN]) -> usize {
        self.scorer.fill_buffer(buffer)
    }

    fn doc(&self) -> DocId {
        self.scorer.doc()
    }

    fn size_hint(&self) -> u32 {
        self.scorer.size_hint()
    }

    fn cost(&self) -> u64 {
        self.scorer.cost()
    }
}

impl Scorer for MatchBonusScorer {
    fn score(&mut self) -> Score {
        self.scorer.score() + self.bonus
    }
}
