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

/// The shop's own pages (its client-side routes): each gets `index.html`.
fn is_page(path: &str) -> bool {
    matches!(path, "/" | "/search" | "/cart")
        || path.strip_prefix("/item/").is_some_and(|id| !id.is_empty())
}

/// The storefront's answer to `GET`/`HEAD path`: a built file (`/assets/…`), or the app's page
/// for one of its routes (`/`, `/search`, `/item/{id}`, `/cart`). `None` for everything else,
/// which the API answers with its JSON 404: an API client never gets HTML by mistake.
pub(crate) fn serve(method: &Method, path: &str, headers: &HeaderMap) -> Option<Response> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let (file, name) = if is_page(path) {
        (Assets::get("index.html")?, "index.html")
    } else {
        let name = path.trim_start_matches('/');
        if name == "index.html" {
            return None;
        }
        (Assets::get(name)?, name)
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
