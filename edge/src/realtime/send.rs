//! Client event `message.send {conversationId, localId, content}`: a send without a second
//! connection, with exactly the rules of `POST …/messages` (see [`crate::shared::sending`]): a
//! retry with the same `localId` after a lost ack gets the same message and starts no second
//! turn. The ack is `{data: message}` or `{error: {code, message, retryAfter?}}`.

use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};

use super::ack::Answer;
use super::id_field;
use crate::AppState;
use crate::shared::auth::Caller;
use crate::shared::cluster::Adapter;
use crate::shared::json::Message;
use crate::shared::sending::{self, Destination, SendMessage};

/// A `message.send` payload (the conversation, and the same body as `POST …/messages`), or why
/// it is not one.
fn parse(payload: Option<Value>) -> Result<(String, SendMessage), String> {
    let Some(Value::Object(fields)) = payload else {
        return Err("expected {\"conversationId\", \"localId\", \"content\": {\"type\": \"text\", \"text\"}}".to_owned());
    };
    let conversation_id = id_field(&fields, "conversationId")
        .ok_or_else(|| "conversationId must be a conversation's id".to_owned())?;
    let message =
        serde_json::from_value(Value::Object(fields)).map_err(|error| error.to_string())?;
    Ok((conversation_id, message))
}

impl crate::fuzzing::Parsers {
    /// [`parse`] of a `message.send` payload: the conversation id and local id, or the refusal.
    pub fn send_request(payload: Option<Value>) -> Result<(String, String), String> {
        parse(payload).map(|(conversation_id, message)| (conversation_id, message.local_id))
    }
}

pub async fn send(
    socket: SocketRef<Adapter>,
    State(state): State<AppState>,
    TryData(payload): TryData<Value>,
    ack: AckSender<Adapter>,
) {
    let answer = match parse(payload.ok()) {
        Ok((conversation_id, message)) => match socket.extensions.get::<Caller>() {
            Some(caller) => {
                let sent = sending::send(
                    &state,
                    &caller,
                    Destination::AnyOfCallers,
                    conversation_id,
                    message,
                    false,
                )
                .await;
                match sent.and_then(|response| {
                    response
                        .message
                        .ok_or_else(|| tonic::Status::internal("send returned no message").into())
                }) {
                    Ok(message) => Answer::data(Message::from(message)),
                    Err(error) => Answer::from_error(&error),
                }
            }
            None => Answer::refused("CONVERSATION_NOT_FOUND", "conversation not found"),
        },
        Err(reason) => Answer::refused("INVALID_PAYLOAD", reason),
    };
    answer.send(ack, "message.send");
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_send_is_an_object_with_a_conversation_a_local_id_and_text_content() {
        let good = json!({"conversationId": "c", "localId": "l",
                          "content": {"type": "text", "text": "hi", "mentions": ["a"]}});
        let (conversation_id, message) = parse(Some(good)).expect("a send");
        assert_eq!(conversation_id, "c");
        assert_eq!(message.content.mentions, ["a"]);
        for bad in [
            json!(null),
            json!("text"),
            json!([]),
            json!({"localId": "l", "content": {"type": "text", "text": "hi"}}),
            json!({"conversationId": "", "localId": "l", "content": {"type": "text", "text": "hi"}}),
            json!({"conversationId": "c", "localId": 5, "content": {"type": "text", "text": "hi"}}),
            json!({"conversationId": "c", "localId": "l", "content": ["text", "hi"]}),
            json!({"conversationId": "c", "localId": "l", "content": {"type": "text", "text": "hi", "mentions": "a"}}),
            json!({"conversationId": "x".repeat(200), "localId": "l", "content": {"type": "text", "text": "hi"}}),
        ] {
            assert!(parse(Some(bad.clone())).is_err(), "{bad}");
        }
        assert!(parse(None).is_err());
    }
}
