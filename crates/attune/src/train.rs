//! `attune train`: trains a next-item model on a dataset and writes it to a model directory
//! (`manifest.json` plus the model's data file).
//!
//! On data evaluated by leave-one-out (the Amazon sets, event logs) only the training part of the
//! split is used, so `attune eval` on the same data is honest; DIGINETICA trains on its training
//! sessions. Hyper-parameters come from the model's defaults, then `--config` (YAML, the model's
//! config fields; unknown keys are errors), then the flags.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use attune_model::cooccurrence::{Cooccurrence, CooccurrenceConfig};
use attune_model::data::split::{self, Case, Split};
use attune_model::data::{self, Dataset, Source, events::Grouping};
use attune_model::eval::{self, EvalOptions, Protocol};
use attune_model::popularity::{Popularity, PopularityConfig};
use attune_model::sasrec::{
    self, ModelInfo, Progress, SasRec, SasRecConfig, SasRecLoss, TrainOptions,
};

use crate::evaluate::ProtocolArg;

/// DIGINETICA sessions held out of SASRec's training to validate on (the test prefixes are never
/// used to pick a model).
const DIGINETICA_VALID_SESSIONS: usize = 3_000;

/// The manifest metric that marks a model trained with `--include-held-out`.
pub(crate) const HELD_OUT_KEY: &str = "trained_on_held_out";

/// Arguments of `attune train`.
#[derive(Debug, clap::Args)]
pub(crate) struct TrainArgs {
    /// `amazon-games`, `amazon-beauty`, `diginetica`, `events:<path>` (an NDJSON event log or the
    /// event log directory `events.dir`) or `events:nats://host:port[/STREAM]` (the stream in NATS
    /// JetStream; `ATTUNE_EVENTS` by default).
    #[arg(long)]
    dataset: String,
    /// The folder holding the public datasets (`amazon-games/`, …).
    #[arg(long, default_value = "../shared/data")]
    data_dir: PathBuf,
    /// Group an event log's events by session or by user.
    #[arg(long, value_enum, default_value = "session")]
    group_by: GroupBy,
    /// The model to train.
    #[arg(long, value_enum)]
    model: ModelArg,
    /// A YAML file of the model's hyper-parameters.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Popularity (and the co-occurrence fallback): half-life in positions from the end of each
    /// sequence.
    #[arg(long)]
    half_life_positions: Option<f64>,
    /// Popularity: half-life in seconds, for data with timestamps.
    #[arg(long)]
    half_life_secs: Option<f64>,
    /// Co-occurrence: pairs at most this many positions apart count.
    #[arg(long)]
    window: Option<usize>,
    /// Co-occurrence: how many of the sequence's last items score candidates.
    #[arg(long)]
    history: Option<usize>,
    /// Co-occurrence: weight of the popularity fallback.
    #[arg(long)]
    popularity_weight: Option<f32>,
    /// Train on every interaction, the held-out validation and test items included. Only to
    /// reproduce published baselines that did so (amazon-beauty's "most popular" row counts all
    /// interactions); the manifest records it and `attune eval` warns that its figures leak.
    #[arg(long)]
    include_held_out: bool,
    /// SASRec: training epochs (overrides the config).
    #[arg(long)]
    epochs: Option<usize>,
    /// SASRec: the training loss (overrides the config).
    #[arg(long, value_enum)]
    loss: Option<LossArg>,
    /// SASRec: negatives per position for `bce`, shared per batch for `sampled-softmax` and
    /// `gbce`; `softmax` uses every item (overrides the config).
    #[arg(long)]
    negatives: Option<usize>,
    /// SASRec: worker threads, 0 for one per core (overrides the config).
    #[arg(long)]
    threads: Option<usize>,
    /// SASRec: write a checkpoint here after every epoch, and resume from one found there.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// SASRec: start from the weights of this trained model (a directory `attune train`
    /// wrote, on the same dataset) instead of a seeded initialization, e.g. to fine-tune it at
    /// a lower learning rate. Its shapes must match this run's config.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// SASRec: the protocol of the validation that picks the best epoch (default: sampled with
    /// the dataset's negatives; srgnn on held-out sessions for diginetica).
    #[arg(long, value_enum)]
    valid_protocol: Option<ProtocolArg>,
    /// Seed of the training run (SASRec; overrides the config).
    #[arg(long)]
    seed: Option<u64>,
    /// SASRec: besides `--out` (the candidate that validated best), write every candidate the
    /// run kept (the weights at their best validation, and each weight average of
    /// `ema_decays` at its own) as a model of its own, `<out>-<label>` (`-weights`,
    /// `-ema0.9999`), e.g. to evaluate each.
    #[arg(long)]
    keep_candidates: bool,
    /// The model directory to write (created if missing).
    #[arg(long)]
    out: PathBuf,
}

/// SASRec's training losses (see `SasRecLoss`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum LossArg {
    /// The paper's binary cross-entropy with one sampled negative per position.
    Bce,
    /// Cross-entropy against `--negatives` items shared by the batch.
    SampledSoftmax,
    /// Cross-entropy against every item.
    Softmax,
    /// gBCE over the shared negatives.
    Gbce,
}

impl From<LossArg> for SasRecLoss {
    fn from(arg: LossArg) -> SasRecLoss {
        match arg {
            LossArg::Bce => SasRecLoss::Bce,
            LossArg::SampledSoftmax => SasRecLoss::SampledSoftmax,
            LossArg::Softmax => SasRecLoss::Softmax,
            LossArg::Gbce => SasRecLoss::Gbce,
        }
    }
}

/// How an event log is grouped into sequences.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum GroupBy {
    /// One sequence per session.
    Session,
    /// One sequence per signed-in user.
    User,
}

/// The models `attune train` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ModelArg {
    /// Item popularity with optional decay.
    Popularity,
    /// Item-to-item co-occurrence within a window, popularity as fallback.
    Cooccurrence,
    /// The SASRec transformer.
    Sasrec,
    /// The server's online sources (trending, co-occurrence, session kNN) fed every training
    /// sequence as a session: their snapshots, for the setting `recommend.online_seed`.
    Online,
}

/// The event stream in NATS JetStream named by `nats://host:port[/STREAM]` (the stream
/// `ATTUNE_EVENTS` when none is named), as the lines of an event log.
fn read_nats(url: &str) -> anyhow::Result<String> {
    let rest = url.trim_start_matches("nats://");
    let (server, stream) = match rest.split_once('/') {
        Some((server, stream)) if !stream.is_empty() => (server, stream),
        Some((server, _)) => (server, "ATTUNE_EVENTS"),
        None => (rest, "ATTUNE_EVENTS"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let messages = runtime
        .block_on(attune_store::stream::nats::read_stream(
            &format!("nats://{server}"),
            stream,
        ))
        .with_context(|| format!("reading the event stream {stream} from nats://{server}"))?;
    let mut text = String::new();
    for (_, payload, _) in messages {
        text.push_str(&String::from_utf8_lossy(&payload));
        text.push('\n');
    }
    Ok(text)
}

/// The dataset named on the command line, loaded.
pub(crate) fn load_dataset(
    name: &str,
    data_dir: &Path,
    group_by: GroupBy,
) -> anyhow::Result<(Source, Dataset)> {
    let mut source: Source = name.parse()?;
    if let Source::Events { group, .. } = &mut source {
        *group = match group_by {
            GroupBy::Session => Grouping::Session,
            GroupBy::User => Grouping::User,
        };
    } else if !data_dir.is_dir() {
        bail!(
            "the data directory {} does not exist (pass --data-dir, the folder holding {name}/)",
            data_dir.display()
        );
    }
    let started = Instant::now();
    let dataset = match &source {
        Source::Events { path, group } if path.to_string_lossy().starts_with("nats://") => {
            let text = read_nats(&path.to_string_lossy())?;
            data::events::load_text(path, &text, *group)?
        }
        _ => data::load(&source, data_dir)?,
    };
    eprintln!(
        "loaded {}: {} sequences, {} interactions, {} items ({:.1} s)",
        dataset.name,
        dataset.sequences.len(),
        dataset.interactions(),
        dataset.num_items,
        started.elapsed().as_secs_f64()
    );
    Ok((source, dataset))
}

/// Reads a YAML config file into a model's config type (unknown keys are errors).
fn read_config<T: serde::de::DeserializeOwned + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_norway::from_str(&text)
        .with_context(|| format!("{} is not a valid model config", path.display()))
}

/// Runs `attune train`.
pub(crate) fn run(args: TrainArgs) -> anyhow::Result<()> {
    if args.out.exists() && !args.out.is_dir() {
        bail!("--out {} exists and is not a directory", args.out.display());
    }
    let (source, dataset) = load_dataset(&args.dataset, &args.data_dir, args.group_by)?;
    if args.model == ModelArg::Sasrec {
        if args.include_held_out {
            bail!("--include-held-out is for the baselines only");
        }
        return train_sasrec(&args, &source, &dataset);
    }
    let leaky = args.include_held_out && source.is_leave_one_out();
    let train = if source.is_leave_one_out() && !args.include_held_out {
        split::training(&dataset)
    } else {
        dataset
    };
    let started = Instant::now();
    let flags_popularity = |p: &mut PopularityConfig| {
        if args.half_life_positions.is_some() {
            p.half_life_positions = args.half_life_positions;
        }
        if args.half_life_secs.is_some() {
            p.half_life_secs = args.half_life_secs;
        }
    };
    let summary = match args.model {
        ModelArg::Popularity => {
            let mut config: PopularityConfig = read_config(args.config.as_deref())?;
            flags_popularity(&mut config);
            let mut model = Popularity::train(&train, &config)?;
            let metrics = model.metrics_mut();
            metrics.insert("train_seconds".into(), started.elapsed().as_secs_f64());
            if leaky {
                metrics.insert(HELD_OUT_KEY.into(), 1.0);
            }
            model.save(&args.out)?;
            format!("popularity {config:?}")
        }
        ModelArg::Cooccurrence => {
            let mut config: CooccurrenceConfig = read_config(args.config.as_deref())?;
            flags_popularity(&mut config.popularity);
            if let Some(w) = args.window {
                config.window = w;
            }
            if let Some(h) = args.history {
                config.history = h;
            }
            if let Some(w) = args.popularity_weight {
                config.popularity_weight = w;
            }
            let mut model = Cooccurrence::train(&train, &config)?;
            let metrics = model.metrics_mut();
            metrics.insert("train_seconds".into(), started.elapsed().as_secs_f64());
            if leaky {
                metrics.insert(HELD_OUT_KEY.into(), 1.0);
            }
            model.save(&args.out)?;
            format!("cooccurrence ({} pairs) {config:?}", model.pairs())
        }
        ModelArg::Online => {
            if args.config.is_some() {
                bail!(
                    "--config is for popularity, cooccurrence and sasrec; online uses the server's defaults"
                );
            }
            train_online(&train, &args.out)?
        }
        ModelArg::Sasrec => unreachable!("trained above"),
    };
    eprintln!(
        "trained {summary} on {} training sequences in {:.2} s; wrote {}",
        train.sequences.len(),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// Feeds every training sequence to a fresh set of the server's online sources, as one session
/// each in file order and all at the same moment (now), and writes their snapshots to `out`.
fn train_online(train: &Dataset, out: &Path) -> anyhow::Result<String> {
    let online = attune_engine::OnlineSources::open(&attune_engine::OnlineConfig::default())
        .map_err(|e| anyhow::anyhow!("{}: {}", e.source_name, e.reason))?;
    let ids = train
        .item_ids
        .iter()
        .map(|raw| {
            attune_core::ItemId::new(raw)
                .map_err(|e| anyhow::anyhow!("item id {raw:?} cannot be served: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sessions: Vec<Vec<attune_core::ItemId>> = train
        .sequences
        .iter()
        .map(|s| {
            s.iter()
                .filter_map(|&i| ids.get((i as usize).wrapping_sub(1)).cloned())
                .collect()
        })
        .collect();
    let now = attune_core::Timestamp::from_millis(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("the clock is before 1970")?
                .as_millis(),
        )
        .context("the clock is past 2^63 ms")?,
    );
    online.seed_sessions(sessions.iter().map(Vec::as_slice), now);
    online
        .write_to(out)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.source_name, e.reason))?;
    Ok(format!(
        "online sources ({} sessions) for recommend.online_seed",
        sessions.len()
    ))
}

/// Trains SASRec with validation (early stopping on NDCG@10 of the validation split, or MRR@20
/// for the SR-GNN protocol) and saves it.
fn train_sasrec(args: &TrainArgs, source: &Source, dataset: &Dataset) -> anyhow::Result<()> {
    let mut config: SasRecConfig = read_config(args.config.as_deref())?;
    if let Some(e) = args.epochs {
        config.epochs = e;
    }
    if let Some(l) = args.loss {
        config.loss = l.into();
    }
    if let Some(n) = args.negatives {
        config.negatives = n;
    }
    if let Some(t) = args.threads {
        config.threads = t;
    }
    if let Some(s) = args.seed {
        config.seed = s;
    }
    config.validate()?;

    // Training data and validation cases: leave-one-out's, or held-out sessions.
    let (train, held_out) = if source.is_leave_one_out() {
        (split::training(dataset), Vec::new())
    } else {
        split::hold_out_last(dataset, DIGINETICA_VALID_SESSIONS)
    };
    let cases: Vec<Case<'_>> = if source.is_leave_one_out() {
        split::cases(dataset, Split::Validation)
    } else {
        split::prefix_cases(&held_out)
    };
    let default_protocol = if source.is_leave_one_out() {
        ProtocolArg::Sampled
    } else {
        ProtocolArg::Srgnn
    };
    let protocol = match args.valid_protocol.unwrap_or(default_protocol) {
        ProtocolArg::Sampled => Protocol::Sampled {
            negatives: source.sampled_negatives(),
        },
        ProtocolArg::Full => Protocol::Full,
        ProtocolArg::Srgnn => Protocol::SrGnn,
    };
    let metric = if protocol == Protocol::SrGnn {
        "srgnn_mrr@20"
    } else {
        "ndcg@10"
    };
    let options = EvalOptions {
        seed: config.seed,
        batch_size: 512,
        parallel: true,
    };
    eprintln!(
        "SASRec on {} training sequences; validating on {} cases by {protocol} ({metric}) every {} epochs",
        train.sequences.len(),
        cases.len(),
        config.eval_every
    );
    let started = Instant::now();
    let init_from = match &args.init_from {
        Some(dir) => {
            let (model, manifest) = SasRec::load(dir, None)?;
            if manifest.item_ids != train.item_ids {
                anyhow::bail!(
                    "--init-from {}: the model's items are not this dataset's ({} items there, {} here)",
                    dir.display(),
                    manifest.item_ids.len(),
                    train.item_ids.len()
                );
            }
            Some(model)
        }
        None => None,
    };
    let train_options = TrainOptions {
        checkpoint_dir: args.checkpoint.clone(),
        progress: Progress::Auto,
        max_epochs_this_run: None,
        init_from,
    };
    let num_items = train.num_items;
    let (model, report) = sasrec::train(
        &config,
        num_items,
        &train.sequences,
        &train_options,
        &mut |m: &SasRec| {
            let r = eval::evaluate(m, &cases, num_items, &protocol, &options)?;
            eprintln!(
                "  valid HR@10 {:.4} NDCG@10 {:.4} MRR {:.4}",
                r.metrics["hr@10"], r.metrics["ndcg@10"], r.metrics["mrr"]
            );
            Ok(r.metrics[metric])
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let info = |best_epoch: Option<usize>, best: Option<f64>, decay: Option<f64>| {
        let mut metrics = std::collections::BTreeMap::new();
        if let Some(best) = best {
            metrics.insert(format!("valid.{metric}"), best);
        }
        if let Some(epoch) = best_epoch {
            metrics.insert("best_epoch".to_owned(), epoch as f64);
        }
        if let Some(decay) = decay {
            metrics.insert("ema_decay".to_owned(), decay);
        }
        metrics.insert("epochs".to_owned(), report.epochs_completed as f64);
        metrics.insert(
            "sequences_per_second".to_owned(),
            report.sequences_per_second,
        );
        metrics.insert("train_seconds".to_owned(), seconds);
        metrics.insert("step_seconds".to_owned(), report.step_seconds);
        ModelInfo {
            item_ids: train.item_ids.clone(),
            dataset: train.info(),
            metrics,
        }
    };
    model.save(
        &args.out,
        &info(report.best_epoch, report.best_metric, report.averaged),
    )?;
    let describe = |epoch: Option<usize>, value: Option<f64>| match (epoch, value) {
        (Some(epoch), Some(value)) => format!("best epoch {epoch} ({metric} {value:.4})"),
        _ => "no validation".to_owned(),
    };
    if report.candidates.len() > 1 {
        for c in &report.candidates {
            let mut line = format!("  {}: {}", c.label, describe(c.best_epoch, c.best_metric));
            if args.keep_candidates {
                let mut dir = args.out.clone().into_os_string();
                dir.push(format!("-{}", c.label));
                let dir = PathBuf::from(dir);
                c.model
                    .save(&dir, &info(c.best_epoch, c.best_metric, c.decay))?;
                line.push_str(&format!("; wrote {}", dir.display()));
            }
            eprintln!("{line}");
        }
    }
    let mut best = describe(report.best_epoch, report.best_metric);
    if let Some(decay) = report.averaged {
        best.push_str(&format!(", the weight average of decay {decay}"));
    }
    eprintln!(
        "trained SASRec: {} epochs{}, {best}, {:.0} sequences/s, {seconds:.1} s; wrote {}",
        report.epochs_completed,
        if report.stopped_early {
            " (stopped early)"
        } else {
            ""
        },
        report.sequences_per_second,
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SASRec configs shipped for the issue-4 runs parse and validate.
    #[test]
    fn shipped_model_configs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/models");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("config/models") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let config: attune_model::sasrec::SasRecConfig =
                    read_config(Some(&path)).expect("parses");
                config
                    .validate()
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert_eq!(seen, 3);
    }
}
