//! runtime-proxy: owns the lifecycle of every workspace's agent runtime. `EnsureRuntime` brings a
//! workspace's runtime up once (however many callers ask at the same time) and waits until its
//! health check says SERVING; `ForwardTurn` does that, then relays the runtime's `Turn` stream
//! with a deadline. Runtimes come from a [`Driver`]: one child process per workspace (default) or
//! a fixed address.

mod config;
mod driver;
mod registry;
mod service;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, DEFAULT_RUNTIME_BINARY, Driver};
pub use driver::LISTENING_PREFIX;

use registry::Registry;
use service::ProxyService;

/// Serves `RuntimeProxy` (with health and reflection) on `listener` until `shutdown` is
/// cancelled, then stops every runtime it started.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(driver = ?config.driver, ready_timeout_ms = config.ready_timeout.as_millis(), turn_timeout_ms = config.turn_timeout.as_millis(), "runtime-proxy starting");
    // A child token: provisioning stops as soon as shutdown starts, while running runtimes stay
    // up until the server has drained its in-flight turns.
    let registry = Registry::new(config.driver, config.ready_timeout, shutdown.child_token());
    let service = ProxyService::new(registry.clone(), config.turn_timeout);
    let served = crawbl_infra::grpc::serve(listener, service, shutdown).await;
    registry.shutdown().await;
    served
}

/// The process entry point: logging, configuration, bind, serve until a signal.
pub async fn main_from_env() -> anyhow::Result<()> {
    let _telemetry = crawbl_infra::telemetry::init("crawbl-runtime-proxy");
    let config = Config::from_env().context("reading runtime-proxy configuration")?;
    let listener = crawbl_infra::net::bind(config.listen, "RUNTIME_PROXY_LISTEN").await?;
    run(config, listener, crawbl_infra::shutdown::on_signal()).await
}
