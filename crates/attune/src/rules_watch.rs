//! Reloading the rules file while serving: on SIGHUP, and when the file changes. A file that does
//! not parse is rejected with its line and key, and the rules in force stay.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use attune_engine::Engine;
use notify::{RecursiveMode, Watcher};

/// Reads the file and puts its rules in force if valid. Returns whether they were applied.
pub(crate) fn reload(engine: &Engine, path: &Path) -> bool {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the rules file; keeping the rules in force");
            return false;
        }
    };
    match engine.reload_rules(&text) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "rules reloaded");
            true
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "rules file rejected; keeping the rules in force");
            false
        }
    }
}

/// Reloads on SIGHUP and, if `watch`, on changes to the file. The returned watcher must be kept
/// alive for as long as changes should be seen.
pub(crate) fn spawn(
    engine: Arc<Engine>,
    path: PathBuf,
    watch: bool,
) -> anyhow::Result<Option<notify::RecommendedWatcher>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);

    let hup = tx.clone();
    tokio::spawn(async move {
        let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while signal.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading rules");
            let _ = hup.send(()).await;
        }
    });

    let target = path.clone();
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Editors write in several steps: let them finish, then read once.
            tokio::time::sleep(Duration::from_millis(100)).await;
            while rx.try_recv().is_ok() {}
            reload(&engine, &target);
        }
    });

    if !watch {
        return Ok(None);
    }
    let name = path.file_name().map(ToOwned::to_owned);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res
            && !event.kind.is_access()
            && event.paths.iter().any(|p| p.file_name() == name.as_deref())
        {
            let _ = tx.try_send(());
        }
    })?;
    // Watch the directory: editors and deploy tools replace the file by renaming over it.
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(Some(watcher))
}
