//! [`AutomatonQuery`]: one typo or prefix automaton, built once per query word, matched against
//! several fields.
//!
//! [`FuzzyTermQuery`] builds its Levenshtein automaton for every field it is used on; a word
//! searched with typos in five fields would build five identical automata (about 0.3 ms each for a
//! long word with two typos), so here they are built once and shared.

use std::fmt;
use std::sync::Arc;

use tantivy::Term;
use tantivy::query::{AutomatonWeight, DfaWrapper, EnableScoring, FuzzyTermQuery, Query, Weight};
use tantivy::schema::Field;

/// A Levenshtein automaton over the words of a text, shareable between fields.
#[derive(Clone)]
pub(super) struct Automaton {
    dfa: Arc<DfaWrapper>,
    /// What it matches, for `Debug`.
    label: Arc<str>,
}

impl Automaton {
    /// Words within `typos` edits (a transposition is one) of `text`, or, with `prefix`, words
    /// starting within `typos` edits of it. `None` if `typos` is above 2 (never asked here).
    pub(super) fn new(text: &str, typos: u8, prefix: bool) -> Option<Self> {
        // The field does not matter: only the text is compiled.
        let term = Term::from_field_text(Field::from_field_id(0), text);
        let query = if prefix {
            FuzzyTermQuery::new_prefix(term, typos, true)
        } else {
            FuzzyTermQuery::new(term, typos, true)
        };
        let dfa = query.automaton().ok()?;
        Some(Automaton {
            dfa: Arc::new(dfa),
            label: format!("{text}~{typos}{}", if prefix { "*" } else { "" }).into(),
        })
    }

    /// The query matching this automaton in `field`.
    pub(super) fn query(&self, field: Field) -> AutomatonQuery {
        AutomatonQuery {
            field,
            automaton: self.clone(),
        }
    }
}

/// Documents holding, in `field`, a word the automaton accepts. Scores 1 (wrap it to weigh it).
#[derive(Clone)]
pub(super) struct AutomatonQuery {
    field: Field,
    automaton: Automaton,
}

impl fmt::Debug for AutomatonQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Automaton(field={:?}, {})",
            self.field, self.automaton.label
        )
    }
}

impl Query for AutomatonQuery {
    fn weight(&self, _scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(AutomatonWeight::<DfaWrapper>::new(
            self.field,
            Arc::clone(&self.automaton.dfa),
        )))
    }
}
