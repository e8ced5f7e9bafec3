//! runtime-stub: a stand-in for a workspace's isolated agent runtime. It serves
//! `crawbl.runtime.v1.AgentRuntime` with a deterministic scripted provider: the reply depends only
//! on the agent's slug and the user's text ([`scripted_reply`]) and is streamed token by token.
//!
//! Run as a process (by runtime-proxy's process driver), it announces its address with one line on
//! stdout, `CRAWBL_RUNTIME_LISTENING <ip:port>`; logs go to stderr.

mod config;
mod script;
mod service;

use std::io::{Read, Write};
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use script::{MAX_DELTAS, count_tokens, scripted_reply, tokens};
pub use service::ScriptedRuntime;

/// The start of the one line a runtime process prints on stdout once it listens, followed by a
/// space and its `ip:port`.
pub const LISTENING_PREFIX: &str = "CRAWBL_RUNTIME_LISTENING";

/// Serves the runtime (with health and reflection) on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let runtime = ScriptedRuntime::new(config.token_delay);
    crawbl_infra::grpc::serve(listener, runtime.into_service(), shutdown).await
}

/// The process entry point: logging, configuration, bind, announce the address, serve until a
/// signal (or, with `RUNTIME_STUB_EXIT_WITH_PARENT`, until stdin closes).
pub async fn main_from_env() -> anyhow::Result<()> {
    let _telemetry = crawbl_infra::telemetry::init("crawbl-runtime-stub");
    let config = Config::from_env().context("reading runtime-stub configuration")?;
    let listener = crawbl_infra::net::bind(config.listen, "RUNTIME_STUB_LISTEN").await?;
    let address = listener.local_addr().context("reading the bound address")?;
    announce(address)?;
    tracing::info!(%address, token_delay_ms = config.token_delay.as_millis(), "runtime-stub listening");

    let shutdown = crawbl_infra::shutdown::on_signal();
    if config.exit_with_parent {
        exit_when_stdin_closes(shutdown.clone());
    }
    run(config, listener, shutdown).await
}

/// Prints the address line for the parent process and flushes it, since stdout is a pipe there
/// and would otherwise be block-buffered.
fn announce(address: SocketAddr) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{LISTENING_PREFIX} {address}").context("writing the address to stdout")?;
    stdout.flush().context("flushing stdout")
}

/// Cancels `shutdown` once stdin reaches end of file (the parent closed its pipe or died).
/// A plain thread rather than `tokio::io::stdin`: that read cannot be cancelled and would keep
/// the runtime from shutting down on a signal.
fn exit_when_stdin_closes(shutdown: CancellationToken) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buffer = [0_u8; 256];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot read stdin; treating it as closed");
                    break;
                }
            }
        }
        tracing::info!("stdin closed; the parent is gone, shutting down");
        shutdown.cancel();
    });
}
