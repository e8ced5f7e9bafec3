//! The newest durable events of a tracked workspace, in memory. When a node dies its sockets
//! reconnect to the others within seconds, thousands of them asking for the same few events;
//! served from here, a replay costs no read of the log and holds the workspace's lock for
//! microseconds, instead of every socket reading the log in turn.

use std::collections::BTreeMap;

use crawbl_proto::events::v1::Event;
use prost::Message as _;

/// At most this many events, and this many encoded bytes, per workspace: enough for the events
/// of the last few seconds of a busy workspace, little for an edge following thousands.
const MAX_EVENTS: usize = 512;
const MAX_BYTES: usize = 256 * 1024;

#[derive(Default)]
pub struct Recent {
    events: BTreeMap<u64, Event>,
    bytes: usize,
}

impl Recent {
    /// Keeps a durable event (volatile ones, `seq` 0, are never replayed).
    pub fn remember(&mut self, event: &Event) {
        if event.seq == 0 {
            return;
        }
        let size = event.encoded_len();
        if let Some(replaced) = self.events.insert(event.seq, event.clone()) {
            self.bytes -= replaced.encoded_len();
        }
        self.bytes += size;
        while self.events.len() > MAX_EVENTS || self.bytes > MAX_BYTES {
            let Some((_, oldest)) = self.events.pop_first() else {
                break;
            };
            self.bytes -= oldest.encoded_len();
        }
    }

    /// Every event after `after` up to `upto` (at most `limit`, oldest first), if all of them
    /// are here; `None` when one is missing, and the log must serve them.
    pub fn between(&self, after: u64, upto: u64, limit: usize) -> Option<Vec<Event>> {
        if upto <= after {
            return Some(Vec::new());
        }
        let wanted = usize::try_from(upto - after).ok()?;
        // Keys are unique, so as many keys in the range as seqs means none is missing.
        if self.events.range(after + 1..=upto).count() != wanted {
            return None;
        }
        Some(
            self.events
                .range(after + 1..=upto)
                .take(limit)
                .map(|(_, event)| event.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Event {
        Event {
            workspace_id: "w".to_owned(),
            seq,
            ..Event::default()
        }
    }

    fn seqs(events: Option<Vec<Event>>) -> Option<Vec<u64>> {
        events.map(|events| events.iter().map(|event| event.seq).collect())
    }

    #[test]
    fn serves_a_range_only_when_every_event_of_it_is_kept() {
        let mut recent = Recent::default();
        for seq in [3, 4, 5, 7] {
            recent.remember(&event(seq));
        }
        recent.remember(&event(0));
        assert_eq!(seqs(recent.between(2, 5, 100)), Some(vec![3, 4, 5]));
        assert_eq!(seqs(recent.between(3, 5, 1)), Some(vec![4]));
        assert_eq!(seqs(recent.between(5, 5, 100)), Some(vec![]));
        assert_eq!(seqs(recent.between(1, 5, 100)), None, "2 was never kept");
        assert_eq!(seqs(recent.between(4, 7, 100)), None, "6 is missing");
    }

    #[test]
    fn forgets_the_oldest_past_its_bounds() {
        let mut recent = Recent::default();
        for seq in 1..=(MAX_EVENTS as u64 + 10) {
            recent.remember(&event(seq));
        }
        assert_eq!(recent.events.len(), MAX_EVENTS);
        assert_eq!(recent.between(0, 20, 100), None);
        let newest = MAX_EVENTS as u64 + 10;
        assert_eq!(
            recent
                .between(newest - 2, newest, 100)
                .map(|events| events.len()),
            Some(2)
        );
        let big = Event {
            trace_context: [("pad".to_owned(), "x".repeat(MAX_BYTES))].into(),
            ..event(newest + 1)
        };
        recent.remember(&big);
        assert!(recent.bytes <= MAX_BYTES);
    }
}
