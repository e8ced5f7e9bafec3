use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use crawbl_proto::conversation::v1::{ListMessagesRequest, MessageContent, SendMessageRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiQuery, PageQuery};
use crate::AppState;
use crate::shared::auth::Caller;
use crate::shared::error::{ApiError, ErrorBody};
use crate::shared::json::{Data, Message, Page};

/// `GET …/messages?before=<cursor>&limit=<1..100>`, newest first.
#[utoipa::path(
    get,
    operation_id = "listMessages",
    path = "/workspaces/{workspace_id}/conversations/{conversation_id}/messages",
    tag = "messages",
    params(
        ("workspace_id" = String, Path, description = "a workspace of the caller"),
        ("conversation_id" = String, Path),
        PageQuery,
    ),
    responses((status = 200, description = "newest first", body = Page<Message>)),
    security(("bearer" = []), ("xToken" = [])),
)]
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

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendMessage {
    /// The client's id for the message, 1 to 128 characters once trimmed: a retry with the
    /// same one returns the same message.
    #[schema(max_length = 128, pattern = r"\S")]
    local_id: String,
    #[serde(deserialize_with = "super::extract::object")]
    content: SendContent,
}

#[derive(Deserialize, ToSchema)]
pub struct SendContent {
    /// `text`, the only type there is.
    #[serde(rename = "type")]
    #[schema(pattern = "^text$")]
    kind: String,
    /// Not only whitespace; at most 32 KiB of UTF-8.
    #[schema(max_length = 32768, pattern = r"\S")]
    text: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SendQuery {
    /// Answer when the agent's turn ends, with both messages.
    #[serde(default)]
    wait: bool,
}

/// The body of `?wait=true`: the user's message and the agent's reply once the turn ended
/// (`null` if the turn produced none).
#[derive(Serialize, ToSchema)]
pub struct Exchange {
    message: Message,
    reply: Option<Message>,
}

/// What a send answers: the user's message, or with `?wait=true` the [`Exchange`].
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum SendAnswer {
    Message(Box<Message>),
    Exchange(Box<Exchange>),
}

/// `POST …/messages` `{"localId", "content": {"type": "text", "text"}}` → 201 with the user
/// message at once; the agent's reply arrives as events. A retry with the same `localId`
/// returns the same message. With `?wait=true` the answer comes when the turn ends and holds
/// both messages, for clients without a socket.
#[utoipa::path(
    post,
    operation_id = "sendMessage",
    path = "/workspaces/{workspace_id}/conversations/{conversation_id}/messages",
    tag = "messages",
    request_body = SendMessage,
    params(
        ("workspace_id" = String, Path, description = "a workspace of the caller"),
        ("conversation_id" = String, Path),
        SendQuery,
    ),
    responses(
        (status = 201, description = "the user's message at once; with `?wait=true`, both messages when the turn ends", body = Data<SendAnswer>),
        (status = 429, description = "`RATE_LIMITED` (with `Retry-After`): too many sends by this user", body = ErrorBody),
        (status = 503, description = "`RUNTIME_NOT_READY` (with `Retry-After`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    Path((workspace_id, conversation_id)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<SendQuery>,
    ApiJson(body): ApiJson<SendMessage>,
) -> Result<(StatusCode, Json<Data<SendAnswer>>), ApiError> {
    caller.workspace(&workspace_id)?;
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
    let answer = if query.wait {
        SendAnswer::Exchange(Box::new(Exchange {
            message,
            reply: response.reply.map(Message::from),
        }))
    } else {
        SendAnswer::Message(Box::new(message))
    };
    Ok((StatusCode::CREATED, Json(Data { data: answer })))
}
