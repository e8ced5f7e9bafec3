//! The REST API under `/v1` (SPEC §4).

mod agents;
mod api_keys;
mod auth;
mod conversations;
mod devices;
mod events;
mod extract;
mod members;
mod messages;
mod openapi;
mod operability;
mod operations;
mod turns;
mod users;
mod workspaces;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::{Extension, Router};
use tracing::Instrument as _;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::rest::openapi::ApiDoc;
use crate::shared::error::ApiError;
use operability::OpenApiJson;

/// Largest request body accepted (SPEC §8).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Every REST route with its OpenAPI description: one list, so the document and the router
/// cannot drift apart. (`routes!` takes handlers of one path, one call per path.)
fn documented_routes() -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new()
        .routes(routes!(auth::sign_up))
        .routes(routes!(auth::sign_in))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(users::get, users::update, users::delete))
        .routes(routes!(api_keys::list, api_keys::create))
        .routes(routes!(api_keys::revoke))
        .routes(routes!(devices::list, devices::register))
        .routes(routes!(devices::delete))
        .routes(routes!(devices::webpush_key))
        .routes(routes!(devices::settings, devices::mute_all))
        .routes(routes!(devices::mute_conversation))
        .routes(routes!(workspaces::list, workspaces::create))
        .routes(routes!(workspaces::get))
        .routes(routes!(members::list, members::add))
        .routes(routes!(members::remove))
        .routes(routes!(agents::list, agents::create))
        .routes(routes!(agents::get, agents::update, agents::archive))
        .routes(routes!(conversations::list, conversations::create))
        .routes(routes!(conversations::get, conversations::delete))
        .routes(routes!(conversations::read))
        .routes(routes!(messages::list, messages::send))
        .routes(routes!(messages::edit, messages::delete))
        .routes(routes!(turns::cancel))
        .routes(routes!(turns::usage))
        .routes(routes!(operations::get))
        .routes(routes!(events::list))
        .routes(routes!(operability::openapi_json));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/v1", v1)
        .routes(routes!(operability::healthz))
        .routes(routes!(operability::readyz))
        .routes(routes!(operability::metrics))
}

pub fn router(state: AppState) -> anyhow::Result<Router> {
    let (routes, openapi) = documented_routes().split_for_parts();
    let document = OpenApiJson(Arc::from(crate::rest::openapi::to_json(openapi)?));
    Ok(routes
        // The web console: same origin, outside the OpenAPI document.
        .merge(crate::console::router())
        .route_layer(axum::middleware::from_fn(trace_request))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Outside the route layer, so unmatched requests are counted too.
        .layer(axum::middleware::from_fn(
            crate::shared::metrics::record_request,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(Extension(document))
        .with_state(state))
}

/// Runs each request in an `http.request` span that continues the caller's trace (W3C
/// `traceparent`), so the services' spans join the same trace and log lines carry its id.
async fn trace_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(
            || request.uri().path().to_owned(),
            |path| path.as_str().to_owned(),
        );
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    crawbl_infra::trace::continue_from_headers(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found("ROUTE_NOT_FOUND", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "method not allowed on this route",
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt as _;

    use super::*;

    /// The OpenAPI document of every route, as the edge serves it.
    fn openapi_document() -> anyhow::Result<String> {
        let (_, openapi) = documented_routes().split_for_parts();
        crate::rest::openapi::to_json(openapi)
    }

    fn unreachable_services() -> crate::Config {
        // Port 9 (discard) on loopback: nothing listens, calls fail at once.
        crate::Config {
            listen: ([127, 0, 0, 1], 0).into(),
            auth_url: "http://127.0.0.1:9".to_owned(),
            conversation_url: "http://127.0.0.1:9".to_owned(),
            runtime_proxy_url: "http://127.0.0.1:9".to_owned(),
            redis_url: None,
            typing_ttl: std::time::Duration::from_secs(60),
            send_limit: crate::shared::limits::DEFAULT_SENDS,
            failed_handshake_limit: crate::shared::limits::DEFAULT_FAILED_HANDSHAKES,
            trusted_proxies: crate::shared::peer::TrustedProxies::default(),
            socket_buffer_bytes: crate::realtime::DEFAULT_SOCKET_BUFFER_BYTES,
            allowed_origins: crate::shared::cors::AllowedOrigins::None,
            presence: crawbl_infra::presence::Settings::default(),
        }
    }

    /// Every (method, path) of the document.
    fn documented_operations(document: &serde_json::Value) -> Vec<(String, String)> {
        let paths = document["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("path item")
                    .keys()
                    .filter(|key| ["get", "post", "put", "patch", "delete"].contains(&key.as_str()))
                    .map(move |method| (method.to_uppercase(), path.clone()))
            })
            .collect()
    }

    #[tokio::test]
    async fn every_documented_operation_is_served_by_the_router() {
        let document: serde_json::Value =
            serde_json::from_str(&openapi_document().expect("document")).expect("json");
        assert!(
            document["openapi"]
                .as_str()
                .is_some_and(|version| version.starts_with("3.")),
            "{}",
            document["openapi"]
        );
        let operations = documented_operations(&document);
        assert!(operations.len() >= 25, "only {operations:?}");
        let mut operation_ids = std::collections::BTreeSet::new();
        for item in document["paths"].as_object().expect("paths").values() {
            for operation in item.as_object().expect("path item").values() {
                let id = operation["operationId"].as_str().expect("an operationId");
                assert!(
                    operation_ids.insert(id.to_owned()),
                    "operationId {id} twice"
                );
            }
        }

        let shutdown = tokio_util::sync::CancellationToken::new();
        let state =
            AppState::connect(&unreachable_services(), shutdown).expect("state with lazy clients");
        let router = router(state).expect("router");
        for (method, path) in operations {
            // Path parameters as plain words; no credentials: the route still answers with its
            // own refusal (401, 400…), never the router's 404/405.
            let concrete = path.replace(['{', '}'], "");
            let request = axum::http::Request::builder()
                .method(method.as_str())
                .uri(&concrete)
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .expect("request");
            let response = router.clone().oneshot(request).await.expect("infallible");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            let body = String::from_utf8_lossy(&body);
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED && !body.contains("ROUTE_NOT_FOUND"),
                "{method} {path} is documented but not served: {status} {body}"
            );
        }
    }

    #[tokio::test]
    async fn protected_operations_declare_their_credentials_and_errors() {
        let document: serde_json::Value =
            serde_json::from_str(&openapi_document().expect("document")).expect("json");
        let schemes = &document["components"]["securitySchemes"];
        assert!(schemes["bearer"].is_object() && schemes["xToken"].is_object());
        let me = &document["paths"]["/v1/users/me"]["get"];
        assert!(me["security"].is_array(), "{me:#}");
        assert!(me["responses"]["default"].is_object(), "{me:#}");
        let sign_up = &document["paths"]["/v1/auth/sign-up"]["post"];
        assert!(sign_up.get("security").is_none(), "{sign_up:#}");
        assert!(sign_up["requestBody"].is_object(), "{sign_up:#}");
    }
}
