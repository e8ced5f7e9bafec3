//! The scripted provider's plan for one turn: what the agent says, which tools it calls, and how
//! the turn ends. Everything here is a pure function of the agent's slug, the user's text and the
//! history the turn carries, so tests compute the exact events they expect with [`script`],
//! [`script_for_turn`] or [`scripted_reply`].
//!
//! A line of the user's text that starts with one of these directives steers the turn (other
//! lines, and directives that do not parse, are plain text):
//!
//! | directive | effect |
//! |---|---|
//! | `/tool NAME {json}` | the agent calls tool `NAME` with the JSON object (default `{}`), then gets its result; one call per directive, before the text. The result is the real tool's when `NAME` is a built-in the agent lists in its `tools` or a `{server}__{tool}` of one of its MCP servers (see [`crate::tools`]), otherwise [`scripted_tool_result`] |
//! | `/context` | the reply is [`context_reply`]: `[slug] ` and [`describe_context`] of the history the turn received, instead of the echo |
//! | `/fail` | the agent streams the first half of its reply, then the turn ends with a `PROVIDER_ERROR` error |
//! | `/die` | the agent streams [`DIE_AFTER_TOKENS`] tokens, then the whole runtime process exits with status [`DIE_EXIT_CODE`] |
//! | `/slow N` | N milliseconds before the first event, instead of the configured latency |
//!
//! Only the first of `/fail` and `/die` counts. Without `/context` the reply is the agent's
//! answer to the whole text, directives included, so plain messages and steered ones read alike.
//!
//! [`describe_context`]: crate::describe_context

use std::time::Duration;

use crawbl_proto::runtime::v1::context_message::Role;
use crawbl_proto::runtime::v1::{ContextMessage, TurnRequest};
use serde_json::{Map, Value, json};

use crate::agents::Agent;
use crate::context::{describe_context, turn_history};
use crate::tokens::tokens;

/// How many tokens `/die` streams before the process exits.
pub const DIE_AFTER_TOKENS: usize = 3;
/// The exit status of a runtime killed by `/die`: nonzero, so it reads as a crash.
pub const DIE_EXIT_CODE: i32 = 70;
/// The longest pause `/slow` accepts, so a typo cannot park a turn for days.
const MAX_SLOW: Duration = Duration::from_secs(600);

/// One thing the scripted agent does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Streamed token by token (see [`crate::tokens`]).
    Text(String),
    ToolCall {
        call_id: String,
        name: String,
        arguments_json: String,
    },
    ToolResult {
        call_id: String,
        result_json: String,
    },
    /// The turn ends with a `PROVIDER_ERROR` error event carrying `message`.
    Fail { message: String },
    /// The runtime process exits on the spot.
    Die,
}

/// The whole plan of a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// From `/slow N`: replaces the configured first-token latency for this turn.
    pub first_token_latency: Option<Duration>,
    pub steps: Vec<Step>,
}

/// What the agent `agent_slug` does when it gets `user_text` as the only message of the
/// conversation.
pub fn script(agent_slug: &str, user_text: &str) -> Script {
    let history = [ContextMessage {
        role: Role::User.into(),
        text: user_text.to_owned(),
        ..ContextMessage::default()
    }];
    script_with_history(agent_slug, user_text, &history)
}

/// What the agent does for `turn`: its slug, its text, and its history (see
/// [`crate::context::turn_history`]).
pub fn script_for_turn(turn: &TurnRequest) -> Script {
    script_with_history(&turn.agent_slug, &turn.text, &turn_history(turn))
}

/// The reply of a `/context` turn: `[slug] ` then [`describe_context`] of `history`.
pub fn context_reply(agent_slug: &str, history: &[ContextMessage]) -> String {
    format!(
        "[{}] {}",
        Agent::from_slug(agent_slug).slug(),
        describe_context(history)
    )
}

fn script_with_history(agent_slug: &str, user_text: &str, history: &[ContextMessage]) -> Script {
    let directives = directives(user_text);
    let reply = if directives.contains(&Directive::Context) {
        context_reply(agent_slug, history)
    } else {
        Agent::from_slug(agent_slug).scripted_answer(user_text)
    };
    let mut steps = Vec::new();
    let mut first_token_latency = None;
    let mut ending = None;
    let mut calls = 0;
    for directive in directives {
        match directive {
            Directive::Tool {
                name,
                arguments_json,
            } => {
                calls += 1;
                let call_id = format!("call-{calls}");
                let result_json = scripted_tool_result(&name, &arguments_json);
                steps.push(Step::ToolCall {
                    call_id: call_id.clone(),
                    name,
                    arguments_json,
                });
                steps.push(Step::ToolResult {
                    call_id,
                    result_json,
                });
            }
            Directive::Slow(pause) => first_token_latency = Some(pause),
            Directive::Context => {}
            Directive::Fail | Directive::Die => {
                ending.get_or_insert(directive);
            }
        }
    }
    let deltas = tokens(&reply);
    match ending {
        Some(Directive::Fail) => {
            let said = deltas.len().div_ceil(2);
            steps.push(Step::Text(deltas[..said].concat()));
            steps.push(Step::Fail {
                message: "scripted provider failure (/fail)".to_owned(),
            });
        }
        Some(Directive::Die) => {
            let said = deltas.len().min(DIE_AFTER_TOKENS);
            steps.push(Step::Text(deltas[..said].concat()));
            steps.push(Step::Die);
        }
        _ => steps.push(Step::Text(reply)),
    }
    steps.retain(|step| !matches!(step, Step::Text(text) if text.is_empty()));
    Script {
        first_token_latency,
        steps,
    }
}

/// The text the agent `agent_slug` streams for `user_text`: the concatenation of every delta of
/// the turn (with `/fail` or `/die`, only what comes before the failure).
pub fn scripted_reply(agent_slug: &str, user_text: &str) -> String {
    script(agent_slug, user_text)
        .steps
        .iter()
        .filter_map(|step| match step {
            Step::Text(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// The fake result of calling tool `name` with `arguments_json` (a JSON object):
/// `{"arguments":…,"output":"scripted result of NAME","tool":"NAME"}`, keys sorted.
pub fn scripted_tool_result(name: &str, arguments_json: &str) -> String {
    let arguments: Value =
        serde_json::from_str(arguments_json).unwrap_or_else(|_| Value::Object(Map::new()));
    json!({
        "tool": name,
        "arguments": arguments,
        "output": format!("scripted result of {name}"),
    })
    .to_string()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Directive {
    Tool {
        name: String,
        arguments_json: String,
    },
    Context,
    Fail,
    Die,
    Slow(Duration),
}

fn directives(text: &str) -> Vec<Directive> {
    text.lines().filter_map(parse_directive).collect()
}

fn parse_directive(line: &str) -> Option<Directive> {
    let line = line.trim();
    let (command, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    match (command, rest) {
        ("/context", "") => Some(Directive::Context),
        ("/fail", "") => Some(Directive::Fail),
        ("/die", "") => Some(Directive::Die),
        ("/slow", millis) => {
            let millis: u64 = millis.parse().ok()?;
            Some(Directive::Slow(Duration::from_millis(millis).min(MAX_SLOW)))
        }
        ("/tool", rest) => {
            let (name, arguments) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let valid_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
            valid_name.then(|| Directive::Tool {
                name: name.to_owned(),
                arguments_json: arguments_object(arguments.trim()),
            })
        }
        _ => None,
    }
}

/// The arguments as a compact JSON object: `{}` when absent; anything that is not a JSON object
/// is passed along as `{"input": "<text>"}`, because a tool call's arguments are always an object.
fn arguments_object(raw: &str) -> String {
    if raw.is_empty() {
        return "{}".to_owned();
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(object @ Value::Object(_)) => object.to_string(),
        _ => json!({ "input": raw }).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_message_is_answered_in_one_text_step() {
        let script = script("assistant", "hello");
        assert_eq!(script.first_token_latency, None);
        assert_eq!(
            script.steps,
            vec![Step::Text("[assistant] You said: hello".to_owned())]
        );
        assert_eq!(scripted_reply("helper", "hi"), "[helper] You said: hi");
    }

    #[test]
    fn a_tool_directive_calls_the_tool_then_gets_its_result_before_the_text() {
        let text = "what is the weather?\n/tool weather {\"city\": \"Paris\"}";
        let steps = script("assistant", text).steps;
        let result = scripted_tool_result("weather", r#"{"city":"Paris"}"#);
        assert_eq!(
            result,
            r#"{"arguments":{"city":"Paris"},"output":"scripted result of weather","tool":"weather"}"#
        );
        assert_eq!(
            steps,
            vec![
                Step::ToolCall {
                    call_id: "call-1".into(),
                    name: "weather".into(),
                    arguments_json: r#"{"city":"Paris"}"#.into(),
                },
                Step::ToolResult {
                    call_id: "call-1".into(),
                    result_json: result,
                },
                Step::Text(format!("[assistant] You said: {text}")),
            ]
        );
    }

    #[test]
    fn tool_arguments_are_always_a_json_object() {
        assert_eq!(arguments_object(""), "{}");
        assert_eq!(arguments_object(r#"{"a": 1}"#), r#"{"a":1}"#);
        assert_eq!(arguments_object("[1]"), r#"{"input":"[1]"}"#);
        assert_eq!(arguments_object("Paris"), r#"{"input":"Paris"}"#);
    }

    #[test]
    fn fail_streams_half_of_the_reply_then_fails() {
        let full = Agent::Assistant.scripted_answer("/fail");
        let steps = script("assistant", "/fail").steps;
        let [Step::Text(said), Step::Fail { .. }] = steps.as_slice() else {
            panic!("unexpected steps {steps:?}");
        };
        assert!(full.starts_with(said.as_str()) && said.len() < full.len());
        assert_eq!(scripted_reply("assistant", "/fail"), *said);
    }

    #[test]
    fn die_streams_a_few_tokens_then_dies_and_only_the_first_ending_counts() {
        let steps = script("assistant", "x\n/die\n/fail").steps;
        assert_eq!(
            steps,
            vec![Step::Text("[assistant] You said: ".to_owned()), Step::Die]
        );
    }

    #[test]
    fn slow_sets_the_first_token_latency_and_is_capped() {
        assert_eq!(
            script("assistant", "/slow 250").first_token_latency,
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            script("assistant", "/slow 99999999999").first_token_latency,
            Some(MAX_SLOW)
        );
    }

    #[test]
    fn context_answers_with_the_history_instead_of_the_echo() {
        let turn = TurnRequest {
            agent_slug: "assistant".into(),
            text: "/context".into(),
            history: vec![
                ContextMessage {
                    role: Role::User.into(),
                    text: "hi".into(),
                    ..ContextMessage::default()
                },
                ContextMessage {
                    role: Role::Agent.into(),
                    text: "[assistant] You said: hi".into(),
                    agent_name: "Assistant".into(),
                    ..ContextMessage::default()
                },
                ContextMessage {
                    role: Role::User.into(),
                    text: "/context".into(),
                    ..ContextMessage::default()
                },
            ],
            ..TurnRequest::default()
        };
        assert_eq!(
            script_for_turn(&turn).steps,
            vec![Step::Text(
                "[assistant] Context (3): user: hi | assistant(Assistant): [assistant] You said: hi | user: /context"
                    .to_owned()
            )]
        );
        // Without history, the text is the one message.
        assert_eq!(
            scripted_reply("researcher", "/context"),
            "[researcher] Context (1): user: /context"
        );
    }

    #[test]
    fn directives_that_do_not_parse_are_plain_text() {
        for text in [
            "/slow soon",
            "/tool",
            "/tool we@ther {}",
            "say /fail",
            "/failing",
            "/die now",
            "/context please",
        ] {
            let script = script("assistant", text);
            assert_eq!(script.first_token_latency, None, "{text}");
            assert_eq!(
                script.steps,
                vec![Step::Text(format!("[assistant] You said: {text}"))],
                "{text}"
            );
        }
    }
}
