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
fn an_unreachable_redis_stops_the_start_with_a_clear_error() {
    let out = attune()
        .args(["serve", "--listen", &free_addr().to_string()])
        .env("ATTUNE__SESSIONS__URL", "redis://127.0.0.1:1/0")
        .env("ATTUNE__SESSIONS__TIMEOUT_MS", "300")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("redis://127.0.0.1:1/0"), "{stderr}");
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
