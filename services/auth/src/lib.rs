//! The auth service: users, passwords, sessions and tokens, workspaces and membership, served
//! over gRPC (`crawbl.auth.v1.AuthService`).
//!
//! Layers: [`domain`] (validated input), [`service`] (business logic), [`db`] (queries),
//! [`tokens`] (every token rule), [`password`] (Argon2id), [`grpc`] (the API), [`error`] (how
//! failures map to gRPC statuses and stable codes).

use std::time::Duration;

use crawbl_infra::config::{optional, parse_or};
use crawbl_infra::db::Migrations;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod db;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod password;
pub mod service;
pub mod tokens;

pub use error::{AuthError, ValidationError};
pub use service::{Auth, TokenLifetimes};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/auth.db?mode=rwc";
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(3600);
pub const DEFAULT_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Clone, Debug)]
pub struct Config {
    /// `postgres://…` or `sqlite://…`.
    pub database_url: String,
    /// Where [`main_from_env`] listens (`AUTH_LISTEN`); [`run`] uses the listener it is given.
    pub listen: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            listen: DEFAULT_LISTEN.to_owned(),
            access_token_ttl: DEFAULT_ACCESS_TOKEN_TTL,
            refresh_token_ttl: DEFAULT_REFRESH_TOKEN_TTL,
        }
    }
}

impl Config {
    /// Reads `AUTH_LISTEN`, `AUTH_DATABASE_URL` (else `DATABASE_URL`), `ACCESS_TOKEN_TTL_SECS` and
    /// `REFRESH_TOKEN_TTL_SECS`; unset variables take the defaults.
    pub fn from_env() -> anyhow::Result<Self> {
        let defaults = Self::default();
        Ok(Self {
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
        })
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

/// Connects to the database (applying pending migrations) and serves the gRPC API on `listener`
/// until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = crawbl_infra::db::connect(&config.database_url, migrations()).await?;
    let auth = Auth::new(
        pool.clone(),
        TokenLifetimes {
            access: config.access_token_ttl,
            refresh: config.refresh_token_ttl,
        },
    );
    let served = crawbl_infra::grpc::serve(listener, grpc::AuthGrpc::server(auth), shutdown).await;
    pool.close().await;
    served
}

/// The standalone binary: logging, configuration from the environment, `AUTH_LISTEN`, and a
/// graceful stop on SIGINT/SIGTERM.
pub async fn main_from_env() -> anyhow::Result<()> {
    let _telemetry = crawbl_infra::telemetry::init("crawbl-auth");
    let config = Config::from_env()?;
    let listener = crawbl_infra::net::bind(&config.listen, "AUTH_LISTEN").await?;
    run(config, listener, crawbl_infra::shutdown::on_signal()).await
}
