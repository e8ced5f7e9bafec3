//! `GET /v1/workspaces/{w}/operations`: what the console's operations view shows a workspace's
//! owners and admins. The edge nodes and their sockets (from the presence reports every node
//! keeps, so every node answers for the whole cluster), the workspace's runtime, its event and
//! turn counts over a recent window, and why its latest turns failed.
//!
//! It degrades rather than fails: with Redis away the node list is this node alone, and with
//! runtime-proxy away the runtime's state is `unreachable`. Those are the moments an operator
//! looks.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use crawbl_proto::conversation::v1::GetWorkspaceActivityRequest;
use crawbl_proto::runtimeproxy::v1::GetRuntimeRequest;
use crawbl_proto::runtimeproxy::v1::runtime_proxy_client::RuntimeProxyClient;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::agents::require_admin;
use super::extract::ApiQuery;
use crate::AppState;
use crate::shared::auth::Caller;
use crate::shared::error::{ApiError, ErrorBody};
use crate::shared::json::{Data, Runtime, timestamp};

/// The window of the counts when the query names none, in seconds.
const DEFAULT_WINDOW_SECONDS: u32 = 60;
/// The longest window (a day).
const MAX_WINDOW_SECONDS: u32 = 86_400;
/// Turn failures listed.
const RECENT_ERRORS: u32 = 20;

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct OperationsQuery {
    /// The window `rates` counts over, 1 to 86 400 seconds (default 60).
    #[param(minimum = 1, maximum = 86400)]
    window_seconds: Option<u32>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operations {
    /// When this view was taken (RFC 3339).
    generated_at: String,
    /// The live edge nodes, oldest first.
    nodes: Vec<EdgeNode>,
    /// The workspace's agent runtime.
    runtimes: Vec<WorkspaceRuntime>,
    rates: Rates,
    /// The workspace's latest turn failures, newest first (at most 20).
    recent_errors: Vec<RecentError>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeNode {
    id: String,
    /// Sockets connected to it (every workspace's).
    sockets: u64,
    started_at: String,
    /// Whether this node answered the request.
    current: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceRuntime {
    workspace_id: String,
    /// `provisioning | ready | failed | stopped`, or `unreachable` when runtime-proxy did not
    /// answer.
    state: &'static str,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rates {
    window_seconds: u32,
    /// The workspace's durable events in the window.
    events: u64,
    /// Its agent turns that ended in the window.
    turns: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecentError {
    at: String,
    /// A stable code: `PROVIDER_ERROR`, `RUNTIME_NOT_READY`, `RUNTIME_DIED`…
    code: String,
    message: String,
    conversation_id: String,
    /// The agent's reply that failed.
    message_id: String,
}

/// `GET /v1/workspaces/{w}/operations` (owners and admins).
#[utoipa::path(
    get,
    operation_id = "getOperations",
    path = "/workspaces/{workspace_id}/operations",
    tag = "workspaces",
    params(("workspace_id" = String, Path, description = "a workspace of the caller"), OperationsQuery),
    responses(
        (status = 200, description = "nodes, the runtime, rates and recent errors", body = Data<Operations>),
        (status = 400, description = "`INVALID_WINDOW`", body = ErrorBody),
        (status = 403, description = "`ADMIN_REQUIRED`", body = ErrorBody),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(workspace_id): Path<String>,
    ApiQuery(query): ApiQuery<OperationsQuery>,
) -> Result<Json<Data<Operations>>, ApiError> {
    require_admin(caller.workspace(&workspace_id)?, "may see its operations")?;
    let window_seconds = query.window_seconds.unwrap_or(DEFAULT_WINDOW_SECONDS);
    if !(1..=MAX_WINDOW_SECONDS).contains(&window_seconds) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_WINDOW",
            format!("windowSeconds is 1 to {MAX_WINDOW_SECONDS}"),
        ));
    }
    let mut conversations = state.conversations.clone();
    let mut runtimes = RuntimeProxyClient::new(state.runtimes.pick(&workspace_id));
    let (activity, runtime, nodes) = tokio::join!(
        conversations.get_workspace_activity(GetWorkspaceActivityRequest {
            workspace_id: workspace_id.clone(),
            window_seconds,
            error_limit: RECENT_ERRORS,
        }),
        runtimes.get_runtime(GetRuntimeRequest {
            workspace_id: workspace_id.clone(),
        }),
        nodes(&state),
    );
    let activity = activity?.into_inner();
    let runtime_state = match runtime {
        Ok(runtime) => Runtime::from(runtime.into_inner().state()).state,
        Err(status) => {
            tracing::warn!(code = ?status.code(), message = status.message(), "runtime-proxy did not say how the runtime is");
            "unreachable"
        }
    };
    Ok(Json(Data {
        data: Operations {
            generated_at: timestamp(chrono::Utc::now().timestamp_millis()),
            nodes,
            runtimes: vec![WorkspaceRuntime {
                workspace_id,
                state: runtime_state,
            }],
            rates: Rates {
                window_seconds,
                events: activity.events,
                turns: activity.turns,
            },
            recent_errors: activity
                .recent_errors
                .into_iter()
                .map(|error| RecentError {
                    at: timestamp(error.at_ms),
                    code: error.code,
                    message: error.message,
                    conversation_id: error.conversation_id,
                    message_id: error.message_id,
                })
                .collect(),
        },
    }))
}

/// Every live edge node; this one alone when the others' reports cannot be read.
async fn nodes(state: &AppState) -> Vec<EdgeNode> {
    let Some(node) = &state.online else {
        return Vec::new();
    };
    let reports = node.cluster().await.unwrap_or_else(|error| {
        tracing::warn!(
            error = format!("{error:#}"),
            "cannot read the other nodes' reports"
        );
        vec![node.report()]
    });
    reports
        .into_iter()
        .map(|report| EdgeNode {
            current: report.id == node.id(),
            id: report.id,
            sockets: report.sockets,
            started_at: timestamp(report.started_at_ms),
        })
        .collect()
}
