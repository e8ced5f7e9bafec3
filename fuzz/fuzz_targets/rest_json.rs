//! REST requests as the edge's router reads them, in process (no sockets): JSON bodies of the
//! routes that parse one before any credential is checked (`POST /v1/auth/sign-up`, `sign-in`,
//! `refresh`, through the edge's `ApiJson` extractor), and any request line (method, path,
//! query) against every route. The services are unreachable (a closed local port), so a body
//! that parses ends in 503 from the service call.
//!
//! Input: byte 0 picks the route (`% 4`: sign-up, sign-in, refresh, or "the rest is a request
//! line `METHOD /path?query`"), byte 1 the content type (`% 4`: `application/json`,
//! `application/json; charset=utf-8`, `text/plain`, none); the rest is the body.
//!
//! Properties (SPEC §8: bad input gets a clear 4xx, never a panic or a 500): no panic; no 5xx
//! but 503; every error answer is the JSON error body `{"error": {"code", "message"}}` (but
//! `/readyz`'s own 503 report); a body that is not JSON at all is a 4xx.

#![no_main]

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode, Uri, header};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower::ServiceExt as _;

const JSON_ROUTES: [&str; 3] = ["/v1/auth/sign-up", "/v1/auth/sign-in", "/v1/auth/refresh"];
const CONTENT_TYPES: [Option<&str>; 4] = [
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("text/plain"),
    None,
];

struct Edge {
    runtime: tokio::runtime::Runtime,
    router: Router,
}

fn edge() -> &'static Edge {
    static EDGE: OnceLock<Edge> = OnceLock::new();
    EDGE.get_or_init(|| {
        // A port nothing listens on: service calls fail at once.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let url = format!("http://{closed}");
        // SAFETY: set once, at the start, before any other thread exists.
        unsafe {
            for name in ["AUTH_URL", "CONVERSATION_URL", "RUNTIME_PROXY_URL"] {
                std::env::set_var(name, &url);
            }
            std::env::set_var("CRAWBL_SERVICE_TOKEN", "fuzz-service-token-0123456789");
            std::env::remove_var("REDIS_URL");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let router = runtime.block_on(async {
            let config = crawbl_edge::Config::from_env().expect("config");
            let state =
                crawbl_edge::AppState::connect(&config, tokio_util::sync::CancellationToken::new())
                    .expect("state");
            crawbl_edge::fuzzing::router(state).expect("router")
        });
        Edge { runtime, router }
    })
}

fuzz_target!(|data: &[u8]| {
    let [route, content_type, body @ ..] = data else {
        return;
    };
    let route = usize::from(*route) % 4;
    let request = if let Some(path) = JSON_ROUTES.get(route) {
        let mut request = Request::post(*path);
        if let Some(content_type) = CONTENT_TYPES[usize::from(*content_type) % 4] {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        request.body(Body::from(body.to_vec())).expect("request")
    } else {
        let Some((method, target)) = request_line(body) else {
            return;
        };
        let mut request = Request::builder().method(method).uri(target);
        if let Some(content_type) = CONTENT_TYPES[usize::from(*content_type) % 4] {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        request.body(Body::empty()).expect("request")
    };
    let path = request.uri().path().to_owned();

    let edge = edge();
    let response = edge
        .runtime
        .block_on(edge.router.clone().oneshot(request))
        .expect("the router is infallible");
    let status = response.status();
    let answer = edge
        .runtime
        .block_on(axum::body::to_bytes(response.into_body(), 1 << 22))
        .expect("the answer's body");

    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "{status} for {path}: {}",
        String::from_utf8_lossy(&answer)
    );
    if !status.is_success() && path != "/readyz" {
        let answer: Value = serde_json::from_slice(&answer).unwrap_or_else(|error| {
            panic!("{status} for {path} is not JSON ({error}): {answer:?}")
        });
        assert!(
            answer["error"]["code"]
                .as_str()
                .is_some_and(|code| !code.is_empty())
                && answer["error"]["message"].is_string(),
            "{status} for {path}: {answer}"
        );
    }
    if route < 3 && serde_json::from_slice::<Value>(body).is_err() {
        assert!(
            status.is_client_error(),
            "{status} for a body that is not JSON"
        );
    }
});

/// `METHOD /path?query` from the bytes, if they make one.
fn request_line(bytes: &[u8]) -> Option<(Method, Uri)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (method, target) = text.split_once(' ')?;
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    if !target.starts_with('/') {
        return None;
    }
    Some((method, Uri::try_from(target).ok()?))
}
