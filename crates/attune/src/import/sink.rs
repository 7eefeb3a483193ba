//! Where a batch of changes goes: a running Attune (`PUT /v1/items`, `DELETE /v1/items/{id}`)
//! or an NDJSON output (a file or standard output).

use std::fs::File;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use attune_server::dto::ItemDto;

use super::columns::Change;

/// What sending one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Items upserted (or written out).
    pub(crate) upserted: usize,
    /// Of those, new to the server (`None` when written to an output).
    pub(crate) inserted: Option<usize>,
    /// Deletions sent (a 404 included).
    pub(crate) deleted: usize,
    /// Of those, items the server did not hold (404).
    pub(crate) not_found: usize,
    /// Deletions left out (an output holds items only).
    pub(crate) left_out: usize,
}

impl std::ops::AddAssign for Sent {
    fn add_assign(&mut self, o: Sent) {
        self.upserted += o.upserted;
        self.inserted = match (self.inserted, o.inserted) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.deleted += o.deleted;
        self.not_found += o.not_found;
        self.left_out += o.left_out;
    }
}

/// The destination of the changes.
pub(crate) enum Sink {
    /// A running server.
    Server {
        /// Its base URL, without a trailing `/`.
        base: String,
        /// The HTTP client.
        agent: ureq::Agent,
    },
    /// NDJSON items to standard output.
    Stdout,
    /// NDJSON items to a file (synced after each batch).
    File {
        /// The open file.
        file: File,
        /// Its name, for errors.
        name: String,
    },
}

/// The fields of the server's error body.
#[derive(Debug, Default, serde::Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    field: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, serde::Deserialize)]
struct UpsertOut {
    inserted: usize,
}

impl Sink {
    /// A server at `base` (`http://127.0.0.1:8787`), checked to answer `GET /healthz` before
    /// anything is read, so an unreachable server fails the import at once.
    pub(crate) fn server(base: &str) -> anyhow::Result<Sink> {
        let base = base.trim_end_matches('/').to_owned();
        // Embedding a batch of items for vector search takes seconds on a small machine.
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(300)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        let url = format!("{base}/healthz");
        let response = agent
            .get(&url)
            .call()
            .with_context(|| format!("--server {base}: cannot reach the server ({url})"))?;
        let status = response.status().as_u16();
        anyhow::ensure!(
            status == 200,
            "--server {base}: {url} answered {status}; is this an Attune server?"
        );
        Ok(Sink::Server { base, agent })
    }

    /// NDJSON to `out`: `-` for standard output, else a file, appended to when `append` (an
    /// incremental import adds each run's changes), else created afresh.
    pub(crate) fn output(out: &str, append: bool) -> anyhow::Result<Sink> {
        if out == "-" {
            return Ok(Sink::Stdout);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(out)
            .with_context(|| format!("opening {out}"))?;
        Ok(Sink::File {
            file,
            name: out.to_owned(),
        })
    }

    /// Whether this sink can delete items (a file of items cannot hold a deletion).
    pub(crate) fn deletes(&self) -> bool {
        matches!(self, Sink::Server { .. })
    }

    /// Sends one batch: the upserts as one `PUT /v1/items` (NDJSON), then each deletion. Any
    /// answer but success (or a 404 for a deletion) is an error carrying the server's message.
    /// For an output, the items are written and flushed (a file also synced) before it returns.
    pub(crate) fn send(&mut self, changes: &[Change]) -> anyhow::Result<Sent> {
        let items: Vec<&ItemDto> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Upsert(item) => Some(&**item),
                Change::Delete(_) => None,
            })
            .collect();
        let deletions: Vec<&str> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Delete(id) => Some(id.as_str()),
                Change::Upsert(_) => None,
            })
            .collect();
        let mut body = Vec::new();
        for item in &items {
            serde_json::to_writer(&mut body, item)?;
            body.push(b'\n');
        }
        let mut sent = Sent {
            upserted: items.len(),
            ..Sent::default()
        };
        match self {
            Sink::Server { base, agent } => {
                if !items.is_empty() {
                    let url = format!("{base}/v1/items");
                    let mut response = agent
                        .put(&url)
                        .header("content-type", "application/x-ndjson")
                        .send(&body[..])
                        .with_context(|| format!("sending {} items to {url}", items.len()))?;
                    let status = response.status().as_u16();
                    let text = response.body_mut().read_to_string().unwrap_or_default();
                    if !(200..300).contains(&status) {
                        bail!(
                            "the server refused the batch of {} items: {}",
                            items.len(),
                            refusal(status, &text, &items)
                        );
                    }
                    let out: UpsertOut = serde_json::from_str(&text).with_context(|| {
                        format!("{url} answered {status} with an unexpected body: {text}")
                    })?;
                    sent.inserted = Some(out.inserted);
                }
                for id in deletions {
                    let url = format!("{base}/v1/items/{}", percent_encode(id));
                    let mut response = agent
                        .delete(&url)
                        .call()
                        .with_context(|| format!("deleting item {id:?} ({url})"))?;
                    match response.status().as_u16() {
                        200..=299 => sent.deleted += 1,
                        404 => {
                            sent.deleted += 1;
                            sent.not_found += 1;
                        }
                        status => {
                            let text = response.body_mut().read_to_string().unwrap_or_default();
                            bail!(
                                "the server refused to delete item {id:?}: {}",
                                refusal(status, &text, &[])
                            );
                        }
                    }
                }
            }
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&body)
                    .and_then(|()| out.flush())
                    .context("writing to standard output")?;
                sent.left_out = deletions.len();
            }
            Sink::File { file, name } => {
                file.write_all(&body)
                    .and_then(|()| file.sync_data())
                    .with_context(|| format!("writing {name}"))?;
                sent.left_out = deletions.len();
            }
        }
        Ok(sent)
    }
}

/// The server's refusal in a line: status, code, message, and the item an index names.
fn refusal(status: u16, body: &str, items: &[&ItemDto]) -> String {
    let Ok(ErrorBody { error }) = serde_json::from_str::<ErrorBody>(body) else {
        return format!("{status}: {}", body.trim());
    };
    let mut out = format!("{status} {}: {}", error.code, error.message);
    if let Some(field) = error.field {
        // `[3].title`: the item at index 3 of this batch.
        let item = field
            .strip_prefix('[')
            .and_then(|f| f.split_once(']'))
            .and_then(|(i, _)| i.parse::<usize>().ok())
            .and_then(|i| items.get(i));
        match item {
            Some(item) => out.push_str(&format!(" (field {field}: item {:?})", item.id)),
            None => out.push_str(&format!(" (field {field})")),
        }
    }
    if status == 413 {
        out.push_str("; send smaller batches (--batch)");
    }
    out
}

/// An id as one path segment: unreserved bytes as they are, every other byte as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_path_segment() {
        assert_eq!(percent_encode("p-17_a.b~"), "p-17_a.b~");
        assert_eq!(percent_encode("a/b?c%d#é"), "a%2Fb%3Fc%25d%23%C3%A9");
    }

    #[test]
    fn a_refusal_names_the_item_its_field_points_at() {
        let item = |id: &str| ItemDto {
            id: id.into(),
            title: "t".into(),
            brand: None,
            category: String::new(),
            attributes: Default::default(),
            price: None,
            in_stock: true,
            created_at: None,
        };
        let (a, b) = (item("a"), item("b"));
        let body = r#"{"error":{"code":"invalid_value","message":"title must not be empty","field":"[1].title"}}"#;
        assert_eq!(
            refusal(422, body, &[&a, &b]),
            "422 invalid_value: title must not be empty (field [1].title: item \"b\")"
        );
        assert_eq!(
            refusal(
                413,
                r#"{"error":{"code":"payload_too_large","message":"too large"}}"#,
                &[]
            ),
            "413 payload_too_large: too large; send smaller batches (--batch)"
        );
        assert_eq!(refusal(502, "bad gateway\n", &[]), "502: bad gateway");
    }
}
