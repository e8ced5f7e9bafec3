//! Listening sockets.

use anyhow::Context;
use tokio::net::TcpListener;

/// Binds `address`, which came from the env var `variable`; the error says what to change.
pub async fn bind(address: impl std::fmt::Display, variable: &str) -> anyhow::Result<TcpListener> {
    let address = address.to_string();
    TcpListener::bind(&address).await.with_context(|| {
        format!(
            "cannot listen on {address} ({variable}): is another process using it? \
             Set {variable} to another address"
        )
    })
}
