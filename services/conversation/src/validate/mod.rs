//! Turning requests into checked values once, at the boundary.

mod agent;

pub use agent::{AgentChanges, NewAgent};

use crate::ConversationError;
use crawbl_proto::conversation::v1::{MessageContent, SendMessageRequest};

/// Longest message text accepted, in bytes (SPEC §8).
pub const MAX_TEXT_BYTES: usize = 32 * 1024;
pub const MAX_LOCAL_ID_CHARS: usize = 128;
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_PAGE_SIZE: u32 = 100;
pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_EVENT_PAGE_SIZE: u32 = 1000;
pub const DEFAULT_EVENT_PAGE_SIZE: u32 = 100;

/// A user message that passed validation.
#[derive(Debug, Clone)]
pub struct NewUserMessage {
    pub workspace_id: String,
    pub conversation_id: String,
    pub author_id: String,
    pub local_id: String,
    pub text: String,
    /// Agent ids from `content.mentions`, shape checked; the service resolves them (with any
    /// `@slug` of the text) into the agents that answer.
    pub mentions: Vec<String>,
}

impl TryFrom<SendMessageRequest> for NewUserMessage {
    type Error = ConversationError;

    fn try_from(request: SendMessageRequest) -> Result<Self, Self::Error> {
        let local_id = request.local_id.trim().to_owned();
        if local_id.is_empty() || local_id.chars().count() > MAX_LOCAL_ID_CHARS {
            return Err(ConversationError::invalid(
                "INVALID_LOCAL_ID",
                format!("localId must be 1 to {MAX_LOCAL_ID_CHARS} characters"),
            ));
        }
        let Some(content) = request.content else {
            return Err(ConversationError::invalid(
                "INVALID_CONTENT",
                "content is required",
            ));
        };
        message_text(&content)?;
        crate::mentions::check_ids(&content.mentions)?;
        Ok(Self {
            workspace_id: request.workspace_id,
            conversation_id: request.conversation_id,
            author_id: request.author_id,
            local_id,
            text: content.text,
            mentions: content.mentions,
        })
    }
}

/// Checks a message's text content (of a send or an edit): type `text`, not blank, at most
/// [`MAX_TEXT_BYTES`].
pub fn message_text(content: &MessageContent) -> Result<(), ConversationError> {
    if content.r#type != "text" {
        return Err(ConversationError::unprocessable(
            "UNSUPPORTED_CONTENT_TYPE",
            format!(
                "content type {:?} is not supported; use \"text\"",
                truncate(&content.r#type, 32)
            ),
        ));
    }
    if content.text.trim().is_empty() {
        return Err(ConversationError::invalid(
            "EMPTY_MESSAGE",
            "message text must not be empty",
        ));
    }
    if content.text.len() > MAX_TEXT_BYTES {
        return Err(ConversationError::invalid(
            "MESSAGE_TOO_LONG",
            format!("message text must be at most {MAX_TEXT_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// A conversation title: trimmed, at most [`MAX_TITLE_CHARS`]; empty means "New conversation".
pub fn title(raw: Option<String>) -> Result<String, ConversationError> {
    let title = raw.as_deref().map(str::trim).unwrap_or_default();
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(ConversationError::invalid(
            "INVALID_TITLE",
            format!("title must be at most {MAX_TITLE_CHARS} characters"),
        ));
    }
    Ok(if title.is_empty() {
        "New conversation".to_owned()
    } else {
        title.to_owned()
    })
}

/// A page size in 1..=100; 0 (unset) means the default.
pub fn page_size(limit: u32) -> Result<u32, ConversationError> {
    match limit {
        0 => Ok(DEFAULT_PAGE_SIZE),
        1..=MAX_PAGE_SIZE => Ok(limit),
        _ => Err(ConversationError::invalid(
            "INVALID_LIMIT",
            format!("limit must be between 1 and {MAX_PAGE_SIZE}"),
        )),
    }
}

/// An event page size in 1..=1000; 0 (unset) means the default.
pub fn event_page_size(limit: u32) -> Result<u32, ConversationError> {
    match limit {
        0 => Ok(DEFAULT_EVENT_PAGE_SIZE),
        1..=MAX_EVENT_PAGE_SIZE => Ok(limit),
        _ => Err(ConversationError::invalid(
            "INVALID_LIMIT",
            format!("limit must be between 1 and {MAX_EVENT_PAGE_SIZE}"),
        )),
    }
}

/// A plan from a billing system: a name of 1 to 64 of a-z, 0-9, `-`, `_` and `.`, and a quota.
pub fn plan(name: &str, quota: Option<u64>) -> Result<crate::db::Plan, ConversationError> {
    let name = name.trim();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if !valid {
        return Err(ConversationError::invalid(
            "INVALID_PLAN",
            "plan must be 1 to 64 of a-z, 0-9, '-', '_' and '.'",
        ));
    }
    if quota.is_some_and(|quota| i64::try_from(quota).is_err()) {
        return Err(ConversationError::invalid(
            "INVALID_QUOTA",
            "monthly_token_quota must be at most 9223372036854775807",
        ));
    }
    Ok(crate::db::Plan {
        name: name.to_owned(),
        monthly_token_quota: quota,
    })
}

/// Longest span a usage report covers.
pub const MAX_USAGE_DAYS: i64 = 366;

/// The window (ms) and error count of an activity report: 1 s to a day, at most 100 errors; 0
/// asks for the defaults (a minute, 20).
pub fn activity_bounds(
    window_seconds: u32,
    error_limit: u32,
) -> Result<(i64, i64), ConversationError> {
    let window_seconds = if window_seconds == 0 {
        60
    } else {
        window_seconds
    };
    let error_limit = if error_limit == 0 { 20 } else { error_limit };
    if window_seconds > 86_400 || error_limit > 100 {
        return Err(ConversationError::invalid(
            "INVALID_RANGE",
            "an activity window is at most 86400 seconds and at most 100 errors",
        ));
    }
    Ok((i64::from(window_seconds) * 1000, i64::from(error_limit)))
}

/// The days (`YYYY-MM-DD`, UTC) a usage report covers: `from` to `to`, both included; `from`
/// defaults to the first of the current month and `to` to today.
pub fn usage_days(
    from: &str,
    to: &str,
    now_ms: i64,
) -> Result<(String, String), ConversationError> {
    use chrono::{Datelike as _, NaiveDate};
    let today = chrono::DateTime::from_timestamp_millis(now_ms)
        .unwrap_or_default()
        .date_naive();
    let parse = |raw: &str, default: NaiveDate| {
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(default);
        }
        NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .ok()
            // Only the canonical form: `2026-1-5` names the same day another way.
            .filter(|day| day.format("%Y-%m-%d").to_string() == raw)
            .ok_or_else(|| ConversationError::invalid("INVALID_DAY", "days are written YYYY-MM-DD"))
    };
    let from = parse(from, today.with_day(1).unwrap_or(today))?;
    let to = parse(to, today)?;
    if from > to || (to - from).num_days() >= MAX_USAGE_DAYS {
        return Err(ConversationError::invalid(
            "INVALID_RANGE",
            format!("from must not be after to, and a report covers at most {MAX_USAGE_DAYS} days"),
        ));
    }
    Ok((
        from.format("%Y-%m-%d").to_string(),
        to.format("%Y-%m-%d").to_string(),
    ))
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: &str, text: &str, local_id: &str) -> SendMessageRequest {
        SendMessageRequest {
            workspace_id: "w".into(),
            conversation_id: "c".into(),
            author_id: "u".into(),
            local_id: local_id.into(),
            content: Some(MessageContent {
                r#type: kind.into(),
                text: text.into(),
                mentions: Vec::new(),
            }),
            wait: false,
            member_of: Vec::new(),
        }
    }

    fn code_of(result: Result<NewUserMessage, ConversationError>) -> &'static str {
        match result {
            Err(ConversationError::InvalidInput { code, .. })
            | Err(ConversationError::Unprocessable { code, .. }) => code,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_text_message_is_accepted() {
        let message = NewUserMessage::try_from(request("text", "hi", " l1 ")).expect("valid");
        assert_eq!(message.local_id, "l1");
        assert_eq!(message.text, "hi");
    }

    #[test]
    fn blank_text_is_rejected_as_empty() {
        assert_eq!(
            code_of(NewUserMessage::try_from(request("text", " \n ", "l"))),
            "EMPTY_MESSAGE"
        );
    }

    #[test]
    fn text_over_32_kib_is_rejected_and_exactly_32_kib_is_not() {
        let limit = "a".repeat(MAX_TEXT_BYTES);
        assert!(NewUserMessage::try_from(request("text", &limit, "l")).is_ok());
        let over = "a".repeat(MAX_TEXT_BYTES + 1);
        assert_eq!(
            code_of(NewUserMessage::try_from(request("text", &over, "l"))),
            "MESSAGE_TOO_LONG"
        );
    }

    #[test]
    fn unknown_content_types_are_unprocessable() {
        assert_eq!(
            code_of(NewUserMessage::try_from(request("image", "x", "l"))),
            "UNSUPPORTED_CONTENT_TYPE"
        );
    }

    #[test]
    fn missing_or_oversized_local_ids_are_rejected() {
        assert_eq!(
            code_of(NewUserMessage::try_from(request("text", "x", ""))),
            "INVALID_LOCAL_ID"
        );
        let long = "x".repeat(MAX_LOCAL_ID_CHARS + 1);
        assert_eq!(
            code_of(NewUserMessage::try_from(request("text", "x", &long))),
            "INVALID_LOCAL_ID"
        );
    }

    #[test]
    fn usage_days_default_to_this_month_and_refuse_bad_ranges() {
        // 2026-12-06T12:00:00Z
        let now = 1_796_558_400_000;
        assert_eq!(
            usage_days("", "", now).ok(),
            Some(("2026-12-01".to_owned(), "2026-12-06".to_owned()))
        );
        assert!(usage_days("2026-12-07", "2026-12-06", now).is_err());
        assert!(usage_days("2026-1-5", "", now).is_err());
        assert!(usage_days("2024-01-01", "2026-01-01", now).is_err());
        assert!(usage_days("tomorrow", "", now).is_err());
        assert!(plan("pro", Some(10)).is_ok());
        assert!(plan("", None).is_err());
        assert!(plan("Pro Plan", None).is_err());
        assert!(plan("pro", Some(u64::MAX)).is_err());
    }

    #[test]
    fn page_sizes_outside_1_to_100_are_rejected() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(100).ok(), Some(100));
        assert!(page_size(101).is_err());
    }
}
