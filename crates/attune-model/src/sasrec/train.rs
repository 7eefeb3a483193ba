//! Training: seeded epochs over the training sequences, Adam, validation every `eval_every`
//! epochs through the caller's closure, early stopping on it with the best weights kept, and a
//! checkpoint after every epoch from which a killed run resumes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::adam::{Adam, NO_SLOT};
use super::average::Ema;
use super::checkpoint::{self, TrainState};
use super::config::{SasRecConfig, SasRecLoss};
use super::model::{Batch, SasRec, backend};
use super::ops::{self, RowLoss, SharedKind, SharedLoss};
use crate::{Error, Result};

/// How a training run reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// A progress bar (loss, sequences/s) when stderr is a terminal, one line per epoch on
    /// stderr otherwise.
    #[default]
    Auto,
    /// Nothing on stderr (epochs are still logged through `tracing`).
    Quiet,
}

/// Options of a training run that are not hyper-parameters.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Where to write a checkpoint after every epoch, and to resume from if one is there.
    pub checkpoint_dir: Option<PathBuf>,
    /// Progress reporting.
    pub progress: Progress,
    /// Stop (as if killed) after this many epochs in this call; the checkpoint lets a later
    /// call continue. `None`: run to the end.
    pub max_epochs_this_run: Option<usize>,
    /// Start from these weights instead of a seeded initialization (fine-tuning a trained
    /// model, e.g. at a lower learning rate): same shapes required. A checkpoint to resume
    /// from takes precedence, since it continues the run that started from them.
    pub init_from: Option<SasRec>,
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Mean training loss of each epoch so far (including epochs run before a resume).
    pub epoch_losses: Vec<f64>,
    /// `(epoch, metric)` of every validation of the weights, epochs counted from 1.
    pub evaluations: Vec<(usize, f64)>,
    /// The epoch whose weights (or average) the returned model has (`None`: never evaluated,
    /// last weights).
    pub best_epoch: Option<usize>,
    /// Its validation metric.
    pub best_metric: Option<f64>,
    /// The decay of the weight average the returned model is (`None`: the weights themselves).
    pub averaged: Option<f64>,
    /// Each candidate the run kept, the returned one among them: the weights at their best
    /// validation, then each weight average at its own (see [`SasRecConfig::ema_decays`]).
    pub candidates: Vec<Candidate>,
    /// The epoch a checkpoint resumed from (0: started fresh).
    pub resumed_from: usize,
    /// Epochs completed in total.
    pub epochs_completed: usize,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Training sequences per second over the whole run, every resumed part included (steps
    /// only, evaluation excluded).
    pub sequences_per_second: f64,
    /// Seconds spent in training steps over the whole run, every resumed part included.
    pub step_seconds: f64,
}

/// A model a run kept, with its validation.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// `weights`, or the weight average's label (`ema0.9999`).
    pub label: String,
    /// The decay of the weight average (`None`: the weights themselves).
    pub decay: Option<f64>,
    /// `(epoch, metric)` of every validation of these weights.
    pub evaluations: Vec<(usize, f64)>,
    /// The epoch of its best validation (`None`: never evaluated).
    pub best_epoch: Option<usize>,
    /// That validation's metric.
    pub best_metric: Option<f64>,
    /// The weights at that validation (the last ones if never evaluated).
    pub model: SasRec,
}

/// A training example set: each sequence of at least two items gives one row per step.
struct Examples<'a> {
    sequences: Vec<&'a [u32]>,
}

/// One step's inputs.
pub(crate) struct StepInput {
    pub(crate) batch: Batch,
    pub(crate) targets: Arc<[u32]>,
    pub(crate) negatives: Arc<[u32]>,
}

/// Builds a step's input from sequences: inputs are each sequence but its last item, targets
/// each but its first, both cut to the last `max_len` (packed: padding is never materialized);
/// negatives per the loss. Items above `num_items` are dropped first.
pub(crate) fn make_step(
    config: &SasRecConfig,
    num_items: usize,
    sequences: &[&[u32]],
    rng: &mut StdRng,
) -> StepInput {
    let len = config.max_len;
    let n = u32::try_from(num_items).unwrap_or(u32::MAX);
    let known: Vec<Vec<u32>> = sequences
        .iter()
        .map(|s| s.iter().copied().filter(|&i| i != 0 && i <= n).collect())
        .collect();
    let inputs: Vec<&[u32]> = known
        .iter()
        .map(|s| {
            let m = s.len();
            if m < 2 {
                &s[..0]
            } else {
                &s[(m - 1).saturating_sub(len)..m - 1]
            }
        })
        .collect();
    let batch = Batch::new(&inputs, len);
    let mut targets = Vec::with_capacity(batch.rows());
    for (s, input) in known.iter().zip(&inputs) {
        targets.extend_from_slice(&s[s.len() - input.len()..]);
    }
    let per_row = config.loss == SasRecLoss::Bce;
    let mut negatives = Vec::with_capacity(if per_row {
        targets.len() * config.negatives
    } else if config.loss == SasRecLoss::Softmax {
        num_items
    } else {
        config.negatives
    });
    if per_row {
        let mut seen: Vec<u32> = Vec::new();
        for (s, input) in known.iter().zip(&inputs) {
            seen.clear();
            seen.extend_from_slice(s);
            seen.sort_unstable();
            for _ in 0..input.len() * config.negatives {
                let mut neg = rng.random_range(1..=n);
                for _ in 0..100 {
                    if seen.binary_search(&neg).is_err() {
                        break;
                    }
                    neg = rng.random_range(1..=n);
                }
                negatives.push(neg);
            }
        }
    } else if config.loss == SasRecLoss::Softmax {
        // Every item but the padding row.
        negatives.extend(1..=n);
    } else {
        negatives.extend((0..config.negatives).map(|_| rng.random_range(1..=n)));
    }
    StepInput {
        batch,
        targets: targets.into(),
        negatives: negatives.into(),
    }
}

/// The loss of one step's input, as a graph reaching the weights `w`.
pub(crate) fn loss_graph(
    model: &SasRec,
    w: &[Tensor],
    input: &StepInput,
    dropout_seed: Option<u64>,
) -> candle_core::Result<Tensor> {
    let c = &model.config;
    let h = model.encode(w, &input.batch, dropout_seed)?;
    // The output side: the states and the item table as they are, or both row-normalized with
    // the states scaled (cosine output; the input side keeps the raw embeddings).
    let (h, table) = if c.cosine_scale > 0.0 {
        ((unit_rows(&h)? * c.cosine_scale)?, unit_rows(&w[0])?)
    } else {
        (h, w[0].clone())
    };
    match c.loss {
        SasRecLoss::Bce => h.apply_op2(
            &table,
            RowLoss::new(input.targets.clone(), input.negatives.clone(), c.negatives),
        ),
        SasRecLoss::SampledSoftmax | SasRecLoss::Softmax | SasRecLoss::Gbce => {
            // (`w[0]` may be a step's compact table, whose rows are in another order.)
            let ids = Tensor::from_slice(&input.negatives, input.negatives.len(), &Device::Cpu)?;
            let neg_emb = table.index_select(&ids, 0)?;
            let logits = h.matmul(&neg_emb.t()?)?;
            let kind = match c.loss {
                SasRecLoss::Gbce => SharedKind::Gbce(gbce_beta(c, model.num_items)),
                _ => SharedKind::Softmax,
            };
            h.apply_op3(
                &table,
                &logits,
                SharedLoss::new(input.targets.clone(), input.negatives.clone(), kind),
            )
        }
    }
}

/// Each row of a `[rows, d]` tensor divided by its L2 norm (a zero row stays zero), built from
/// differentiable ops.
pub(crate) fn unit_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(1)? + UNIT_EPS)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// Keeps [`unit_rows`] finite on the padding item's zero row.
const UNIT_EPS: f64 = 1e-12;

/// gBCE's β = α (t (1 − 1/α) + 1/α) with α the sampling rate `negatives / (items − 1)`.
#[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
fn gbce_beta(c: &SasRecConfig, num_items: usize) -> f32 {
    let alpha = (c.negatives as f64 / (num_items.max(2) - 1) as f64).min(1.0);
    (alpha * (c.gbce_t * (1.0 - 1.0 / alpha) + 1.0 / alpha)) as f32
}

/// The item-embedding rows a step touches (inputs, targets, negatives; padding first), and the
/// step's input with every item renumbered to its row in that compact table.
pub(crate) struct CompactStep {
    /// `items[k]` is the item of the compact table's row `k` (`items[0] == 0`).
    pub(crate) items: Vec<u32>,
    /// `slot[i]`: item `i`'s row in the compact table, [`NO_SLOT`] if the step does not use it.
    pub(crate) slot: Vec<u32>,
    pub(crate) input: StepInput,
}

/// Renumbers a step's items into a compact embedding table (see [`CompactStep`]).
pub(crate) fn compact_step(input: &StepInput, num_items: usize) -> CompactStep {
    let mut slot = vec![NO_SLOT; num_items + 1];
    let mut items = vec![0u32];
    slot[0] = 0;
    let mut local = |ids: &[u32]| -> Arc<[u32]> {
        ids.iter()
            .map(|&i| {
                let s = &mut slot[i as usize];
                if *s == NO_SLOT {
                    *s = u32::try_from(items.len()).unwrap_or(NO_SLOT);
                    items.push(i);
                }
                *s
            })
            .collect()
    };
    let batch = Batch {
        items: local(&input.batch.items),
        positions: input.batch.positions.clone(),
        packing: input.batch.packing.clone(),
    };
    let targets = local(&input.targets);
    let negatives = local(&input.negatives);
    CompactStep {
        items,
        slot,
        input: StepInput {
            batch,
            targets,
            negatives,
        },
    }
}

/// One forward + backward + Adam step; returns the loss.
///
/// The item embeddings enter the graph as a compact table of the rows the step uses (a few
/// hundred to a few thousand of the catalog's rows), so their gradient is built, summed and
/// read at that size instead of as several dense `[items, d]` tensors; Adam then updates the
/// whole table from it, exactly as with the dense gradient.
pub(crate) fn train_step(
    model: &SasRec,
    adam: &mut Adam,
    input: &StepInput,
    dropout_seed: u64,
) -> candle_core::Result<f32> {
    let g = compact_gradients(model, input, dropout_seed)?;
    adam.step_with_sparse_first(&model.vars, &g.grads, Some((&g.table_grad, &g.slot)))?;
    Ok(g.loss)
}

/// A step's loss and gradients, the item embeddings' as a compact table.
pub(crate) struct CompactGradients {
    pub(crate) loss: f32,
    /// Every weight's gradient but the item embeddings'.
    pub(crate) grads: candle_core::backprop::GradStore,
    /// The item embeddings' gradient on the rows the step uses, `[k, d]`.
    pub(crate) table_grad: Tensor,
    /// Each item's row in `table_grad` ([`NO_SLOT`]: a zero gradient).
    pub(crate) slot: Vec<u32>,
}

/// The forward and backward pass of [`train_step`].
pub(crate) fn compact_gradients(
    model: &SasRec,
    input: &StepInput,
    dropout_seed: u64,
) -> candle_core::Result<CompactGradients> {
    let mut w = model.weights(true);
    let compact = compact_step(input, model.num_items);
    let ids = Tensor::from_slice(&compact.items, compact.items.len(), &Device::Cpu)?;
    let table = Var::from_tensor(&model.vars[0].as_detached_tensor().index_select(&ids, 0)?)?;
    w[0] = table.as_tensor().clone();
    let loss = loss_graph(model, &w, &compact.input, Some(dropout_seed))?;
    let grads = loss.backward()?;
    let table_grad = grads
        .get(table.as_tensor())
        .cloned()
        .unwrap_or(table.as_tensor().zeros_like()?);
    Ok(CompactGradients {
        loss: loss.to_scalar::<f32>()?,
        grads,
        table_grad,
        slot: compact.slot,
    })
}

/// A step's inputs made ahead of time (see [`Trainer::prepare`]).
pub struct PreparedBatch(StepInput);

/// Step-by-step training, for benchmarks and custom loops: a model, its Adam state and the
/// thread pool the steps run on. [`train`] is the whole loop.
pub struct Trainer {
    model: SasRec,
    adam: Adam,
    pool: rayon::ThreadPool,
    rng: StdRng,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("model", &self.model)
            .field("steps", &self.adam.t)
            .finish_non_exhaustive()
    }
}

fn thread_pool(config: &SasRecConfig) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(config.effective_threads())
        .thread_name(|i| format!("sasrec-{i}"))
        .build()
        .map_err(|e| Error::InvalidArgument {
            name: "threads",
            value: config.threads.to_string(),
            reason: e.to_string(),
        })
}

impl Trainer {
    /// A fresh model (initialized from the seed) and optimizer.
    pub fn new(config: &SasRecConfig, num_items: usize) -> Result<Trainer> {
        let model = SasRec::new(config, num_items)?;
        let adam = Adam::new(
            &model.vars,
            config.learning_rate,
            config.beta1,
            config.beta2,
            config.l2_emb,
        );
        Ok(Trainer {
            pool: thread_pool(config)?,
            rng: StdRng::seed_from_u64(ops::mix(config.seed ^ 0xBA7C_0000)),
            model,
            adam,
        })
    }

    /// The inputs of one step over these sequences (inputs, targets, sampled negatives).
    pub fn prepare(&mut self, sequences: &[&[u32]]) -> PreparedBatch {
        PreparedBatch(make_step(
            &self.model.config,
            self.model.num_items,
            sequences,
            &mut self.rng,
        ))
    }

    /// One forward + backward + Adam step with dropout seeded by `seed`; returns the loss.
    pub fn step(&mut self, batch: &PreparedBatch, seed: u64) -> Result<f32> {
        let (model, adam) = (&self.model, &mut self.adam);
        self.pool
            .install(|| train_step(model, adam, &batch.0, seed))
            .map_err(backend)
    }

    /// The model as trained so far.
    pub fn model(&self) -> &SasRec {
        &self.model
    }
}

fn epoch_rng(seed: u64, epoch: usize) -> StdRng {
    StdRng::seed_from_u64(ops::mix(seed ^ ops::mix(0xE90C_0000 + epoch as u64)))
}

fn step_seed(seed: u64, epoch: usize, step: usize) -> u64 {
    ops::mix(ops::mix(seed ^ 0xD209_0000) ^ ((epoch as u64) << 32 | step as u64))
}

/// The learning rate after `steps` learning-rate steps.
fn learning_rate(config: &SasRecConfig, steps: usize) -> f64 {
    config.learning_rate
        * config
            .lr_step_factor
            .powi(i32::try_from(steps).unwrap_or(i32::MAX))
}

/// What a plateau did (see [`on_plateau`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plateau {
    /// Not on a plateau (or patience is off): go on.
    No,
    /// The learning rate stepped down: go on.
    Stepped,
    /// No step left: the run stops.
    Stop,
}

/// After an evaluation: if `patience` evaluations in a row brought no improvement, steps the
/// learning rate down when a step is left (and starts counting again), else marks the run
/// stopped.
fn on_plateau(config: &SasRecConfig, state: &mut TrainState, adam: &mut Adam) -> Plateau {
    let plateau = if config.patience == 0 || state.bad_evaluations < config.patience {
        Plateau::No
    } else if state.lr_steps_taken < config.lr_steps {
        state.lr_steps_taken += 1;
        state.bad_evaluations = 0;
        adam.lr = learning_rate(config, state.lr_steps_taken);
        Plateau::Stepped
    } else {
        Plateau::Stop
    };
    state.stopped_early = plateau == Plateau::Stop;
    plateau
}

/// A fingerprint of the training data (so a checkpoint is not resumed on other data).
fn fingerprint(sequences: &[&[u32]], num_items: usize) -> u64 {
    let mut h = ops::mix(num_items as u64);
    for s in sequences {
        h = ops::mix(h ^ s.len() as u64);
        for &i in *s {
            h = ops::mix(h ^ u64::from(i));
        }
    }
    h
}

/// A progress display: an indicatif bar on a terminal, a line per epoch otherwise.
struct Display {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
}

impl Display {
    fn new(progress: Progress, steps: usize) -> Display {
        match progress {
            Progress::Quiet => Display {
                bar: None,
                lines: false,
            },
            Progress::Auto if std::io::stderr().is_terminal() => {
                let bar = indicatif::ProgressBar::new(steps as u64);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                Display {
                    bar: Some(bar),
                    lines: false,
                }
            }
            Progress::Auto => Display {
                bar: None,
                lines: true,
            },
        }
    }
}

/// Trains SASRec on `sequences` (item indices `1..=num_items`, oldest first; sequences shorter
/// than two items are skipped) and returns the model with the best validation metric seen
/// (`evaluate` returns the metric to maximize, e.g. NDCG@10) and a report.
///
/// Same config (seed and threads included) and data give the same losses and weights. With
/// `options.checkpoint_dir` set, a checkpoint written after every epoch lets a killed run resume
/// from its last completed epoch, continuing exactly as if it had not stopped.
pub fn train(
    config: &SasRecConfig,
    num_items: usize,
    sequences: &[Vec<u32>],
    options: &TrainOptions,
    evaluate: &mut dyn FnMut(&SasRec) -> Result<f64>,
) -> Result<(SasRec, TrainReport)> {
    config.validate()?;
    let examples = Examples {
        sequences: sequences
            .iter()
            .filter(|s| s.len() >= 2)
            .map(Vec::as_slice)
            .collect(),
    };
    if examples.sequences.is_empty() {
        return Err(Error::InvalidArgument {
            name: "sequences",
            value: format!("{} sequences", sequences.len()),
            reason: "no sequence has two items or more".into(),
        });
    }
    let pool = thread_pool(config)?;
    let mut model = SasRec::new(config, num_items)?;
    if let Some(init) = &options.init_from {
        let shapes = |m: &SasRec| m.vars.iter().map(|v| v.dims().to_vec()).collect::<Vec<_>>();
        if shapes(init) != shapes(&model) {
            return Err(Error::InvalidArgument {
                name: "init_from",
                value: format!("{} items, hidden {}", init.num_items, init.config.hidden),
                reason: format!(
                    "its weights do not have this run's shapes ({num_items} items, hidden {}, {} blocks, max_len {})",
                    config.hidden, config.blocks, config.max_len
                ),
            });
        }
        for (var, from) in model.vars.iter().zip(&init.vars) {
            var.set(from.as_tensor()).map_err(backend)?;
        }
    }
    let mut adam = Adam::new(
        &model.vars,
        config.learning_rate,
        config.beta1,
        config.beta2,
        config.l2_emb,
    );
    let data_print = fingerprint(&examples.sequences, num_items);
    let mut state = TrainState::fresh(config, num_items, data_print);
    let mut best: Option<Vec<Tensor>> = None;
    let mut averages = config
        .ema_decays
        .iter()
        .map(|&decay| Ema::new(decay, &model))
        .collect::<Result<Vec<_>>>()?;
    if let Some(dir) = &options.checkpoint_dir
        && let Some(saved) = checkpoint::read_state(dir)?
    {
        saved.check_compatible(config, num_items, data_print, dir)?;
        best = checkpoint::restore(dir, &saved, &mut model, &mut adam, &mut averages)?;
        state = saved;
    }
    let resumed_from = state.epoch;
    let steps = examples.sequences.len().div_ceil(config.batch);
    let display = Display::new(options.progress, steps);
    let start_epoch = state.epoch;
    // Decided again under this run's patience and steps (they may differ from the
    // checkpoint's): the evaluations since the best one are what an uninterrupted run would
    // have counted, and at the evaluation that stopped the checkpoint's run it would have
    // stepped the learning rate down instead, if it had steps left.
    adam.lr = learning_rate(config, state.lr_steps_taken);
    let plateau = on_plateau(config, &mut state, &mut adam);
    let mut stopped_early = plateau == Plateau::Stop;
    if plateau == Plateau::Stepped {
        tracing::info!(
            epoch = state.epoch,
            learning_rate = adam.lr,
            "sasrec: resumed on a plateau, learning rate stepped down"
        );
    }
    while state.epoch < config.epochs && !stopped_early {
        if options
            .max_epochs_this_run
            .is_some_and(|m| state.epoch - start_epoch >= m)
        {
            break;
        }
        let epoch = state.epoch;
        let mut rng = epoch_rng(config.seed, epoch);
        let mut order = examples.sequences.clone();
        order.shuffle(&mut rng);
        if let Some(bar) = &display.bar {
            bar.reset();
            bar.set_prefix(format!("epoch {}/{}", epoch + 1, config.epochs));
        }
        let started = Instant::now();
        let mut loss_sum = 0f64;
        for (step, chunk) in order.chunks(config.batch).enumerate() {
            let input = make_step(config, num_items, chunk, &mut rng);
            let seed = step_seed(config.seed, epoch, step);
            let loss = pool
                .install(|| {
                    let loss = train_step(&model, &mut adam, &input, seed)?;
                    for average in &averages {
                        average.update(&model, adam.t)?;
                    }
                    Ok(loss)
                })
                .map_err(backend)?;
            if !loss.is_finite() {
                return Err(Error::InvalidArgument {
                    name: "learning_rate",
                    value: config.learning_rate.to_string(),
                    reason: format!("the loss diverged at epoch {} step {step}", epoch + 1),
                });
            }
            loss_sum += f64::from(loss);
            if let Some(bar) = &display.bar {
                bar.inc(1);
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                #[allow(clippy::cast_precision_loss)]
                bar.set_message(format!(
                    "loss {:.4} {:.0} seq/s",
                    loss_sum / (step + 1) as f64,
                    ((step * config.batch + chunk.len()) as f64) / secs
                ));
            }
        }
        let secs = started.elapsed().as_secs_f64();
        state.step_seconds += secs;
        state.trained_sequences += order.len() as u64;
        #[allow(clippy::cast_precision_loss)]
        let mean_loss = loss_sum / steps as f64;
        state.losses.push(mean_loss);
        state.epoch += 1;
        let mut line = format!(
            "sasrec epoch {}/{}: loss {mean_loss:.4}, {:.1} s, {:.0} seq/s",
            state.epoch,
            config.epochs,
            secs,
            examples.sequences.len() as f64 / secs.max(1e-9)
        );
        if state.epoch.is_multiple_of(config.eval_every) || state.epoch == config.epochs {
            let metric = evaluate(&model)?;
            state.evaluations.push((state.epoch, metric));
            line.push_str(&format!(", validation {metric:.4}"));
            if state.best_metric.is_none_or(|b| metric > b) {
                state.best_metric = Some(metric);
                state.best_epoch = Some(state.epoch);
                state.bad_evaluations = 0;
                best = Some(snapshot(&model)?);
                line.push_str(" (best)");
            } else {
                state.bad_evaluations += 1;
                match on_plateau(config, &mut state, &mut adam) {
                    Plateau::No => {}
                    Plateau::Stepped => {
                        line.push_str(&format!(", learning rate now {:e}", adam.lr));
                    }
                    Plateau::Stop => {
                        stopped_early = true;
                        line.push_str(", stopping early");
                    }
                }
            }
            for (average, saved) in averages.iter_mut().zip(&mut state.averages) {
                let metric = evaluate(&average.model)?;
                saved.evaluations.push((state.epoch, metric));
                line.push_str(&format!(", {} {metric:.4}", Ema::label(average.decay)));
                if saved.best_metric.is_none_or(|b| metric > b) {
                    saved.best_metric = Some(metric);
                    saved.best_epoch = Some(state.epoch);
                    average.best = Some(snapshot(&average.model)?);
                    line.push_str(" (best)");
                }
            }
        }
        tracing::info!("{line}");
        if display.lines {
            eprintln!("{line}");
        } else if let Some(bar) = &display.bar {
            bar.println(&line);
        }
        if let Some(dir) = &options.checkpoint_dir {
            checkpoint::write(dir, &state, &model, &adam, best.as_deref(), &averages)?;
        }
    }
    if let Some(bar) = &display.bar {
        bar.finish_and_clear();
    }
    if let Some(best) = &best {
        set_weights(&model, best)?;
    }
    let mut candidates = vec![Candidate {
        label: "weights".to_owned(),
        decay: None,
        evaluations: state.evaluations.clone(),
        best_epoch: state.best_epoch,
        best_metric: state.best_metric,
        model,
    }];
    for (average, saved) in averages.into_iter().zip(&state.averages) {
        if let Some(best) = &average.best {
            set_weights(&average.model, best)?;
        }
        candidates.push(Candidate {
            label: Ema::label(average.decay),
            decay: Some(average.decay),
            evaluations: saved.evaluations.clone(),
            best_epoch: saved.best_epoch,
            best_metric: saved.best_metric,
            model: average.model,
        });
    }
    // The best validation wins; on a tie the weights themselves, then the first average.
    let mut chosen = 0;
    for (k, c) in candidates.iter().enumerate().skip(1) {
        if c.best_metric
            .is_some_and(|m| candidates[chosen].best_metric.is_none_or(|b| m > b))
        {
            chosen = k;
        }
    }
    let winner = &candidates[chosen];
    let model = winner.model.clone();
    #[allow(clippy::cast_precision_loss)]
    let report = TrainReport {
        epoch_losses: state.losses.clone(),
        evaluations: state.evaluations.clone(),
        best_epoch: winner.best_epoch,
        best_metric: winner.best_metric,
        averaged: winner.decay,
        resumed_from,
        epochs_completed: state.epoch,
        stopped_early,
        sequences_per_second: state.trained_sequences as f64 / state.step_seconds.max(1e-9),
        step_seconds: state.step_seconds,
        candidates,
    };
    Ok((model, report))
}

/// Sets a model's weights to `weights` (in its parameter order).
fn set_weights(model: &SasRec, weights: &[Tensor]) -> Result<()> {
    for (var, t) in model.vars.iter().zip(weights) {
        var.set(t).map_err(backend)?;
    }
    Ok(())
}

/// A copy of the current weights.
pub(crate) fn snapshot(model: &SasRec) -> Result<Vec<Tensor>> {
    model
        .vars
        .iter()
        .map(|v| v.as_tensor().copy().map_err(backend))
        .collect()
}
