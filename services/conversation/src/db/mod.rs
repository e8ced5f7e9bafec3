//! Every query of the conversation service: plain functions over an `AnyPool` or a connection
//! inside a transaction, written once for Postgres and SQLite (`$n` placeholders work on both).

mod activity;
mod agents;
// Before `messages`, which uses its `send_target!`.
#[macro_use]
mod conversations;
mod events;
mod messages;
mod push;
mod reads;
mod turns;
mod usage;
mod workspaces;

pub use activity::*;
pub use agents::*;
pub use conversations::*;
pub use events::*;
pub use messages::*;
pub use push::*;
pub use reads::*;
pub use turns::*;
pub use usage::*;
pub use workspaces::*;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::ConversationError;

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub use crawbl_infra::db::is_unique_violation;

/// `AnyConnection::backend_name` of Postgres, for the few statements written for it alone.
const POSTGRES: &str = "PostgreSQL";

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A position in a newest-first listing ordered by (time, id): the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at_ms: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}|{}", self.at_ms, self.id))
    }

    /// Parses a cursor from a client; empty means "from the newest". Only the text
    /// [`Cursor::encode`] gives is accepted, so a position has one cursor (`+5`, `05` or `-0`
    /// for a time would name the same position another way).
    pub fn decode(raw: &str) -> Result<Option<Self>, ConversationError> {
        if raw.is_empty() {
            return Ok(None);
        }
        let invalid = || ConversationError::invalid("INVALID_CURSOR", "the cursor is not valid");
        if raw.len() > 256 {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (at, id) = text.split_once('|').ok_or_else(invalid)?;
        let cursor = Self {
            at_ms: at.parse().map_err(|_| invalid())?,
            id: id.to_owned(),
        };
        if cursor.encode() != raw {
            return Err(invalid());
        }
        Ok(Some(cursor))
    }
}

/// Trims a page fetched with one extra row and returns the cursor of the next page, if any.
fn page<T>(
    mut rows: Vec<T>,
    limit: u32,
    cursor_of: impl Fn(&T) -> Cursor,
) -> (Vec<T>, Option<Cursor>) {
    if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        let next = rows.last().map(cursor_of);
        (rows, next)
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_encoding() {
        let cursor = Cursor {
            at_ms: 1_700_000_000_123,
            id: "0190-abc".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).ok(), Some(Some(cursor)));
        assert_eq!(Cursor::decode("").ok(), Some(None));
    }

    #[test]
    fn garbage_cursors_are_rejected_not_panicked_on() {
        for raw in ["!!!", "bm9waXBl", "fDE", &"A".repeat(10_000)] {
            assert!(Cursor::decode(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn a_position_is_accepted_only_as_the_cursor_the_service_hands_out() {
        // Found by the `cursor` fuzz target: "-0|" decoded to the position of "0|".
        for text in ["-0|", "+5|m", "05|m", "-05|m"] {
            let raw = URL_SAFE_NO_PAD.encode(text);
            assert!(Cursor::decode(&raw).is_err(), "{text:?}");
        }
        for at_ms in [0, 5, -5, i64::MIN, i64::MAX] {
            let cursor = Cursor {
                at_ms,
                id: "m|1".into(),
            };
            assert_eq!(Cursor::decode(&cursor.encode()).ok(), Some(Some(cursor)));
        }
    }

    #[test]
    fn a_page_keeps_the_limit_and_points_at_its_last_row() {
        let (rows, next) = page(vec![1, 2, 3], 2, |n| Cursor {
            at_ms: *n,
            id: String::new(),
        });
        assert_eq!(rows, [1, 2]);
        assert_eq!(next.map(|cursor| cursor.at_ms), Some(2));
        let (rows, next) = page(vec![1, 2], 2, |n| Cursor {
            at_ms: *n,
            id: String::new(),
        });
        assert_eq!(rows, [1, 2]);
        assert!(next.is_none());
    }
}
