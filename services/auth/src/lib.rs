//! The auth service: users, passwords, sessions and tokens, API keys, workspaces and membership,
//! served over gRPC (`crawbl.auth.v1.AuthService`).
//!
//! Layers: [`domain`] (validated input), [`service`], [`api_keys`], [`workspaces`] and
//! [`accounts`] (business logic), [`db`] (queries), [`tokens`] (every token rule), [`keys`] (signing keys and rotation),
//! [`throttle`] (sign-in rate limits), [`password`] (Argon2id), [`changes`] (what edges are told
//! at once), [`grpc`] (the API), [`error`] (how failures map to gRPC statuses and stable codes).

use std::sync::Arc;
use std::time::Duration;

use crawbl_infra::config::{optional, parse_or};
use crawbl_infra::db::Migrations;
use crawbl_infra::notify::Notifier;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod accounts;
pub mod api_keys;
pub mod changes;
pub mod db;
pub mod devices;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod keys;
pub mod password;
pub mod service;
pub mod throttle;
pub mod tokens;
pub mod workspaces;

pub use error::{AuthError, ValidationError};
pub use service::{Auth, TokenLifetimes};
pub use throttle::SignInLimits;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/auth.db?mode=rwc";
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEFAULT_SIGNING_KEY_ROTATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often keys are re-read (another replica may have rotated) and old rate-limit windows pruned.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct Config {
    /// `postgres://…` or `sqlite://…`.
    pub database_url: String,
    /// Where [`main_from_env`] listens (`AUTH_LISTEN`); [`run`] uses the listener it is given.
    pub listen: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// A new signing key is made when the newest is older than this.
    pub signing_key_rotation: Duration,
    pub sign_in_limits: SignInLimits,
    /// Redis for announcing revocations and membership changes to edges (`None`: in-process).
    pub redis_url: Option<String>,
    /// `PUSH_ALLOW_LOOPBACK_HTTP=true`: Web Push endpoints on loopback (`http://127.0.0.1:…`)
    /// are accepted, for tests' fake push services. Never in production.
    pub push_allow_loopback_http: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            listen: DEFAULT_LISTEN.to_owned(),
            access_token_ttl: DEFAULT_ACCESS_TOKEN_TTL,
            refresh_token_ttl: DEFAULT_REFRESH_TOKEN_TTL,
            signing_key_rotation: DEFAULT_SIGNING_KEY_ROTATION,
            sign_in_limits: SignInLimits::default(),
            redis_url: None,
            push_allow_loopback_http: false,
        }
    }
}

impl Config {
    /// Reads `AUTH_LISTEN`, `AUTH_DATABASE_URL` (else `DATABASE_URL`), `ACCESS_TOKEN_TTL_SECS`,
    /// `REFRESH_TOKEN_TTL_SECS`, `SIGNING_KEY_ROTATION_SECS`, `SIGN_IN_MAX_FAILURES_PER_ACCOUNT`,
    /// `SIGN_IN_MAX_FAILURES_PER_ADDRESS`, `SIGN_IN_FAILURE_WINDOW_SECS` and `REDIS_URL`; unset
    /// variables take the defaults.
    pub fn from_env() -> anyhow::Result<Self> {
        let defaults = Self::default();
        let limits = defaults.sign_in_limits;
        let config = Self {
            database_url: optional("AUTH_DATABASE_URL")
                .or_else(|| optional("DATABASE_URL"))
                .unwrap_or(defaults.database_url),
            listen: optional("AUTH_LISTEN").unwrap_or(defaults.listen),
            access_token_ttl: Duration::from_secs(parse_or(
                "ACCESS_TOKEN_TTL_SECS",
                defaults.access_token_ttl.as_secs(),
            )?),
            refresh_token_ttl: Duration::from_secs(parse_or(
                "REFRESH_TOKEN_TTL_SECS",
                defaults.refresh_token_ttl.as_secs(),
            )?),
            signing_key_rotation: Duration::from_secs(parse_or(
                "SIGNING_KEY_ROTATION_SECS",
                defaults.signing_key_rotation.as_secs(),
            )?),
            sign_in_limits: SignInLimits {
                per_account: parse_or("SIGN_IN_MAX_FAILURES_PER_ACCOUNT", limits.per_account)?,
                per_address: parse_or("SIGN_IN_MAX_FAILURES_PER_ADDRESS", limits.per_address)?,
                window: Duration::from_secs(parse_or(
                    "SIGN_IN_FAILURE_WINDOW_SECS",
                    limits.window.as_secs(),
                )?),
            },
            redis_url: optional("REDIS_URL"),
            push_allow_loopback_http: parse_or("PUSH_ALLOW_LOOPBACK_HTTP", false)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Rejects settings that cannot work together.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.signing_key_rotation > self.access_token_ttl,
            "SIGNING_KEY_ROTATION_SECS must be longer than ACCESS_TOKEN_TTL_SECS, so a key \
             outlives the tokens it signed"
        );
        anyhow::ensure!(
            self.sign_in_limits.per_account > 0 && self.sign_in_limits.per_address > 0,
            "SIGN_IN_MAX_FAILURES_PER_ACCOUNT and SIGN_IN_MAX_FAILURES_PER_ADDRESS must be at least 1"
        );
        Ok(())
    }
}

/// The auth migrations for both backends.
pub fn migrations() -> Migrations {
    Migrations {
        service: "auth",
        postgres: sqlx::migrate!("../../migrations/postgres/auth"),
        sqlite: sqlx::migrate!("../../migrations/sqlite/auth"),
    }
}

/// The notifier auth announces changes on: Redis channel [`changes::CHANNEL`] when `redis_url` is
/// given, in-process otherwise (then only edges in this process hear them).
pub async fn notifier(redis_url: Option<&str>) -> anyhow::Result<Notifier> {
    Notifier::from_url(redis_url, changes::CHANNEL).await
}

/// Connects to the database (applying pending migrations) and serves the gRPC API on `listener`
/// until `shutdown` is cancelled, announcing revocations and membership changes on `changes`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    changes: Notifier,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate()?;
    let pool = crawbl_infra::db::connect(&config.database_url, migrations()).await?;
    let keys = Arc::new(
        keys::KeyRing::load(
            pool.clone(),
            config.signing_key_rotation,
            config.access_token_ttl,
        )
        .await?,
    );
    let auth = Auth::new(
        pool.clone(),
        TokenLifetimes {
            access: config.access_token_ttl,
            refresh: config.refresh_token_ttl,
        },
        keys,
        config.sign_in_limits,
        changes::Changes::new(changes),
    )
    .with_push_validation(crawbl_push::ValidationOptions {
        allow_loopback_http: config.push_allow_loopback_http,
    });
    let maintenance = tokio::spawn(maintain(auth.clone(), shutdown.clone()));
    let served = crawbl_infra::grpc::serve(listener, grpc::AuthGrpc::server(auth), shutdown).await;
    maintenance.abort();
    pool.close().await;
    served
}

/// Every minute: re-read signing keys (rotating when due), forget ended rate-limit windows and
/// tombstones of deleted users whose tokens have all expired.
async fn maintain(auth: Auth, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(MAINTENANCE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Err(error) = auth.keys().reload().await {
            tracing::warn!(error = format!("{error:#}"), "cannot reload signing keys");
        }
        if let Err(error) = auth.prune_sign_in_failures().await {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot prune sign-in failures"
            );
        }
        if let Err(error) = auth.prune_deleted_users().await {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot prune deleted users' tombstones"
            );
        }
    }
}

/// The standalone binary: logging, configuration from the environment, `AUTH_LISTEN`, and a
/// graceful stop on SIGINT/SIGTERM.
pub async fn main_from_env() -> anyhow::Result<()> {
    crawbl_infra::telemetry::with_telemetry("crawbl-auth", main_with_telemetry()).await
}

async fn main_with_telemetry() -> anyhow::Result<()> {
    crawbl_infra::grpc::check_service_token_env()?;
    let config = Config::from_env()?;
    if config.redis_url.is_none() {
        tracing::warn!(
            "REDIS_URL is not set: revocations and membership changes are announced only inside \
             this process; edges elsewhere apply them at their periodic resync"
        );
    }
    let changes = notifier(config.redis_url.as_deref()).await?;
    let listener = crawbl_infra::net::bind(&config.listen, "AUTH_LISTEN").await?;
    let shutdown = crawbl_infra::shutdown::on_signal();
    crawbl_infra::metrics::exporter::serve_from_env(&shutdown).await?;
    run(config, listener, changes, shutdown).await
}
