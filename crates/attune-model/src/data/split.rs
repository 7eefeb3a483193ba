//! The leave-one-out split of the Amazon protocols (SASRec, S3-Rec), exactly as
//! `shared/data/README.md` defines it: per user, the last item is the test target, the one before
//! it the validation target, the rest is training. The validation input is the training part; the
//! test input is the training part plus the validation item.
//!
//! Users with fewer than [`MIN_LEN`] items have no validation or test item: their whole sequence
//! is training and they are not evaluated (the convention of the SASRec code and its public
//! PyTorch re-run; 112 of amazon-games' 31,013 users, none of amazon-beauty's). Every other user
//! is evaluated: nothing is subsampled.
//!
//! [`hold_out_last`] gives data that comes with its own test cases (DIGINETICA) a validation
//! split for model selection.
//!
//! ```
//! use attune_model::data::split::{self, Split};
//! # use attune_model::data::Dataset;
//! # let data = Dataset { name: "t".into(), sequences: vec![vec![1, 2, 3, 4], vec![5, 6]],
//! #     timestamps: None, num_items: 6, item_ids: vec![], checksum: String::new(), test: vec![] };
//! let train = split::training(&data);
//! assert_eq!(train.sequences, vec![vec![1, 2], vec![5, 6]]);
//! let test = split::cases(&data, Split::Test);
//! assert_eq!((test[0].input, test[0].target), (&[1, 2, 3][..], 4));
//! let valid = split::cases(&data, Split::Validation);
//! assert_eq!((valid[0].input, valid[0].target), (&[1, 2][..], 3));
//! assert_eq!(test.len(), 1); // the second user is too short to evaluate
//! ```

use super::{Dataset, Prefix};

/// The shortest sequence that has a training part, a validation and a test item.
pub const MIN_LEN: usize = 3;

/// Which held-out item to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The second-to-last item, after the training part.
    Validation,
    /// The last item, after the training part and the validation item.
    Test,
}

impl Split {
    /// `valid` or `test`, the prefix of metric names in manifests and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Validation => "valid",
            Split::Test => "test",
        }
    }
}

/// One evaluation case: rank `target` after `input`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case<'a> {
    /// The sequence (user) it comes from, an index into the dataset's sequences or test cases.
    pub user: usize,
    /// The items so far, oldest first.
    pub input: &'a [u32],
    /// The item to rank.
    pub target: u32,
    /// Every item the user interacted with, the held-out ones included (sampled negatives are
    /// drawn from outside it).
    pub interacted: &'a [u32],
}

/// The training part of every sequence (the sequence without its last two items when it has at
/// least [`MIN_LEN`], the whole sequence otherwise), timestamps cut alike. Name, item ids and
/// checksum are the full dataset's: a model trained on it records the data it was split from.
pub fn training(data: &Dataset) -> Dataset {
    let cut = |len: usize| if len >= MIN_LEN { len - 2 } else { len };
    Dataset {
        name: data.name.clone(),
        sequences: data
            .sequences
            .iter()
            .map(|s| s[..cut(s.len())].to_vec())
            .collect(),
        timestamps: data
            .timestamps
            .as_ref()
            .map(|ts| ts.iter().map(|t| t[..cut(t.len())].to_vec()).collect()),
        num_items: data.num_items,
        item_ids: data.item_ids.clone(),
        checksum: data.checksum.clone(),
        test: Vec::new(),
    }
}

/// The cases of `split`: one per user with at least [`MIN_LEN`] items, in dataset order.
pub fn cases(data: &Dataset, split: Split) -> Vec<Case<'_>> {
    let back = match split {
        Split::Validation => 2,
        Split::Test => 1,
    };
    data.sequences
        .iter()
        .enumerate()
        .filter(|(_, s)| s.len() >= MIN_LEN)
        .map(|(user, s)| {
            let at = s.len() - back;
            Case {
                user,
                input: &s[..at],
                target: s[at],
                interacted: s,
            }
        })
        .collect()
}

/// Cases for prefixes that come with the data (DIGINETICA's test set); `interacted` is the input.
pub fn prefix_cases(prefixes: &[Prefix]) -> Vec<Case<'_>> {
    prefixes
        .iter()
        .enumerate()
        .map(|(user, p)| Case {
            user,
            input: &p.input,
            target: p.target,
            interacted: &p.input,
        })
        .collect()
}

/// For data evaluated on test cases of its own (DIGINETICA), a validation split for model
/// selection: the last `n` sequences are taken out of training and every prefix of them
/// ([`Dataset::expanded_prefixes`]) becomes a validation case, so the test cases are never used
/// to pick a model.
pub fn hold_out_last(data: &Dataset, n: usize) -> (Dataset, Vec<Prefix>) {
    let keep = data.sequences.len().saturating_sub(n);
    let mut train = data.head(keep);
    train.test = Vec::new();
    let held = Dataset {
        sequences: data.sequences[keep..].to_vec(),
        timestamps: None,
        test: Vec::new(),
        ..train.clone()
    };
    (train, held.expanded_prefixes())
}
