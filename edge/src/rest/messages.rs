use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use crawbl_proto::conversation::v1::{
    DeleteMessageRequest, EditMessageRequest, ListMessagesRequest, MessageContent,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiQuery, PageQuery};
use crate::AppState;
use crate::shared::auth::Caller;
use crate::shared::error::{ApiError, ErrorBody};
use crate::shared::json::{Data, Message, Page};
use crate::shared::sending::{self, Destination, SendMessage, object};

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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SendQuery {
    /// Answer when the agents' turns end, with the message and the replies.
    #[serde(default)]
    wait: bool,
}

/// The body of `?wait=true`: the user's message and the agent's reply once the turn ended
/// (`null` if the turn produced none); with several agents addressed, `reply` is the first one's
/// and `replies` holds them all.
#[derive(Serialize, ToSchema)]
pub struct Exchange {
    message: Message,
    reply: Option<Message>,
    replies: Vec<Message>,
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
    let response = sending::send(
        &state,
        &caller,
        Destination::Workspace(workspace_id),
        conversation_id,
        body,
        query.wait,
    )
    .await?;
    let message = Message::from(
        response
            .message
            .ok_or_else(|| tonic::Status::internal("send returned no message"))?,
    );
    let answer = if query.wait {
        SendAnswer::Exchange(Box::new(Exchange {
            message,
            reply: response.reply.map(Message::from),
            replies: response.replies.into_iter().map(Message::from).collect(),
        }))
    } else {
        SendAnswer::Message(Box::new(message))
    };
    Ok((StatusCode::CREATED, Json(Data { data: answer })))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EditMessage {
    #[serde(deserialize_with = "object")]
    content: EditContent,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditContent {
    /// `text`, the only type there is.
    #[serde(rename = "type")]
    #[schema(pattern = "^text$")]
    kind: String,
    /// Not only whitespace; at most 32 KiB of UTF-8.
    #[schema(max_length = 32768, pattern = r"\S")]
    text: String,
}

/// `PATCH …/messages/{m} {"content": {"type": "text", "text"}}`: the author changes the text of
/// their own message (its mentions stay, and no agent answers again). Everyone in the workspace
/// gets the durable `message.updated`, with `editedAt`.
#[utoipa::path(
    patch,
    operation_id = "editMessage",
    path = "/workspaces/{workspace_id}/conversations/{conversation_id}/messages/{message_id}",
    tag = "messages",
    request_body = EditMessage,
    params(
        ("workspace_id" = String, Path, description = "a workspace of the caller"),
        ("conversation_id" = String, Path),
        ("message_id" = String, Path),
    ),
    responses(
        (status = 200, description = "the message as edited", body = Data<Message>),
        (status = 403, description = "`NOT_MESSAGE_AUTHOR`: an agent's message, or another person's", body = ErrorBody),
        (status = 409, description = "`MESSAGE_DELETED`", body = ErrorBody),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn edit(
    State(state): State<AppState>,
    caller: Caller,
    Path((workspace_id, conversation_id, message_id)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<EditMessage>,
) -> Result<Json<Data<Message>>, ApiError> {
    caller.workspace(&workspace_id)?;
    let message = state
        .conversations
        .clone()
        .edit_message(EditMessageRequest {
            workspace_id,
            conversation_id,
            message_id,
            user_id: caller.user_id().to_owned(),
            content: Some(MessageContent {
                r#type: body.content.kind,
                text: body.content.text,
                mentions: Vec::new(),
            }),
        })
        .await
        .map_err(ApiError::forbidden_to_members)?
        .into_inner();
    Ok(Json(Data {
        data: message.into(),
    }))
}

/// `DELETE …/messages/{m}`: the author deletes their own message. It stays in lists as a
/// tombstone (empty text, `deletedAt`), everyone in the workspace gets the durable
/// `message.deleted {id, conversationId}`, and a reply still being written to it is stopped.
#[utoipa::path(
    delete,
    operation_id = "deleteMessage",
    path = "/workspaces/{workspace_id}/conversations/{conversation_id}/messages/{message_id}",
    tag = "messages",
    params(
        ("workspace_id" = String, Path, description = "a workspace of the caller"),
        ("conversation_id" = String, Path),
        ("message_id" = String, Path),
    ),
    responses(
        (status = 204, description = "deleted"),
        (status = 403, description = "`NOT_MESSAGE_AUTHOR`: an agent's message, or another person's", body = ErrorBody),
        (status = 409, description = "`MESSAGE_DELETED`: deleted already", body = ErrorBody),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((workspace_id, conversation_id, message_id)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.workspace(&workspace_id)?;
    state
        .conversations
        .clone()
        .delete_message(DeleteMessageRequest {
            workspace_id,
            conversation_id,
            message_id,
            user_id: caller.user_id().to_owned(),
        })
        .await
        .map_err(ApiError::forbidden_to_members)?;
    Ok(StatusCode::NO_CONTENT)
}
