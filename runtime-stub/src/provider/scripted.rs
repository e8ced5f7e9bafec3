//! The scripted provider: plays [`crate::script::script_for_turn`] for the turn, token by token.
//! A `/tool` directive naming one of the agent's tools runs the real tool (its MCP servers are
//! connected only for such a turn); any other `/tool` gets its scripted result.

use std::collections::HashMap;
use std::time::Duration;

use crawbl_proto::runtime::v1::{
    Done, TextDelta, ToolCall, ToolResult, TurnRequest, Usage, turn_event,
};

use super::{CallerGone, Events, PROVIDER_ERROR, TurnEnd};
use crate::script::{DIE_EXIT_CODE, Script, Step, script_for_turn};
use crate::tokens::{count_tokens, tokens};
use crate::tools::{ToolSettings, TurnTools};

/// How long a dying runtime waits before it exits, so the tokens it streamed reach the caller
/// (a crash "after a few tokens" should be observable as exactly that).
const DIE_FLUSH: Duration = Duration::from_millis(200);

/// How fast the scripted agent "types".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Before the turn's first event (`/slow N` overrides it per turn).
    pub first_token_latency: Duration,
    /// Before each text delta, and before each tool result (the tool "runs").
    pub token_delay: Duration,
}

impl Pace {
    /// No latency, `token_delay` between tokens.
    pub fn per_token(token_delay: Duration) -> Self {
        Self {
            first_token_latency: Duration::ZERO,
            token_delay,
        }
    }
}

pub(super) async fn run(
    pace: Pace,
    turn: &TurnRequest,
    events: &Events,
    settings: &ToolSettings,
) -> Result<TurnEnd, CallerGone> {
    let script = script_for_turn(turn);
    let tools = match turn.agent.as_ref() {
        Some(agent) if calls_tools(&script) => {
            tokio::select! {
                tools = TurnTools::open(agent, settings) => Some(tools),
                () = events.closed() => return Err(CallerGone),
            }
        }
        _ => None,
    };
    let ended = play(pace, turn, script, events, tools.as_ref()).await;
    if let Some(tools) = tools {
        tools.close().await;
    }
    ended
}

fn calls_tools(script: &Script) -> bool {
    script
        .steps
        .iter()
        .any(|step| matches!(step, Step::ToolCall { .. }))
}

async fn play(
    pace: Pace,
    turn: &TurnRequest,
    script: Script,
    events: &Events,
    tools: Option<&TurnTools>,
) -> Result<TurnEnd, CallerGone> {
    // Results of the calls run for real, by call id, for the `ToolResult` step that follows.
    let mut real_results: HashMap<String, String> = HashMap::new();
    events
        .pause(
            script
                .first_token_latency
                .unwrap_or(pace.first_token_latency),
        )
        .await?;
    let mut said = String::new();
    for step in script.steps {
        match step {
            Step::Text(text) => {
                for token in tokens(&text) {
                    events.pause(pace.token_delay).await?;
                    let delta = TextDelta {
                        text: token.to_owned(),
                    };
                    events.send(turn_event::Event::Delta(delta)).await?;
                }
                said.push_str(&text);
            }
            Step::ToolCall {
                call_id,
                name,
                arguments_json,
            } => {
                tracing::info!(%call_id, %name, "scripted tool call");
                let call = ToolCall {
                    call_id: call_id.clone(),
                    name: name.clone(),
                    arguments_json: arguments_json.clone(),
                };
                events.send(turn_event::Event::ToolCall(call)).await?;
                if let Some(tools) = tools.filter(|tools| tools.claims(&name)) {
                    let result = tokio::select! {
                        result = tools.call(&name, &arguments_json) => result,
                        () = events.closed() => return Err(CallerGone),
                    };
                    real_results.insert(call_id, result);
                }
            }
            Step::ToolResult {
                call_id,
                result_json,
            } => {
                events.pause(pace.token_delay).await?;
                let result_json = real_results.remove(&call_id).unwrap_or(result_json);
                let result = ToolResult {
                    call_id,
                    result_json,
                };
                events.send(turn_event::Event::ToolResult(result)).await?;
            }
            Step::Fail { message } => return events.fail(PROVIDER_ERROR, message).await,
            Step::Die => die().await,
        }
    }
    let usage = Usage {
        input_tokens: count_tokens(&turn.text),
        output_tokens: count_tokens(&said),
        model: String::new(),
    };
    events.send(turn_event::Event::Usage(usage)).await?;
    events.send(turn_event::Event::Done(Done {})).await?;
    Ok(TurnEnd::Done)
}

/// `/die`: the whole process exits abruptly, as a crashed runtime would (no graceful shutdown,
/// no goodbye to the caller).
async fn die() -> ! {
    tracing::warn!(
        exit_code = DIE_EXIT_CODE,
        "dying mid-turn as scripted by /die"
    );
    tokio::time::sleep(DIE_FLUSH).await;
    std::process::exit(DIE_EXIT_CODE)
}
