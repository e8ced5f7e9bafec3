//! The `RuntimeProxy` gRPC service.
//!
//! Errors of `ForwardTurn`, chosen so the caller can tell "try again later" from "the turn broke":
//! - before any event (bad request, runtime not ready, runtime unreachable, runtime refused the
//!   turn) the call fails with a status: `UNAVAILABLE` + `RUNTIME_NOT_READY` for everything worth
//!   retrying (the edge answers 503 with `Retry-After`);
//! - once the stream has started, it always ends with exactly one terminal event: the runtime's
//!   own `done` or `error`, or a `TurnEvent::Error` made here, whose `code` says why:
//!   `RUNTIME_DIED` (the runtime's stream broke and the runtime is gone; its agents have already
//!   been announced `offline` when this event is sent), `RUNTIME_ERROR` (it broke the turn but is
//!   alive), `DEADLINE_EXCEEDED`, `SHUTTING_DOWN`. The stream itself then ends OK, so a consumer
//!   has a single place to mark the message `failed`/`incomplete`.

use std::sync::Arc;
use std::time::Duration;

use crawbl_infra::grpc::status_with_code;
use crawbl_proto::runtime::v1::agent_runtime_client::AgentRuntimeClient;
use crawbl_proto::runtime::v1::{TurnError, TurnEvent, TurnRequest, turn_event};
use crawbl_proto::runtimeproxy::v1::runtime_proxy_server::{RuntimeProxy, RuntimeProxyServer};
use crawbl_proto::runtimeproxy::v1::{
    EnsureRuntimeRequest, GetRuntimeRequest, RuntimeInfo, RuntimeState,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::Streaming;
use tonic::{Code, Request, Response, Status};

use crate::driver::{ProvisionError, Runtime};
use crate::registry::{Registry, TurnGuard};

/// Events are forwarded one by one as they arrive; a small buffer is enough.
const EVENT_BUFFER: usize = 16;
/// Workspace ids are passed to runtime processes in their environment and logged: keep them sane.
const MAX_WORKSPACE_ID_LEN: usize = 128;
/// How long a turn that found its runtime dead waits for the `offline` events before it ends.
const STATUS_PUBLISH_BOUND: Duration = Duration::from_secs(2);

/// `TurnError.code` values made by runtime-proxy (runtimes add their own, e.g. `PROVIDER_ERROR`).
pub mod codes {
    pub const RUNTIME_DIED: &str = "RUNTIME_DIED";
    pub const RUNTIME_ERROR: &str = "RUNTIME_ERROR";
    pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
    pub const SHUTTING_DOWN: &str = "SHUTTING_DOWN";
}

pub struct ProxyService {
    registry: Registry,
    turn_timeout: Duration,
    /// Cancelled when the proxy starts shutting down: ends the turns in flight.
    shutdown: CancellationToken,
}

impl ProxyService {
    pub fn new(
        registry: Registry,
        turn_timeout: Duration,
        shutdown: CancellationToken,
    ) -> RuntimeProxyServer<Self> {
        RuntimeProxyServer::new(Self {
            registry,
            turn_timeout,
            shutdown,
        })
    }
}

type EventSender = mpsc::Sender<Result<TurnEvent, Status>>;

#[tonic::async_trait]
impl RuntimeProxy for ProxyService {
    async fn ensure_runtime(
        &self,
        request: Request<EnsureRuntimeRequest>,
    ) -> Result<Response<RuntimeInfo>, Status> {
        let workspace_id = request.into_inner().workspace_id;
        validate_workspace_id(&workspace_id)?;
        self.registry
            .ensure(&workspace_id)
            .await
            .map_err(not_ready)?;
        Ok(Response::new(info(workspace_id, RuntimeState::Ready)))
    }

    async fn get_runtime(
        &self,
        request: Request<GetRuntimeRequest>,
    ) -> Result<Response<RuntimeInfo>, Status> {
        let workspace_id = request.into_inner().workspace_id;
        validate_workspace_id(&workspace_id)?;
        let state = self.registry.state(&workspace_id);
        Ok(Response::new(info(workspace_id, state)))
    }

    type ForwardTurnStream = ReceiverStream<Result<TurnEvent, Status>>;

    async fn forward_turn(
        &self,
        request: Request<TurnRequest>,
    ) -> Result<Response<Self::ForwardTurnStream>, Status> {
        let turn = request.into_inner();
        let workspace_id = turn.workspace_id.clone();
        validate_workspace_id(&workspace_id)?;
        let message_id = turn.message_id.clone();
        // Counted before provisioning: the agent is one to tell if this runtime dies, and a
        // runtime with a turn waiting for it is not idle.
        let guard = self.registry.begin_turn(&workspace_id, &turn.agent_id);
        let runtime = self
            .registry
            .ensure(&workspace_id)
            .await
            .map_err(not_ready)?;

        // The deadline covers the whole turn, starting now that the runtime is ready.
        let deadline = Instant::now() + self.turn_timeout;
        let upstream = match self.start_turn(&runtime, turn, deadline).await {
            Ok(upstream) => upstream,
            Err(status) => {
                if status.code() == Code::Unavailable
                    && let Err(reason) = runtime.probe().await
                {
                    self.registry
                        .runtime_died(&workspace_id, &runtime, &reason, STATUS_PUBLISH_BOUND)
                        .await;
                }
                return Err(upstream_status(&status));
            }
        };

        tracing::info!(%workspace_id, %message_id, "turn forwarded");
        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        let turn = ForwardedTurn {
            workspace_id,
            runtime,
            registry: self.registry.clone(),
            shutdown: self.shutdown.clone(),
            deadline,
            _guard: guard,
        };
        tokio::spawn(async move {
            let end = turn.forward(upstream, &events).await;
            tracing::info!(workspace_id = %turn.workspace_id, %message_id, end = end.as_str(), "turn ended");
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

impl ProxyService {
    /// Opens the runtime's `Turn` stream within the deadline (also sent along as `grpc-timeout`,
    /// so the runtime knows when to give up).
    async fn start_turn(
        &self,
        runtime: &Arc<Runtime>,
        turn: TurnRequest,
        deadline: Instant,
    ) -> Result<Streaming<TurnEvent>, Status> {
        let mut client = AgentRuntimeClient::new(runtime.channel.clone());
        let mut request = Request::new(turn);
        request.set_timeout(self.turn_timeout);
        crawbl_infra::trace::inject_into_metadata(request.metadata_mut());
        match tokio::time::timeout_at(deadline, client.turn(request)).await {
            Ok(response) => response.map(Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(
                "the runtime did not start the turn before its deadline",
            )),
        }
    }
}

/// How a forwarded turn ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TurnEnd {
    Finished,
    CallerGone,
    RuntimeDied,
    RuntimeFailed,
    DeadlineExceeded,
    ShuttingDown,
}

impl TurnEnd {
    fn as_str(self) -> &'static str {
        match self {
            Self::Finished => "finished",
            Self::CallerGone => "caller gone",
            Self::RuntimeDied => "runtime died",
            Self::RuntimeFailed => "runtime failed",
            Self::DeadlineExceeded => "deadline exceeded",
            Self::ShuttingDown => "shutting down",
        }
    }
}

/// A turn being relayed from a runtime to the caller.
struct ForwardedTurn {
    workspace_id: String,
    runtime: Arc<Runtime>,
    registry: Registry,
    shutdown: CancellationToken,
    deadline: Instant,
    /// Keeps the turn counted in its workspace until it ends.
    _guard: TurnGuard,
}

impl ForwardedTurn {
    /// Copies the runtime's events to the caller until a terminal event. Returning drops
    /// `upstream`, which cancels the runtime's side of the call: that is how a caller that goes
    /// away, a deadline or a shutdown stops the runtime.
    async fn forward(&self, mut upstream: Streaming<TurnEvent>, events: &EventSender) -> TurnEnd {
        loop {
            let next = tokio::select! {
                // Noticed while waiting for the runtime, not only at the next send.
                () = events.closed() => return TurnEnd::CallerGone,
                () = self.shutdown.cancelled() => {
                    let message = "runtime-proxy is shutting down";
                    return fail(events, codes::SHUTTING_DOWN, message, TurnEnd::ShuttingDown).await;
                }
                next = tokio::time::timeout_at(self.deadline, upstream.message()) => next,
            };
            let mut event = match next {
                Ok(Ok(Some(event))) => event,
                Ok(Ok(None)) => {
                    tracing::warn!("runtime ended the turn without done or error");
                    return self.broken(events).await;
                }
                Ok(Err(status)) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "runtime turn stream failed");
                    return self.broken(events).await;
                }
                Err(_) => {
                    let message = "the turn exceeded its deadline";
                    return fail(
                        events,
                        codes::DEADLINE_EXCEEDED,
                        message,
                        TurnEnd::DeadlineExceeded,
                    )
                    .await;
                }
            };
            let terminal = match &mut event.event {
                Some(turn_event::Event::Error(error)) => {
                    // Runtimes that predate codes still produce a classifiable error.
                    if error.code.is_empty() {
                        codes::RUNTIME_ERROR.clone_into(&mut error.code);
                    }
                    true
                }
                Some(turn_event::Event::Done(_)) => true,
                _ => false,
            };
            if events.send(Ok(event)).await.is_err() {
                return TurnEnd::CallerGone;
            }
            if terminal {
                return TurnEnd::Finished;
            }
        }
    }

    /// The runtime's stream failed or ended early: `RUNTIME_DIED` if the runtime is gone (after
    /// its agents have been announced offline), `RUNTIME_ERROR` if it is still alive.
    async fn broken(&self, events: &EventSender) -> TurnEnd {
        match self.runtime.probe().await {
            Err(reason) => {
                self.registry
                    .runtime_died(
                        &self.workspace_id,
                        &self.runtime,
                        &reason,
                        STATUS_PUBLISH_BOUND,
                    )
                    .await;
                let message = format!("the runtime died during the turn: {reason}");
                fail(events, codes::RUNTIME_DIED, &message, TurnEnd::RuntimeDied).await
            }
            Ok(()) => {
                let message = "the runtime failed during the turn";
                fail(
                    events,
                    codes::RUNTIME_ERROR,
                    message,
                    TurnEnd::RuntimeFailed,
                )
                .await
            }
        }
    }
}

/// Ends the caller's stream with a `TurnEvent::Error`.
async fn fail(events: &EventSender, code: &str, message: &str, end: TurnEnd) -> TurnEnd {
    let error = TurnEvent {
        event: Some(turn_event::Event::Error(TurnError {
            message: message.to_owned(),
            code: code.to_owned(),
        })),
    };
    match events.send(Ok(error)).await {
        Ok(()) => end,
        Err(_) => TurnEnd::CallerGone,
    }
}

fn info(workspace_id: String, state: RuntimeState) -> RuntimeInfo {
    RuntimeInfo {
        workspace_id,
        state: state.into(),
    }
}

fn validate_workspace_id(workspace_id: &str) -> Result<(), Status> {
    let valid = !workspace_id.is_empty()
        && workspace_id.len() <= MAX_WORKSPACE_ID_LEN
        && !workspace_id.chars().any(char::is_control);
    if valid {
        Ok(())
    } else {
        Err(status_with_code(
            Code::InvalidArgument,
            "INVALID_WORKSPACE_ID",
            format!("workspace_id must be 1 to {MAX_WORKSPACE_ID_LEN} printable characters"),
        ))
    }
}

fn not_ready(error: ProvisionError) -> Status {
    status_with_code(
        Code::Unavailable,
        "RUNTIME_NOT_READY",
        format!("the workspace's runtime is not ready: {error}"),
    )
}

/// The status for a runtime that refused or could not start a turn.
fn upstream_status(status: &Status) -> Status {
    match status.code() {
        Code::Unavailable => status_with_code(
            Code::Unavailable,
            "RUNTIME_NOT_READY",
            "the workspace's runtime is unreachable",
        ),
        Code::DeadlineExceeded => status_with_code(
            Code::DeadlineExceeded,
            "TURN_DEADLINE_EXCEEDED",
            "the turn exceeded its deadline",
        ),
        code => status_with_code(
            code,
            "RUNTIME_ERROR",
            format!("the runtime refused the turn: {}", status.message()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_ids_must_be_short_printable_and_present() {
        assert!(validate_workspace_id("0190b9c2-7c1e-7000-8000-000000000000").is_ok());
        for bad in ["", "a\nb", "nul\0", &"x".repeat(MAX_WORKSPACE_ID_LEN + 1)] {
            let status = validate_workspace_id(bad).expect_err("refused");
            assert_eq!(status.code(), Code::InvalidArgument);
            assert_eq!(
                crawbl_infra::grpc::stable_code(&status),
                Some("INVALID_WORKSPACE_ID")
            );
        }
    }

    #[test]
    fn an_unreachable_runtime_reads_as_not_ready() {
        let status = upstream_status(&Status::unavailable("connection refused"));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            crawbl_infra::grpc::stable_code(&status),
            Some("RUNTIME_NOT_READY")
        );
        assert!(!status.message().contains("refused"), "no internal detail");
    }
}
