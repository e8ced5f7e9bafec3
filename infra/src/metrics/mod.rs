//! Prometheus metrics for every component: one registry per process ([`registry`]), served as
//! `GET /metrics` by the edge and, for a service run alone, on `METRICS_LISTEN`
//! ([`exporter`]). In the all-in-one launcher every component registers into the same registry,
//! so the edge's `/metrics` shows the whole stack.
//!
//! The families shared by several components are defined here (gRPC server calls, the event
//! bus, Redis reconnects, database pools); a component's own families (REST requests, sockets,
//! runtimes) live in its crate. Every name starts with `crawbl_`.

pub mod exporter;
mod grpc;
mod registry;

use std::sync::LazyLock;

pub use grpc::{GrpcServerMetrics, MeteredBody};
pub use registry::{
    Counter, CounterVec, Gauge, GaugeVec, Histogram, HistogramVec, LATENCY_BUCKETS,
    MAX_SERIES_PER_FAMILY, Registry,
};

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

/// The process's registry.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

/// Every metric of the process in the text format. The shared families are registered first,
/// so they are exposed (at zero) before anything happened: dashboards and alerts find them.
pub fn render() -> String {
    grpc::register();
    LazyLock::force(&EVENTS);
    LazyLock::force(&REDIS_RECONNECTS);
    registry().render()
}

/// Events on the bus, from publish to the emit to sockets.
pub struct EventMetrics {
    /// Published on the bus by a service (`crawbl_events_published_total`).
    pub published: Counter,
    /// Publishes that failed (Redis down); durable events are published again from the log.
    pub publish_failures: Counter,
    /// Emitted to the sockets of a workspace room on this edge, by event name.
    pub delivered: CounterVec,
    /// Lost on the way to sockets, by reason: `lagged` (an in-process subscriber fell behind),
    /// `undecodable`, `unencodable`, `emit_failed`, `duplicate` (a `seq` already delivered).
    pub dropped: CounterVec,
    /// Durable events sent again to a client that resumed from a position (replay).
    pub replayed: Counter,
}

static EVENTS: LazyLock<EventMetrics> = LazyLock::new(|| {
    let registry = registry();
    EventMetrics {
        published: registry.counter(
            "crawbl_events_published_total",
            "Events published on the event bus.",
        ),
        publish_failures: registry.counter(
            "crawbl_events_publish_failures_total",
            "Event publishes that failed; durable events are published again from the log.",
        ),
        delivered: registry.counter_vec(
            "crawbl_events_delivered_total",
            "Events emitted to the sockets of a workspace room on this edge node.",
            &["event"],
        ),
        dropped: registry.counter_vec(
            "crawbl_events_dropped_total",
            "Events that did not reach the sockets of this edge node, by reason.",
            &["reason"],
        ),
        replayed: registry.counter(
            "crawbl_events_replayed_total",
            "Durable events replayed to clients resuming from a position.",
        ),
    }
});

pub fn events() -> &'static EventMetrics {
    &EVENTS
}

/// Counts `count` events lost on the way to sockets for `reason` (see [`EventMetrics::dropped`]).
pub fn events_dropped(reason: &str, count: u64) {
    EVENTS.dropped.with(&[reason]).add(count);
}

static REDIS_RECONNECTS: LazyLock<CounterVec> = LazyLock::new(|| {
    registry().counter_vec(
        "crawbl_redis_reconnects_total",
        "Redis connections or subscriptions re-established after being lost, by client.",
        &["client"],
    )
});

/// Counts a Redis connection of `client` (`events`, `notifier`, `socket_adapter`) that was
/// lost and is back.
pub fn redis_reconnected(client: &str) {
    REDIS_RECONNECTS.with(&[client]).inc();
}

/// Database pool gauges, by service.
struct PoolGauges {
    size: GaugeVec,
    idle: GaugeVec,
    max: GaugeVec,
}

static POOLS: LazyLock<PoolGauges> = LazyLock::new(|| {
    let registry = registry();
    PoolGauges {
        size: registry.gauge_vec(
            "crawbl_db_pool_connections",
            "Open database connections (in use and idle), by service.",
            &["service"],
        ),
        idle: registry.gauge_vec(
            "crawbl_db_pool_idle_connections",
            "Idle database connections, by service.",
            &["service"],
        ),
        max: registry.gauge_vec(
            "crawbl_db_pool_max_connections",
            "The most database connections the pool opens, by service.",
            &["service"],
        ),
    }
});

/// Reports `pool`'s use as `service`'s at every scrape.
pub fn watch_pool(service: &'static str, pool: &sqlx::AnyPool) {
    let pool = pool.clone();
    registry().on_scrape(format!("db_pool:{service}"), move || {
        let gauges = &*POOLS;
        let labels = [service];
        gauges.size.with(&labels).set(i64::from(pool.size()));
        gauges.idle.with(&labels).set(to_i64(pool.num_idle()));
        gauges
            .max
            .with(&labels)
            .set(i64::from(pool.options().get_max_connections()));
    });
}

/// A count as a gauge value (saturating; counts never get near `i64::MAX`).
pub fn to_i64(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
