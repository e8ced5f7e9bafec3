//! The edge: Crawbl's only public listener. REST under `/v1` and Socket.IO on namespace `/v1`,
//! both authenticated by `X-Token` or `Authorization: Bearer`. It calls the services over gRPC,
//! never touches a database, and delivers the events services publish to the sockets of each
//! workspace's room that are connected to this node.

mod auth;
mod error;
mod json;
mod realtime;
mod routes;
mod state;

use std::net::SocketAddr;

use anyhow::Context;
use crawbl_infra::bus::EventBus;
use crawbl_infra::config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use state::AppState;

pub struct Config {
    pub listen: SocketAddr,
    pub auth_url: String,
    pub conversation_url: String,
    pub runtime_proxy_url: String,
    /// Redis for events; `None` subscribes to the in-process bus.
    pub redis_url: Option<String>,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            listen: config::parse_or("EDGE_LISTEN", ([127, 0, 0, 1], 8080).into())?,
            auth_url: config::optional("AUTH_URL")
                .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned()),
            conversation_url: config::optional("CONVERSATION_URL")
                .unwrap_or_else(|| "http://127.0.0.1:50052".to_owned()),
            runtime_proxy_url: config::optional("RUNTIME_PROXY_URL")
                .unwrap_or_else(|| "http://127.0.0.1:50053".to_owned()),
            redis_url: config::optional("REDIS_URL"),
        })
    }
}

/// Serves REST and Socket.IO on `listener` until `shutdown`, delivering events from `bus`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    bus: EventBus,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = AppState::connect(&config)?;
    let (socket_layer, io) = realtime::layer(state.clone());
    let app = routes::router(state).layer(socket_layer);

    let delivery = tokio::spawn(realtime::deliver_events(
        io,
        bus.subscribe(),
        shutdown.clone(),
    ));

    let address = listener.local_addr().ok();
    tracing::info!(?address, bus = bus.kind(), "edge listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("serving the edge")?;
    shutdown.cancel();
    if let Err(error) = delivery.await {
        tracing::warn!(%error, "event delivery task ended abnormally");
    }
    Ok(())
}

/// Runs the edge alone, configured by environment variables.
pub async fn main_from_env() -> anyhow::Result<()> {
    let telemetry = crawbl_infra::telemetry::init("crawbl-edge");
    let result = run_from_env().await;
    telemetry.shutdown();
    result
}

async fn run_from_env() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let bus = EventBus::for_standalone(config.redis_url.as_deref(), "edge").await?;
    let listener = crawbl_infra::net::bind(config.listen, "EDGE_LISTEN").await?;
    run(config, listener, bus, crawbl_infra::shutdown::on_signal()).await
}
