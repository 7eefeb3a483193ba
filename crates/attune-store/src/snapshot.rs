//! Snapshot files of the embedded stores: a magic header, a layout version byte, then a postcard
//! body; written atomically (a temporary file, synced, then renamed over the old one).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// An [`Error::Snapshot`] about `path`.
pub(crate) fn error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Snapshot {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Writes `magic`, `version` and `body` to `path` atomically, creating its directory.
pub(crate) fn write(path: &Path, magic: &[u8], version: u8, body: &[u8]) -> Result<()> {
    let err = |e: std::io::Error| error(path, e.to_string());
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(magic)
        .and_then(|()| file.write_all(&[version]))
        .and_then(|()| file.write_all(body))
        .and_then(|()| file.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The body of the snapshot at `path`, checking its header: `what` names the content in errors.
pub(crate) fn read(path: &Path, magic: &[u8], version: u8, what: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| error(path, e.to_string()))?;
    let rest = bytes
        .strip_prefix(magic)
        .ok_or_else(|| error(path, format!("not an Attune {what} snapshot (bad header)")))?;
    match rest.split_first() {
        Some((&v, body)) if v == version => Ok(body.to_vec()),
        Some((v, _)) => Err(error(
            path,
            format!("written with {what} layout {v}; this build reads {version}"),
        )),
        None => Err(error(path, "truncated")),
    }
}

/// Moves an unreadable snapshot out of the way of the next one (to `<path>.unreadable`), keeping
/// it for inspection; returns where it went.
pub(crate) fn move_aside(path: &Path, why: &Error) -> Result<PathBuf> {
    let aside = path.with_extension("unreadable");
    std::fs::rename(path, &aside).map_err(|io| {
        error(
            path,
            format!("{why}; and it could not be moved aside: {io}"),
        )
    })?;
    Ok(aside)
}
