//! The agents a runtime can activate, chosen by the turn's `agent_slug`. Every workspace starts
//! with `assistant` and `researcher` (see docs/decisions.md); any other slug gets a plain echoing
//! agent, so a workspace may add agents without the runtime knowing them in advance.

/// One agent's persona: what the scripted provider answers, and the system prompt an LLM
/// provider is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent<'a> {
    Assistant,
    Researcher,
    /// Any other slug; an empty one reads as `agent`.
    Other(&'a str),
}

impl<'a> Agent<'a> {
    pub fn from_slug(slug: &'a str) -> Self {
        match slug.trim() {
            "assistant" => Self::Assistant,
            "researcher" => Self::Researcher,
            "" => Self::Other("agent"),
            _ => Self::Other(slug),
        }
    }

    pub fn slug(self) -> &'a str {
        match self {
            Self::Assistant => "assistant",
            Self::Researcher => "researcher",
            Self::Other(slug) => slug,
        }
    }

    /// The scripted answer to `user_text`: a pure function of the persona and the text.
    pub fn scripted_answer(self, user_text: &str) -> String {
        match self {
            Self::Researcher => {
                format!(
                    "[researcher] Notes on \"{user_text}\": three sources agree, none disagree."
                )
            }
            Self::Assistant | Self::Other(_) => format!("[{}] You said: {user_text}", self.slug()),
        }
    }

    /// The system message an LLM provider gets before the user's text.
    pub fn system_prompt(self) -> String {
        match self {
            Self::Assistant => {
                "You are Assistant, a helpful general-purpose agent in a Crawbl workspace. \
                 Answer briefly."
                    .to_owned()
            }
            Self::Researcher => {
                "You are Researcher, an agent in a Crawbl workspace who answers with concise, \
                 sourced notes."
                    .to_owned()
            }
            Self::Other(slug) => format!("You are {slug}, an agent in a Crawbl workspace."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_default_agents_have_their_own_personas() {
        assert_eq!(
            Agent::from_slug("assistant").scripted_answer("hi"),
            "[assistant] You said: hi"
        );
        assert_eq!(
            Agent::from_slug("researcher").scripted_answer("hi"),
            "[researcher] Notes on \"hi\": three sources agree, none disagree."
        );
    }

    #[test]
    fn an_unknown_slug_echoes_under_its_own_name_and_an_empty_one_reads_as_agent() {
        assert_eq!(
            Agent::from_slug("scout").scripted_answer("hi"),
            "[scout] You said: hi"
        );
        assert_eq!(
            Agent::from_slug(" ").scripted_answer("hi"),
            "[agent] You said: hi"
        );
        assert!(Agent::from_slug("scout").system_prompt().contains("scout"));
    }
}
