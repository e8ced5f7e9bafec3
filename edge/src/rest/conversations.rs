use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use crawbl_proto::conversation::v1::{
    CreateConversationRequest, DeleteConversationRequest, GetConversationRequest,
    ListConversationsRequest, MarkReadRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiQuery, PageQuery};
use crate::AppState;
use crate::shared::auth::Caller;
use crate::shared::error::ApiError;
use crate::shared::json::{Conversation, Data, Page};

/// `GET /v1/workspaces/{w}/conversations?before=<cursor>&limit=<1..100>`, most recently
/// active first.
#[utoipa::path(
    get,
    operation_id = "listConversations",
    path = "/workspaces/{workspace_id}/conversations",
    tag = "conversations",
    params(("workspace_id" = String, Path, description = "a workspace of the caller"), PageQuery),
    responses(
        (status = 200, description = "most recently active first", body = Page<Conversation>),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(workspace_id): Path<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<Conversation>>, ApiError> {
    caller.workspace(&workspace_id)?;
    let limit = query.limit()?;
    let page = state
        .conversations
        .clone()
        .list_conversations(ListConversationsRequest {
            workspace_id,
            reader_id: caller.user_id().to_owned(),
            before: query.before.unwrap_or_default(),
            limit,
        })
        .await?
        .into_inner();
    Ok(Json(Page {
        data: page
            .conversations
            .into_iter()
            .map(Conversation::from)
            .collect(),
        next_cursor: Some(page.next_cursor).filter(|cursor| !cursor.is_empty()),
    }))
}

#[derive(Default, Deserialize, ToSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct CreateConversation {
    /// At most 200 characters once trimmed; none or empty: "New conversation".
    #[schema(max_length = 200)]
    title: Option<String>,
    agent_id: Option<String>,
}

/// `POST /v1/workspaces/{w}/conversations` `{"title"?, "agentId"?}` → 201.
#[utoipa::path(
    post,
    operation_id = "createConversation",
    path = "/workspaces/{workspace_id}/conversations",
    tag = "conversations",
    request_body = CreateConversation,
    params(("workspace_id" = String, Path, description = "a workspace of the caller")),
    responses((status = 201, description = "the new conversation", body = Data<Conversation>)),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(workspace_id): Path<String>,
    ApiJson(body): ApiJson<CreateConversation>,
) -> Result<(StatusCode, Json<Data<Conversation>>), ApiError> {
    caller.workspace(&workspace_id)?;
    let conversation = state
        .conversations
        .clone()
        .create_conversation(CreateConversationRequest {
            workspace_id,
            title: body.title,
            agent_id: body.agent_id,
        })
        .await?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: conversation.into(),
        }),
    ))
}

/// `GET /v1/workspaces/{w}/conversations/{c}`.
#[utoipa::path(
    get,
    operation_id = "getConversation",
    path = "/workspaces/{workspace_id}/conversations/{conversation_id}",
    tag = "conversations",
    params(
        ("workspace_id" = String, Path, description = "a workspace of the caller"),
        ("conversation_id" = String, Path),
    ),
    responses((status = 200, description = "the conversation", body = Data<Conversation>)),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((workspace_id, conversation_id)): Path<(String, String)>,
) -> Result<Json<Data<Conversation>>, ApiError> {
    caller.workspace(&workspace_id)?;
    let conversation = state
        .conversations
        .clone()
        .get_conversation(GetConversationRequest {
            workspace_id,
            conversation_id,
            reader_id: caller.user_id().to_owned(),
            member_of: Vec::new(),
        })
        .await?
        .into_inner();
    Ok(Json(Data {
        data: conversation.into(),
    }))
}

/// `DELETE /v1/workspaces/{w}/conversations/{c}` → 204; its running turn is cancelled.
#[utoipa::path(
    delete,
    operation_id = "deleteConversation",
    path = "/workspaces/{workspace_id}/conversations/{conversation_id}",
    tag = "conversations",
    params(
        ("workspace_id" = String, Path, description = "a workspace of the caller"),
        ("conversation_id" = String, Path),
    ),
    responses((status = 204, description = "deleted; its running turn is cancelled")),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((workspace_id, conversation_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.workspace(&workspace_id)?;
    state
        .conversations
        .clone()
        .delete_conversation(DeleteConversationRequest {
            workspace_id,
            conversation_id,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MarkRead {
    /// A message of the conversation: the newest one the caller has read.
    #[schema(min_length = 1, max_length = 128)]
    message_id: String,
}

/// The caller's read position in a conversation.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadState {
    conversation_id: String,
    last_read_message_id: String,
    /// Messages of others after the position, deleted ones aside.
    unread_count: u64,
}

/// `POST …/conversations/{c}/read {"messageId"}`: the caller has read up to this message. The
/// position only moves forward (an older message leaves it where it is, and the answer says
/// where that is); the caller's sockets, on every node, get `conversation.read`.
#[utoipa::path(
    post,
    operation_id = "markConversationRead",
    path = "/workspaces/{workspace_id}/conversations/{conversation_id}/read",
    tag = "conversations",
    request_body = MarkRead,
    params(
        ("workspace_id" = String, Path, description = "a workspace of the caller"),
        ("conversation_id" = String, Path),
    ),
    responses((status = 200, description = "the caller's read position now", body = Data<ReadState>)),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path((workspace_id, conversation_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<MarkRead>,
) -> Result<Json<Data<ReadState>>, ApiError> {
    caller.workspace(&workspace_id)?;
    if body.message_id.is_empty() || body.message_id.len() > 128 {
        return Err(ApiError::bad_request(
            "INVALID_MESSAGE_ID",
            "messageId must be the id of a message of the conversation",
        ));
    }
    let position = state
        .conversations
        .clone()
        .mark_read(MarkReadRequest {
            workspace_id,
            conversation_id,
            user_id: caller.user_id().to_owned(),
            message_id: body.message_id,
        })
        .await?
        .into_inner();
    Ok(Json(Data {
        data: ReadState {
            conversation_id: position.conversation_id,
            last_read_message_id: position.last_read_message_id,
            unread_count: position.unread_count,
        },
    }))
}
