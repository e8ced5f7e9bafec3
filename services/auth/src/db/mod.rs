//! Database access: plain functions over any executor (the pool, a connection or a transaction),
//! with runtime-checked queries that run unchanged on Postgres and SQLite through sqlx's `Any`
//! driver. Ids are UUID v7 strings and timestamps Unix milliseconds.

pub mod accounts;
pub mod api_keys;
pub mod devices;
pub mod sessions;
pub mod signing_keys;
pub mod throttle;
pub mod users;
pub mod workspaces;

pub use crawbl_infra::db::is_unique_violation;
