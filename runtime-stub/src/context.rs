//! The conversation a turn carries (`TurnRequest.history`, oldest first, ending with the user
//! message that started the turn), as a model sees it ([`openai_messages`]) and as the scripted
//! `/context` directive reports it ([`describe_context`]).
//!
//! The runtime is stateless: everything the model knows of the conversation comes from here, so
//! a runtime restarted between two turns loses nothing. A caller that sends no history (older
//! platforms) gets the turn's `text` as the one user message.

use crawbl_proto::runtime::v1::context_message::Role;
use crawbl_proto::runtime::v1::{ContextMessage, TurnRequest};
use serde_json::{Value, json};

use crate::tools::CallIds;

/// What the model reads as the result of an earlier tool call whose result never came back.
pub const MISSING_RESULT: &str = r#"{"error":"the result of this call never came back"}"#;

/// The turn's history: `history` as sent, or, when it is empty, the turn's `text` as the one user
/// message.
pub fn turn_history(turn: &TurnRequest) -> Vec<ContextMessage> {
    if !turn.history.is_empty() {
        return turn.history.clone();
    }
    vec![ContextMessage {
        role: Role::User.into(),
        message_id: turn.message_id.clone(),
        text: turn.text.clone(),
        ..ContextMessage::default()
    }]
}

/// One line describing `history`, exactly what the scripted `/context` directive answers after
/// its `[slug] ` prefix:
///
/// `Context (N): ENTRY | ENTRY | …` with one entry per message, oldest first:
/// - a user message: `user: TEXT`;
/// - an agent message: `assistant(AGENT_NAME): TEXT`, where each tool call of the message adds
///   ` [tool NAME ARGUMENTS_JSON -> RESULT_JSON]` before the colon (`-> ?` when the result never
///   came back), and an empty name reads `agent`.
///
/// Line breaks in any text are written as `\n` (a backslash and an `n`), so the whole description
/// stays on one line. For example
/// `Context (3): user: hi | assistant(Assistant): [assistant] You said: hi | user: /context`.
pub fn describe_context(history: &[ContextMessage]) -> String {
    let entries: Vec<String> = history.iter().map(describe_message).collect();
    format!("Context ({}): {}", history.len(), entries.join(" | "))
}

fn describe_message(message: &ContextMessage) -> String {
    let text = one_line(&message.text);
    if message.role() != Role::Agent {
        return format!("user: {text}");
    }
    let name = if message.agent_name.is_empty() {
        "agent"
    } else {
        message.agent_name.as_str()
    };
    let tools: String = message
        .tool_calls
        .iter()
        .map(|call| {
            let result = if call.result_json.is_empty() {
                "?"
            } else {
                call.result_json.as_str()
            };
            format!(
                " [tool {} {} -> {}]",
                call.name,
                one_line(&call.arguments_json),
                one_line(result)
            )
        })
        .collect();
    format!("assistant({}){tools}: {text}", one_line(name))
}

fn one_line(text: &str) -> String {
    text.replace("\r\n", "\\n").replace(['\n', '\r'], "\\n")
}

/// The chat-completions `messages` of the turn: the system message, then the history.
///
/// - user (and unspecified) messages → `user`;
/// - agent messages → `assistant`; an earlier message that called tools becomes an assistant
///   message with `tool_calls`, one `tool` message per call (its result, or [`MISSING_RESULT`]),
///   then an assistant message with the text (when there is any);
/// - a message written by another agent than the one answering is prefixed `[AGENT_NAME] `, so
///   several agents in one conversation stay apart.
///
/// Tool-call ids are made unique across the conversation (APIs match each `tool` message to the
/// call before it by id).
pub fn openai_messages(turn: &TurnRequest, system_prompt: &str) -> Vec<Value> {
    let mut messages = vec![json!({"role": "system", "content": system_prompt})];
    let mut ids = CallIds::default();
    for (index, message) in turn_history(turn).iter().enumerate() {
        if message.role() != Role::Agent {
            messages.push(json!({"role": "user", "content": message.text}));
            continue;
        }
        if !message.tool_calls.is_empty() {
            let calls: Vec<(String, &crawbl_proto::runtime::v1::ToolExchange)> = message
                .tool_calls
                .iter()
                .enumerate()
                .map(|(n, call)| {
                    (
                        ids.unique(&call.call_id, || format!("call-{index}-{n}")),
                        call,
                    )
                })
                .collect();
            messages.push(json!({
                "role": "assistant",
                "content": null,
                "tool_calls": calls.iter().map(|(id, call)| tool_call(id, &call.name, &call.arguments_json)).collect::<Vec<_>>(),
            }));
            for (id, call) in &calls {
                let content = if call.result_json.is_empty() {
                    MISSING_RESULT
                } else {
                    call.result_json.as_str()
                };
                messages.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
        }
        if message.text.is_empty() {
            continue;
        }
        let by_another_agent = !message.agent_id.is_empty() && message.agent_id != turn.agent_id;
        let content = if by_another_agent {
            let name = if message.agent_name.is_empty() {
                message.agent_id.as_str()
            } else {
                message.agent_name.as_str()
            };
            format!("[{name}] {}", message.text)
        } else {
            message.text.clone()
        };
        messages.push(json!({"role": "assistant", "content": content}));
    }
    messages
}

/// One entry of an assistant message's `tool_calls`.
pub(crate) fn tool_call(id: &str, name: &str, arguments_json: &str) -> Value {
    let arguments = if arguments_json.trim().is_empty() {
        "{}"
    } else {
        arguments_json
    };
    json!({
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    })
}

#[cfg(test)]
mod tests {
    use crawbl_proto::runtime::v1::ToolExchange;

    use super::*;

    fn user(text: &str) -> ContextMessage {
        ContextMessage {
            role: Role::User.into(),
            text: text.into(),
            ..ContextMessage::default()
        }
    }

    fn agent(id: &str, name: &str, text: &str, tool_calls: Vec<ToolExchange>) -> ContextMessage {
        ContextMessage {
            role: Role::Agent.into(),
            text: text.into(),
            agent_id: id.into(),
            agent_name: name.into(),
            tool_calls,
            ..ContextMessage::default()
        }
    }

    fn exchange(id: &str, result: &str) -> ToolExchange {
        ToolExchange {
            call_id: id.into(),
            name: "calculator".into(),
            arguments_json: r#"{"expression":"2+2"}"#.into(),
            result_json: result.into(),
        }
    }

    #[test]
    fn the_description_matches_the_documented_example() {
        let history = vec![
            user("hi"),
            agent("a-1", "Assistant", "[assistant] You said: hi", vec![]),
            user("/context"),
        ];
        assert_eq!(
            describe_context(&history),
            "Context (3): user: hi | assistant(Assistant): [assistant] You said: hi | user: /context"
        );
    }

    #[test]
    fn the_description_shows_tool_calls_and_keeps_to_one_line() {
        let history = vec![
            user("two\nlines"),
            agent(
                "a-1",
                "",
                "4",
                vec![exchange("c1", r#"{"result":4}"#), exchange("c2", "")],
            ),
        ];
        assert_eq!(
            describe_context(&history),
            "Context (2): user: two\\nlines | assistant(agent) [tool calculator {\"expression\":\"2+2\"} -> {\"result\":4}] [tool calculator {\"expression\":\"2+2\"} -> ?]: 4"
        );
    }

    #[test]
    fn without_history_the_text_is_the_one_user_message() {
        let turn = TurnRequest {
            text: "hello".into(),
            message_id: "m-1".into(),
            ..TurnRequest::default()
        };
        let history = turn_history(&turn);
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].role(), Role::User);
        assert_eq!(history[0].text, "hello");
        assert_eq!(
            openai_messages(&turn, "be brief"),
            vec![
                json!({"role": "system", "content": "be brief"}),
                json!({"role": "user", "content": "hello"}),
            ]
        );
    }

    #[test]
    fn tool_calls_expand_and_other_agents_are_named() {
        let turn = TurnRequest {
            agent_id: "a-1".into(),
            history: vec![
                user("what is 2+2?"),
                agent(
                    "a-1",
                    "Assistant",
                    "4",
                    vec![exchange("c1", r#"{"result":4}"#)],
                ),
                agent("a-2", "Researcher", "I agree", vec![exchange("c1", "")]),
                user("thanks"),
            ],
            ..TurnRequest::default()
        };
        let messages = openai_messages(&turn, "sys");
        let expected = vec![
            json!({"role": "system", "content": "sys"}),
            json!({"role": "user", "content": "what is 2+2?"}),
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": "{\"expression\":\"2+2\"}"}}
            ]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": "{\"result\":4}"}),
            json!({"role": "assistant", "content": "4"}),
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1-2", "type": "function", "function": {"name": "calculator", "arguments": "{\"expression\":\"2+2\"}"}}
            ]}),
            json!({"role": "tool", "tool_call_id": "c1-2", "content": MISSING_RESULT}),
            json!({"role": "assistant", "content": "[Researcher] I agree"}),
            json!({"role": "user", "content": "thanks"}),
        ];
        assert_eq!(messages, expected);
    }
}
