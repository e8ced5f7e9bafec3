//! The `AgentRuntime` gRPC service: each turn activates the agent named by its `agent_slug` (with
//! the configuration and history the turn carries) and lets the configured [`Provider`] stream
//! its events, running the agent's tools. A turn stops as soon as its caller goes away.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crawbl_proto::runtime::v1::agent_runtime_server::{AgentRuntime, AgentRuntimeServer};
use crawbl_proto::runtime::v1::{TurnEvent, TurnRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::provider::{Events, Provider, TurnEnd};
use crate::tls::HttpClients;
use crate::tools::ToolSettings;

/// Small on purpose: the stream is paced by the provider, and a full buffer just means the
/// caller reads slowly.
const EVENT_BUFFER: usize = 8;

/// The agent runtime. Cloning shares the provider, the tool settings and the count of turns in
/// flight.
#[derive(Debug, Clone)]
pub struct StubRuntime {
    provider: Arc<Provider>,
    tools: Arc<ToolSettings>,
    active_turns: Arc<AtomicUsize>,
}

impl StubRuntime {
    /// The runtime `config` describes: its provider, and the HTTP clients (with their TLS roots)
    /// for providers and MCP servers. Fails on a provider that cannot work or unusable roots.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let http = HttpClients::new(&config.extra_root_certificates)?;
        let provider = Provider::from_config(config, http.provider)?;
        Ok(Self {
            provider: Arc::new(provider),
            tools: Arc::new(ToolSettings {
                timeout: config.tool_timeout,
                http: Some(http.mcp),
            }),
            active_turns: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// A runtime with `provider` and the default tool settings (no CA beyond the platform's,
    /// the default tool timeout). Tests that build a provider by hand use it.
    pub fn new(provider: Provider) -> Self {
        let defaults = Config::default();
        let http = match HttpClients::new(&defaults.extra_root_certificates) {
            Ok(http) => Some(http.mcp),
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "no HTTP client for MCP servers"
                );
                None
            }
        };
        Self {
            provider: Arc::new(provider),
            tools: Arc::new(ToolSettings {
                timeout: defaults.tool_timeout,
                http,
            }),
            active_turns: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Which provider answers: `scripted` or `openai`.
    pub fn provider_kind(&self) -> &'static str {
        self.provider.kind()
    }

    /// Turns still running. It drops back as soon as a cancelled turn has stopped, which is how
    /// tests prove that cancellation reaches the runtime.
    pub fn active_turns(&self) -> usize {
        self.active_turns.load(Ordering::SeqCst)
    }

    /// The gRPC service to mount on a server.
    pub fn into_service(self) -> AgentRuntimeServer<Self> {
        AgentRuntimeServer::new(self)
    }
}

#[tonic::async_trait]
impl AgentRuntime for StubRuntime {
    type TurnStream = ReceiverStream<Result<TurnEvent, Status>>;

    async fn turn(
        &self,
        request: Request<TurnRequest>,
    ) -> Result<Response<Self::TurnStream>, Status> {
        let turn = request.into_inner();
        tracing::info!(
            workspace_id = %turn.workspace_id,
            conversation_id = %turn.conversation_id,
            agent_slug = %turn.agent_slug,
            message_id = %turn.message_id,
            history = turn.history.len(),
            provider = self.provider.kind(),
            "turn started"
        );
        let (sender, receiver) = mpsc::channel(EVENT_BUFFER);
        let active = ActiveTurn::start(Arc::clone(&self.active_turns));
        let provider = Arc::clone(&self.provider);
        let tools = Arc::clone(&self.tools);
        tokio::spawn(async move {
            let _active = active;
            let end = provider.run(&turn, &Events(sender), &tools).await;
            let end = match end {
                TurnEnd::Done => "done",
                TurnEnd::Failed => "failed",
                TurnEnd::CallerGone => "cancelled by the caller",
            };
            tracing::info!(message_id = %turn.message_id, end, "turn ended");
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Counts a turn as active for as long as it lives, whichever way the turn ends.
struct ActiveTurn(Arc<AtomicUsize>);

impl ActiveTurn {
    fn start(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for ActiveTurn {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
