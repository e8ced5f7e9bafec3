//! runtime-proxy: owns the lifecycle of every workspace's agent runtime. `EnsureRuntime` brings a
//! workspace's runtime up once (however many callers ask at the same time) and waits until its
//! health check says SERVING; `ForwardTurn` does that, then relays the runtime's `Turn` stream
//! with a deadline. Runtimes come from a [`Driver`]: one child process per workspace (default) or
//! a fixed address (see `docs/runtime-drivers.md`). Runtimes that die are noticed and restarted,
//! idle ones are stopped, and agents are announced `offline`/`online` on the event bus as their
//! runtime dies and comes back.

mod config;
mod driver;
mod kubernetes;
mod metrics;
mod registry;
mod service;
mod status;

use std::time::Duration;

use anyhow::Context;
use crawbl_infra::bus::EventBus;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, Connect, DEFAULT_RUNTIME_BINARY, Driver, KubernetesSettings};
pub use driver::LISTENING_PREFIX;
pub use kubernetes::pod_name;
pub use registry::RESTART_INTERVAL;
pub use service::codes;

use driver::Provisioner;
use registry::{Registry, Timeouts};
use service::ProxyService;
use status::StatusEvents;

/// How long turns in flight at shutdown may go on before they are ended with `SHUTTING_DOWN`.
/// Shorter than the conversation service's own grace (10 s), so that service still records how
/// each turn ended before it stops.
pub const TURN_DRAIN: Duration = Duration::from_secs(8);

/// Serves `RuntimeProxy` (with health and reflection) on `listener` until `shutdown` is
/// cancelled, then stops every runtime it started. `agent.status` events go to `bus`.
///
/// At shutdown the server stops accepting calls at once; turns in flight go on for up to
/// [`TURN_DRAIN`] (most finish), then the rest end with `SHUTTING_DOWN` and runtimes are stopped.
pub async fn run(
    config: Config,
    listener: TcpListener,
    bus: EventBus,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(
        driver = ?config.driver,
        ready_timeout_ms = config.ready_timeout.as_millis(),
        provision_timeout_ms = config.provision_timeout.as_millis(),
        turn_timeout_ms = config.turn_timeout.as_millis(),
        idle_timeout_ms = config.idle_timeout.map(|idle| idle.as_millis()),
        bus = bus.kind(),
        "runtime-proxy starting"
    );
    let timeouts = Timeouts {
        ready: config.ready_timeout,
        provision: config.provision_timeout,
        idle: config.idle_timeout,
    };
    // Cancelled `TURN_DRAIN` after shutdown starts (or once the server has drained, whichever
    // is first): provisioning stops and the turns still in flight end with `SHUTTING_DOWN`.
    let stopping = CancellationToken::new();
    tokio::spawn(stop_after_drain(shutdown.clone(), stopping.clone()));
    let driver = Provisioner::start(config.driver)
        .await
        .context("starting the runtime driver")?;
    let adopt = driver
        .reconcile()
        .await
        .context("reconciling the runtimes an earlier proxy left")?;
    let registry = Registry::new(driver, timeouts, StatusEvents::start(bus), stopping.clone());
    // Runtimes that outlived an earlier proxy (kubernetes pods) are taken over: ready again
    // without a new start, and stopped when idle like any other.
    for workspace_id in adopt {
        let registry = registry.clone();
        tokio::spawn(async move {
            if let Err(error) = registry.ensure(&workspace_id).await {
                tracing::warn!(%workspace_id, %error, "cannot adopt the runtime");
            }
        });
    }
    metrics::watch(&registry);
    let service = ProxyService::new(registry.clone(), config.turn_timeout, stopping);
    let served = crawbl_infra::grpc::serve(listener, service, shutdown).await;
    registry.shutdown().await;
    served
}

/// Cancels `stopping` [`TURN_DRAIN`] after `shutdown`, unless it was cancelled before.
async fn stop_after_drain(shutdown: CancellationToken, stopping: CancellationToken) {
    let drained = async {
        shutdown.cancelled().await;
        tokio::time::sleep(TURN_DRAIN).await;
    };
    tokio::select! {
        () = stopping.cancelled() => {}
        () = drained => {
            tracing::info!("ending the turns still in flight after the shutdown drain");
            stopping.cancel();
        }
    }
}

/// The process entry point: logging, configuration, bind, serve until a signal.
pub async fn main_from_env() -> anyhow::Result<()> {
    crawbl_infra::telemetry::with_telemetry("crawbl-runtime-proxy", main_with_telemetry()).await
}

async fn main_with_telemetry() -> anyhow::Result<()> {
    let config = Config::from_env().context("reading runtime-proxy configuration")?;
    let bus = EventBus::for_standalone(
        config.redis_url.as_deref(),
        crawbl_infra::bus::Channels::from_env()?,
        "runtime-proxy",
    )
    .await?;
    let listener = crawbl_infra::net::bind(config.listen, "RUNTIME_PROXY_LISTEN").await?;
    let shutdown = crawbl_infra::shutdown::on_signal();
    crawbl_infra::metrics::exporter::serve_from_env(&shutdown).await?;
    run(config, listener, bus, shutdown).await
}
