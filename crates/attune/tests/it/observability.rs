//! What an operator sees of a running server: request ids, JSON logs, `/metrics`, `attune stats`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// Sends a raw request and returns the whole response text (head and body).
fn raw(server: &Server, request: &str) -> String {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn requests_carry_an_id_into_json_logs_metrics_and_stats_without_visitor_ids() {
    let server = Server::start(
        &["serve"],
        &[
            ("ATTUNE__CATALOG__DEMO", "true"),
            ("ATTUNE__LOG__FORMAT", "json"),
            ("ATTUNE__LOG__REQUESTS", "true"),
        ],
    );
    let event = json!({"type": "view", "session_id": "secret-visitor-7", "item_id": "oatly-oat-milk-barista-1l"})
        .to_string();
    let answer = raw(
        &server,
        &format!(
            "POST /v1/events HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-request-id: shop-req-42\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{event}",
            event.len()
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-request-id: shop-req-42\r\n"),
        "the client's id comes back: {answer}"
    );
    // A forged id (a newline would split a log line) is replaced by one of the server's.
    let answer = raw(
        &server,
        "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-request-id: a b\r\n\r\n",
    );
    let id = answer
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-request-id: ")
                .map(str::to_owned)
        })
        .unwrap();
    assert!(id != "a b" && id.contains('-'), "{answer}");

    let (status, _) = server.http("GET", "/v1/sessions/secret-visitor-7", None);
    assert_eq!(status, 200);

    let metrics = raw(
        &server,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(
        metrics.contains("attune_events_total{type=\"view\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "attune_http_requests_total{endpoint=\"/v1/sessions/{session_id}\",method=\"GET\",status=\"200\"} 1"
    ));

    let out = ok(&attune()
        .args([
            "stats",
            "--window",
            "1",
            "--url",
            &format!("http://{}", server.addr),
        ])
        .output()
        .unwrap());
    assert!(out.contains(" · ready · 1 sessions held"), "{out}");
    assert!(out.contains("1 events"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("/v1/events ") && l.contains("POST")),
        "{out}"
    );
    let json_out = ok(&attune()
        .args([
            "stats",
            "--json",
            "--url",
            &format!("http://{}", server.addr),
        ])
        .output()
        .unwrap());
    let stats: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(stats["windows"].as_array().unwrap().len(), 3);
    let refused = attune()
        .args([
            "stats",
            "--window",
            "7",
            "--url",
            &format!("http://{}", server.addr),
        ])
        .output()
        .unwrap();
    assert!(fails(&refused).contains("--window 7"));

    wait_until("the request's log line", || {
        server.log_text().contains("shop-req-42")
    });
    let log = server.log_text();
    server.stop();
    {
        let lines: Vec<Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert!(!lines.is_empty(), "every log line is JSON: {log}");
        let answered = lines
            .iter()
            .find(|l| l["span"]["id"] == "shop-req-42")
            .unwrap_or_else(|| panic!("the request's line carries its id: {log}"));
        assert_eq!(answered["message"], "answered");
        assert_eq!(answered["status"], 200);
        assert_eq!(answered["span"]["endpoint"], "/v1/events");
        assert!(
            !log.contains("secret-visitor-7"),
            "no visitor id in the logs: {log}"
        );
    }
}
