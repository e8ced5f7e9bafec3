//! `agent.typing` that never ends: when a turn's producer dies between `isTyping: true` and
//! `false`, clients would show the agent typing forever. The edge remembers who is typing in each
//! workspace it delivers and, after [`Typing::ttl`] without any sign of that turn (typing,
//! deltas, tool calls), says `isTyping: false` itself.

use std::collections::HashMap;
use std::time::Duration;

use crawbl_proto::events::v1::{AgentTyping, Event, event};
use tokio::time::Instant;

/// `(conversation id, agent id)`
type Typist = (String, String);

#[derive(Debug)]
pub struct Typing {
    ttl: Duration,
    /// Who is typing, and when that lapses.
    active: HashMap<Typist, Instant>,
}

impl Typing {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            active: HashMap::new(),
        }
    }

    /// Follows an event that is going out to sockets.
    pub fn observe(&mut self, event: &Event, now: Instant) {
        let typist = match &event.kind {
            Some(event::Kind::AgentTyping(typing)) => {
                let typist = (typing.conversation_id.clone(), typing.agent_id.clone());
                if typing.is_typing {
                    self.active.insert(typist, now + self.ttl);
                } else {
                    self.active.remove(&typist);
                }
                return;
            }
            Some(event::Kind::MessageDelta(delta)) => {
                (delta.conversation_id.clone(), delta.agent_id.clone())
            }
            Some(event::Kind::AgentTool(tool)) => {
                (tool.conversation_id.clone(), tool.agent_id.clone())
            }
            _ => return,
        };
        // The turn is alive: typing goes on.
        if let Some(until) = self.active.get_mut(&typist) {
            *until = now + self.ttl;
        }
    }

    /// When the next typing lapses.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.active.values().min().copied()
    }

    /// The `isTyping: false` events of every typing that has lapsed by `now`, which are forgotten.
    pub fn expire(&mut self, workspace_id: &str, now: Instant) -> Vec<Event> {
        let lapsed: Vec<Typist> = self
            .active
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(typist, _)| typist.clone())
            .collect();
        lapsed
            .into_iter()
            .map(|typist| {
                self.active.remove(&typist);
                let (conversation_id, agent_id) = typist;
                Event {
                    workspace_id: workspace_id.to_owned(),
                    kind: Some(event::Kind::AgentTyping(AgentTyping {
                        conversation_id,
                        agent_id,
                        is_typing: false,
                    })),
                    ..Event::default()
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crawbl_proto::events::v1::MessageDelta;

    fn typing(conversation: &str, is_typing: bool) -> Event {
        Event {
            kind: Some(event::Kind::AgentTyping(AgentTyping {
                conversation_id: conversation.to_owned(),
                agent_id: "a".to_owned(),
                is_typing,
            })),
            ..Event::default()
        }
    }

    fn delta(conversation: &str) -> Event {
        Event {
            kind: Some(event::Kind::MessageDelta(MessageDelta {
                conversation_id: conversation.to_owned(),
                agent_id: "a".to_owned(),
                ..MessageDelta::default()
            })),
            ..Event::default()
        }
    }

    #[test]
    fn typing_without_a_stop_lapses_after_the_ttl_and_activity_keeps_it_alive() {
        let ttl = Duration::from_secs(60);
        let start = Instant::now();
        let mut typing_state = Typing::new(ttl);
        typing_state.observe(&typing("c1", true), start);
        typing_state.observe(&typing("c2", true), start);
        typing_state.observe(&delta("c2"), start + Duration::from_secs(30));
        assert_eq!(typing_state.next_expiry(), Some(start + ttl));

        let lapsed = typing_state.expire("w", start + ttl);
        assert_eq!(lapsed.len(), 1);
        assert_eq!(lapsed[0].workspace_id, "w");
        assert_eq!(
            lapsed[0].kind,
            Some(event::Kind::AgentTyping(AgentTyping {
                conversation_id: "c1".to_owned(),
                agent_id: "a".to_owned(),
                is_typing: false
            }))
        );
        assert_eq!(
            typing_state.next_expiry(),
            Some(start + Duration::from_secs(90))
        );
    }

    #[test]
    fn a_stop_forgets_the_typing() {
        let start = Instant::now();
        let mut typing_state = Typing::new(Duration::from_secs(1));
        typing_state.observe(&typing("c1", true), start);
        typing_state.observe(&typing("c1", false), start);
        assert_eq!(typing_state.next_expiry(), None);
        assert!(
            typing_state
                .expire("w", start + Duration::from_secs(5))
                .is_empty()
        );
    }
}
