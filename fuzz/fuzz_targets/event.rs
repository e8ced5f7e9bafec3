//! The event envelope as the edge receives it from Redis: protobuf `crawbl.events.v1.Event`
//! bytes, decoded by the bus subscriber (`Event::decode`, `infra/src/bus/redis_subscriber.rs`),
//! then turned into a Socket.IO event (`SocketEvent::from_kind`), which the socket emit and the
//! replay route (`GET …/events`, where a failure would be a 500) both do.
//!
//! Properties: decoding never panics; decode(encode(event)) == event; every kind becomes a
//! socket event (never an error) with its documented name, durable exactly for `message.*`, and
//! an object payload that serializes to JSON text.

#![no_main]

use crawbl_edge::fuzzing::SocketEvent;
use crawbl_proto::events::v1::{Event, event::Kind};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = Event::decode(data) else {
        return;
    };
    let encoded = event.encode_to_vec();
    let again = Event::decode(encoded.as_slice()).expect("what was encoded decodes");
    // NaN equals nothing, itself included (and bytes cannot be compared: map fields encode in
    // any order).
    if !holds_nan(&event) {
        assert_eq!(again, event);
    }

    let Some(kind) = event.kind else {
        return;
    };
    let (name, durable) = match &kind {
        Kind::MessageNew(_) => ("message.new", true),
        Kind::MessageUpdated(_) => ("message.updated", true),
        Kind::AgentTyping(_) => ("agent.typing", false),
        Kind::AgentStatus(_) => ("agent.status", false),
        Kind::MessageDelta(_) => ("message.delta", false),
        Kind::AgentTool(_) => ("agent.tool", false),
        Kind::AgentUpdated(_) => ("agent.updated", true),
        Kind::UsageUpdate(_) => ("usage.update", false),
        Kind::MessageDeleted(_) => ("message.deleted", true),
        Kind::ConversationRead(_) => ("conversation.read", false),
        Kind::UserTyping(_) => ("user.typing", false),
    };
    let socket_event =
        SocketEvent::from_kind(&event.workspace_id, kind).expect("every event kind encodes");
    assert_eq!(socket_event.name, name);
    assert_eq!(socket_event.durable, durable);
    assert!(socket_event.payload.is_object(), "{}", socket_event.payload);
    // What goes on the wire. (Not parsed back here: tool arguments may nest deeper than
    // serde_json's parser allows by default, and its float parsing is not exact by default.)
    serde_json::to_string(&socket_event.payload).expect("payload serializes");
});

/// Whether a float of the event is NaN (an agent's temperature is the only float).
fn holds_nan(event: &Event) -> bool {
    matches!(&event.kind, Some(Kind::AgentUpdated(agent)) if agent.temperature.is_some_and(f32::is_nan))
}
