//! `attune stats`: a running server's `GET /v1/stats`, printed for a terminal.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

/// Arguments of `attune stats`.
#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    url: String,
    /// The window to show, in minutes: 1, 5 or 60.
    #[arg(long, default_value_t = 5)]
    window: u64,
    /// Print the server's JSON as is.
    #[arg(long)]
    json: bool,
    /// Print again every this many seconds, until interrupted.
    #[arg(long)]
    watch: Option<u64>,
}

pub(crate) fn run(args: &StatsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        [1, 5, 60].contains(&args.window),
        "--window {}: the server keeps 1, 5 and 60 minutes",
        args.window
    );
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let url = format!("{}/v1/stats", args.url.trim_end_matches('/'));
    loop {
        let mut response = agent
            .get(&url)
            .call()
            .with_context(|| format!("asking {url}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer of {url}"))?;
        anyhow::ensure!(status == 200, "{url} answered {status}: {body}");
        let stats: Value =
            serde_json::from_str(&body).with_context(|| format!("{url} did not answer JSON"))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&stats)?);
        } else {
            print!("{}", render(&args.url, &stats, args.window));
        }
        match args.watch {
            Some(secs) => std::thread::sleep(Duration::from_secs(secs.max(1))),
            None => return Ok(()),
        }
        println!();
    }
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// The stats as a few lines and a table of endpoints.
fn render(url: &str, stats: &Value, window: u64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let ready = if stats["ready"].as_bool() == Some(true) {
        "ready"
    } else {
        "NOT READY (a backend does not answer)"
    };
    let memory = stats["resident_bytes"]
        .as_u64()
        .map_or_else(String::new, |b| {
            format!(" · {:.0} MB resident", b as f64 / 1e6)
        });
    let _ = writeln!(
        out,
        "{url} · up {} · {ready} · {} sessions held · {} items{memory}",
        duration(stats["uptime_seconds"].as_u64().unwrap_or(0)),
        stats["sessions_held"].as_u64().unwrap_or(0),
        stats["catalog_items"].as_u64().unwrap_or(0),
    );
    let Some(w) = stats["windows"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["minutes"].as_u64() == Some(window)))
    else {
        let _ = writeln!(out, "the server reports no {window}-minute window");
        return out;
    };
    let cold = w["cold_start_share"]
        .as_f64()
        .map_or_else(|| "none".to_owned(), |s| format!("{:.0} %", s * 100.0));
    let _ = writeln!(
        out,
        "last {window} min ({}): {} events ({:.1}/s) · {} recommendation lists, cold start {cold}",
        duration(w["seconds"].as_u64().unwrap_or(0)),
        w["events"].as_u64().unwrap_or(0),
        w["events_per_second"].as_f64().unwrap_or(0.0),
        w["recommendation_lists"].as_u64().unwrap_or(0),
    );
    let endpoints = w["endpoints"].as_array().map_or(&[][..], Vec::as_slice);
    if endpoints.is_empty() {
        let _ = writeln!(out, "no requests in this window");
        return out;
    }
    let width = endpoints
        .iter()
        .filter_map(|e| e["endpoint"].as_str().map(str::len))
        .max()
        .unwrap_or(8)
        .max(8);
    let _ = writeln!(
        out,
        "{:<width$}  {:<6}  {:>9}  {:>9}  {:>8}  {:>8}  {:>5}",
        "endpoint", "method", "requests", "req/s", "p50 ms", "p99 ms", "5xx"
    );
    for e in endpoints {
        let _ = writeln!(
            out,
            "{:<width$}  {:<6}  {:>9}  {:>9.1}  {:>8.3}  {:>8.3}  {:>5}",
            e["endpoint"].as_str().unwrap_or("?"),
            e["method"].as_str().unwrap_or("?"),
            e["requests"].as_u64().unwrap_or(0),
            e["requests_per_second"].as_f64().unwrap_or(0.0),
            e["p50_ms"].as_f64().unwrap_or(0.0),
            e["p99_ms"].as_f64().unwrap_or(0.0),
            e["server_errors"].as_u64().unwrap_or(0),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_shows_the_window_asked_for() {
        let stats = json!({
            "uptime_seconds": 3725, "generated_at": 0, "ready": true, "sessions_held": 12,
            "resident_bytes": 237_000_000u64, "catalog_items": 312,
            "windows": [
                {"minutes": 1, "seconds": 25, "events": 50, "events_per_second": 2.0,
                 "recommendation_lists": 4, "cold_start_share": 0.25, "endpoints": [
                    {"endpoint": "/v1/events", "method": "POST", "requests": 50,
                     "requests_per_second": 2.0, "server_errors": 0, "p50_ms": 0.21, "p99_ms": 0.95},
                    {"endpoint": "/v1/recommendations/{surface}", "method": "GET", "requests": 4,
                     "requests_per_second": 0.16, "server_errors": 1, "p50_ms": 1.2, "p99_ms": 3.4}]},
                {"minutes": 5, "seconds": 265, "events": 0, "events_per_second": 0.0,
                 "recommendation_lists": 0, "cold_start_share": null, "endpoints": []}
            ]
        });
        let one = render("http://x", &stats, 1);
        assert!(
            one.starts_with(
                "http://x · up 1h 2m · ready · 12 sessions held · 312 items · 237 MB resident\n"
            ),
            "{one}"
        );
        assert!(
            one.contains(
                "last 1 min (25s): 50 events (2.0/s) · 4 recommendation lists, cold start 25 %"
            ),
            "{one}"
        );
        let rows: Vec<&str> = one.lines().skip(3).collect();
        assert_eq!(rows.len(), 2);
        assert!(
            rows[0].starts_with("/v1/events ")
                && rows[0].contains("0.210")
                && rows[0].contains("0.950"),
            "{one}"
        );
        assert!(rows[1].trim_end().ends_with('1'), "the 5xx column: {one}");
        let five = render("http://x", &stats, 5);
        assert!(
            five.contains("cold start none") && five.contains("no requests in this window"),
            "{five}"
        );
        let sixty = render("http://x", &stats, 60);
        assert!(sixty.contains("no 60-minute window"), "{sixty}");
        let down = render("http://x", &json!({"ready": false, "windows": []}), 5);
        assert!(down.contains("NOT READY"), "{down}");
    }
}
