//! The `RuntimeProxy` gRPC service.
//!
//! Errors of `ForwardTurn`, chosen so the caller can tell "try again later" from "the turn broke":
//! - before any event (bad request, runtime not ready, runtime unreachable, runtime refused the
//!   turn) the call fails with a status: `UNAVAILABLE` + `RUNTIME_NOT_READY` for everything worth
//!   retrying (the edge answers 503 with `Retry-After`);
//! - once the stream has started, it always ends with exactly one terminal event: the runtime's
//!   own `done` or `error`, or a `TurnEvent::Error` made here when the runtime's stream fails (the
//!   runtime died), ends without a terminal event, or passes the turn deadline. The stream itself
//!   then ends OK, so a consumer has a single place to mark the message `failed`/`incomplete`.

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
use tonic::codec::Streaming;
use tonic::{Code, Request, Response, Status};

use crate::driver::{ProvisionError, Runtime};
use crate::registry::Registry;

/// Events are forwarded one by one as they arrive; a small buffer is enough.
const EVENT_BUFFER: usize = 16;
/// Workspace ids are passed to runtime processes in their environment and logged: keep them sane.
const MAX_WORKSPACE_ID_LEN: usize = 128;

pub struct ProxyService {
    registry: Registry,
    turn_timeout: Duration,
}

impl ProxyService {
    pub fn new(registry: Registry, turn_timeout: Duration) -> RuntimeProxyServer<Self> {
        RuntimeProxyServer::new(Self {
            registry,
            turn_timeout,
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
        let runtime = self
            .registry
            .ensure(&workspace_id)
            .await
            .map_err(not_ready)?;

        // The deadline covers the whole turn, starting now that the runtime is ready.
        let deadline = Instant::now() + self.turn_timeout;
        let upstream = self
            .start_turn(&runtime, turn, deadline)
            .await
            .inspect_err(|status| {
                if status.code() == Code::Unavailable {
                    self.registry
                        .discard(&workspace_id, &runtime, status.message());
                }
            })
            .map_err(|status| upstream_status(&status))?;

        tracing::info!(%workspace_id, %message_id, "turn forwarded");
        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        tokio::spawn(async move {
            let end = forward(upstream, &events, deadline).await;
            tracing::info!(%workspace_id, %message_id, end = end.as_str(), "turn ended");
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
    RuntimeFailed,
    DeadlineExceeded,
}

impl TurnEnd {
    fn as_str(self) -> &'static str {
        match self {
            Self::Finished => "finished",
            Self::CallerGone => "caller gone",
            Self::RuntimeFailed => "runtime failed",
            Self::DeadlineExceeded => "deadline exceeded",
        }
    }
}

/// Copies the runtime's events to the caller until a terminal event. Returning drops `upstream`,
/// which cancels the runtime's side of the call: that is how a caller that goes away (or a
/// deadline) stops the runtime.
async fn forward(
    mut upstream: Streaming<TurnEvent>,
    events: &EventSender,
    deadline: Instant,
) -> TurnEnd {
    loop {
        let next = tokio::select! {
            // Noticed while waiting for the runtime, not only at the next send.
            () = events.closed() => return TurnEnd::CallerGone,
            next = tokio::time::timeout_at(deadline, upstream.message()) => next,
        };
        let event = match next {
            Ok(Ok(Some(event))) => event,
            Ok(Ok(None)) => {
                tracing::warn!("runtime ended the turn without done or error");
                return fail(
                    events,
                    "the runtime ended the turn without finishing it",
                    TurnEnd::RuntimeFailed,
                )
                .await;
            }
            Ok(Err(status)) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "runtime turn stream failed");
                return fail(
                    events,
                    "the runtime failed during the turn",
                    TurnEnd::RuntimeFailed,
                )
                .await;
            }
            Err(_) => {
                return fail(
                    events,
                    "the turn exceeded its deadline",
                    TurnEnd::DeadlineExceeded,
                )
                .await;
            }
        };
        let terminal = matches!(
            event.event,
            Some(turn_event::Event::Done(_) | turn_event::Event::Error(_))
        );
        if events.send(Ok(event)).await.is_err() {
            return TurnEnd::CallerGone;
        }
        if terminal {
            return TurnEnd::Finished;
        }
    }
}

/// Ends the caller's stream with a `TurnEvent::Error`.
async fn fail(events: &EventSender, message: &str, end: TurnEnd) -> TurnEnd {
    let error = TurnEvent {
        event: Some(turn_event::Event::Error(TurnError {
            message: message.to_owned(),
            code: String::new(),
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
