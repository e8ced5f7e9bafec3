//! Turn control and accounting (SPEC §9): stopping an agent's reply, and what a workspace's
//! turns cost against its quota.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use crawbl_proto::conversation::v1::{
    CancelTurnRequest, CancelTurnResponse, GetWorkspaceUsageRequest, UsageTotal,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::agents::require_admin;
use super::extract::ApiQuery;
use crate::AppState;
use crate::shared::auth::Caller;
use crate::shared::error::{ApiError, ErrorBody};
use crate::shared::json::{Data, Message, timestamp};

/// A cancel's answer: the reply it stopped (`cancelled`, also when stopped before), or 409
/// `TURN_FINISHED` with the message as it is when the turn had ended some other way.
pub fn cancel_outcome(answer: CancelTurnResponse) -> Result<Message, ApiError> {
    let message = Message::from(answer.message.unwrap_or_default());
    if answer.already_finished {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "TURN_FINISHED",
            "the turn had already ended; nothing was cancelled",
        )
        .with_data(message));
    }
    Ok(message)
}

/// `POST …/messages/{m}/cancel` (the agent's reply, or the user message it answers): the agent
/// stops, wherever its turn runs; the reply keeps its text and ends `cancelled`. Idempotent.
#[utoipa::path(
    post,
    operation_id = "cancelTurn",
    path = "/workspaces/{workspace_id}/conversations/{conversation_id}/messages/{message_id}/cancel",
    tag = "messages",
    params(
        ("workspace_id" = String, Path, description = "a workspace of the caller"),
        ("conversation_id" = String, Path),
        ("message_id" = String, Path, description = "the agent's reply, or the user message it answers"),
    ),
    responses(
        (status = 200, description = "the reply, stopped (`cancelled`, with the text it had)", body = Data<Message>),
        (status = 409, description = "`TURN_FINISHED`: the turn had ended; `data` is the message as it is", body = ErrorBody),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path((workspace_id, conversation_id, message_id)): Path<(String, String, String)>,
) -> Result<Json<Data<Message>>, ApiError> {
    caller.workspace(&workspace_id)?;
    let answer = state
        .conversations
        .clone()
        .cancel_turn(CancelTurnRequest {
            workspace_id,
            conversation_id,
            message_id,
            member_of: Vec::new(),
        })
        .await?
        .into_inner();
    Ok(Json(Data {
        data: cancel_outcome(answer)?,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// First day (UTC, `YYYY-MM-DD`); absent or empty: the first of this month.
    #[param(pattern = r"^(\d{4}-\d{2}-\d{2})?$")]
    from: Option<String>,
    /// Last day, included; absent or empty: today.
    #[param(pattern = r"^(\d{4}-\d{2}-\d{2})?$")]
    to: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tokens {
    /// The day, agent id or user id (absent for the whole span).
    #[serde(skip_serializing_if = "String::is_empty")]
    key: String,
    input_tokens: u64,
    output_tokens: u64,
    turns: u64,
}

impl From<UsageTotal> for Tokens {
    fn from(total: UsageTotal) -> Self {
        Self {
            key: total.key,
            input_tokens: total.input_tokens,
            output_tokens: total.output_tokens,
            turns: total.turns,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaState {
    /// Tokens per month; absent: unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<u64>,
    /// Tokens used this month.
    used: u64,
    /// When the month's count starts again (RFC 3339).
    resets_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    workspace_id: String,
    plan: String,
    from: String,
    to: String,
    total: Tokens,
    days: Vec<Tokens>,
    agents: Vec<Tokens>,
    users: Vec<Tokens>,
    quota: QuotaState,
}

/// `GET /v1/workspaces/{w}/usage?from=&to=` (owners and admins): tokens by day, agent and user,
/// and the month's quota.
#[utoipa::path(
    get,
    operation_id = "getUsage",
    path = "/workspaces/{workspace_id}/usage",
    tag = "workspaces",
    params(("workspace_id" = String, Path, description = "a workspace of the caller"), UsageQuery),
    responses(
        (status = 200, description = "usage between the two days, and the quota", body = Data<Usage>),
        (status = 400, description = "`INVALID_DAY` or `INVALID_RANGE` (at most 366 days)", body = ErrorBody),
        (status = 403, description = "`ADMIN_REQUIRED`", body = ErrorBody),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(workspace_id): Path<String>,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<Data<Usage>>, ApiError> {
    require_admin(caller.workspace(&workspace_id)?, "may see its usage")?;
    let usage = state
        .conversations
        .clone()
        .get_workspace_usage(GetWorkspaceUsageRequest {
            workspace_id,
            from_day: query.from.unwrap_or_default(),
            to_day: query.to.unwrap_or_default(),
        })
        .await?
        .into_inner();
    let quota = usage.quota.unwrap_or_default();
    let list = |totals: Vec<UsageTotal>| totals.into_iter().map(Tokens::from).collect();
    Ok(Json(Data {
        data: Usage {
            workspace_id: usage.workspace_id,
            plan: usage.plan,
            from: usage.from_day,
            to: usage.to_day,
            total: usage.total.unwrap_or_default().into(),
            days: list(usage.by_day),
            agents: list(usage.by_agent),
            users: list(usage.by_user),
            quota: QuotaState {
                limit: quota.limit,
                used: quota.used,
                resets_at: timestamp(quota.resets_at_ms),
            },
        },
    }))
}
