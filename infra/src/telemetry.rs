//! Structured logging: JSON lines when `LOG_FORMAT=json`, human-readable otherwise.
//! The filter comes from `RUST_LOG` (default `info`). Logs go to stderr, so a process's stdout
//! stays free for what it reports to its parent (runtime-stub prints its address there).

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber once; later calls (tests, the launcher) are no-ops.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = crate::config::optional("LOG_FORMAT").is_some_and(|format| format == "json");
    let result = if json {
        fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .with_current_span(true)
            .try_init()
    } else {
        fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_env_filter(filter)
            .try_init()
    };
    // Already installed by an earlier call in this process: keep that one.
    drop(result);
}
