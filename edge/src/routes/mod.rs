//! The REST API under `/v1` (SPEC §4).

mod api_keys;
mod auth;
mod conversations;
mod events;
mod extract;
mod members;
mod messages;
mod users;
mod workspaces;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use tracing::Instrument as _;

use crate::AppState;
use crate::error::ApiError;

/// Largest request body accepted (SPEC §8).
const MAX_BODY_BYTES: usize = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/auth/sign-up", post(auth::sign_up))
        .route("/auth/sign-in", post(auth::sign_in))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/users/me", get(users::get).patch(users::update))
        .route("/api-keys", get(api_keys::list).post(api_keys::create))
        .route("/api-keys/{api_key_id}", delete(api_keys::revoke))
        .route(
            "/workspaces",
            get(workspaces::list).post(workspaces::create),
        )
        .route("/workspaces/{workspace_id}", get(workspaces::get))
        .route(
            "/workspaces/{workspace_id}/members",
            get(members::list).post(members::add),
        )
        .route(
            "/workspaces/{workspace_id}/members/{user_id}",
            delete(members::remove),
        )
        .route("/workspaces/{workspace_id}/agents", get(workspaces::agents))
        .route(
            "/workspaces/{workspace_id}/conversations",
            get(conversations::list).post(conversations::create),
        )
        .route(
            "/workspaces/{workspace_id}/conversations/{conversation_id}",
            get(conversations::get).delete(conversations::delete),
        )
        .route(
            "/workspaces/{workspace_id}/conversations/{conversation_id}/messages",
            get(messages::list).post(messages::send),
        )
        .route("/workspaces/{workspace_id}/events", get(events::list));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(healthz))
        .route_layer(axum::middleware::from_fn(trace_request))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
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

async fn healthz() -> &'static str {
    "ok"
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
