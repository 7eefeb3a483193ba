//! The cursor of an incremental import: the `(updated_at, id)` of the last row sent, kept in a
//! small JSON file (`--state`) between runs.
//!
//! Both values are PostgreSQL's own text for them (`2026-03-01 10:00:00.25+00`, `p-17`); the next
//! run casts them back to the columns' types, so PostgreSQL compares them, never Rust. The file is
//! replaced whole (a temporary file beside it, synced, then renamed), and only once a batch was
//! accepted by the server or written out: a crash leaves the old cursor or the new one, and at
//! worst a batch is sent again (an upsert or a deletion sent twice changes nothing).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The last row sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cursor {
    /// The row's updated-at value, as PostgreSQL prints it.
    pub(crate) updated_at: String,
    /// The row's id, as PostgreSQL prints it.
    pub(crate) id: String,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}, {})", self.updated_at, self.id)
    }
}

/// The cursor saved at `path`; `None` when there is no file yet (start from the beginning). A
/// file that is there but unreadable is an error, never a silent full import.
pub(crate) fn load(path: &Path) -> anyhow::Result<Option<Cursor>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading the state {}", path.display())),
    };
    let cursor = serde_json::from_str(&text).with_context(|| {
        format!(
            "the state {} is not a cursor ({{\"updated_at\": \"…\", \"id\": \"…\"}}); fix or \
             remove it (removing it imports everything again)",
            path.display()
        )
    })?;
    Ok(Some(cursor))
}

/// Replaces the file at `path` with this cursor, atomically.
pub(crate) fn save(path: &Path, cursor: &Cursor) -> anyhow::Result<()> {
    let tmp = temp_path(path);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        serde_json::to_writer_pretty(&mut file, cursor)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself, made durable (best effort: not every platform opens directories).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(dir) = std::fs::File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    };
    write().with_context(|| format!("saving the state {}", path.display()))
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "attune-cursor-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_saved_cursor_reads_back_and_replaces_the_last() {
        let d = dir();
        let path = d.join("state.json");
        assert_eq!(load(&path).unwrap(), None, "no file: from the beginning");
        let a = Cursor {
            updated_at: "2026-03-01 10:00:00.25+00".into(),
            id: "p \"17\"".into(),
        };
        save(&path, &a).unwrap();
        assert_eq!(load(&path).unwrap(), Some(a));
        let b = Cursor {
            updated_at: "2026-03-02 00:00:00+00".into(),
            id: "p-3".into(),
        };
        save(&path, &b).unwrap();
        assert_eq!(load(&path).unwrap(), Some(b));
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"], "no temporary file is left");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"updated_at": "2026-03-02 00:00:00+00", "id": "p-3"})
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_state_file_that_is_not_a_cursor_is_an_error_not_a_fresh_start() {
        let d = dir();
        let path = d.join("state.json");
        for bad in [
            "",
            "{}",
            "{\"updated_at\": \"x\"}",
            "[1]",
            "{\"updated_at\": \"x\", \"id\": \"y\", \"z\": 1}",
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = format!("{:#}", load(&path).unwrap_err());
            assert!(e.contains("is not a cursor"), "{bad}: {e}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
