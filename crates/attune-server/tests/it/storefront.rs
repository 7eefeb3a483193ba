//! The storefront the binary embeds (web/dist): served at `/`, its files with their types and
//! cache rules, every other page path as the single-page app, and never in the API's way.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::support::app;

async fn raw(
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = app()
        .router
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, bytes)
}

fn header(h: &HeaderMap, name: header::HeaderName) -> &str {
    h.get(name).map_or("", |v| v.to_str().unwrap())
}

/// The script the page loads (`/assets/index-<hash>.js`).
fn script_of(page: &str) -> String {
    let start = page.find("/assets/").expect("the page names its script");
    let end = start + page[start..].find(".js").expect("a .js asset") + 3;
    page[start..end].to_owned()
}

#[tokio::test]
async fn the_shop_is_served_at_the_root_with_its_assets() {
    assert!(attune_server::storefront::available());
    let (status, h, body) = raw(Method::GET, "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&h, header::CONTENT_TYPE), "text/html");
    assert_eq!(header(&h, header::CACHE_CONTROL), "no-cache");
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains(r#"<div id="root">"#), "{page}");

    let script = script_of(&page);
    let (status, h, body) = raw(Method::GET, &script, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&h, header::CONTENT_TYPE), "text/javascript");
    assert!(header(&h, header::CACHE_CONTROL).contains("immutable"));
    assert!(body.len() > 10_000, "the bundle is {} bytes", body.len());

    // A revalidation with the ETag costs no body.
    let etag = header(&h, header::ETAG).to_owned();
    assert!(etag.starts_with('"'), "{etag}");
    let (status, _, body) = raw(Method::GET, &script, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());

    let (status, h, body) = raw(Method::HEAD, "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&h, header::CONTENT_TYPE), "text/html");
    assert!(body.is_empty());
}

#[tokio::test]
async fn every_page_of_the_shop_gets_the_app_and_the_api_keeps_its_json_errors() {
    let (_, _, index) = raw(Method::GET, "/", &[]).await;
    for page in [
        "/search?q=oat%20milk",
        "/item/oatly-oat-milk-barista-1l",
        "/cart",
    ] {
        let (status, h, body) = raw(Method::GET, page, &[]).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(header(&h, header::CONTENT_TYPE), "text/html", "{page}");
        assert_eq!(body, index, "{page}");
    }
    for (method, path) in [
        (Method::GET, "/v1/nope"),
        (Method::GET, "/v1"),
        (Method::GET, "/assets/missing.js"),
        (Method::GET, "/favicon.ico"),
        (Method::GET, "/item/"),
        (Method::GET, "/v2/events"),
        (Method::GET, "/index.html"),
        (Method::POST, "/cart"),
        (Method::DELETE, "/"),
    ] {
        let (status, h, body) = raw(method.clone(), path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(
            header(&h, header::CONTENT_TYPE),
            "application/json",
            "{method} {path}"
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "not_found", "{method} {path}");
    }
}
