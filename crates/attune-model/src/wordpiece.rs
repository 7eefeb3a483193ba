//! BERT's uncased WordPiece tokenizer, as Hugging Face's `BertTokenizer` / tokenizer.json run it
//! for all-MiniLM-L6-v2.
//!
//! The steps, in order (each mirrors the `tokenizers` crate, so ids match tokenizer.json exactly):
//!
//! 1. **Special tokens** written in the text (`[CLS]`, `[SEP]`, `[PAD]`, `[UNK]`, `[MASK]`, case
//!    sensitive) are kept whole and map to their ids.
//! 2. **Normalization**: drop NUL, U+FFFD and control characters, turn every whitespace into a
//!    space, put spaces around CJK ideographs (each becomes a word of its own), strip accents
//!    (NFD, then drop nonspacing marks), lowercase.
//! 3. **Pre-tokenization**: split on whitespace, then isolate every punctuation character (any
//!    ASCII non-alphanumeric, and the Unicode `P*` categories).
//! 4. **WordPiece**: greedy longest match first from the vocabulary, later pieces with the `##`
//!    prefix; a word longer than 100 characters, or one that cannot be covered, is one `[UNK]`.
//! 5. `[CLS]` … `[SEP]` around the pieces, truncated so that the whole is at most
//!    [`WordPiece::max_len`] tokens.

use std::collections::HashMap;
use std::path::Path;

use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

use crate::error::{Error, Result, read_to_string};

/// Words longer than this many characters become `[UNK]` (BERT's `max_input_chars_per_word`).
const MAX_WORD_CHARS: usize = 100;
/// The prefix of a piece that continues a word.
const CONTINUATION: &str = "##";
/// The default maximum sequence length, special tokens included.
pub const DEFAULT_MAX_LEN: usize = 128;

/// A BERT uncased WordPiece tokenizer loaded from a `vocab.txt` (one token a line, id = line number).
///
/// ```no_run
/// use attune_model::wordpiece::WordPiece;
///
/// let tokenizer = WordPiece::from_file("models/all-MiniLM-L6-v2/vocab.txt".as_ref())?;
/// let encoding = tokenizer.encode("Crème Brûlée");
/// // [CLS] cr ##eme br ##ule ##e [SEP]
/// assert_eq!(encoding.ids, [101, 13675, 21382, 7987, 9307, 2063, 102]);
/// assert_eq!(encoding.attention_mask, [1; 7]);
/// # Ok::<(), attune_model::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct WordPiece {
    /// Every token, as written; looked up for the first piece of a word.
    words: HashMap<String, u32>,
    /// Tokens with the `##` prefix, keyed without it; looked up for the later pieces of a word.
    continuations: HashMap<String, u32>,
    /// Special tokens recognized verbatim in the input text.
    specials: Vec<(String, u32)>,
    unk: u32,
    cls: u32,
    sep: u32,
    pad: u32,
    max_len: usize,
}

/// The tokens of one text: ids with `[CLS]` first and `[SEP]` last, and the attention mask (all
/// ones: padding is the batcher's business).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids.
    pub ids: Vec<u32>,
    /// 1 for every token (same length as `ids`).
    pub attention_mask: Vec<u32>,
}

impl WordPiece {
    /// Loads the vocabulary from a `vocab.txt`.
    ///
    /// # Errors
    /// [`Error::NotFound`] or [`Error::Read`] for the file; [`Error::MissingToken`] when it lacks
    /// `[UNK]`, `[CLS]`, `[SEP]` or `[PAD]`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = read_to_string(path)?;
        Self::from_tokens(text.lines()).map_err(|token| Error::MissingToken {
            path: path.to_owned(),
            token,
        })
    }

    /// Builds the tokenizer from the tokens in id order; `Err` names a missing special token.
    fn from_tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Result<Self, &'static str> {
        let mut words = HashMap::new();
        let mut continuations = HashMap::new();
        for (id, token) in (0u32..).zip(tokens) {
            // `lines()` already dropped "\n" and "\r\n"; keep any other whitespace, as BERT does.
            if let Some(rest) = token.strip_prefix(CONTINUATION) {
                continuations.insert(rest.to_owned(), id);
            }
            words.insert(token.to_owned(), id);
        }
        let id = |token: &'static str| words.get(token).copied().ok_or(token);
        let (unk, cls, sep, pad) = (id("[UNK]")?, id("[CLS]")?, id("[SEP]")?, id("[PAD]")?);
        let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .into_iter()
            .filter_map(|t| words.get(t).map(|&id| (t.to_owned(), id)))
            .collect();
        Ok(Self {
            words,
            continuations,
            specials,
            unk,
            cls,
            sep,
            pad,
            max_len: DEFAULT_MAX_LEN,
        })
    }

    /// The same tokenizer with another maximum sequence length (special tokens included; at least 2).
    #[must_use]
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len.max(2);
        self
    }

    /// The maximum sequence length, `[CLS]` and `[SEP]` included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.words.len()
    }

    /// The id of `[PAD]`.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// The id of a token, if the vocabulary has it (`##`-prefixed for a continuation piece).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.words.get(token).copied()
    }

    /// Tokenizes one text: `[CLS]`, its pieces (truncated to `max_len - 2`), `[SEP]`.
    pub fn encode(&self, text: &str) -> Encoding {
        let mut ids = Vec::with_capacity(16);
        ids.push(self.cls);
        let limit = self.max_len - 1;
        let mut scratch = Scratch::default();
        let mut rest = text;
        while ids.len() < limit && !rest.is_empty() {
            let (before, special, after) = self.split_special(rest);
            self.encode_segment(before, &mut ids, limit, &mut scratch);
            match special {
                Some(id) if ids.len() < limit => ids.push(id),
                _ => {}
            }
            rest = after;
        }
        ids.truncate(limit);
        ids.push(self.sep);
        let attention_mask = vec![1; ids.len()];
        Encoding {
            ids,
            attention_mask,
        }
    }

    /// Splits `text` at its first special token: the text before, the token's id, the text after.
    fn split_special<'t>(&self, text: &'t str) -> (&'t str, Option<u32>, &'t str) {
        for (at, _) in text.match_indices('[') {
            let tail = &text[at..];
            if let Some((token, id)) = self
                .specials
                .iter()
                .find(|(t, _)| tail.starts_with(t.as_str()))
            {
                return (&text[..at], Some(*id), &tail[token.len()..]);
            }
        }
        (text, None, "")
    }

    /// Normalizes, pre-tokenizes and WordPiece-encodes a text without special tokens, appending
    /// ids until `ids` holds `limit`.
    fn encode_segment(&self, text: &str, ids: &mut Vec<u32>, limit: usize, scratch: &mut Scratch) {
        normalize(text, scratch);
        for word in scratch.normalized.split(char::is_whitespace) {
            let mut start = 0;
            for (at, c) in word.char_indices() {
                if is_punctuation(c) {
                    self.push_word(&word[start..at], ids);
                    self.push_word(&word[at..at + c.len_utf8()], ids);
                    start = at + c.len_utf8();
                }
                if ids.len() >= limit {
                    return;
                }
            }
            self.push_word(&word[start..], ids);
            if ids.len() >= limit {
                return;
            }
        }
    }

    /// Greedy longest-match-first WordPiece of one word; an uncoverable or over-long word is `[UNK]`.
    fn push_word(&self, word: &str, ids: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if word.chars().nth(MAX_WORD_CHARS).is_some() {
            ids.push(self.unk);
            return;
        }
        let first = ids.len();
        let mut start = 0;
        while start < word.len() {
            let vocab = if start == 0 {
                &self.words
            } else {
                &self.continuations
            };
            let mut end = word.len();
            let found = loop {
                if let Some(&id) = vocab.get(&word[start..end]) {
                    break Some(id);
                }
                // Step back one character.
                match word[start..end].char_indices().next_back() {
                    Some((0, _)) | None => break None,
                    Some((i, _)) => end = start + i,
                }
            };
            match found {
                Some(id) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    ids.truncate(first);
                    ids.push(self.unk);
                    return;
                }
            }
        }
    }
}

/// Reusable buffers for normalization.
#[derive(Default)]
struct Scratch {
    cleaned: String,
    normalized: String,
}

/// BERT's normalizer: clean the text, isolate CJK ideographs, strip accents, lowercase. The result
/// is in `scratch.normalized`.
fn normalize(text: &str, scratch: &mut Scratch) {
    let cleaned = &mut scratch.cleaned;
    cleaned.clear();
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || is_control(c) {
            continue;
        }
        if is_whitespace(c) {
            cleaned.push(' ');
        } else if is_chinese_char(c) {
            cleaned.push(' ');
            cleaned.push(c);
            cleaned.push(' ');
        } else {
            cleaned.push(c);
        }
    }
    let normalized = &mut scratch.normalized;
    normalized.clear();
    if cleaned.is_ascii() {
        // Nothing to decompose: skip the NFD pass (the common case for product titles).
        normalized.push_str(cleaned);
        normalized.make_ascii_lowercase();
        return;
    }
    // The `alignments` flavour of NFD also yields each char's length change, which we ignore.
    for (c, _) in cleaned
        .as_str()
        .nfd()
        .filter(|(c, _)| !c.is_mark_nonspacing())
    {
        normalized.extend(c.to_lowercase());
    }
}

/// BERT's whitespace: `\t`, `\n`, `\r` and Unicode whitespace.
fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// BERT's control characters: the Unicode `C*` categories except `\t`, `\n`, `\r`.
fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

/// BERT's punctuation: every ASCII non-alphanumeric printable, and the Unicode `P*` categories.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

/// A CJK Unified Ideograph (BERT's "Chinese character"; not Hangul, Hiragana or Katakana).
fn is_chinese_char(c: char) -> bool {
    matches!(
        u32::from(c),
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: specials first (ids 0..=4), then words and pieces.
    const VOCAB: &[&str] = &[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", // 0..=4
        "cr", "##eme", "br", "##ule", "##e", // 5..=9
        "ben", "&", "jerry", "'", "s", // 10..=14
        "1", ".", "5", "##l", "l", // 15..=19
        "ice", "cream", "豆", "浆", "milk", // 20..=24
        "un", "##aff", "##able", "a", "##a", // 25..=29
        "-", "!", "$", "~", "“", "”", "straße", "łodz", // 30..=37
    ];

    fn tokenizer() -> WordPiece {
        WordPiece::from_tokens(VOCAB.iter().copied()).unwrap()
    }

    /// Token strings of `text` (without [CLS]/[SEP]), through one table-driven helper.
    fn pieces(tok: &WordPiece, text: &str) -> Vec<&'static str> {
        let ids = tok.encode(text).ids;
        assert_eq!(ids.first(), Some(&2), "{text:?} starts with [CLS]");
        assert_eq!(ids.last(), Some(&3), "{text:?} ends with [SEP]");
        ids[1..ids.len() - 1]
            .iter()
            .map(|&id| VOCAB[id as usize])
            .collect()
    }

    #[test]
    fn tokenizes_tricky_strings() {
        let tok = tokenizer();
        let long = "a".repeat(101);
        let max = "a".repeat(100);
        let mut max_pieces = vec!["##a"; 100];
        max_pieces[0] = "a";
        let cases: &[(&str, &[&str])] = &[
            ("Crème Brûlée", &["cr", "##eme", "br", "##ule", "##e"]),
            ("CRÈME  brûlée\n", &["cr", "##eme", "br", "##ule", "##e"]),
            ("cre\u{300}me", &["cr", "##eme"]), // combining grave accent
            ("Ben & Jerry's", &["ben", "&", "jerry", "'", "s"]),
            ("1.5L", &["1", ".", "5", "##l"]),
            ("1.5 L", &["1", ".", "5", "l"]),
            ("unaffable", &["un", "##aff", "##able"]),
            ("unaffablex", &["[UNK]"]), // not coverable: the whole word is [UNK]
            ("xyz milk", &["[UNK]", "milk"]),
            ("☃ milk", &["[UNK]", "milk"]), // a symbol is not punctuation
            ("豆浆milk", &["豆", "浆", "milk"]), // CJK ideographs are words of their own
            ("ice\u{0}cream\u{fffd}", &["[UNK]"]), // NUL and U+FFFD dropped: "icecream"
            ("ice\u{200b}cream", &["[UNK]"]), // zero-width space is a format char: dropped
            ("ice\u{a0}cream\tmilk", &["ice", "cream", "milk"]), // NBSP and tab are whitespace
            ("“ben”-jerry!", &["“", "ben", "”", "-", "jerry", "!"]),
            ("$5~", &["$", "5", "~"]), // ASCII symbols count as punctuation
            ("STRASSE straße", &["[UNK]", "straße"]), // lowercasing does not fold ß
            ("Łódź", &["łodz"]),       // Ł has no decomposition; ó and ź do
            (
                "ice [MASK] cream [mask]",
                &["ice", "[MASK]", "cream", "[UNK]", "[UNK]", "[UNK]"],
            ),
            ("[CLS]milk[SEP]", &["[CLS]", "milk", "[SEP]"]),
            ("[UNK", &["[UNK]", "[UNK]"]),
            ("", &[]),
            ("  \t ", &[]),
            (&max, &max_pieces), // 100 characters is still one word
            (&long, &["[UNK]"]),
        ];
        for (text, want) in cases {
            let want: Vec<&str> = want.to_vec();
            // The "[mask]" and "[UNK" cases: '[' and ']' are not in the toy vocabulary.
            assert_eq!(pieces(&tok, text), want, "{text:?}");
        }
    }

    #[test]
    fn truncates_to_max_len_with_specials() {
        let tok = tokenizer().with_max_len(5);
        assert_eq!(
            tok.encode("ben ben ben ben ben ben").ids,
            [2, 10, 10, 10, 3]
        );
        assert_eq!(tok.encode("unaffable unaffable").ids, [2, 25, 26, 27, 3]);
        assert_eq!(
            tok.encode("ben [MASK] ben [MASK] ben").ids,
            [2, 10, 4, 10, 3]
        );
        assert_eq!(tok.encode("ben").ids, [2, 10, 3]);
        let tiny = tokenizer().with_max_len(0);
        assert_eq!(tiny.max_len(), 2);
        assert_eq!(tiny.encode("ben ben").ids, [2, 3]);
        let enc = tokenizer().encode("ben & jerry");
        assert_eq!(enc.attention_mask, vec![1; enc.ids.len()]);
    }

    #[test]
    fn requires_the_special_tokens() {
        let without_unk = VOCAB.iter().copied().filter(|&t| t != "[UNK]");
        assert_eq!(WordPiece::from_tokens(without_unk).err(), Some("[UNK]"));
        let dir = std::env::temp_dir().join(format!("attune-model-vocab-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vocab.txt");
        std::fs::write(&path, "[PAD]\n[UNK]\n[CLS]\nmilk\n").unwrap();
        let err = WordPiece::from_file(&path).unwrap_err();
        assert!(
            matches!(err, Error::MissingToken { token: "[SEP]", .. }),
            "{err:?}"
        );
        std::fs::write(&path, "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nmilk\r\n").unwrap();
        let tok = WordPiece::from_file(&path).unwrap();
        assert_eq!(
            (tok.vocab_size(), tok.pad_id(), tok.token_id("milk")),
            (5, 0, Some(4))
        );
        assert_eq!(tok.encode("Milk").ids, [2, 4, 3]);
        std::fs::remove_dir_all(&dir).unwrap();
        let err = WordPiece::from_file(&dir.join("vocab.txt")).unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn character_classes_follow_bert() {
        for c in [
            '!', '/', ':', '@', '[', '`', '{', '~', '$', '+', '^', '|', '¿', '—', '…', '«',
        ] {
            assert!(is_punctuation(c), "{c:?} is punctuation");
        }
        for c in ['a', '0', ' ', '™', '©', '€', 'é'] {
            assert!(!is_punctuation(c), "{c:?} is not punctuation");
        }
        assert!(is_whitespace('\u{3000}') && is_whitespace('\t') && !is_whitespace('\u{200b}'));
        assert!(is_control('\u{7}') && is_control('\u{200b}') && !is_control('\n'));
        assert!(is_chinese_char('豆') && !is_chinese_char('ラ') && !is_chinese_char('한'));
    }
}
