//! Database pools for services: Postgres in production, an SQLite file by default.
//! Services use sqlx's `Any` driver so one set of queries serves both backends; each backend has
//! its own migrations folder because their DDL differs.

use std::str::FromStr;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, ConnectOptions, Connection as _};

/// How long a query waits for a pool connection before it fails, by backend. Against Postgres
/// this is also how long a request takes to fail while the server is down (the pool keeps
/// retrying refused connections until then), so it is short: a server that answers in
/// milliseconds and has not freed one of ten connections within a second is down or overloaded,
/// and either way the client should hear 503 and retry. SQLite keeps its busy timeout's 5 s: a
/// connection there may wait that long for the single writer's lock without anything being down.
const POSTGRES_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
const SQLITE_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// A pooled connection idle at least this long is pinged before it is handed out (one that
/// fails is replaced). sqlx pings every time by default: a round trip more for every query of
/// a busy service, whose connections are never idle that long.
const PING_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// A service's migrations for each backend. Each service records what it applied in its own
/// table, so services may share one Postgres database without seeing each other's migrations.
pub struct Migrations {
    pub service: &'static str,
    pub postgres: Migrator,
    pub sqlite: Migrator,
}

/// Which backend a database URL points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn of_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            anyhow::bail!(
                "unsupported database URL {:?}: use postgres://… or sqlite://…",
                redact(url)
            )
        }
    }
}

/// Connects to `url`, creating the SQLite file (and its folder) when needed, and applies the
/// service's pending migrations.
pub async fn connect(url: &str, migrations: Migrations) -> anyhow::Result<AnyPool> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of_url(url)?;
    if backend == Backend::Sqlite {
        create_sqlite_folder(url)?;
    }
    let options = AnyConnectOptions::from_str(url)
        .with_context(|| format!("invalid database URL {:?}", redact(url)))?
        .log_statements(tracing::log::LevelFilter::Debug);
    let pool = AnyPoolOptions::new()
        .max_connections(match backend {
            Backend::Postgres => 10,
            Backend::Sqlite => 4,
        })
        .acquire_timeout(match backend {
            Backend::Postgres => POSTGRES_ACQUIRE_TIMEOUT,
            Backend::Sqlite => SQLITE_ACQUIRE_TIMEOUT,
        })
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .after_connect(move |connection, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // WAL lets readers run while a writer commits; wait instead of failing on a lock.
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *connection)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 5000")
                        .execute(&mut *connection)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *connection)
                        .await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .with_context(|| {
            format!(
                "cannot connect to the database at {:?}; is it running?",
                redact(url)
            )
        })?;

    let mut migrator = match backend {
        Backend::Postgres => migrations.postgres,
        Backend::Sqlite => migrations.sqlite,
    };
    migrator.dangerous_set_table_name(format!("_sqlx_migrations_{}", migrations.service));
    migrator
        .run(&pool)
        .await
        .with_context(|| format!("applying {} migrations", migrations.service))?;
    crate::metrics::watch_pool(migrations.service, &pool);
    Ok(pool)
}

/// Whether `error` is a unique-constraint violation, on either backend.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|error| error.is_unique_violation())
}

/// Whether `error` is a foreign-key violation (a row refers to one that is gone), on either
/// backend.
pub fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|error| error.is_foreign_key_violation())
}

/// Whether `error` says the database cannot be used right now (it is down, restarting, shutting
/// down or out of connections, or no pool connection freed up in time) rather than that the
/// query is wrong: the caller should answer "unavailable, retry" instead of "internal error".
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        // SQLSTATE class 08: connection exceptions; 57P01–57P03: the server is shutting down
        // (`pg_ctl stop` ends every session with 57P01), crashed, or is still starting;
        // 53300: too many connections.
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

fn create_sqlite_folder(url: &str) -> anyhow::Result<()> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(folder) = std::path::Path::new(path).parent()
        && !folder.as_os_str().is_empty()
    {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create the data folder {}", folder.display()))?;
    }
    Ok(())
}

/// The URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _password)) => {
                    format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("postgres://crawbl:secret@db:5432/crawbl"),
            "postgres://crawbl:***@db:5432/crawbl"
        );
        assert_eq!(
            redact("postgres://crawbl@db/crawbl"),
            "postgres://crawbl@db/crawbl"
        );
        assert_eq!(redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[test]
    fn an_unreachable_database_is_unavailable_and_a_bad_query_is_not() {
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(!is_unavailable(&sqlx::Error::Protocol("unexpected".into())));
    }

    #[test]
    fn backend_is_chosen_by_scheme() {
        assert_eq!(
            Backend::of_url("postgresql://h/d").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::of_url("sqlite://a.db?mode=rwc").ok(),
            Some(Backend::Sqlite)
        );
        assert!(Backend::of_url("mysql://h/d").is_err());
    }
}
