use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use crawbl_proto::conversation::v1::{ListMessagesRequest, MessageContent, SendMessageRequest};
use serde::Deserialize;

use super::extract::{ApiJson, ApiQuery};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::{Data, Message, Page};

#[derive(Deserialize)]
pub struct ListQuery {
    before: Option<String>,
    limit: Option<u32>,
}

/// `GET …/messages?before=<cursor>&limit=<1..100>`, newest first.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path((workspace_id, conversation_id)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<Message>>, ApiError> {
    caller.workspace(&workspace_id)?;
    if query.limit == Some(0) {
        return Err(ApiError::bad_request(
            "INVALID_LIMIT",
            "limit must be between 1 and 100",
        ));
    }
    let page = state
        .conversations
        .clone()
        .list_messages(ListMessagesRequest {
            workspace_id,
            conversation_id,
            before: query.before.unwrap_or_default(),
            limit: query.limit.unwrap_or(0),
        })
        .await?
        .into_inner();
    Ok(Json(Page {
        data: page.messages.into_iter().map(Message::from).collect(),
        next_cursor: Some(page.next_cursor).filter(|cursor| !cursor.is_empty()),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendMessage {
    local_id: String,
    content: Content,
}

#[derive(Deserialize)]
pub struct Content {
    #[serde(rename = "type")]
    kind: String,
    text: String,
}

/// `POST …/messages` `{"localId", "content": {"type": "text", "text"}}` → 201 with the user
/// message at once; the agent's reply arrives as events. A retry with the same `localId`
/// returns the same message.
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    Path((workspace_id, conversation_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<SendMessage>,
) -> Result<(StatusCode, Json<Data<Message>>), ApiError> {
    caller.workspace(&workspace_id)?;
    let message = state
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
            }),
        })
        .await?
        .into_inner()
        .message
        .ok_or_else(|| tonic::Status::internal("send returned no message"))?;
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: message.into(),
        }),
    ))
}
