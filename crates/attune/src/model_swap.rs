//! Serving a newer SASRec model without a restart: [`HotSequential`] holds the `sequential`
//! source behind an atomic pointer and [`watch`] polls the model directory for a changed
//! manifest (`recommend.model_poll_secs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use attune_core::ItemId;
use attune_engine::{CandidateSource, Observation, Proposal, RecContext, SourceError};

use crate::sequential::{Loaded, NAME, SequentialSource};

/// The `sequential` source as the server holds it: the model in `recommend.model`, replaced
/// atomically when a newer one appears there ([`HotSequential::reload_if_changed`], polled by
/// [`watch`]). A request holds the model it started with to its end, so none is dropped or
/// served half by each; each model keeps its own [`RankCache`], so no answer of the old one is
/// served after the swap.
pub(crate) struct HotSequential {
    current: arc_swap::ArcSwap<SequentialSource>,
    dir: PathBuf,
    cache: usize,
    /// The manifest the current model came from (or the last one refused): its bytes'
    /// fingerprint, so a manifest rewritten unchanged swaps nothing.
    seen: std::sync::Mutex<Option<u64>>,
}

/// A fingerprint of the manifest's bytes (`None`: unreadable).
fn manifest_print(dir: &Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(dir.join(attune_model::manifest::MANIFEST_FILE)).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

impl HotSequential {
    /// Loads the model in `dir` (see [`SequentialSource::load`]).
    pub(crate) fn load(
        dir: &Path,
        in_catalog: &dyn Fn(&str) -> bool,
        cache: usize,
    ) -> Result<(HotSequential, Loaded), attune_model::Error> {
        let print = manifest_print(dir);
        let (source, loaded) = SequentialSource::load(dir, in_catalog, cache)?;
        Ok((
            HotSequential {
                current: arc_swap::ArcSwap::from_pointee(source),
                dir: dir.to_owned(),
                cache,
                seen: std::sync::Mutex::new(print),
            },
            loaded,
        ))
    }

    /// Loads the model again if its manifest changed since the last look (`attune train`
    /// writes the weights, then the manifest, each renamed into place). `Ok(Some)`: a new
    /// model serves from now on; `Ok(None)`: unchanged; `Err`: a changed model was refused (the
    /// old one keeps serving; the same manifest is not tried again).
    pub(crate) fn reload_if_changed(
        &self,
        in_catalog: &dyn Fn(&str) -> bool,
    ) -> Result<Option<Loaded>, attune_model::Error> {
        let print = manifest_print(&self.dir);
        {
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if print.is_none() || *seen == print {
                return Ok(None);
            }
            *seen = print;
        }
        let (source, loaded) = SequentialSource::load(&self.dir, in_catalog, self.cache)?;
        self.current.store(Arc::new(source));
        Ok(Some(loaded))
    }
}

impl CandidateSource for HotSequential {
    fn name(&self) -> &'static str {
        NAME
    }

    fn learns(&self) -> bool {
        self.cache > 0
    }

    fn observe(&self, event: &Observation<'_>) {
        self.current.load().observe(event);
    }

    fn candidates(
        &self,
        ctx: &RecContext<'_>,
        budget: usize,
        accept: &dyn Fn(&ItemId) -> bool,
    ) -> Result<Vec<Proposal>, SourceError> {
        self.current.load().candidates(ctx, budget, accept)
    }

    fn score(
        &self,
        ctx: &RecContext<'_>,
        items: &[ItemId],
    ) -> Option<Result<Vec<f32>, SourceError>> {
        self.current.load().score(ctx, items)
    }
}

/// Polls the model directory every `every` and swaps in a changed model (checked against the
/// catalog as at start); `on_swap` hears of each new model. Ends when `source` is dropped.
pub(crate) fn watch(
    source: &Arc<HotSequential>,
    every: Duration,
    in_catalog: Box<dyn Fn(&str) -> bool + Send>,
    on_swap: Box<dyn Fn(&Loaded) + Send>,
) -> std::io::Result<()> {
    let weak = Arc::downgrade(source);
    std::thread::Builder::new()
        .name("sasrec-reload".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(source) = weak.upgrade() else { return };
                match source.reload_if_changed(&*in_catalog) {
                    Ok(Some(loaded)) => {
                        tracing::info!(
                            dir = %loaded.dir.display(),
                            items = loaded.items,
                            ms = loaded.took.as_millis() as u64,
                            "a new sequential model was swapped in"
                        );
                        on_swap(&loaded);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(
                        error = %e,
                        "the sequential model changed but cannot be served; the previous one still serves"
                    ),
                }
            }
        })
        .map(|_| ())
}
