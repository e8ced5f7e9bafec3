//! `/v1/users/me`: the caller's own profile, and deleting the account.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use crawbl_proto::auth::v1::{
    DeleteUserRequest, DeletedUser, GetUserRequest, ListSoleOwnedWorkspacesRequest,
    UpdateUserRequest,
};
use crawbl_proto::conversation::v1::DeleteWorkspaceDataRequest;
use serde::Deserialize;
use tonic::Code;
use utoipa::ToSchema;

use super::extract::ApiJson;
use crate::AppState;
use crate::shared::auth::{Caller, Credential};
use crate::shared::cluster::SocketChange;
use crate::shared::error::{ApiError, ErrorBody};
use crate::shared::json::{Data, User};

/// How often a deletion starts over when the user's sole-owned workspaces change under it.
const DELETE_ATTEMPTS: usize = 3;

/// `GET /v1/users/me`.
#[utoipa::path(
    get,
    operation_id = "getMe",
    path = "/users/me",
    tag = "users",
    responses((status = 200, description = "the caller", body = Data<User>)),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Data<User>>, ApiError> {
    let user = state
        .auth
        .clone()
        .get_user(GetUserRequest {
            user_id: caller.user_id().to_owned(),
        })
        .await?
        .into_inner();
    Ok(Json(Data { data: user.into() }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateMe {
    /// 1 to 100 characters once trimmed, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    display_name: Option<String>,
}

/// `PATCH /v1/users/me` `{"displayName"?}` → the updated user.
#[utoipa::path(
    patch,
    operation_id = "updateMe",
    path = "/users/me",
    tag = "users",
    request_body = UpdateMe,
    responses((status = 200, description = "the updated caller", body = Data<User>)),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<UpdateMe>,
) -> Result<Json<Data<User>>, ApiError> {
    let user = state
        .auth
        .clone()
        .update_user(UpdateUserRequest {
            user_id: caller.user_id().to_owned(),
            display_name: body.display_name,
        })
        .await?
        .into_inner();
    Ok(Json(Data { data: user.into() }))
}

/// `DELETE /v1/users/me` → 204: the account is deleted. Only with a session's access token (an
/// API key gets 403 `SESSION_REQUIRED`). Gone: every session (refresh tokens too) and API key of
/// the user, refused at once on every edge node, with every socket of theirs disconnected; their
/// memberships; the workspaces they alone own, with everything in them (other members lose
/// them at once); the user itself (the email may sign up again). Workspaces with another owner
/// stay, with the user's messages in them. 503 when a service is unavailable: nothing of the
/// account is gone yet, or the retry finishes it (see docs/decisions.md). Once it has answered
/// 204, the token is refused (401) like every other of the user.
#[utoipa::path(
    delete,
    operation_id = "deleteMe",
    path = "/users/me",
    tag = "users",
    responses(
        (status = 204, description = "the account is deleted"),
        (status = 403, description = "`SESSION_REQUIRED`: an API key cannot delete the account", body = ErrorBody),
        (status = 409, description = "`WORKSPACES_CHANGED`: the workspaces the user owns kept changing during the deletion; retry", body = ErrorBody),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn delete(State(state): State<AppState>, caller: Caller) -> Result<StatusCode, ApiError> {
    if let Credential::ApiKey(_) = caller.identity.credential {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "SESSION_REQUIRED",
            "an account is deleted by its user, signed in: use a session's access token, not an API key",
        ));
    }
    let user_id = caller.user_id().to_owned();
    let deleted = delete_account(&state, &user_id).await?;
    // This node refuses the user at once; auth's announcement tells the others.
    state.access.revoke_user_here(&user_id);
    for removed in &deleted.removed_memberships {
        state.access.forget_memberships(&removed.user_id);
        state
            .sockets
            .apply(&SocketChange::LeaveWorkspace {
                user_id: removed.user_id.clone(),
                workspace_id: removed.workspace_id.clone(),
            })
            .await;
    }
    state
        .sockets
        .apply(&SocketChange::DisconnectUser(user_id.clone()))
        .await;
    // Anything a member wrote into a doomed workspace between its purge and auth's commit (a
    // send in flight, agents seeded by a read) goes too; nobody can reach those workspaces now.
    for workspace_id in &deleted.deleted_workspace_ids {
        if let Err(status) = purge_workspace(&state, workspace_id).await {
            tracing::warn!(code = ?status.code(), message = status.message(), workspace_id, "cannot sweep a deleted workspace's data again");
        }
    }
    tracing::info!(
        user_id,
        workspaces = deleted.deleted_workspace_ids.len(),
        "account deleted"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes the data of the workspaces the user alone owns in the conversation service, then the
/// account in auth (one transaction, last). Auth refuses when the user came to own another
/// workspace alone in between; that starts over.
async fn delete_account(state: &AppState, user_id: &str) -> Result<DeletedUser, ApiError> {
    let mut attempt = 1;
    loop {
        let sole_owned = state
            .auth
            .clone()
            .list_sole_owned_workspaces(ListSoleOwnedWorkspacesRequest {
                user_id: user_id.to_owned(),
            })
            .await?
            .into_inner()
            .workspace_ids;
        for workspace_id in &sole_owned {
            purge_workspace(state, workspace_id).await?;
        }
        let request = DeleteUserRequest {
            user_id: user_id.to_owned(),
            purged_workspace_ids: sole_owned,
        };
        match state.auth.clone().delete_user(request).await {
            Ok(deleted) => return Ok(deleted.into_inner()),
            Err(status) if status.code() == Code::Aborted && attempt < DELETE_ATTEMPTS => {
                attempt += 1;
            }
            Err(status) => return Err(status.into()),
        }
    }
}

async fn purge_workspace(state: &AppState, workspace_id: &str) -> Result<(), tonic::Status> {
    state
        .conversations
        .clone()
        .delete_workspace_data(DeleteWorkspaceDataRequest {
            workspace_id: workspace_id.to_owned(),
        })
        .await?;
    Ok(())
}
