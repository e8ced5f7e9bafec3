use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crawbl_proto::conversation::v1::{ListMessagesRequest, MessageContent, SendMessageRequest};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiQuery, PageQuery};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::{Data, Message, Page};

/// `GET …/messages?before=<cursor>&limit=<1..100>`, newest first.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path((workspace_id, conversation_id)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<Message>>, ApiError> {
    caller.workspace(&workspace_id)?;
    let limit = query.limit()?;
    let page = state
        .conversations
        .clone()
        .list_messages(ListMessagesRequest {
            workspace_id,
            conversation_id,
            before: query.before.unwrap_or_default(),
            limit,
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

#[derive(Deserialize)]
pub struct SendQuery {
    #[serde(default)]
    wait: bool,
}

/// The body of `?wait=true`: the user's message and the agent's reply once the turn ended
/// (`null` if the turn produced none).
#[derive(Serialize)]
pub struct Exchange {
    message: Message,
    reply: Option<Message>,
}

/// `POST …/messages` `{"localId", "content": {"type": "text", "text"}}` → 201 with the user
/// message at once; the agent's reply arrives as events. A retry with the same `localId`
/// returns the same message. With `?wait=true` the answer comes when the turn ends and holds
/// both messages, for clients without a socket.
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    Path((workspace_id, conversation_id)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<SendQuery>,
    ApiJson(body): ApiJson<SendMessage>,
) -> Result<Response, ApiError> {
    caller.workspace(&workspace_id)?;
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
            }),
            wait: query.wait,
        })
        .await?
        .into_inner();
    let message = Message::from(
        response
            .message
            .ok_or_else(|| tonic::Status::internal("send returned no message"))?,
    );
    let response = if query.wait {
        let exchange = Exchange {
            message,
            reply: response.reply.map(Message::from),
        };
        (StatusCode::CREATED, Json(Data { data: exchange })).into_response()
    } else {
        (StatusCode::CREATED, Json(Data { data: message })).into_response()
    };
    Ok(response)
}
