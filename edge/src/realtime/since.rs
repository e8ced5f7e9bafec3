//! Where a client left off: `since = {"<workspaceId>": <seq>}`, in the handshake's `auth` or in
//! `workspace.subscribe`. Parsed from raw JSON so every wrong shape gets its own clear message.

use std::collections::BTreeMap;

use serde_json::Value;

/// Workspaces one `since` may name.
pub const MAX_WORKSPACES: usize = 100;
/// Longest workspace id accepted (ids are UUIDs).
pub const MAX_ID_BYTES: usize = 64;

/// Workspace id → the last durable `seq` the client has.
pub type Since = BTreeMap<String, u64>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinceError {
    #[error("since must be an object like {{\"<workspaceId>\": <seq>}}")]
    NotAnObject,
    #[error("since names more than {MAX_WORKSPACES} workspaces")]
    TooMany,
    #[error("since has a key that is not a workspace id")]
    BadKey,
    #[error("since.{0} must be a whole number of at least 0")]
    BadSeq(String),
}

/// Parses `since`; `null` is the same as absent.
pub fn parse(value: &Value) -> Result<Since, SinceError> {
    let entries = match value {
        Value::Null => return Ok(Since::new()),
        Value::Object(entries) => entries,
        _ => return Err(SinceError::NotAnObject),
    };
    if entries.len() > MAX_WORKSPACES {
        return Err(SinceError::TooMany);
    }
    entries
        .iter()
        .map(|(workspace_id, seq)| {
            if workspace_id.is_empty() || workspace_id.len() > MAX_ID_BYTES {
                return Err(SinceError::BadKey);
            }
            let seq = seq
                .as_u64()
                .ok_or_else(|| SinceError::BadSeq(workspace_id.clone()))?;
            Ok((workspace_id.clone(), seq))
        })
        .collect()
}

/// For the fuzz targets (see `crate::fuzzing`).
impl crate::fuzzing::Parsers {
    /// [`parse`], with the refusal as its message.
    pub fn since(value: &Value) -> Result<Since, String> {
        parse(value).map_err(|error| error.to_string())
    }

    /// The handshake's `auth` payload as the handshake reads it before any credential is
    /// checked: its JSON into `HandshakeAuth`, then its `since`. Gives the token, the
    /// workspace id and `since`.
    pub fn handshake_auth(json: &[u8]) -> Result<(Option<String>, Option<String>, Since), String> {
        let auth: super::HandshakeAuth =
            serde_json::from_slice(json).map_err(|error| error.to_string())?;
        let since = parse(&auth.since).map_err(|error| error.to_string())?;
        Ok((auth.token, auth.workspace_id, since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_map_of_workspace_ids_to_whole_numbers_is_accepted() {
        let since = parse(&json!({"w1": 0, "w2": 17})).expect("valid");
        assert_eq!(since, Since::from([("w1".into(), 0), ("w2".into(), 17)]));
        assert_eq!(parse(&Value::Null), Ok(Since::new()));
    }

    #[test]
    fn every_other_shape_is_refused_with_its_reason() {
        assert_eq!(parse(&json!([1, 2])), Err(SinceError::NotAnObject));
        assert_eq!(parse(&json!(5)), Err(SinceError::NotAnObject));
        assert_eq!(
            parse(&json!({"w": -1})),
            Err(SinceError::BadSeq("w".into()))
        );
        assert_eq!(
            parse(&json!({"w": 1.5})),
            Err(SinceError::BadSeq("w".into()))
        );
        assert_eq!(
            parse(&json!({"w": "3"})),
            Err(SinceError::BadSeq("w".into()))
        );
        assert_eq!(parse(&json!({"": 3})), Err(SinceError::BadKey));
        assert_eq!(
            parse(&json!({"x".repeat(MAX_ID_BYTES + 1): 3})),
            Err(SinceError::BadKey)
        );
        let many: serde_json::Map<String, Value> = (0..=MAX_WORKSPACES)
            .map(|index| (format!("w{index}"), json!(1)))
            .collect();
        assert_eq!(parse(&Value::Object(many)), Err(SinceError::TooMany));
    }
}
