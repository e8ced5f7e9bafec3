//! The conversation service: a workspace's agents, its conversations and their messages, and
//! the agent turn that answers each user message (forwarded to runtime-proxy, streamed back,
//! published as events).

mod context;
mod db;
mod error;
mod mentions;
mod metrics;
mod outbox;
mod push;
mod scheduler;
mod service;
mod turn;
mod validate;

use std::net::SocketAddr;
use std::time::Duration;

use crawbl_infra::bus::EventBus;
use crawbl_infra::config;
use crawbl_proto::auth::v1::auth_service_client::AuthServiceClient;
use crawbl_proto::conversation::v1::conversation_service_server::ConversationServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use context::ContextBudget;
pub use error::ConversationError;
pub use scheduler::TurnSettings;

/// Entry points for the fuzz targets in `fuzz/` (not an API: hidden, no stability promise).
#[doc(hidden)]
pub mod fuzzing {
    /// The opaque pagination cursor (`before=…`, `nextCursor`) of message and conversation lists.
    pub use crate::db::Cursor;
}

pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    /// gRPC address of runtime-proxy, e.g. `http://127.0.0.1:50053`; with several instances,
    /// every one, comma-separated (each workspace goes to one of them, the same for every caller).
    pub runtime_proxy_url: String,
    /// Redis for events; `None` publishes on the in-process bus.
    pub redis_url: Option<String>,
    /// How long published events stay in the log for replay.
    pub event_retention: Duration,
    /// How long a send waits for the workspace's runtime before `RUNTIME_NOT_READY`.
    pub runtime_wait: Duration,
    /// How much of the conversation each turn carries to the runtime.
    pub context_budget: ContextBudget,
    /// How turns are leased to instances and found.
    pub turns: TurnSettings,
    /// `DEFAULT_PLAN` and `DEFAULT_MONTHLY_TOKEN_QUOTA`: the plan of workspaces a billing system
    /// set none for (default: `default`, unlimited).
    pub default_plan: db::Plan,
    /// gRPC address of auth (`AUTH_URL`), which keeps the devices pushes go to.
    pub auth_url: String,
    /// The push providers' credentials (`FCM_*`, `APNS_*`, `VAPID_*`; see crawbl_push): a
    /// provider without them is off.
    pub push: crawbl_push::PushConfig,
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
            event_retention: Duration::from_secs(
                config::parse_or("EVENT_RETENTION_HOURS", 72u64)? * 3600,
            ),
            runtime_wait: Duration::from_millis(config::parse_or("RUNTIME_WAIT_MS", 10_000u64)?),
            context_budget: context_budget_from_env()?,
            turns: turn_settings_from_env()?,
            default_plan: validate::plan(
                &config::optional("DEFAULT_PLAN").unwrap_or_else(|| "default".to_owned()),
                config::optional("DEFAULT_MONTHLY_TOKEN_QUOTA")
                    .map(|quota| {
                        quota.trim().parse::<u64>().map_err(|_| {
                            anyhow::anyhow!(
                                "DEFAULT_MONTHLY_TOKEN_QUOTA={quota:?} is not a number of tokens"
                            )
                        })
                    })
                    .transpose()?,
            )
            .map_err(|error| anyhow::anyhow!("DEFAULT_PLAN: {error}"))?,
            auth_url: config::optional("AUTH_URL")
                .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned()),
            push: crawbl_push::PushConfig::from_env()?,
        })
    }
}

/// Where conversation instances ask each other to stop a turn (Redis pub/sub, or in-process).
const STOPS_CHANNEL: &str = "crawbl:turn-stops";

fn context_budget_from_env() -> anyhow::Result<ContextBudget> {
    let defaults = ContextBudget::default();
    let budget = ContextBudget {
        max_messages: config::parse_or("CONTEXT_MAX_MESSAGES", defaults.max_messages)?,
        max_bytes: config::parse_or("CONTEXT_MAX_BYTES", defaults.max_bytes)?,
    };
    if budget.max_messages == 0 || budget.max_bytes == 0 {
        anyhow::bail!(
            "CONTEXT_MAX_MESSAGES and CONTEXT_MAX_BYTES must be at least 1 (the message a turn answers always goes)"
        );
    }
    Ok(budget)
}

fn turn_settings_from_env() -> anyhow::Result<TurnSettings> {
    let defaults = TurnSettings::default();
    let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let settings = TurnSettings {
        lease: Duration::from_millis(config::parse_or("TURN_LEASE_MS", millis(defaults.lease))?),
        poll: Duration::from_millis(config::parse_or("TURN_POLL_MS", millis(defaults.poll))?),
        max_running: config::parse_or("TURNS_PER_INSTANCE", defaults.max_running)?,
        per_workspace: config::parse_or("TURNS_PER_WORKSPACE", defaults.per_workspace)?,
        sole_instance: false,
    };
    if settings.lease < Duration::from_millis(300)
        || settings.poll.is_zero()
        || settings.max_running == 0
        || settings.per_workspace == 0
    {
        anyhow::bail!(
            "TURN_LEASE_MS must be at least 300; TURN_POLL_MS, TURNS_PER_INSTANCE and TURNS_PER_WORKSPACE at least 1"
        );
    }
    Ok(settings)
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
    mut config: Config,
    listener: TcpListener,
    bus: EventBus,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = crawbl_infra::db::connect(&config.database_url, migrations()).await?;
    // One process owns an SQLite file; a Postgres database may be shared by several instances.
    let sole_instance = crawbl_infra::db::Backend::of_url(&config.database_url)?
        == crawbl_infra::db::Backend::Sqlite;
    let outbox = outbox::Outbox::new(pool.clone(), bus, !sole_instance);
    recover_interrupted_turns(&pool, &outbox).await?;

    let runtime = crawbl_infra::grpc::Shards::new(&config.runtime_proxy_url)?;
    let stops =
        crawbl_infra::notify::Notifier::from_url(config.redis_url.as_deref(), STOPS_CHANNEL)
            .await?;
    // Says once at start which providers are off.
    let providers = crawbl_push::Providers::new(std::mem::take(&mut config.push))?;
    let pushing = providers.any_enabled();
    let service = service::Conversations::new(
        pool.clone(),
        outbox.clone(),
        runtime,
        stops,
        &config,
        sole_instance,
        pushing,
    )
    .with_vapid_public_key(providers.vapid_public_key());
    let scheduler = service.scheduler();
    scheduler.settle_orphans_of_a_previous_run().await;
    let turns = scheduler.tracker();

    let background = shutdown.child_token();
    let claims = tokio::spawn(scheduler.clone().run(background.clone()));
    let follower = tokio::spawn(scheduler.follow_stops(background.clone()));
    let relay = tokio::spawn(outbox.clone().run_relay(background.clone()));
    let marker = tokio::spawn(outbox.clone().run_marker(background.clone()));
    // Without a provider no job is queued (see `db::finish_message`): no worker, no polling.
    let pushes = if pushing {
        let pusher = push::Pusher::new(
            pool.clone(),
            AuthServiceClient::new(crawbl_infra::grpc::channel(&config.auth_url)?),
            crawbl_infra::presence::Presence::from_url(config.redis_url.as_deref()).await?,
            providers,
        );
        tokio::spawn(pusher.run(background.clone()))
    } else {
        tokio::spawn(async {})
    };
    let pruner = tokio::spawn(outbox.run_pruner(config.event_retention, background.clone()));

    let served =
        crawbl_infra::grpc::serve(listener, ConversationServiceServer::new(service), shutdown)
            .await;

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
    background.cancel();
    let _ = tokio::join!(claims, follower, relay, marker, pruner, pushes);
    served
}

/// A previous version may have stopped mid-turn: no message it left `streaming` stays so, and no
/// agent `busy` where no turn runs. (Turns of this version are taken over by the scheduler.)
async fn recover_interrupted_turns(
    pool: &sqlx::AnyPool,
    outbox: &outbox::Outbox,
) -> anyhow::Result<()> {
    let events = db::recover_streaming_messages(pool).await?;
    if !events.is_empty() {
        tracing::warn!(
            count = events.len(),
            "ended messages left streaming by an interrupted run"
        );
    }
    outbox.publish(events).await;
    db::reset_busy_agents(pool).await?;
    Ok(())
}

/// Runs the service alone, configured by environment variables.
pub async fn main_from_env() -> anyhow::Result<()> {
    crawbl_infra::telemetry::with_telemetry("crawbl-conversation", main_with_telemetry()).await
}

async fn main_with_telemetry() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let bus = EventBus::for_standalone(
        config.redis_url.as_deref(),
        crawbl_infra::bus::Channels::from_env()?,
        "conversation",
    )
    .await?;
    let listener = crawbl_infra::net::bind(config.listen, "CONVERSATION_LISTEN").await?;
    let shutdown = crawbl_infra::shutdown::on_signal();
    crawbl_infra::metrics::exporter::serve_from_env(&shutdown).await?;
    run(config, listener, bus, shutdown).await
}
