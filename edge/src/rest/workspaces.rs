use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use crawbl_proto::auth::v1::CreateWorkspaceRequest;
use crawbl_proto::runtimeproxy::v1::GetRuntimeRequest;
use crawbl_proto::runtimeproxy::v1::runtime_proxy_client::RuntimeProxyClient;
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::ApiJson;
use crate::AppState;
use crate::shared::auth::Caller;
use crate::shared::cluster::SocketChange;
use crate::shared::error::ApiError;
use crate::shared::json::{Data, Page, Runtime, Workspace};

/// `GET /v1/workspaces`: the caller's workspaces, oldest membership first.
#[utoipa::path(
    get,
    operation_id = "listWorkspaces",
    path = "/workspaces",
    tag = "workspaces",
    responses((status = 200, description = "the caller's workspaces", body = Page<Workspace>)),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn list(caller: Caller) -> Json<Page<Workspace>> {
    Json(Page {
        data: caller
            .workspaces
            .iter()
            .cloned()
            .map(Workspace::from)
            .collect(),
        next_cursor: None,
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// 1 to 100 characters once trimmed, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
}

/// `POST /v1/workspaces` `{"name"}` → 201 with the workspace, owned by the caller. Its agents are
/// created on first use; the caller's sockets that follow all their workspaces join its room.
#[utoipa::path(
    post,
    operation_id = "createWorkspace",
    path = "/workspaces",
    tag = "workspaces",
    request_body = CreateWorkspace,
    responses(
        (status = 201, description = "the new workspace, owned by the caller", body = Data<Workspace>),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateWorkspace>,
) -> Result<(StatusCode, Json<Data<Workspace>>), ApiError> {
    let workspace = state
        .auth
        .clone()
        .create_workspace(CreateWorkspaceRequest {
            actor_user_id: caller.user_id().to_owned(),
            name: body.name,
        })
        .await?
        .into_inner();
    state.access.forget_memberships(caller.user_id());
    state
        .sockets
        .apply(&SocketChange::JoinWorkspace {
            user_id: caller.user_id().to_owned(),
            workspace_id: workspace.id.clone(),
        })
        .await;
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: workspace.into(),
        }),
    ))
}

/// `GET /v1/workspaces/{id}`, with the state of the workspace's agent runtime.
#[utoipa::path(
    get,
    operation_id = "getWorkspace",
    path = "/workspaces/{workspace_id}",
    tag = "workspaces",
    params(("workspace_id" = String, Path, description = "a workspace of the caller")),
    responses(
        (status = 200, description = "the workspace with its runtime state", body = Data<Workspace>),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(workspace_id): Path<String>,
) -> Result<Json<Data<Workspace>>, ApiError> {
    let mut workspace = Workspace::from(caller.workspace(&workspace_id)?.clone());
    let runtime = RuntimeProxyClient::new(state.runtimes.pick(&workspace_id))
        .get_runtime(GetRuntimeRequest {
            workspace_id: workspace_id.clone(),
        })
        .await?
        .into_inner();
    workspace.runtime = Some(Runtime::from(runtime.state()));
    Ok(Json(Data { data: workspace }))
}
