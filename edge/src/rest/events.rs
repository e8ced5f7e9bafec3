use axum::Json;
use axum::extract::{Path, State};
use crawbl_proto::conversation::v1::ListEventsRequest;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::ApiQuery;
use crate::AppState;
use crate::shared::auth::Caller;
use crate::shared::error::{ApiError, ErrorBody};
use crate::shared::json::{Page, SocketEvent};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The last `seq` the client has (0: from the start).
    #[serde(default)]
    after: u64,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// One durable event as the log serves it: the Socket.IO event's name and payload, numbered.
#[derive(Serialize, ToSchema)]
pub struct LoggedEvent {
    seq: u64,
    #[serde(rename = "type")]
    name: &'static str,
    payload: serde_json::Value,
}

/// `GET /v1/workspaces/{w}/events?after=<seq>&limit=<1..1000>`: the workspace's durable events
/// after `seq`, oldest first. `nextCursor` is the `after` of the next page. 410 `EVENTS_EXPIRED`
/// when events after `seq` were pruned: refetch conversations and messages instead.
#[utoipa::path(
    get,
    operation_id = "listEvents",
    path = "/workspaces/{workspace_id}/events",
    tag = "events",
    params(("workspace_id" = String, Path, description = "a workspace of the caller"), EventsQuery),
    responses(
        (status = 200, description = "durable events after `after`, oldest first", body = Page<LoggedEvent>),
        (status = 410, description = "`EVENTS_EXPIRED`: refetch instead", body = ErrorBody),
    ),
    security(("bearer" = []), ("xToken" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(workspace_id): Path<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<Page<LoggedEvent>>, ApiError> {
    caller.workspace(&workspace_id)?;
    // Sequence numbers are 63-bit, as documented (`int64`).
    if i64::try_from(query.after).is_err() {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            "after must be a sequence number between 0 and 9223372036854775807",
        ));
    }
    if query.limit == Some(0) {
        return Err(ApiError::bad_request(
            "INVALID_LIMIT",
            "limit must be between 1 and 1000",
        ));
    }
    let page = state
        .conversations
        .clone()
        .list_events(ListEventsRequest {
            workspace_id,
            after: query.after,
            limit: query.limit.unwrap_or(0),
        })
        .await?
        .into_inner();
    let mut events = Vec::with_capacity(page.events.len());
    for event in page.events {
        let Some(kind) = event.kind else { continue };
        let logged = SocketEvent::from_kind(&event.workspace_id, kind).map_err(|error| {
            tracing::error!(%error, "cannot encode a logged event");
            ApiError::from(tonic::Status::internal("event encoding"))
        })?;
        events.push(LoggedEvent {
            seq: event.seq,
            name: logged.name,
            payload: logged.payload,
        });
    }
    let next_cursor = page
        .has_more
        .then(|| events.last().map(|event| event.seq.to_string()))
        .flatten();
    Ok(Json(Page {
        data: events,
        next_cursor,
    }))
}
