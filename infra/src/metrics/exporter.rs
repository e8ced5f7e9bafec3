//! Serving the registry over HTTP: `GET /metrics` on the edge's own listener, and on a small
//! listener of its own (`METRICS_LISTEN`) for a gRPC service run alone.

use std::net::SocketAddr;

use anyhow::Context;
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The variable naming a standalone service's metrics address; unset: no listener.
pub const METRICS_LISTEN_VAR: &str = "METRICS_LISTEN";
/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The process's metrics as an HTTP response (for a router's `GET /metrics`).
pub fn response() -> axum::response::Response {
    (
        [(http::header::CONTENT_TYPE, CONTENT_TYPE)],
        super::render(),
    )
        .into_response()
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let app = axum::Router::new().route("/metrics", axum::routing::get(async || response()));
    let address = listener.local_addr().ok();
    tracing::info!(?address, "metrics listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving metrics")
}

/// For a component run alone: when `METRICS_LISTEN` is set, binds it (failing at start when it
/// cannot) and serves metrics there in the background until `shutdown`. In the all-in-one
/// launcher every component shares the edge's `/metrics` instead.
pub async fn serve_from_env(shutdown: &CancellationToken) -> anyhow::Result<()> {
    let Some(address) = crate::config::parse_optional::<SocketAddr>(METRICS_LISTEN_VAR)? else {
        return Ok(());
    };
    let listener = crate::net::bind(address, METRICS_LISTEN_VAR).await?;
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(error) = serve(listener, shutdown).await {
            tracing::error!(error = format!("{error:#}"), "the metrics listener failed");
        }
    });
    Ok(())
}
