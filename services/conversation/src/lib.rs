//! The conversation service: a workspace's agents, its conversations and their messages, and
//! the agent turn that answers each user message (forwarded to runtime-proxy, streamed back,
//! published as events).

mod db;
mod error;
mod service;
mod turn;
mod validate;

use std::net::SocketAddr;

use crawbl_infra::bus::EventBus;
use crawbl_infra::config;
use crawbl_proto::conversation::v1::conversation_service_server::ConversationServiceServer;
use crawbl_proto::runtimeproxy::v1::runtime_proxy_client::RuntimeProxyClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ConversationError;

pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    /// gRPC address of runtime-proxy, e.g. `http://127.0.0.1:50053`.
    pub runtime_proxy_url: String,
    /// Redis for events; `None` publishes on the in-process bus.
    pub redis_url: Option<String>,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            listen: config::parse_or("CONVERSATION_LISTEN", ([127, 0, 0, 1], 50052).into())?,
            database_url: config::optional("CONVERSATION_DATABASE_URL")
                .or_else(|| config::optional("DATABASE_URL"))
                .unwrap_or_else(|| "sqlite://data/conversation.db?mode=rwc".to_owned()),
            runtime_proxy_url: config::optional("RUNTIME_PROXY_URL")
                .unwrap_or_else(|| "http://127.0.0.1:50053".to_owned()),
            redis_url: config::optional("REDIS_URL"),
        })
    }
}

fn migrations() -> crawbl_infra::db::Migrations {
    crawbl_infra::db::Migrations {
        service: "conversation",
        postgres: sqlx::migrate!("../../migrations/postgres/conversation"),
        sqlite: sqlx::migrate!("../../migrations/sqlite/conversation"),
    }
}

/// Serves the conversation service on `listener` until `shutdown`, publishing on `bus`.
/// Turns still running at shutdown are given a short grace period to finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    bus: EventBus,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = crawbl_infra::db::connect(&config.database_url, migrations()).await?;
    let runtime = RuntimeProxyClient::new(crawbl_infra::grpc::channel(&config.runtime_proxy_url)?);
    let service = service::Conversations::new(pool, bus, runtime);
    let turns = service.turns();

    crawbl_infra::grpc::serve(listener, ConversationServiceServer::new(service), shutdown).await?;

    turns.close();
    if tokio::time::timeout(turn::SHUTDOWN_GRACE, turns.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            running = turns.len(),
            "agent turns still running at shutdown were abandoned"
        );
    }
    Ok(())
}

/// Runs the service alone, configured by environment variables.
pub async fn main_from_env() -> anyhow::Result<()> {
    crawbl_infra::telemetry::init_logging();
    let config = Config::from_env()?;
    let bus = EventBus::for_standalone(config.redis_url.as_deref(), "conversation").await?;
    let listener = crawbl_infra::net::bind(config.listen, "CONVERSATION_LISTEN").await?;
    run(config, listener, bus, crawbl_infra::shutdown::on_signal()).await
}
