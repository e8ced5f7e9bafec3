//! Client events `workspace.subscribe` and `workspace.unsubscribe` `{workspaceIds: [...]}` (and
//! `since` for subscribe), answered with an ack `{ok: true, workspaceIds}` or
//! `{ok: false, error: {code, message}}`. All or nothing: one workspace the user is not a member
//! of fails the whole request.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};

use super::fanout::Fanout;
use super::presence::Presence;
use super::since::{self, Since};
use crate::AppState;
use crate::shared::auth::Caller;
use crate::shared::cluster::Adapter;
use crate::shared::rooms::workspace_room;

/// Workspaces one request may name.
const MAX_WORKSPACES: usize = since::MAX_WORKSPACES;

#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("{0}")]
    InvalidPayload(String),
    #[error("workspace not found")]
    NotAMember,
    #[error("memberships are unavailable; retry shortly")]
    Unavailable,
}

impl RequestError {
    fn code(&self) -> &'static str {
        match self {
            Self::InvalidPayload(_) => "INVALID_PAYLOAD",
            Self::NotAMember => "WORKSPACE_NOT_FOUND",
            Self::Unavailable => "UNAVAILABLE",
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    workspace_ids: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody>,
}

#[derive(Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
}

impl From<Result<Vec<String>, RequestError>> for Answer {
    fn from(result: Result<Vec<String>, RequestError>) -> Self {
        match result {
            Ok(workspace_ids) => Self {
                ok: true,
                workspace_ids: Some(workspace_ids),
                error: None,
            },
            Err(error) => Self {
                ok: false,
                workspace_ids: None,
                error: Some(ErrorBody {
                    code: error.code(),
                    message: error.to_string(),
                }),
            },
        }
    }
}

/// A parsed request.
struct Request {
    workspace_ids: Vec<String>,
    since: Since,
}

/// `workspace.subscribe {workspaceIds, since?}`: joins the rooms, replaying from `since` first
/// where given. A workspace the socket already has is left as it is.
pub async fn subscribe(
    socket: SocketRef<Adapter>,
    State(state): State<AppState>,
    State(fanout): State<Arc<Fanout>>,
    TryData(payload): TryData<Value>,
    ack: AckSender<Adapter>,
) {
    let result = async {
        let request = parse(payload.ok(), true)?;
        check_membership(&socket, &state, &request.workspace_ids).await?;
        let Some(presence) = Presence::of(&socket) else {
            return Ok(Vec::new());
        };
        for workspace_id in &request.workspace_ids {
            if presence.counts_in(workspace_id) {
                continue;
            }
            match request.since.get(workspace_id) {
                Some(&since) => {
                    if !fanout
                        .replay_and_join(&socket, &presence, workspace_id, since)
                        .await
                    {
                        break; // The socket is gone.
                    }
                }
                None => {
                    presence.track(workspace_id).await;
                    // Unless taken out of the workspace meanwhile.
                    if presence.counts_in(workspace_id) {
                        socket.join(workspace_room(workspace_id));
                        presence.joined(workspace_id);
                    }
                }
            }
        }
        Ok(request.workspace_ids)
    }
    .await;
    answer(ack, result);
}

/// `workspace.unsubscribe {workspaceIds}`: leaves the rooms.
pub async fn unsubscribe(
    socket: SocketRef<Adapter>,
    State(state): State<AppState>,
    TryData(payload): TryData<Value>,
    ack: AckSender<Adapter>,
) {
    let result = async {
        let request = parse(payload.ok(), false)?;
        check_membership(&socket, &state, &request.workspace_ids).await?;
        for workspace_id in &request.workspace_ids {
            socket.leave(workspace_room(workspace_id));
            if let Some(presence) = Presence::of(&socket) {
                presence.untrack(workspace_id);
            }
        }
        Ok(request.workspace_ids)
    }
    .await;
    answer(ack, result);
}

fn answer(ack: AckSender<Adapter>, result: Result<Vec<String>, RequestError>) {
    if let Err(error) = &result {
        tracing::debug!(%error, "refused a workspace subscription request");
    }
    // Without an ack id (the client asked for no answer) this sends nothing.
    if let Err(error) = ack.send(&Answer::from(result)) {
        tracing::debug!(%error, "cannot answer a workspace subscription request");
    }
}

fn parse(payload: Option<Value>, since_allowed: bool) -> Result<Request, RequestError> {
    let invalid = |message: &str| RequestError::InvalidPayload(message.to_owned());
    let Some(Value::Object(mut fields)) = payload else {
        return Err(invalid(
            "expected an object like {\"workspaceIds\": [\"…\"]}",
        ));
    };
    let Some(Value::Array(ids)) = fields.remove("workspaceIds") else {
        return Err(invalid("workspaceIds must be an array of workspace ids"));
    };
    if ids.is_empty() || ids.len() > MAX_WORKSPACES {
        return Err(invalid(&format!(
            "workspaceIds must name between 1 and {MAX_WORKSPACES} workspaces"
        )));
    }
    let mut seen = BTreeSet::new();
    let mut workspace_ids = Vec::with_capacity(ids.len());
    for id in ids {
        match id {
            Value::String(id) if !id.is_empty() && id.len() <= since::MAX_ID_BYTES => {
                if seen.insert(id.clone()) {
                    workspace_ids.push(id);
                }
            }
            _ => return Err(invalid("workspaceIds must be an array of workspace ids")),
        }
    }
    let since = match fields.remove("since") {
        None | Some(Value::Null) => Since::new(),
        Some(_) if !since_allowed => return Err(invalid("since is only for workspace.subscribe")),
        Some(value) => since::parse(&value).map_err(|error| invalid(&error.to_string()))?,
    };
    if let Some(stray) = since.keys().find(|id| !seen.contains(*id)) {
        return Err(RequestError::InvalidPayload(format!(
            "since names {stray}, which is not in workspaceIds"
        )));
    }
    Ok(Request {
        workspace_ids,
        since,
    })
}

/// For the fuzz targets (see `crate::fuzzing`).
impl crate::fuzzing::Parsers {
    /// [`parse`] of a `workspace.subscribe` (`since_allowed`) or `workspace.unsubscribe`
    /// payload: the workspace ids and `since`, or the refusal's code and message.
    pub fn workspace_request(
        payload: Option<Value>,
        since_allowed: bool,
    ) -> Result<(Vec<String>, Since), (&'static str, String)> {
        parse(payload, since_allowed)
            .map(|request| (request.workspace_ids, request.since))
            .map_err(|error| (error.code(), error.to_string()))
    }
}

/// Every workspace must be one of the user's (memberships as of now, not as of the handshake).
async fn check_membership(
    socket: &SocketRef<Adapter>,
    state: &AppState,
    workspace_ids: &[String],
) -> Result<(), RequestError> {
    let Some(caller) = socket.extensions.get::<Caller>() else {
        return Err(RequestError::NotAMember);
    };
    let workspaces = state
        .access
        .memberships(caller.user_id())
        .await
        .map_err(|_| RequestError::Unavailable)?;
    let is_member = |id: &String| workspaces.iter().any(|workspace| &workspace.id == id);
    if workspace_ids.iter().all(is_member) {
        Ok(())
    } else {
        Err(RequestError::NotAMember)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(payload: Value) -> &'static str {
        match parse(Some(payload), true) {
            Ok(_) => "ok",
            Err(error) => error.code(),
        }
    }

    #[test]
    fn requests_name_workspaces_and_optionally_where_to_replay_from() {
        let request = parse(
            Some(json!({"workspaceIds": ["w1", "w2", "w1"], "since": {"w2": 4}})),
            true,
        )
        .expect("valid");
        assert_eq!(request.workspace_ids, ["w1", "w2"]);
        assert_eq!(request.since, Since::from([("w2".to_owned(), 4)]));
    }

    #[test]
    fn malformed_requests_are_invalid_payloads() {
        for payload in [
            json!(null),
            json!("w1"),
            json!([]),
            json!({}),
            json!({"workspaceIds": "w1"}),
            json!({"workspaceIds": []}),
            json!({"workspaceIds": [1]}),
            json!({"workspaceIds": [""]}),
            json!({"workspaceIds": ["w1"], "since": {"w1": -1}}),
            json!({"workspaceIds": ["w1"], "since": {"w2": 1}}),
            json!({"workspaceIds": ["w1"], "since": [1]}),
        ] {
            assert_eq!(code(payload.clone()), "INVALID_PAYLOAD", "{payload}");
        }
        assert!(parse(None, true).is_err());
        let too_many: Vec<String> = (0..=MAX_WORKSPACES).map(|i| format!("w{i}")).collect();
        assert_eq!(code(json!({"workspaceIds": too_many})), "INVALID_PAYLOAD");
        assert!(
            parse(
                Some(json!({"workspaceIds": ["w1"], "since": {"w1": 1}})),
                false
            )
            .is_err()
        );
    }
}
