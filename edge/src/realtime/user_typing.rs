//! Client event `typing {conversationId, isTyping}`: the other members of the conversation's
//! workspace see `user.typing {conversationId, userId, isTyping}` on every node (volatile; never
//! on the typist's own sockets). It goes out on the workspace's bus channel, like the services'
//! events, so only nodes with sockets in the workspace pay for it.
//!
//! Throttled per socket: a `true` repeated within [`REFRESH`] is acknowledged but not sent again
//! (clients repeat it while the user types), and a `false` goes out only after a `true`. When a
//! socket goes away, the edge ends whatever typing it had started.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crawbl_infra::bus::EventBus;
use crawbl_proto::conversation::v1::GetConversationRequest;
use crawbl_proto::events::v1::{Event, UserTyping, event};
use serde::Serialize;
use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use tokio::time::Instant;

use super::ack::Answer;
use super::id_field;
use crate::AppState;
use crate::shared::auth::Caller;
use crate::shared::cluster::Adapter;
use crate::shared::error::ApiError;
use crate::shared::sending::current_workspaces;

/// A `true` within this long of the last one sent for the same conversation is not sent again.
pub const REFRESH: Duration = Duration::from_secs(3);
/// Conversations one socket may be typing in at once.
const MAX_CONVERSATIONS: usize = 8;
/// Conversations whose workspace this node remembers; past it the memory starts over.
const MAX_LOCATED: usize = 50_000;

/// The socket side's typing state: the bus to publish on, and which workspace each
/// conversation belongs to (a conversation never moves, so this never goes stale, except that a
/// deleted one is remembered a while).
pub struct Typists {
    bus: EventBus,
    located: Mutex<HashMap<String, String>>,
}

/// What one socket is typing in: conversation id → (its workspace, when `true` was last sent).
#[derive(Default)]
struct SocketTyping(Mutex<HashMap<String, (String, Instant)>>);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Typed {
    conversation_id: String,
    is_typing: bool,
}

/// A `typing` payload: the conversation and whether the user types, or `None`.
fn parse(payload: Option<Value>) -> Option<(String, bool)> {
    let Some(Value::Object(fields)) = payload else {
        return None;
    };
    let conversation_id = id_field(&fields, "conversationId")?;
    match fields.get("isTyping") {
        Some(Value::Bool(is_typing)) => Some((conversation_id, *is_typing)),
        _ => None,
    }
}

impl crate::fuzzing::Parsers {
    /// [`parse`] of a `typing` payload.
    pub fn typing_request(payload: Option<Value>) -> Option<(String, bool)> {
        parse(payload)
    }
}

impl Typists {
    pub fn new(bus: EventBus) -> Arc<Self> {
        Arc::new(Self {
            bus,
            located: Mutex::default(),
        })
    }

    /// The workspace of `conversation_id`, among the caller's workspaces now.
    async fn locate(
        &self,
        state: &AppState,
        caller: &Caller,
        conversation_id: &str,
    ) -> Result<String, ApiError> {
        let member_of = current_workspaces(state, caller).await?;
        let known = lock(&self.located).get(conversation_id).cloned();
        if let Some(workspace_id) = known {
            if member_of.contains(&workspace_id) {
                return Ok(workspace_id);
            }
            return Err(tonic::Status::not_found("conversation not found").into());
        }
        let conversation = state
            .conversations
            .clone()
            .get_conversation(GetConversationRequest {
                conversation_id: conversation_id.to_owned(),
                member_of,
                ..GetConversationRequest::default()
            })
            .await?
            .into_inner();
        let mut located = lock(&self.located);
        if located.len() >= MAX_LOCATED {
            located.clear();
        }
        located.insert(
            conversation_id.to_owned(),
            conversation.workspace_id.clone(),
        );
        Ok(conversation.workspace_id)
    }

    async fn publish(
        &self,
        workspace_id: &str,
        user_id: &str,
        conversation_id: &str,
        is_typing: bool,
    ) {
        let event = Event {
            workspace_id: workspace_id.to_owned(),
            trace_context: crawbl_infra::trace::current_context(),
            except_user_id: user_id.to_owned(),
            kind: Some(event::Kind::UserTyping(UserTyping {
                conversation_id: conversation_id.to_owned(),
                user_id: user_id.to_owned(),
                is_typing,
            })),
            ..Event::default()
        };
        if let Err(error) = self.bus.publish(&event).await {
            tracing::debug!(
                error = format!("{error:#}"),
                workspace_id,
                "user.typing not published"
            );
        }
    }

    /// Ends the typing a socket had started, when it goes away.
    pub async fn socket_gone(&self, socket: &SocketRef<Adapter>) {
        let (Some(typing), Some(caller)) = (
            socket.extensions.get::<Arc<SocketTyping>>(),
            socket.extensions.get::<Caller>(),
        ) else {
            return;
        };
        let ended: Vec<(String, String)> = lock(&typing.0)
            .drain()
            .map(|(conversation_id, (workspace_id, _))| (conversation_id, workspace_id))
            .collect();
        for (conversation_id, workspace_id) in ended {
            self.publish(&workspace_id, caller.user_id(), &conversation_id, false)
                .await;
        }
    }
}

pub async fn typing(
    socket: SocketRef<Adapter>,
    State(state): State<AppState>,
    State(typists): State<Arc<Typists>>,
    TryData(payload): TryData<Value>,
    ack: AckSender<Adapter>,
) {
    let answer = match parse(payload.ok()) {
        Some((conversation_id, is_typing)) => {
            match type_in(&socket, &state, &typists, &conversation_id, is_typing).await {
                Ok(()) => Answer::data(Typed {
                    conversation_id,
                    is_typing,
                }),
                Err(error) => Answer::from_error(&error),
            }
        }
        None => Answer::refused(
            "INVALID_PAYLOAD",
            "expected {\"conversationId\": \"…\", \"isTyping\": true|false}",
        ),
    };
    answer.send(ack, "typing");
}

async fn type_in(
    socket: &SocketRef<Adapter>,
    state: &AppState,
    typists: &Typists,
    conversation_id: &str,
    is_typing: bool,
) -> Result<(), ApiError> {
    let Some(caller) = socket.extensions.get::<Caller>() else {
        return Err(tonic::Status::not_found("conversation not found").into());
    };
    let typing = match socket.extensions.get::<Arc<SocketTyping>>() {
        Some(typing) => typing,
        None => {
            let typing = Arc::new(SocketTyping::default());
            socket.extensions.insert(typing.clone());
            typing
        }
    };
    if !is_typing {
        let ended = lock(&typing.0).remove(conversation_id);
        if let Some((workspace_id, _)) = ended {
            typists
                .publish(&workspace_id, caller.user_id(), conversation_id, false)
                .await;
        }
        return Ok(());
    }
    let now = Instant::now();
    {
        let typing = lock(&typing.0);
        match typing.get(conversation_id) {
            Some((_, sent)) if now.duration_since(*sent) < REFRESH => return Ok(()),
            Some(_) => {}
            None if typing.len() >= MAX_CONVERSATIONS => {
                return Err(ApiError::new(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    "TOO_MANY_TYPING",
                    format!(
                        "a socket types in at most {MAX_CONVERSATIONS} conversations at once; send isTyping: false for one first"
                    ),
                ));
            }
            None => {}
        }
    }
    let workspace_id = typists.locate(state, &caller, conversation_id).await?;
    lock(&typing.0).insert(conversation_id.to_owned(), (workspace_id.clone(), now));
    typists
        .publish(&workspace_id, caller.user_id(), conversation_id, true)
        .await;
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn typing_takes_a_conversation_id_and_a_boolean() {
        assert_eq!(
            parse(Some(json!({"conversationId": "c", "isTyping": true}))),
            Some(("c".to_owned(), true))
        );
        for bad in [
            json!(null),
            json!([]),
            json!({"conversationId": "c"}),
            json!({"conversationId": "c", "isTyping": "yes"}),
            json!({"conversationId": "", "isTyping": true}),
            json!({"conversationId": 1, "isTyping": true}),
            json!({"conversationId": "x".repeat(200), "isTyping": false}),
        ] {
            assert!(parse(Some(bad.clone())).is_none(), "{bad}");
        }
    }
}
