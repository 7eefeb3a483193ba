//! The storefront: the web app in `web/` (React + Tailwind), built into `web/dist` and embedded
//! in the binary at compile time, served at `/` beside the API.
//!
//! The built files are checked in, so `cargo run -p attune -- demo` needs nothing but the Rust
//! toolchain; `web/scripts/check-dist.mjs` (run by `scripts/test`) rebuilds them from `web/src`
//! and fails when the checked-in copy differs. See ARCHITECTURE.md ("The storefront").

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "../../web/dist"]
struct Assets;

/// Paths that belong to the API (and so never fall back to the shop's page).
fn is_api(path: &str) -> bool {
    path == "/v1"
        || path.starts_with("/v1/")
        || matches!(path, "/openapi.json" | "/healthz" | "/readyz")
}

/// The storefront's answer to `GET`/`HEAD path`, or `None` when the path is not the shop's:
/// API paths, other methods, and missing files with an extension (`/assets/gone.js`). Any other
/// path is a page of the single-page app and gets `index.html`.
pub(crate) fn serve(method: &Method, path: &str, headers: &HeaderMap) -> Option<Response> {
    if (method != Method::GET && method != Method::HEAD) || is_api(path) {
        return None;
    }
    let name = path.trim_start_matches('/');
    let (file, name) = match Assets::get(name) {
        Some(f) if !name.is_empty() => (f, name),
        _ => {
            let last = name.rsplit('/').next().unwrap_or_default();
            if last.contains('.') {
                return None;
            }
            (Assets::get("index.html")?, "index.html")
        }
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..12]));
    // Hashed file names under assets/ never change; the page itself must always be revalidated.
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else if method == Method::HEAD {
        StatusCode::OK.into_response()
    } else {
        (StatusCode::OK, file.data.into_owned()).into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(file.metadata.mimetype()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Some(response)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Whether the binary carries a built storefront (`web/dist/index.html`).
pub fn available() -> bool {
    Assets::get("index.html").is_some()
}
