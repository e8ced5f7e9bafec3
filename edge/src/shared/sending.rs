//! One send of a user message, with the same rules whether it came over REST
//! (`POST …/messages`) or over the socket (`message.send`): the body's shape, the sender's rate
//! limit on this node, then the conversation service's checks (validation, idempotency on
//! `localId`, mentions, quota, the runtime being ready).

use crawbl_proto::conversation::v1::{MessageContent, SendMessageRequest, SendMessageResponse};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::AppState;
use crate::shared::auth::Caller;
use crate::shared::error::ApiError;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendMessage {
    /// The client's id for the message, 1 to 128 characters once trimmed: a retry with the
    /// same one returns the same message.
    #[schema(max_length = 128, pattern = r"\S")]
    pub local_id: String,
    #[serde(deserialize_with = "object")]
    pub content: SendContent,
}

#[derive(Deserialize, ToSchema)]
pub struct SendContent {
    /// `text`, the only type there is.
    #[serde(rename = "type")]
    #[schema(pattern = "^text$")]
    pub kind: String,
    /// Not only whitespace; at most 32 KiB of UTF-8.
    #[schema(max_length = 32768, pattern = r"\S")]
    pub text: String,
    /// Agent ids of the workspace the message is for, each of which answers (`@slug` in the
    /// text names agents too); absent or empty: the conversation's agent answers.
    #[serde(default)]
    #[schema(max_items = 8)]
    pub mentions: Vec<String>,
}

/// `#[serde(deserialize_with = "object")]` for a nested struct: only a JSON object, not an array
/// of its fields.
pub fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let fields = Map::deserialize(deserializer)?;
    serde_json::from_value(Value::Object(fields)).map_err(D::Error::custom)
}

/// Where a send goes: a conversation of a named workspace (REST's path), or a conversation of
/// any workspace of the caller (the socket names only the conversation).
pub enum Destination {
    Workspace(String),
    AnyOfCallers,
}

/// Sends `body` as `caller` to `conversation_id`; with `wait`, answers once the turns ended.
pub async fn send(
    state: &AppState,
    caller: &Caller,
    destination: Destination,
    conversation_id: String,
    body: SendMessage,
    wait: bool,
) -> Result<SendMessageResponse, ApiError> {
    let (workspace_id, member_of) = match destination {
        Destination::Workspace(workspace_id) => {
            caller.workspace(&workspace_id)?;
            (workspace_id, Vec::new())
        }
        // Memberships as of now, not as of the socket's handshake.
        Destination::AnyOfCallers => (String::new(), current_workspaces(state, caller).await?),
    };
    state
        .limits
        .sends
        .take(caller.user_id())
        .map_err(|limited| {
            ApiError::rate_limited(
                &limited,
                "too many messages sent; retry after Retry-After seconds",
            )
        })?;
    let response = state
        .conversations
        .clone()
        .send_message(SendMessageRequest {
            workspace_id,
            conversation_id,
            author_id: caller.user_id().to_owned(),
            local_id: body.local_id,
            content: Some(MessageContent {
                r#type: body.content.kind,
                text: body.content.text,
                mentions: body.content.mentions,
            }),
            wait,
            member_of,
        })
        .await?
        .into_inner();
    Ok(response)
}

/// The ids of the caller's workspaces, as auth has them now (cached on this node, and dropped at
/// once when a membership changes).
pub async fn current_workspaces(
    state: &AppState,
    caller: &Caller,
) -> Result<Vec<String>, ApiError> {
    let workspaces = state.access.memberships(caller.user_id()).await?;
    Ok(workspaces
        .iter()
        .map(|workspace| workspace.id.clone())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Inner {
        a: u8,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Outer {
        #[serde(deserialize_with = "object")]
        inner: Inner,
    }

    #[test]
    fn nested_structs_are_taken_from_objects_only() {
        let outer: Outer = serde_json::from_str(r#"{"inner": {"a": 1}}"#).expect("an object");
        assert_eq!(outer.inner, Inner { a: 1 });
        assert!(serde_json::from_str::<Outer>(r#"{"inner": [1]}"#).is_err());
        // What `object` guards against: serde's own struct deserializer takes arrays.
        assert!(serde_json::from_str::<Inner>("[1]").is_ok());
    }
}
