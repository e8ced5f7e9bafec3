//! Settings of one runtime-stub process, read from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use crawbl_infra::config::parse_or;

/// How a runtime-stub listens and how fast its scripted agents "type".
#[derive(Debug, Clone)]
pub struct Config {
    /// `RUNTIME_STUB_LISTEN`; port 0 lets the OS choose, and the chosen address is announced on
    /// stdout (see [`crate::LISTENING_PREFIX`]).
    pub listen: SocketAddr,
    /// `RUNTIME_STUB_TOKEN_DELAY_MS`: the pause before each streamed token.
    pub token_delay: Duration,
    /// `RUNTIME_STUB_EXIT_WITH_PARENT`: stop when stdin reaches end of file. The process driver
    /// sets it and keeps a pipe to stdin open, so a runtime never outlives a proxy that was killed
    /// without the chance to kill its children.
    pub exit_with_parent: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token_delay: Duration::from_millis(20),
            exit_with_parent: false,
        }
    }
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let defaults = Self::default();
        let delay_ms = parse_or(
            "RUNTIME_STUB_TOKEN_DELAY_MS",
            u64::try_from(defaults.token_delay.as_millis()).unwrap_or(u64::MAX),
        )?;
        Ok(Self {
            listen: parse_or("RUNTIME_STUB_LISTEN", defaults.listen)?,
            token_delay: Duration::from_millis(delay_ms),
            exit_with_parent: parse_or("RUNTIME_STUB_EXIT_WITH_PARENT", defaults.exit_with_parent)?,
        })
    }
}
