//! What Socket.IO clients send the edge, as JSON: the handshake's `auth` payload
//! (`{"token", "workspaceId", "since": {"<workspaceId>": <seq>}}`, read before any credential is
//! checked) and the payloads of `workspace.subscribe` / `workspace.unsubscribe`
//! (`{"workspaceIds": [...], "since"?}`), of `message.cancel` (`{conversationId, messageId}`),
//! `message.send` (`{conversationId, localId, content: {type, text, mentions?}}`) and `typing`
//! (`{conversationId, isTyping}`).
//!
//! Properties: nothing panics; an accepted `since` names at most 100 workspaces by ids of 1..=64
//! bytes, each with exactly the whole number the client sent; an accepted request names 1..=100
//! distinct workspaces of 1..=64 bytes in the order sent, `since` only for some of them, and an
//! unsubscribe never carries `since`; every refusal is `INVALID_PAYLOAD` with a message; an
//! accepted cancel names exactly the two ids sent, each of 1..=128 bytes; an accepted send or
//! typing names exactly the conversation sent (1..=128 bytes), and the send's local id and the
//! typing's flag are the ones sent; a refused send says why.

#![no_main]

use std::collections::BTreeMap;

use crawbl_edge::fuzzing::Parsers;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const MAX_WORKSPACES: usize = 100;
const MAX_ID_BYTES: usize = 64;

fuzz_target!(|data: &[u8]| {
    if let Ok((_token, _workspace_id, since)) = Parsers::handshake_auth(data) {
        check_since(&since);
    }
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };

    if let Ok(since) = Parsers::since(&value) {
        check_since(&since);
        match &value {
            Value::Null => assert!(since.is_empty()),
            Value::Object(entries) => {
                assert_eq!(since.len(), entries.len());
                for (id, seq) in entries {
                    assert_eq!(Some(since[id]), seq.as_u64(), "since.{id}");
                }
            }
            other => panic!("since accepted {other}"),
        }
    }

    if let Some((conversation_id, message_id)) = Parsers::cancel_request(Some(value.clone())) {
        for (id, field) in [(&conversation_id, "conversationId"), (&message_id, "messageId")] {
            assert!(!id.is_empty() && id.len() <= 128, "{field} {id:?}");
            assert_eq!(value[field].as_str(), Some(id.as_str()));
        }
    }

    match Parsers::send_request(Some(value.clone())) {
        Ok((conversation_id, local_id)) => {
            assert!(!conversation_id.is_empty() && conversation_id.len() <= 128);
            assert_eq!(value["conversationId"].as_str(), Some(conversation_id.as_str()));
            assert_eq!(value["localId"].as_str(), Some(local_id.as_str()));
        }
        Err(reason) => assert!(!reason.is_empty()),
    }

    if let Some((conversation_id, is_typing)) = Parsers::typing_request(Some(value.clone())) {
        assert!(!conversation_id.is_empty() && conversation_id.len() <= 128);
        assert_eq!(value["conversationId"].as_str(), Some(conversation_id.as_str()));
        assert_eq!(value["isTyping"].as_bool(), Some(is_typing));
    }

    for since_allowed in [true, false] {
        match Parsers::workspace_request(Some(value.clone()), since_allowed) {
            Ok((workspace_ids, since)) => {
                check_since(&since);
                assert!((1..=MAX_WORKSPACES).contains(&workspace_ids.len()));
                let mut seen = std::collections::BTreeSet::new();
                for id in &workspace_ids {
                    assert!(!id.is_empty() && id.len() <= MAX_ID_BYTES, "id {id:?}");
                    assert!(seen.insert(id), "{id:?} twice");
                }
                assert!(since.keys().all(|id| seen.contains(id)));
                if !since_allowed {
                    assert!(since.is_empty());
                }
                // The ids in the order sent, first occurrence of each.
                let sent: Vec<&str> = value["workspaceIds"]
                    .as_array()
                    .expect("workspaceIds is an array")
                    .iter()
                    .map(|id| id.as_str().expect("a string id"))
                    .collect();
                let mut first = std::collections::BTreeSet::new();
                let expected: Vec<&str> = sent.into_iter().filter(|id| first.insert(*id)).collect();
                assert_eq!(workspace_ids, expected);
            }
            Err((code, message)) => {
                assert_eq!(code, "INVALID_PAYLOAD");
                assert!(!message.is_empty());
            }
        }
    }
});

fn check_since(since: &BTreeMap<String, u64>) {
    assert!(since.len() <= MAX_WORKSPACES);
    for id in since.keys() {
        assert!(
            !id.is_empty() && id.len() <= MAX_ID_BYTES,
            "since key {id:?}"
        );
    }
}
