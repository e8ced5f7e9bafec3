//! The web console at `/console` (SPEC §9): a single-page app of plain HTML, CSS and JavaScript
//! modules kept in `edge/console/` and embedded in the binary, so the edge serves it with no
//! Node.js or build step at run time. It talks to the same origin's REST API and Socket.IO.
//!
//! Assets live under `/console/assets/`; an unknown asset there is a 404, while any other path
//! under `/console` gets the app shell, whose client-side (hash) routes take it from there.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::Digest as _;

use crate::shared::error::ApiError;

/// Only this origin's scripts, styles, images and connections (REST and Socket.IO, including
/// its websocket, which `'self'` covers); nothing inline, no frames, no plugins.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// Asset names are not content-hashed, so browsers revalidate every time (cheap: an ETag).
const CACHE_CONTROL: &str = "no-cache";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// An asset of `edge/console/`, embedded.
macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../console/", $name)),
        }
    };
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

const SHELL: Asset = asset!("index.html", "text/html; charset=utf-8");

const ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", JAVASCRIPT),
    asset!("api.js", JAVASCRIPT),
    asset!("realtime.js", JAVASCRIPT),
    asset!("views.js", JAVASCRIPT),
    asset!("icon.svg", "image/svg+xml"),
    // socket.io-client's browser bundle, vendored (see console/vendor/README.md).
    asset!("vendor/socket.io.esm.min.js", JAVASCRIPT),
];

/// The console's routes, merged beside the REST API's (not in its OpenAPI document).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/console", get(shell))
        .route("/console/", get(shell))
        .route("/console/assets/{*name}", get(asset))
        .route("/console/{*path}", get(shell))
}

async fn shell(headers: HeaderMap) -> Response {
    serve(&SHELL, &headers)
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => serve(asset, &headers),
        None => ApiError::not_found("ASSET_NOT_FOUND", "no such console asset").into_response(),
    }
}

/// `asset` with its headers, or 304 when the browser's copy (`If-None-Match`) is current.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = etag_of(asset);
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        ),
        (header::ETAG, etag.clone()),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    let current = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| tag.trim() == etag.to_str().unwrap_or_default());
    if current {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, asset.bytes).into_response()
}

/// A strong ETag from the asset's bytes, computed once per asset.
fn etag_of(asset: &Asset) -> HeaderValue {
    static TAGS: OnceLock<Vec<(&'static str, HeaderValue)>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        std::iter::once(&SHELL)
            .chain(ASSETS)
            .map(|asset| {
                let digest = sha2::Sha256::digest(asset.bytes);
                let hex: String = digest[..12]
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect();
                let tag = HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a header");
                (asset.name, tag)
            })
            .collect()
    });
    tags.iter()
        .find(|(name, _)| *name == asset.name)
        .map(|(_, tag)| tag.clone())
        .expect("every asset has a tag")
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible")
    }

    async fn body_of(response: Response) -> Vec<u8> {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body")
            .to_vec()
    }

    fn header_of<'a>(response: &'a Response, name: &header::HeaderName) -> &'a str {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    fn on_disk(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("console")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }

    #[tokio::test]
    async fn every_asset_is_served_as_it_is_on_disk_with_its_content_type() {
        for asset in ASSETS {
            let response = get(&format!("/console/assets/{}", asset.name), None).await;
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.name);
            assert_eq!(
                header_of(&response, &header::CONTENT_TYPE),
                asset.content_type
            );
            assert_eq!(header_of(&response, &header::CACHE_CONTROL), "no-cache");
            assert_eq!(
                header_of(&response, &header::X_CONTENT_TYPE_OPTIONS),
                "nosniff"
            );
            assert_eq!(
                body_of(response).await,
                on_disk(asset.name),
                "{}",
                asset.name
            );
        }
        let script = get("/console/assets/app.js", None).await;
        assert_eq!(
            header_of(&script, &header::CONTENT_TYPE),
            "text/javascript; charset=utf-8"
        );
    }

    #[tokio::test]
    async fn the_shell_is_html_under_a_strict_content_security_policy() {
        for path in ["/console", "/console/", "/console/chat/some/deep/link"] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                header_of(&response, &header::CONTENT_TYPE),
                "text/html; charset=utf-8"
            );
            let policy = header_of(&response, &header::CONTENT_SECURITY_POLICY).to_owned();
            for directive in [
                "default-src 'none'",
                "script-src 'self'",
                "connect-src 'self'",
                "frame-ancestors 'none'",
            ] {
                assert!(policy.contains(directive), "{directive} missing: {policy}");
            }
            assert!(!policy.contains("unsafe"), "{policy}");
            assert_eq!(body_of(response).await, on_disk("index.html"));
        }
    }

    #[tokio::test]
    async fn an_unknown_asset_is_a_404_with_a_stable_code_not_the_shell() {
        let response = get("/console/assets/nope.js", None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body: serde_json::Value =
            serde_json::from_slice(&body_of(response).await).expect("json");
        assert_eq!(body["error"]["code"], "ASSET_NOT_FOUND");
        // Not a way out of the embedded set either.
        let response = get("/console/assets/../../Cargo.toml", None).await;
        assert_ne!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_current_etag_gets_304_and_a_stale_one_the_bytes() {
        let first = get("/console/assets/app.css", None).await;
        let tag = header_of(&first, &header::ETAG).to_owned();
        assert!(tag.starts_with('"') && tag.len() > 10, "{tag}");
        let again = get("/console/assets/app.css", Some(&tag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(body_of(again).await.is_empty());
        let stale = get("/console/assets/app.css", Some("\"stale\"")).await;
        assert_eq!(stale.status(), StatusCode::OK);
        assert_eq!(body_of(stale).await, on_disk("app.css"));
    }

    #[test]
    fn the_shell_loads_only_embedded_assets() {
        let shell = String::from_utf8(on_disk("index.html")).expect("utf-8");
        for reference in shell
            .split("/console/assets/")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap_or_default())
        {
            assert!(
                ASSETS.iter().any(|asset| asset.name == reference),
                "index.html loads {reference}, which is not embedded"
            );
        }
        assert!(
            !shell.contains("<script>"),
            "no inline script under the CSP"
        );
    }
}
