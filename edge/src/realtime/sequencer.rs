//! The order of one workspace's events on this node: every durable event once, in `seq` order.
//!
//! Durable events (`seq > 0`) can arrive twice (the outbox may publish one again) or out of order
//! (two publishers race to Redis), and some never arrive (published while this node was not
//! subscribed). The sequencer remembers the last durable `seq` it let through: an older one is a
//! duplicate and dropped; the next one goes out at once; a later one opens a gap and is held,
//! together with every event that arrives after it (volatile ones too, so a turn's order
//! survives), until the gap is closed by the missing event or from the log. It does no I/O: the
//! caller emits what it hands out and fills gaps it reports.

use std::collections::VecDeque;

use crawbl_proto::events::v1::Event;
use tokio::time::Instant;

#[derive(Debug, Default)]
pub struct Sequencer {
    /// The last durable `seq` handed out; `None` until known (from the log, or the first
    /// durable event when the log could not be read).
    last: Option<u64>,
    /// Events waiting behind a gap, in arrival order.
    held: VecDeque<Event>,
    /// Since when the current gap has been open.
    waiting_since: Option<Instant>,
}

impl Sequencer {
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// How many events wait behind a gap.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Since when a gap has been open, if one is.
    pub fn waiting_since(&self) -> Option<Instant> {
        self.waiting_since
    }

    /// Treats every durable event up to `seq` as handed out (the log's head when the workspace
    /// starts being tracked, or after giving up on a gap); events it frees go to `out`.
    pub fn skip_to(&mut self, seq: u64, now: Instant, out: &mut Vec<Event>) {
        if self.last.is_none_or(|last| last < seq) {
            self.last = Some(seq);
        }
        self.drain(now, out);
    }

    /// Takes one event (from the bus or the log); what may go out now goes to `out`, in order.
    pub fn accept(&mut self, event: Event, now: Instant, out: &mut Vec<Event>) {
        if event.seq == 0 {
            if self.held.is_empty() {
                out.push(event);
            } else {
                self.held.push_back(event);
            }
            return;
        }
        let Some(last) = self.last else {
            // Nothing to compare with (the log could not be read): this one sets the baseline.
            self.last = Some(event.seq);
            out.push(event);
            return;
        };
        if event.seq <= last {
            return;
        }
        if event.seq == last + 1 {
            self.last = Some(event.seq);
            out.push(event);
            self.drain(now, out);
            return;
        }
        self.held.push_back(event);
        self.waiting_since.get_or_insert(now);
    }

    /// Gives up on every gap: held events go out in order, holes skipped. For when the missing
    /// events cannot be had (pruned from the log, or too much is waiting).
    pub fn give_up(&mut self, now: Instant, out: &mut Vec<Event>) {
        loop {
            let last = self.last.unwrap_or(0);
            let next = self
                .held
                .iter()
                .map(|event| event.seq)
                .filter(|seq| *seq > last)
                .min();
            let Some(next) = next else { break };
            self.skip_to(next - 1, now, out);
        }
        // Only volatile events and duplicates can be left.
        for event in self.held.drain(..) {
            if event.seq == 0 {
                out.push(event);
            }
        }
        self.waiting_since = None;
    }

    /// Hands out what the held events allow, front first; the event that closes the gap may sit
    /// behind others (it arrived late) and goes first.
    fn drain(&mut self, now: Instant, out: &mut Vec<Event>) {
        let mut progressed = false;
        while let Some(front) = self.held.front() {
            let last = self.last.unwrap_or(0);
            let next = if front.seq == 0 || front.seq <= last + 1 {
                self.held.pop_front()
            } else {
                match self.held.iter().position(|event| event.seq == last + 1) {
                    Some(index) => self.held.remove(index),
                    None => break,
                }
            };
            let Some(event) = next else { break };
            if event.seq == 0 {
                out.push(event);
            } else if event.seq == last + 1 {
                self.last = Some(event.seq);
                progressed = true;
                out.push(event);
            } else {
                // Anything else is a duplicate: dropped.
                crawbl_infra::metrics::events_dropped("duplicate", 1);
            }
        }
        if self.held.is_empty() {
            self.waiting_since = None;
        } else if progressed {
            // A new gap: it gets its own wait.
            self.waiting_since = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crawbl_proto::events::v1::{AgentTyping, event};

    fn durable(seq: u64) -> Event {
        Event {
            workspace_id: "w".to_owned(),
            seq,
            ..Event::default()
        }
    }

    /// A volatile event told apart by its conversation id.
    fn volatile(tag: &str) -> Event {
        Event {
            workspace_id: "w".to_owned(),
            kind: Some(event::Kind::AgentTyping(AgentTyping {
                conversation_id: tag.to_owned(),
                ..AgentTyping::default()
            })),
            ..Event::default()
        }
    }

    fn label(event: &Event) -> String {
        match &event.kind {
            Some(event::Kind::AgentTyping(typing)) => typing.conversation_id.clone(),
            _ => event.seq.to_string(),
        }
    }

    fn feed(sequencer: &mut Sequencer, events: Vec<Event>) -> Vec<String> {
        let mut out = Vec::new();
        for event in events {
            sequencer.accept(event, Instant::now(), &mut out);
        }
        out.iter().map(label).collect()
    }

    fn starting_at(last: u64) -> Sequencer {
        let mut sequencer = Sequencer::default();
        sequencer.skip_to(last, Instant::now(), &mut Vec::new());
        sequencer
    }

    #[test]
    fn in_order_events_go_out_at_once_and_duplicates_are_dropped() {
        let mut sequencer = starting_at(4);
        let out = feed(
            &mut sequencer,
            vec![
                durable(3),
                durable(5),
                volatile("a"),
                durable(5),
                durable(6),
            ],
        );
        assert_eq!(out, ["5", "a", "6"]);
        assert_eq!(sequencer.last(), Some(6));
        assert_eq!(sequencer.waiting_since(), None);
    }

    #[test]
    fn a_gap_holds_everything_after_it_until_the_missing_event_comes() {
        let mut sequencer = starting_at(4);
        let out = feed(
            &mut sequencer,
            vec![durable(6), volatile("after-6"), durable(7)],
        );
        assert!(out.is_empty(), "{out:?}");
        assert!(sequencer.waiting_since().is_some());
        assert_eq!(sequencer.held(), 3);

        let out = feed(&mut sequencer, vec![durable(5), volatile("after-7")]);
        assert_eq!(out, ["5", "6", "after-6", "7", "after-7"]);
        assert_eq!(sequencer.waiting_since(), None);
    }

    #[test]
    fn the_missing_event_found_behind_held_ones_goes_first() {
        let mut sequencer = starting_at(4);
        // 7 arrives first and waits for 5 and 6; 6 is held behind it; then 5 closes the gap.
        let out = feed(
            &mut sequencer,
            vec![durable(7), volatile("v"), durable(6), durable(5)],
        );
        assert_eq!(out, ["5", "6", "7", "v"]);
    }

    #[test]
    fn events_from_the_log_fill_a_gap_and_live_copies_are_then_dropped() {
        let mut sequencer = starting_at(4);
        feed(&mut sequencer, vec![durable(7), volatile("v")]);
        // The log has 5..=8.
        let out = feed(
            &mut sequencer,
            vec![durable(5), durable(6), durable(7), durable(8)],
        );
        assert_eq!(out, ["5", "6", "7", "v", "8"]);
        assert!(feed(&mut sequencer, vec![durable(8), durable(6)]).is_empty());
    }

    #[test]
    fn giving_up_hands_out_what_is_held_in_order_and_skips_the_holes() {
        let mut sequencer = starting_at(4);
        feed(
            &mut sequencer,
            vec![durable(9), volatile("v"), durable(7), durable(9)],
        );
        let mut out = Vec::new();
        sequencer.give_up(Instant::now(), &mut out);
        let out: Vec<String> = out.iter().map(label).collect();
        assert_eq!(out, ["7", "9", "v"]);
        assert_eq!(sequencer.last(), Some(9));
        assert_eq!(sequencer.held(), 0);
        assert_eq!(sequencer.waiting_since(), None);
    }

    #[test]
    fn without_a_known_position_the_first_durable_event_sets_it() {
        let mut sequencer = Sequencer::default();
        assert_eq!(
            feed(
                &mut sequencer,
                vec![volatile("v"), durable(12), durable(13), durable(12)]
            ),
            ["v", "12", "13"]
        );
    }
}
