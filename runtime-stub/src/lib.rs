//! runtime-stub: a stand-in for a workspace's isolated agent runtime. It serves
//! `crawbl.runtime.v1.AgentRuntime`; each turn activates the agent named by the request's
//! `agent_slug` (`assistant`, `researcher`, or any other slug: see [`agents`]), with the agent's
//! configuration and the conversation's history that the turn carries (the runtime keeps nothing
//! between turns: see [`context`]), and streams what its provider produces: text deltas, tool
//! calls and results, usage, then done (or an error).
//!
//! Providers (`RUNTIME_PROVIDER`):
//! - `scripted` (default): deterministic replies, a pure function of the slug, the text and the
//!   history ([`scripted_reply`], [`script()`], [`script_for_turn`]), paced by
//!   `RUNTIME_STUB_LATENCY_MS` (before the first event) and `RUNTIME_STUB_TOKEN_DELAY_MS` or
//!   `RUNTIME_STUB_TOKENS_PER_SECOND`. Lines of the user's text starting with `/tool NAME {json}`,
//!   `/context`, `/fail`, `/die` or `/slow N` steer the turn for tests; see
//!   [`script`](mod@script) for exactly what each does.
//! - `openai`: an OpenAI-compatible `/chat/completions` endpoint over http or https
//!   (`OPENAI_BASE_URL`, `OPENAI_MODEL`, `OPENAI_API_KEY`), streamed, with the agent's tools
//!   ([`tools`]: built-ins and MCP servers) run in a bounded loop; failures end the turn with
//!   `PROVIDER_ERROR`, a model that never stops calling tools with `TOOL_ROUNDS_EXCEEDED`.
//!
//! Outgoing https (providers, MCP servers) is rustls on ring, trusting the platform's roots plus
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` (see `tls.rs`).
//!
//! Run as a process (by runtime-proxy's process driver), it announces its address with one line on
//! stdout, `CRAWBL_RUNTIME_LISTENING <ip:port>`; logs go to stderr.

pub mod agents;
mod config;
pub mod context;
mod provider;
pub mod script;
mod service;
mod tls;
mod tokens;
pub mod tools;

use std::io::{Read, Write};
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, OpenAiConfig, ProviderConfig};
pub use context::{describe_context, turn_history};
pub use provider::{OpenAi, PROVIDER_ERROR, Pace, Provider, TOOL_ROUNDS_EXCEEDED};
pub use script::{
    DIE_AFTER_TOKENS, DIE_EXIT_CODE, Step, context_reply, script, script_for_turn, scripted_reply,
    scripted_tool_result,
};
pub use service::StubRuntime;
pub use tokens::{MAX_DELTAS, count_tokens, tokens};

/// The start of the one line a runtime process prints on stdout once it listens, followed by a
/// space and its `ip:port`.
pub const LISTENING_PREFIX: &str = "CRAWBL_RUNTIME_LISTENING";

/// Serves the runtime (with health and reflection) on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let runtime = StubRuntime::from_config(&config).context("setting up the runtime")?;
    serve(runtime, listener, shutdown).await
}

/// Serves `runtime` (with health and reflection) on `listener` until `shutdown` is cancelled.
pub async fn serve(
    runtime: StubRuntime,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Runtimes run agent code: they are outside the service credential's trust boundary.
    crawbl_infra::grpc::serve_without_credential(listener, runtime.into_service(), shutdown).await
}

/// The process entry point: logging, configuration, bind, announce the address, serve until a
/// signal (or, with `RUNTIME_STUB_EXIT_WITH_PARENT`, until stdin closes).
pub async fn main_from_env() -> anyhow::Result<()> {
    crawbl_infra::telemetry::with_telemetry("crawbl-runtime-stub", main_with_telemetry()).await
}

async fn main_with_telemetry() -> anyhow::Result<()> {
    let config = Config::from_env().context("reading runtime-stub configuration")?;
    // Refuse a provider that cannot work before announcing an address: the process driver then
    // reports "exited before announcing its address" at once instead of a runtime that fails later.
    let runtime = StubRuntime::from_config(&config).context("setting up the runtime")?;
    let listener = crawbl_infra::net::bind(config.listen, "RUNTIME_STUB_LISTEN").await?;
    let address = listener.local_addr().context("reading the bound address")?;
    announce(address)?;
    tracing::info!(
        %address,
        provider = ?config.provider,
        token_delay_ms = config.token_delay.as_millis(),
        first_token_latency_ms = config.first_token_latency.as_millis(),
        max_tool_rounds = config.max_tool_rounds,
        tool_timeout_ms = config.tool_timeout.as_millis(),
        provider_retries = config.provider_retries,
        extra_ca_certificates = config.extra_root_certificates.len(),
        "runtime-stub listening"
    );

    let shutdown = crawbl_infra::shutdown::on_signal();
    crawbl_infra::metrics::exporter::serve_from_env(&shutdown).await?;
    if config.exit_with_parent {
        exit_when_stdin_closes(shutdown.clone());
    }
    serve(runtime, listener, shutdown).await
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
