//! Which agents a user message is addressed to: the ids in `content.mentions`, then every
//! `@slug` in the text that names an active agent of the workspace, each once, in that order.
//! Without any, the conversation's agent answers.

use crawbl_proto::conversation::v1::Agent;

use crate::ConversationError;

/// Most agents one message may address.
pub const MAX_MENTIONS: usize = 8;

/// Checks the size of `content.mentions` (before any lookup); an id that names no agent, empty
/// or huge, is refused by [`resolve`] as unknown (422).
pub fn check_ids(mentions: &[String]) -> Result<(), ConversationError> {
    if mentions.len() > MAX_MENTIONS {
        return Err(ConversationError::invalid(
            "INVALID_MENTIONS",
            format!("mentions must be at most {MAX_MENTIONS} agent ids"),
        ));
    }
    Ok(())
}

/// The agents `mentions` and `text` address, among the workspace's `active` (not archived)
/// agents: ids first, then `@slug`s. A mentioned id that is no active agent of the workspace
/// is refused; an `@word` that names no agent is just text.
pub fn resolve(
    mentions: &[String],
    text: &str,
    active: &[Agent],
) -> Result<Vec<String>, ConversationError> {
    let mut addressed: Vec<String> = Vec::new();
    let mut add = |id: &str| {
        if !addressed.iter().any(|known| known == id) {
            addressed.push(id.to_owned());
        }
    };
    for id in mentions {
        if !active.iter().any(|agent| &agent.id == id) {
            return Err(ConversationError::unprocessable(
                "UNKNOWN_MENTION",
                "a mentioned agent is not an active agent of this workspace",
            ));
        }
        add(id);
    }
    for slug in slugs_in(text) {
        if let Some(agent) = active.iter().find(|agent| agent.slug == slug) {
            add(&agent.id);
        }
    }
    if addressed.len() > MAX_MENTIONS {
        return Err(ConversationError::invalid(
            "INVALID_MENTIONS",
            format!("a message may address at most {MAX_MENTIONS} agents"),
        ));
    }
    Ok(addressed)
}

/// Every `@slug` in `text` where `@` starts a word (so `bob@example.com` names nobody).
fn slugs_in(text: &str) -> impl Iterator<Item = &str> {
    let mut previous: Option<char> = None;
    text.char_indices().filter_map(move |(at, c)| {
        let starts_word = previous.is_none_or(|p| !(p.is_alphanumeric() || p == '_' || p == '-'));
        previous = Some(c);
        if c != '@' || !starts_word {
            return None;
        }
        let rest = &text[at + 1..];
        let end = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'))
            .unwrap_or(rest.len());
        (end > 0).then(|| &rest[..end])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, slug: &str) -> Agent {
        Agent {
            id: id.into(),
            slug: slug.into(),
            ..Agent::default()
        }
    }

    fn agents() -> Vec<Agent> {
        vec![agent("a1", "assistant"), agent("r1", "researcher")]
    }

    #[test]
    fn slugs_are_found_where_an_at_sign_starts_a_word() {
        let found: Vec<&str> =
            slugs_in("@assistant and (@researcher), mail bob@researcher, @ alone, @x-1_y.")
                .collect();
        assert_eq!(found, ["assistant", "researcher", "x-1_y"]);
        assert_eq!(slugs_in("").count(), 0);
        assert_eq!(slugs_in("@").count(), 0);
        assert_eq!(slugs_in("é@assistant").count(), 0);
    }

    #[test]
    fn ids_come_first_then_slugs_each_agent_once() {
        let addressed = resolve(&["r1".into()], "@assistant @researcher @nobody", &agents());
        assert_eq!(addressed.ok(), Some(vec!["r1".to_owned(), "a1".to_owned()]));
        assert_eq!(resolve(&[], "no mention", &agents()).ok(), Some(vec![]));
    }

    #[test]
    fn an_unknown_or_archived_id_is_refused() {
        let refused = resolve(&["gone".into()], "", &agents());
        assert!(matches!(
            refused,
            Err(ConversationError::Unprocessable {
                code: "UNKNOWN_MENTION",
                ..
            })
        ));
    }

    #[test]
    fn malformed_mention_lists_are_refused() {
        let nine: Vec<String> = (0..9).map(|n| n.to_string()).collect();
        assert!(check_ids(&nine).is_err());
        assert!(check_ids(&["a1".into()]).is_ok());
        // Empty or long ids name no agent: 422, as the schema allows any string.
        assert!(check_ids(&[String::new(), "x".repeat(65)]).is_ok());
        assert!(resolve(&[String::new()], "", &agents()).is_err());
    }

    #[test]
    fn hostile_text_never_panics() {
        let text = "@".repeat(10_000) + "é@ü@" + &"@a".repeat(1000);
        let _ = resolve(&[], &text, &agents());
        let _ = slugs_in("@\u{10FFFF}@💥@a").count();
    }
}
