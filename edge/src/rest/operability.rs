//! What operators and load balancers ask: liveness, readiness, metrics, and the OpenAPI
//! document of the whole REST API.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::AppState;
use crate::shared::health::ReadinessReport;

/// `GET /healthz`: the process is up (says nothing about its dependencies).
#[utoipa::path(
    get,
    operation_id = "healthz",
    path = "/healthz",
    tag = "operability",
    responses((status = 200, description = "alive", body = String, content_type = "text/plain")),
)]
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 when every dependency answers, 503 otherwise (and while shutting down),
/// with each dependency's state either way.
#[utoipa::path(
    get,
    operation_id = "readyz",
    path = "/readyz",
    tag = "operability",
    responses(
        (status = 200, description = "ready to serve", body = ReadinessReport),
        (status = 503, description = "a dependency is unreachable or not serving, or the node is shutting down", body = ReadinessReport),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<ReadinessReport>) {
    let report = state.readiness.check().await;
    let status = if report.is_ready() {
        StatusCode::OK
    } else {
        tracing::debug!(?report, "not ready");
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}

/// `GET /metrics`: every metric of this process in the Prometheus text format 0.0.4 (in the
/// all-in-one launcher, every component's).
#[utoipa::path(
    get,
    operation_id = "metrics",
    path = "/metrics",
    tag = "operability",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"),
    ),
)]
pub async fn metrics() -> Response {
    crawbl_infra::metrics::exporter::response()
}

/// The OpenAPI document, serialized once when the router is built.
#[derive(Clone)]
pub struct OpenApiJson(pub Arc<str>);

/// `GET /v1/openapi.json`: this document.
#[utoipa::path(
    get,
    operation_id = "openapiDocument",
    path = "/openapi.json",
    tag = "operability",
    responses(
        (status = 200, description = "the OpenAPI 3 document of every REST route", content_type = "application/json"),
    ),
)]
pub async fn openapi_json(Extension(OpenApiJson(document)): Extension<OpenApiJson>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
        .into_response()
}
