//! Agent turns, one conversation at a time: a message sent while the agent is still answering
//! the previous one waits behind it, so replies come in the order the messages were sent.
//! Deleting a conversation cancels its running turn and drops the queued ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crawbl_proto::conversation::v1::{Conversation, Message};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::turn::{self, TurnDeps};

struct Job {
    conversation: Conversation,
    user_message: Message,
    /// The span of the send that queued the turn: the turn continues its trace.
    span: tracing::Span,
}

struct Queue {
    /// Tells this queue from a later one of the same conversation.
    generation: u64,
    jobs: mpsc::UnboundedSender<Job>,
    cancel: CancellationToken,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
    generations: u64,
    /// Turns queued or running, by user message id, with whoever waits for their reply.
    waiters: HashMap<String, Vec<oneshot::Sender<Option<Message>>>>,
}

#[derive(Clone)]
pub struct Scheduler {
    deps: TurnDeps,
    state: Arc<Mutex<State>>,
    tracker: TaskTracker,
}

impl Scheduler {
    pub fn new(deps: TurnDeps) -> Self {
        Self {
            deps,
            state: Arc::default(),
            tracker: TaskTracker::new(),
        }
    }

    /// The running turns, so shutdown can wait for them.
    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }

    /// Queues the agent's turn for `user_message` behind the conversation's earlier turns.
    pub fn enqueue(&self, conversation: Conversation, user_message: Message) {
        let conversation_id = conversation.id.clone();
        let mut state = self.lock();
        state.waiters.entry(user_message.id.clone()).or_default();
        let mut job = Job {
            conversation,
            user_message,
            span: tracing::Span::current(),
        };
        if let Some(queue) = state.queues.get(&conversation_id) {
            match queue.jobs.send(job) {
                Ok(()) => return,
                // The worker is retiring; start a new one with this job.
                Err(mpsc::error::SendError(returned)) => job = returned,
            }
        }
        let (jobs, receiver) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let _ = jobs.send(job);
        state.generations += 1;
        let generation = state.generations;
        state.queues.insert(
            conversation_id.clone(),
            Queue {
                generation,
                jobs,
                cancel: cancel.clone(),
            },
        );
        drop(state);
        self.tracker.spawn(
            self.clone()
                .drain(conversation_id, generation, receiver, cancel),
        );
    }

    /// Cancels the conversation's running turn and drops its queued ones.
    pub fn cancel_conversation(&self, conversation_id: &str) {
        if let Some(queue) = self.lock().queues.remove(conversation_id) {
            queue.cancel.cancel();
        }
    }

    /// A receiver of the reply to `user_message_id` if its turn is queued or running; `None` when
    /// it already ended (or never started), in which case the database has the outcome.
    pub fn wait_for(&self, user_message_id: &str) -> Option<oneshot::Receiver<Option<Message>>> {
        let mut state = self.lock();
        let waiters = state.waiters.get_mut(user_message_id)?;
        let (sender, receiver) = oneshot::channel();
        waiters.push(sender);
        Some(receiver)
    }

    async fn drain(
        self,
        conversation_id: String,
        generation: u64,
        mut jobs: mpsc::UnboundedReceiver<Job>,
        cancel: CancellationToken,
    ) {
        loop {
            let job = match jobs.try_recv() {
                Ok(job) => job,
                Err(_) => {
                    // Senders only send under the lock, so an empty queue seen under it stays empty.
                    let mut state = self.lock();
                    match jobs.try_recv() {
                        Ok(job) => job,
                        Err(_) => {
                            if state
                                .queues
                                .get(&conversation_id)
                                .is_some_and(|queue| queue.generation == generation)
                            {
                                state.queues.remove(&conversation_id);
                            }
                            return;
                        }
                    }
                }
            };
            let user_message_id = job.user_message.id.clone();
            let reply = if cancel.is_cancelled() {
                None
            } else {
                let span = tracing::info_span!(
                    parent: &job.span,
                    "agent.turn",
                    conversation_id = %job.conversation.id,
                    message_id = %user_message_id,
                );
                turn::run(
                    self.deps.clone(),
                    job.conversation,
                    job.user_message,
                    cancel.clone(),
                )
                .instrument(span)
                .await
            };
            let waiters = self.lock().waiters.remove(&user_message_id);
            for waiter in waiters.into_iter().flatten() {
                let _ = waiter.send(reply.clone());
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is one map call.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
