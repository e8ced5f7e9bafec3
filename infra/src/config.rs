//! Reading typed settings from environment variables, with errors that name the variable.

use std::str::FromStr;

use anyhow::{Context, anyhow};

/// The variable's value, or `None` when it is unset or empty.
pub fn optional(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// The variable parsed as `T`, or `default` when it is unset.
pub fn parse_or<T>(name: &str, default: T) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match optional(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|error| anyhow!("{name}={raw:?} is not valid: {error}")),
    }
}

/// The variable parsed as `T`, or `None` when it is unset.
pub fn parse_optional<T>(name: &str) -> anyhow::Result<Option<T>>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    optional(name)
        .map(|raw| {
            raw.trim()
                .parse()
                .map_err(|error| anyhow!("{name}={raw:?} is not valid: {error}"))
        })
        .transpose()
}

/// The variable's value; fails with a message naming it when unset.
pub fn required(name: &str) -> anyhow::Result<String> {
    optional(name).with_context(|| format!("{name} must be set"))
}
