//! Client event `message.cancel {conversationId, messageId}`: stops the agent's turn that answers
//! the message (or writes it), as `POST …/messages/{m}/cancel` does. The ack is `{data: message}`
//! with the reply as it ended (`cancelled`), or `{error: {code, message}}`, with `data` too when
//! the turn had already ended (`TURN_FINISHED`) (see [`super::ack`]).

use crawbl_proto::conversation::v1::CancelTurnRequest;
use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};

use super::ack::Answer;
use super::id_field;
use crate::AppState;
use crate::shared::auth::Caller;
use crate::shared::cluster::Adapter;
use crate::shared::error::ApiError;
use crate::shared::json::Message;
use crate::shared::sending::current_workspaces;

/// The ids of a `message.cancel` payload; `None` when it is not one.
fn parse(payload: Option<Value>) -> Option<(String, String)> {
    let Some(Value::Object(fields)) = payload else {
        return None;
    };
    Some((
        id_field(&fields, "conversationId")?,
        id_field(&fields, "messageId")?,
    ))
}

impl crate::fuzzing::Parsers {
    /// [`parse`] of a `message.cancel` payload: the conversation and message ids, or `None`.
    pub fn cancel_request(payload: Option<Value>) -> Option<(String, String)> {
        parse(payload)
    }
}

pub async fn cancel(
    socket: SocketRef<Adapter>,
    State(state): State<AppState>,
    TryData(payload): TryData<Value>,
    ack: AckSender<Adapter>,
) {
    let answer = match parse(payload.ok()) {
        Some((conversation_id, message_id)) => {
            cancel_turn(&socket, &state, conversation_id, message_id).await
        }
        None => Answer::refused(
            "INVALID_PAYLOAD",
            "expected {\"conversationId\": \"…\", \"messageId\": \"…\"}",
        ),
    };
    answer.send(ack, "message.cancel");
}

async fn cancel_turn(
    socket: &SocketRef<Adapter>,
    state: &AppState,
    conversation_id: String,
    message_id: String,
) -> Answer<Message> {
    let Some(caller) = socket.extensions.get::<Caller>() else {
        return Answer::refused("CONVERSATION_NOT_FOUND", "conversation not found");
    };
    // The conversation must be in one of the user's workspaces.
    let member_of = match current_workspaces(state, &caller).await {
        Ok(member_of) => member_of,
        Err(error) => return Answer::from_error(&error),
    };
    let request = CancelTurnRequest {
        workspace_id: String::new(),
        conversation_id,
        message_id,
        member_of,
    };
    match state.conversations.clone().cancel_turn(request).await {
        Ok(answer) => {
            let answer = answer.into_inner();
            let message = answer.message.map(Message::from);
            if answer.already_finished {
                Answer {
                    data: message,
                    ..Answer::refused(
                        "TURN_FINISHED",
                        "the turn had already ended; nothing was cancelled",
                    )
                }
            } else {
                Answer {
                    data: message,
                    error: None,
                }
            }
        }
        Err(status) => Answer::from_error(&ApiError::from(status)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_an_object_with_both_ids_is_a_cancel() {
        assert!(parse(Some(json!({"conversationId": "c", "messageId": "m"}))).is_some());
        for bad in [
            json!(null),
            json!([]),
            json!({"conversationId": "c"}),
            json!({"conversationId": "", "messageId": "m"}),
            json!({"conversationId": 5, "messageId": "m"}),
            json!({"conversationId": "c", "messageId": "x".repeat(200)}),
        ] {
            assert!(parse(Some(bad.clone())).is_none(), "{bad}");
        }
        assert!(parse(None).is_none());
    }
}
