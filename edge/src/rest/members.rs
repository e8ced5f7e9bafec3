//! `/v1/workspaces/{id}/members`: who belongs to a workspace. Members list; owners add (by
//! email) and remove; a member may remove themselves. Non-members get 404, members who are not
//! owners 403 `OWNER_REQUIRED`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use crawbl_proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::ApiJson;
use crate::AppState;
use crate::shared::auth::Caller;
use crate::shared::cluster::SocketChange;
use crate::shared::error::{ApiError, ErrorBody};
use crate::shared::json::{Data, Page, User, timestamp};

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub user: User,
    /// `owner` or `member`.
    pub role: String,
    pub joined_at: String,
}

impl From<pb::Member> for Member {
    fn from(member: pb::Member) -> Self {
        Self {
            user: member.user.unwrap_or_default().into(),
            role: member.role,
            joined_at: timestamp(member.joined_at),
        }
    }
}

/// `GET /v1/workspaces/{w}/members`, earliest first.
#[utoipa::path(
    get,
    operation_id = "listMembers",
    path = "/workspaces/{workspace_id}/members",
    tag = "members",
    params(("workspace_id" = String, Path, description = "a workspace of the caller")),
    responses((status = 200, description = "the members, earliest first", body = Page<Member>)),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(workspace_id): Path<String>,
) -> Result<Json<Page<Member>>, ApiError> {
    caller.workspace(&workspace_id)?;
    let members = state
        .auth
        .clone()
        .list_members(pb::ListMembersRequest {
            actor_user_id: caller.user_id().to_owned(),
            workspace_id,
        })
        .await?
        .into_inner()
        .members;
    Ok(Json(Page {
        data: members.into_iter().map(Member::from).collect(),
        next_cursor: None,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// The email of an existing user.
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// `member` (the default), `admin` (also manages agents) or `owner`.
    #[serde(default)]
    #[schema(pattern = r"^\s*(member|admin|owner)?\s*$")]
    role: Option<String>,
}

/// `POST /v1/workspaces/{w}/members` `{"email", "role"?}` → 201 with the member. Their open
/// sockets join the workspace's room at once.
#[utoipa::path(
    post,
    operation_id = "addMember",
    path = "/workspaces/{workspace_id}/members",
    tag = "members",
    request_body = AddMember,
    params(("workspace_id" = String, Path, description = "a workspace of the caller")),
    responses(
        (status = 201, description = "the new member", body = Data<Member>),
        (status = 403, description = "`OWNER_REQUIRED`", body = ErrorBody),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    Path(workspace_id): Path<String>,
    ApiJson(body): ApiJson<AddMember>,
) -> Result<(StatusCode, Json<Data<Member>>), ApiError> {
    caller.workspace(&workspace_id)?;
    let member = state
        .auth
        .clone()
        .add_member(pb::AddMemberRequest {
            actor_user_id: caller.user_id().to_owned(),
            workspace_id: workspace_id.clone(),
            email: body.email,
            role: body.role.unwrap_or_default(),
        })
        .await
        .map_err(ApiError::forbidden_to_members)?
        .into_inner();
    if let Some(user) = &member.user {
        state.access.forget_memberships(&user.id);
        state
            .sockets
            .apply(&SocketChange::JoinWorkspace {
                user_id: user.id.clone(),
                workspace_id,
            })
            .await;
    }
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: member.into(),
        }),
    ))
}

/// `DELETE /v1/workspaces/{w}/members/{userId}` → 204. The user's sockets leave the workspace's
/// room on every edge node at once, and their next request to it is a 404.
#[utoipa::path(
    delete,
    operation_id = "removeMember",
    path = "/workspaces/{workspace_id}/members/{user_id}",
    tag = "members",
    params(
        ("workspace_id" = String, Path, description = "a workspace of the caller"),
        ("user_id" = String, Path),
    ),
    responses(
        (status = 204, description = "removed"),
        (status = 403, description = "`OWNER_REQUIRED`", body = ErrorBody),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path((workspace_id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.workspace(&workspace_id)?;
    state
        .auth
        .clone()
        .remove_member(pb::RemoveMemberRequest {
            actor_user_id: caller.user_id().to_owned(),
            workspace_id: workspace_id.clone(),
            user_id: user_id.clone(),
        })
        .await
        .map_err(ApiError::forbidden_to_members)?;
    state.access.forget_memberships(&user_id);
    state
        .sockets
        .apply(&SocketChange::LeaveWorkspace {
            user_id,
            workspace_id,
        })
        .await;
    Ok(StatusCode::NO_CONTENT)
}
