//! `attune eval`: evaluates a trained model directory on a dataset by one of the protocols of
//! `shared/data/README.md`, prints the metrics as a table and optionally writes them as JSON.
//!
//! The model must have been trained on the same data (same item count and dataset checksum), so
//! that leave-one-out test items were never seen in training.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use attune_model::cooccurrence::Cooccurrence;
use attune_model::data::split::Split;
use attune_model::eval::{self, EvalOptions, EvalReport, Protocol};
use attune_model::manifest::{MANIFEST_FILE, Manifest, ModelKind};
use attune_model::popularity::Popularity;
use attune_model::sasrec::SasRec;
use attune_model::scorer::SequenceScorer;
use serde::Serialize;

use crate::train::{GroupBy, HELD_OUT_KEY, load_dataset};

/// Arguments of `attune eval`.
#[derive(Debug, clap::Args)]
pub(crate) struct EvalArgs {
    /// The model directory (written by `attune train`).
    #[arg(long)]
    model: PathBuf,
    /// `amazon-games`, `amazon-beauty`, `diginetica` or `events:<path>`.
    #[arg(long)]
    dataset: String,
    /// The folder holding the public datasets.
    #[arg(long, default_value = "../shared/data")]
    data_dir: PathBuf,
    /// Group an event log's events by session or by user.
    #[arg(long, value_enum, default_value = "session")]
    group_by: GroupBy,
    /// `sampled` (the target among N sampled negatives), `full` (among all items but the user's
    /// earlier ones) or `srgnn` (among all items; P@20 and MRR@20). Default: srgnn for
    /// diginetica, sampled otherwise.
    #[arg(long, value_enum)]
    protocol: Option<ProtocolArg>,
    /// Sampled negatives per case (default: 100 for amazon-games, 99 for amazon-beauty).
    #[arg(long)]
    negatives: Option<usize>,
    /// Seed of the sampled negatives.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Which leave-one-out target to rank (ignored for data with its own test cases).
    #[arg(long, value_enum, default_value = "test")]
    split: SplitArg,
    /// Cases per scorer call.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The evaluation protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ProtocolArg {
    /// The target among sampled negatives.
    Sampled,
    /// The target among all items, the user's earlier items left out.
    Full,
    /// SR-GNN's: the target among all items.
    Srgnn,
}

/// Which leave-one-out target.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum SplitArg {
    /// The last item.
    Test,
    /// The second-to-last item.
    Valid,
}

/// What `--json` writes.
#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    model: String,
    kind: &'static str,
    dataset: &'a str,
    #[serde(flatten)]
    report: &'a EvalReport,
    /// Whether the model saw the held-out items in training (`--include-held-out`).
    trained_on_held_out: bool,
    seconds: f64,
}

/// The rows of the printed table: metric key and label.
const ROWS: [(&str, &str); 10] = [
    ("hr@1", "HR@1"),
    ("hr@5", "HR@5"),
    ("hr@10", "HR@10"),
    ("hr@20", "HR@20"),
    ("ndcg@5", "NDCG@5"),
    ("ndcg@10", "NDCG@10"),
    ("ndcg@20", "NDCG@20"),
    ("mrr", "MRR"),
    ("srgnn_p@20", "P@20 (%)"),
    ("srgnn_mrr@20", "MRR@20 (%)"),
];

/// Loads any model directory `attune train` writes, by the kind its manifest names.
pub(crate) fn load_model(dir: &Path) -> anyhow::Result<(Manifest, Box<dyn SequenceScorer>)> {
    let path = dir.join(MANIFEST_FILE);
    if !path.is_file() {
        bail!(
            "{} is not a model directory (no {MANIFEST_FILE}; `attune train --out` writes one)",
            dir.display()
        );
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a model manifest", path.display()))?;
    let model: Box<dyn SequenceScorer> = match manifest.kind {
        ModelKind::Popularity => Box::new(Popularity::load(dir)?),
        ModelKind::Cooccurrence => Box::new(Cooccurrence::load(dir)?),
        ModelKind::Sasrec => Box::new(SasRec::load(dir, None)?.0),
    };
    Ok((manifest, model))
}

/// Runs `attune eval`.
pub(crate) fn run(args: EvalArgs) -> anyhow::Result<()> {
    let (manifest, model) = load_model(&args.model)?;
    let (source, dataset) = load_dataset(&args.dataset, &args.data_dir, args.group_by)?;
    if manifest.dataset.name != dataset.name {
        bail!(
            "{} was trained on {}, not on {}",
            args.model.display(),
            manifest.dataset.name,
            dataset.name
        );
    }
    if manifest.dataset.checksum != dataset.checksum {
        bail!(
            "{} was trained on {} (checksum {}), not on this {} (checksum {}): its evaluation would not be honest",
            args.model.display(),
            manifest.dataset.name,
            manifest.dataset.checksum,
            dataset.name,
            dataset.checksum
        );
    }
    if manifest.item_ids.len() != dataset.num_items || manifest.item_ids != dataset.item_ids {
        bail!(
            "{} has {} items but {} has {}: the model was trained on other data ({})",
            args.model.display(),
            manifest.item_ids.len(),
            dataset.name,
            dataset.num_items,
            manifest.dataset.name
        );
    }
    let leaky = manifest.metrics.get(HELD_OUT_KEY) == Some(&1.0);
    if leaky {
        eprintln!(
            "warning: {} was trained with --include-held-out: it has seen the test items, so these \
             figures are not an honest evaluation",
            args.model.display()
        );
    }
    let protocol = match args.protocol.unwrap_or(if source.is_leave_one_out() {
        ProtocolArg::Sampled
    } else {
        ProtocolArg::Srgnn
    }) {
        ProtocolArg::Sampled => Protocol::Sampled {
            negatives: args.negatives.unwrap_or_else(|| source.sampled_negatives()),
        },
        ProtocolArg::Full => Protocol::Full,
        ProtocolArg::Srgnn => Protocol::SrGnn,
    };
    if args.negatives.is_some() && !matches!(protocol, Protocol::Sampled { .. }) {
        bail!("--negatives applies only to --protocol sampled");
    }
    let split = match args.split {
        SplitArg::Test => Split::Test,
        SplitArg::Valid => Split::Validation,
    };
    let options = EvalOptions {
        seed: args.seed,
        batch_size: args.batch_size,
        parallel: true,
    };
    let started = Instant::now();
    let report = eval::evaluate_dataset(model.as_ref(), &dataset, split, &protocol, &options)?;
    let seconds = started.elapsed().as_secs_f64();

    println!(
        "{} ({}) on {}: protocol {}, split {}, {} cases{}, {:.2} s",
        args.model.display(),
        manifest.kind.as_str(),
        dataset.name,
        report.protocol,
        report.split,
        report.cases,
        report
            .seed
            .map(|s| format!(", seed {s}"))
            .unwrap_or_default(),
        seconds
    );
    for (key, label) in ROWS {
        if let Some(v) = report.metrics.get(key) {
            println!("  {label:<11} {v:>8.4}");
        }
    }
    if let Some(path) = &args.json {
        let json = JsonReport {
            model: args.model.display().to_string(),
            kind: manifest.kind.as_str(),
            dataset: &dataset.name,
            report: &report,
            trained_on_held_out: leaky,
            seconds,
        };
        let text = serde_json::to_string_pretty(&json)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
