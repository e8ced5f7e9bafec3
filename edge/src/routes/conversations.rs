use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use crawbl_proto::conversation::v1::{
    CreateConversationRequest, GetConversationRequest, ListConversationsRequest,
};
use serde::Deserialize;

use super::extract::ApiJson;
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::{Conversation, Data, Page};

/// `GET /v1/workspaces/{w}/conversations`, most recently active first.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(workspace_id): Path<String>,
) -> Result<Json<Page<Conversation>>, ApiError> {
    caller.workspace(&workspace_id)?;
    let conversations = state
        .conversations
        .clone()
        .list_conversations(ListConversationsRequest { workspace_id })
        .await?
        .into_inner()
        .conversations;
    Ok(Json(Page {
        data: conversations.into_iter().map(Conversation::from).collect(),
        next_cursor: None,
    }))
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CreateConversation {
    title: Option<String>,
    agent_id: Option<String>,
}

/// `POST /v1/workspaces/{w}/conversations` `{"title"?, "agentId"?}` → 201.
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
        })
        .await?
        .into_inner();
    Ok(Json(Data {
        data: conversation.into(),
    }))
}
