//! The `AgentRuntime` gRPC service: a turn streams the scripted reply token by token, then usage,
//! then done. A turn stops as soon as its caller goes away.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crawbl_proto::runtime::v1::agent_runtime_server::{AgentRuntime, AgentRuntimeServer};
use crawbl_proto::runtime::v1::{Done, TextDelta, TurnEvent, TurnRequest, Usage, turn_event};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::script::{count_tokens, scripted_reply, tokens};

/// Small on purpose: the stream is paced by the token delay, and a full buffer just means the
/// caller reads slowly.
const EVENT_BUFFER: usize = 8;

/// The scripted agent runtime. Cloning shares the count of turns in flight.
#[derive(Debug, Clone)]
pub struct ScriptedRuntime {
    token_delay: Duration,
    active_turns: Arc<AtomicUsize>,
}

impl ScriptedRuntime {
    pub fn new(token_delay: Duration) -> Self {
        Self {
            token_delay,
            active_turns: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Turns still streaming. It drops back as soon as a cancelled turn has stopped, which is
    /// how tests prove that cancellation reaches the runtime.
    pub fn active_turns(&self) -> usize {
        self.active_turns.load(Ordering::SeqCst)
    }

    /// The gRPC service to mount on a server.
    pub fn into_service(self) -> AgentRuntimeServer<Self> {
        AgentRuntimeServer::new(self)
    }
}

#[tonic::async_trait]
impl AgentRuntime for ScriptedRuntime {
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
            "turn started"
        );
        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        let active = ActiveTurn::start(Arc::clone(&self.active_turns));
        let delay = self.token_delay;
        tokio::spawn(async move {
            let _active = active;
            let finished = stream_turn(&turn, delay, &events).await;
            if finished {
                tracing::info!(message_id = %turn.message_id, "turn finished");
            } else {
                tracing::info!(message_id = %turn.message_id, "turn cancelled by the caller");
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Streams one turn; `false` when the caller went away before the end.
async fn stream_turn(
    turn: &TurnRequest,
    delay: Duration,
    events: &mpsc::Sender<Result<TurnEvent, Status>>,
) -> bool {
    let reply = scripted_reply(&turn.agent_slug, &turn.text);
    for token in tokens(&reply) {
        // Wait for the token or for the caller to leave, whichever comes first: a cancelled turn
        // must stop now, not after the next token's delay.
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = events.closed() => return false,
        }
        let delta = turn_event::Event::Delta(TextDelta {
            text: token.to_owned(),
        });
        if !send(events, delta).await {
            return false;
        }
    }
    let usage = turn_event::Event::Usage(Usage {
        input_tokens: count_tokens(&turn.text),
        output_tokens: count_tokens(&reply),
    });
    send(events, usage).await && send(events, turn_event::Event::Done(Done {})).await
}

/// `false` when the receiving side (the caller's response stream) is gone.
async fn send(events: &mpsc::Sender<Result<TurnEvent, Status>>, event: turn_event::Event) -> bool {
    events
        .send(Ok(TurnEvent { event: Some(event) }))
        .await
        .is_ok()
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
