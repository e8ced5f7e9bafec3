//! What a turn tells the runtime: the answering agent's configuration and the conversation so
//! far, oldest first, within a budget. Runtimes keep nothing between turns, so this is all an
//! agent remembers, and a runtime restarted between two turns loses nothing.
//!
//! The budget is a number of messages and a number of bytes (text, tool arguments and results):
//! the newest messages are kept and the oldest dropped first; the user message the turn answers
//! always stays, even alone over the byte budget (it is at most 32 KiB).

use std::collections::HashMap;

use crawbl_proto::conversation::v1::{Agent, Message, MessageRole};
use crawbl_proto::runtime::v1::context_message::Role;
use crawbl_proto::runtime::v1::{
    AgentConfig, ContextMessage, McpServer, ToolExchange, TurnRequest,
};
use sqlx::AnyPool;

use crate::db;

/// How much of a conversation a turn carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextBudget {
    /// `CONTEXT_MAX_MESSAGES`: at most this many messages, the current one included.
    pub max_messages: u32,
    /// `CONTEXT_MAX_BYTES`: at most this many bytes of text, tool arguments and results.
    pub max_bytes: usize,
}

impl Default for ContextBudget {
    fn default() -> Self {
        Self {
            max_messages: 50,
            max_bytes: 64 * 1024,
        }
    }
}

/// The runtime's request for the turn that answers `user_message` as `agent`.
pub async fn turn_request(
    pool: &AnyPool,
    budget: ContextBudget,
    agent: &Agent,
    user_message: &Message,
) -> Result<TurnRequest, sqlx::Error> {
    let newest_first = db::context_messages(pool, user_message, budget.max_messages).await?;
    // Names of every agent that wrote in the conversation, archived ones included.
    let names: HashMap<String, String> = db::list_agents(pool, &agent.workspace_id, true)
        .await?
        .into_iter()
        .map(|agent| (agent.id, agent.name))
        .collect();
    let mut history: Vec<ContextMessage> = newest_first
        .into_iter()
        .filter_map(|message| context_message(message, &names))
        .collect();
    // The current message is the newest unless a concurrent edit dropped it; never lose it.
    if history.first().map(|first| first.message_id.as_str()) != Some(user_message.id.as_str()) {
        history.retain(|message| message.message_id != user_message.id);
        if let Some(current) = context_message(user_message.clone(), &names) {
            history.insert(0, current);
        }
    }
    let history = within_budget(history, budget);
    Ok(TurnRequest {
        workspace_id: user_message.workspace_id.clone(),
        conversation_id: user_message.conversation_id.clone(),
        agent_id: agent.id.clone(),
        agent_slug: agent.slug.clone(),
        message_id: user_message.id.clone(),
        text: text_of(user_message),
        agent: Some(agent_config(agent)),
        history,
    })
}

fn agent_config(agent: &Agent) -> AgentConfig {
    AgentConfig {
        name: agent.name.clone(),
        system_prompt: agent.system_prompt.clone(),
        model: agent.model.clone(),
        temperature: agent.temperature,
        tools: agent.tools.clone(),
        mcp_servers: agent
            .mcp_servers
            .iter()
            .map(|server| McpServer {
                name: server.name.clone(),
                url: server.url.clone(),
            })
            .collect(),
    }
}

fn text_of(message: &Message) -> String {
    message
        .content
        .as_ref()
        .map(|content| content.text.clone())
        .unwrap_or_default()
}

/// A stored message as the runtime sees it; `None` for messages that are not part of the
/// exchange (system notices).
fn context_message(
    message: Message,
    agent_names: &HashMap<String, String>,
) -> Option<ContextMessage> {
    let role = match message.role() {
        MessageRole::User => Role::User,
        MessageRole::Agent => Role::Agent,
        MessageRole::System | MessageRole::Unspecified => return None,
    };
    let agent_id = message.agent_id.clone().unwrap_or_default();
    Some(ContextMessage {
        role: role as i32,
        text: text_of(&message),
        message_id: message.id,
        author_id: message.author_id.unwrap_or_default(),
        agent_name: agent_names.get(&agent_id).cloned().unwrap_or_default(),
        agent_id,
        tool_calls: message
            .tool_calls
            .into_iter()
            .map(|call| ToolExchange {
                call_id: call.call_id,
                name: call.name,
                arguments_json: call.arguments_json,
                result_json: call.result_json.unwrap_or_default(),
            })
            .collect(),
    })
}

fn size_of(message: &ContextMessage) -> usize {
    message.text.len()
        + message
            .tool_calls
            .iter()
            .map(|call| call.name.len() + call.arguments_json.len() + call.result_json.len())
            .sum::<usize>()
}

/// Keeps the newest messages that fit the budget, without gaps, and returns them oldest first.
/// `newest_first[0]` (the message the turn answers) always stays.
fn within_budget(newest_first: Vec<ContextMessage>, budget: ContextBudget) -> Vec<ContextMessage> {
    let mut kept = Vec::new();
    let mut bytes = 0;
    for (index, message) in newest_first.into_iter().enumerate() {
        let size = size_of(&message);
        let fits = kept.len() < budget.max_messages as usize && bytes + size <= budget.max_bytes;
        if index > 0 && !fits {
            break;
        }
        bytes += size;
        kept.push(message);
    }
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, text: &str) -> ContextMessage {
        ContextMessage {
            role: Role::User as i32,
            message_id: id.into(),
            text: text.into(),
            ..ContextMessage::default()
        }
    }

    fn ids(messages: &[ContextMessage]) -> Vec<&str> {
        messages.iter().map(|m| m.message_id.as_str()).collect()
    }

    #[test]
    fn everything_that_fits_is_kept_oldest_first() {
        let newest_first = vec![message("3", "c"), message("2", "b"), message("1", "a")];
        let kept = within_budget(newest_first, ContextBudget::default());
        assert_eq!(ids(&kept), ["1", "2", "3"]);
    }

    #[test]
    fn the_oldest_go_first_by_count_and_by_bytes() {
        let newest_first = vec![message("3", "cc"), message("2", "bb"), message("1", "aa")];
        let by_count = ContextBudget {
            max_messages: 2,
            max_bytes: 1000,
        };
        assert_eq!(
            ids(&within_budget(newest_first.clone(), by_count)),
            ["2", "3"]
        );
        let by_bytes = ContextBudget {
            max_messages: 50,
            max_bytes: 5,
        };
        assert_eq!(ids(&within_budget(newest_first, by_bytes)), ["2", "3"]);
    }

    #[test]
    fn no_gap_is_left_when_an_old_large_message_does_not_fit() {
        let newest_first = vec![
            message("3", "c"),
            message("2", &"b".repeat(100)),
            message("1", "a"),
        ];
        let budget = ContextBudget {
            max_messages: 50,
            max_bytes: 10,
        };
        assert_eq!(ids(&within_budget(newest_first, budget)), ["3"]);
    }

    #[test]
    fn the_current_message_stays_even_over_the_budget() {
        let newest_first = vec![message("2", &"x".repeat(100)), message("1", "a")];
        let budget = ContextBudget {
            max_messages: 1,
            max_bytes: 10,
        };
        assert_eq!(ids(&within_budget(newest_first, budget)), ["2"]);
    }

    #[test]
    fn tool_arguments_and_results_count_towards_the_bytes() {
        let mut with_tools = message("1", "a");
        with_tools.tool_calls.push(ToolExchange {
            call_id: "c".into(),
            name: "time".into(),
            arguments_json: "{}".into(),
            result_json: "x".repeat(50),
        });
        let newest_first = vec![message("2", "b"), with_tools];
        let budget = ContextBudget {
            max_messages: 50,
            max_bytes: 20,
        };
        assert_eq!(ids(&within_budget(newest_first, budget)), ["2"]);
    }
}
