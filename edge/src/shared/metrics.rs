//! The edge's own metrics: REST requests by route and status, and this node's sockets and
//! workspace rooms. They join the process's registry (see `crawbl_infra::metrics`), served on
//! `GET /metrics`.

use std::collections::BTreeSet;
use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::MatchedPath;
use crawbl_infra::metrics::{CounterVec, Gauge, HistogramVec, LATENCY_BUCKETS, registry, to_i64};

use crate::shared::cluster::Sockets;
use crate::shared::rooms::workspace_room;

static REQUESTS: LazyLock<CounterVec> = LazyLock::new(|| {
    registry().counter_vec(
        "crawbl_http_requests_total",
        "REST requests answered, by method, route and status.",
        &["method", "route", "status"],
    )
});

static REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    registry().histogram_vec(
        "crawbl_http_request_duration_seconds",
        "Time to answer a REST request, by method, route and status.",
        &["method", "route", "status"],
        LATENCY_BUCKETS,
    )
});

static SOCKETS: LazyLock<Gauge> = LazyLock::new(|| {
    registry().gauge(
        "crawbl_socket_connections",
        "Socket.IO sockets connected to this edge node.",
    )
});

static ROOMS: LazyLock<Gauge> = LazyLock::new(|| {
    registry().gauge(
        "crawbl_socket_workspace_rooms",
        "Workspaces with at least one socket on this edge node.",
    )
});

static EVICTED: LazyLock<CounterVec> = LazyLock::new(|| {
    registry().counter_vec(
        "crawbl_sockets_evicted_total",
        "Sockets disconnected for not keeping up with their events, by outcome: `told` took \
         sync.lagged before the disconnect, `dropped` took nothing and had its connection closed.",
        &["outcome"],
    )
});

/// Counts a socket let go for not keeping up (`told` or `dropped`, see [`EVICTED`]).
pub fn socket_evicted(outcome: &str) {
    EVICTED.with(&[outcome]).inc();
}

/// The route label of a request that matched none: paths come from clients, so they are not
/// used as labels.
const UNMATCHED_ROUTE: &str = "_unmatched";

/// Middleware counting and timing every REST request by its route template
/// (`/v1/workspaces/{workspace_id}`), never the raw path.
pub async fn record_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let labels = [method.as_str(), route.as_str(), status.as_str()];
    REQUESTS.with(&labels).inc();
    REQUEST_SECONDS
        .with(&labels)
        .observe_duration(started.elapsed());
    response
}

/// Registers the edge's families, and counts this node's sockets and workspace rooms at every
/// scrape (a walk over the local sockets: cheap next to a scrape interval, and nothing to keep
/// in step on connect and disconnect).
pub fn register(sockets: Sockets) {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&REQUEST_SECONDS);
    LazyLock::force(&EVICTED);
    registry().on_scrape("edge_sockets", move || {
        let local = sockets.local();
        let workspace_rooms: BTreeSet<String> = local
            .iter()
            .flat_map(|socket| socket.rooms())
            .filter(|room| room.starts_with(workspace_room("").as_str()))
            .map(|room| room.to_string())
            .collect();
        SOCKETS.set(to_i64(local.len()));
        ROOMS.set(to_i64(workspace_rooms.len()));
    });
}
