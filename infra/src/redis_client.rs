//! Connecting to Redis the same way everywhere: the URL redacted in errors, and errors that say
//! what to check.

use anyhow::Context;
use redis::aio::ConnectionManager;
use redis::{IntoConnectionInfo, ProtocolVersion};

use crate::db::redact;

/// A client for `url`; fails only when the URL is invalid.
pub fn client(url: &str) -> anyhow::Result<redis::Client> {
    redis::Client::open(url).with_context(|| format!("invalid REDIS_URL {:?}", redact(url)))
}

/// A client for `url` that speaks RESP3 (push messages need it), whatever the URL says.
pub fn resp3_client(url: &str) -> anyhow::Result<redis::Client> {
    let redacted = redact(url);
    let info = url
        .into_connection_info()
        .with_context(|| format!("invalid REDIS_URL {redacted:?}"))?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
        .with_context(|| format!("invalid REDIS_URL {redacted:?}"))
}

/// A reconnecting connection through `client` (made from `url`); fails when Redis cannot be
/// reached now.
pub async fn connection_manager(
    client: &redis::Client,
    url: &str,
) -> anyhow::Result<ConnectionManager> {
    ConnectionManager::new(client.clone())
        .await
        .with_context(|| {
            format!(
                "cannot connect to Redis at {:?}; is it running?",
                redact(url)
            )
        })
}
