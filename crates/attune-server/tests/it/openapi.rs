//! The OpenAPI document: generated from the server, checked in, served, and complete.
//!
//! After an intended change of the API, regenerate the checked-in copy with
//! `UPDATE_OPENAPI=1 cargo test -p attune-server --test it openapi`.

use std::path::PathBuf;

use axum::http::StatusCode;
use serde_json::Value;

use crate::support::app;

fn checked_in() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json")
}

#[test]
fn the_checked_in_document_is_up_to_date() {
    let generated = attune_server::openapi::document();
    let path = checked_in();
    if std::env::var_os("UPDATE_OPENAPI").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{} differs from the API the server describes; if the change is intended, run \
         UPDATE_OPENAPI=1 cargo test -p attune-server --test it openapi and commit the file",
        path.display()
    );
}

#[tokio::test]
async fn the_served_document_is_the_generated_one() {
    let app = app();
    let (status, served) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let generated: Value = serde_json::from_str(&attune_server::openapi::document()).unwrap();
    assert_eq!(served, generated);
}

#[test]
fn the_document_lists_every_route_and_method() {
    let doc: Value = serde_json::from_str(&attune_server::openapi::document()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut listed: Vec<String> = paths
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|k| !["parameters", "summary", "description"].contains(&k.as_str()))
                .map(move |method| format!("{method} {path}"))
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "delete /v1/items/{id}",
            "delete /v1/sessions/{session_id}",
            "delete /v1/users/{user_id}",
            "get /healthz",
            "get /metrics",
            "get /readyz",
            "get /v1/items",
            "get /v1/items/{id}",
            "get /v1/recommendations/{surface}",
            "get /v1/rules",
            "get /v1/sessions/{session_id}",
            "get /v1/stats",
            "get /v1/users/{user_id}/interactions",
            "get /v1/users/{user_id}/profile",
            "post /v1/events",
            "post /v1/feedback",
            "post /v1/search",
            "put /v1/items",
            "put /v1/users/{user_id}/preferences",
        ]
    );
}

/// Collects every `$ref` in the document.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_schema_reference_resolves() {
    let doc: Value = serde_json::from_str(&attune_server::openapi::document()).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for r in found {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(schemas.contains_key(name), "{r} does not resolve");
    }
    // Every error answer uses the one error body.
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status == "503" && path != "/readyz" {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}
