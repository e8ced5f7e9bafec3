use axum::Json;
use axum::extract::{Path, State};
use crawbl_proto::conversation::v1::ListAgentsRequest;
use crawbl_proto::runtimeproxy::v1::GetRuntimeRequest;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::{Agent, Data, Page, Runtime, Workspace};

/// `GET /v1/workspaces`: the caller's workspaces.
pub async fn list(caller: Caller) -> Json<Page<Workspace>> {
    Json(Page {
        data: caller
            .0
            .workspaces
            .into_iter()
            .map(Workspace::from)
            .collect(),
        next_cursor: None,
    })
}

/// `GET /v1/workspaces/{id}`, with the state of the workspace's agent runtime.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(workspace_id): Path<String>,
) -> Result<Json<Data<Workspace>>, ApiError> {
    let mut workspace = Workspace::from(caller.workspace(&workspace_id)?.clone());
    let runtime = state
        .runtimes
        .clone()
        .get_runtime(GetRuntimeRequest {
            workspace_id: workspace_id.clone(),
        })
        .await?
        .into_inner();
    workspace.runtime = Some(Runtime::from(runtime.state()));
    Ok(Json(Data { data: workspace }))
}

/// `GET /v1/workspaces/{id}/agents`, each with its live status.
pub async fn agents(
    State(state): State<AppState>,
    caller: Caller,
    Path(workspace_id): Path<String>,
) -> Result<Json<Page<Agent>>, ApiError> {
    caller.workspace(&workspace_id)?;
    let agents = state
        .conversations
        .clone()
        .list_agents(ListAgentsRequest { workspace_id })
        .await?
        .into_inner()
        .agents;
    Ok(Json(Page {
        data: agents.into_iter().map(Agent::from).collect(),
        next_cursor: None,
    }))
}
