//! Database access: plain functions over any executor (the pool, a connection or a transaction),
//! with runtime-checked queries that run unchanged on Postgres and SQLite through sqlx's `Any`
//! driver. Ids are UUID v7 strings and timestamps Unix milliseconds.

pub mod api_keys;
pub mod sessions;
pub mod signing_keys;
pub mod throttle;
pub mod users;
pub mod workspaces;

/// Whether `error` is a unique-constraint violation, on either backend.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|error| error.is_unique_violation())
}
