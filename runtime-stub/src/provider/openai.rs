//! The OpenAI-compatible provider: `POST {base}/chat/completions` with `stream: true`, and the
//! server-sent events of the answer turned into turn events as they arrive.
//!
//! - `choices[0].delta.content` → a text delta, forwarded at once;
//! - `choices[0].delta.tool_calls` fragments → assembled per `index`, then one `ToolCall` each
//!   once the choice finishes. The runtime has no tools to run for a real model yet, so no
//!   `ToolResult` follows;
//! - `usage` (sent by servers that report it) → the usage event; otherwise words are counted;
//! - `data: [DONE]` (or end of stream after a `finish_reason`) → usage, then done.
//!
//! Every failure (network, HTTP status, an `error` event, an unreadable or truncated stream)
//! ends the turn with a `PROVIDER_ERROR` error event.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use crawbl_proto::runtime::v1::{Done, TextDelta, ToolCall, TurnRequest, Usage, turn_event};
use serde::Deserialize;
use serde_json::json;

use super::sse::SseDecoder;
use super::{CallerGone, Events, PROVIDER_ERROR, TurnEnd};
use crate::agents::Agent;
use crate::config::OpenAiConfig;
use crate::tokens::count_tokens;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an error response's body is read for its message.
const MAX_ERROR_BODY: usize = 4096;

#[derive(Debug, Clone)]
pub struct OpenAi {
    client: reqwest::Client,
    /// `{base}/chat/completions`.
    endpoint: String,
    model: String,
    /// Never logged.
    api_key: Option<String>,
}

impl OpenAi {
    pub fn new(config: &OpenAiConfig) -> anyhow::Result<Self> {
        let base = config.base_url.trim().trim_end_matches('/');
        if base.starts_with("https://") {
            // reqwest is built without TLS to keep the build lean (no rustls/ring).
            bail!(
                "OPENAI_BASE_URL={base:?}: https is not supported by this build; use an http:// \
                 endpoint (a local OpenAI-compatible server, or a TLS-terminating proxy)"
            );
        }
        if !base.starts_with("http://") {
            bail!("OPENAI_BASE_URL={base:?} must start with http://");
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            client,
            endpoint: format!("{base}/chat/completions"),
            model: config.model.clone(),
            api_key: config.api_key.clone(),
        })
    }

    pub(super) async fn run(
        &self,
        turn: &TurnRequest,
        events: &Events,
    ) -> Result<TurnEnd, CallerGone> {
        let agent = Agent::from_slug(&turn.agent_slug);
        let body = json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": agent.system_prompt()},
                {"role": "user", "content": turn.text},
            ],
            "stream": true,
        });
        let mut request = self.client.post(&self.endpoint).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let sent = tokio::select! {
            sent = request.send() => sent,
            () = events.closed() => return Err(CallerGone),
        };
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                let message = format!(
                    "cannot reach the provider at {}: {}",
                    self.endpoint,
                    chain(&error)
                );
                return events.fail(PROVIDER_ERROR, message).await;
            }
        };
        let status = response.status();
        if !status.is_success() {
            let detail = error_detail(response).await;
            let message = format!("the provider answered {status}: {detail}");
            return events.fail(PROVIDER_ERROR, message).await;
        }
        stream(response, turn, events).await
    }
}

/// Reads the event stream of a successful response.
async fn stream(
    mut response: reqwest::Response,
    turn: &TurnRequest,
    events: &Events,
) -> Result<TurnEnd, CallerGone> {
    let mut decoder = SseDecoder::default();
    let mut answer = Answer::default();
    loop {
        let chunk = tokio::select! {
            chunk = response.chunk() => chunk,
            () = events.closed() => return Err(CallerGone),
        };
        let (datas, at_end) = match chunk {
            Ok(Some(bytes)) => (decoder.push(&bytes), false),
            Ok(None) => (
                decoder.finish().map(|last| last.into_iter().collect()),
                true,
            ),
            Err(error) => {
                let message = format!("the provider's stream broke: {}", chain(&error));
                return events.fail(PROVIDER_ERROR, message).await;
            }
        };
        let datas = match datas {
            Ok(datas) => datas,
            Err(error) => return events.fail(PROVIDER_ERROR, error.to_string()).await,
        };
        for data in datas {
            if data.trim() == "[DONE]" {
                return answer.finish(turn, events).await;
            }
            match answer.apply(&data, events).await {
                Ok(()) => {}
                Err(Broken::CallerGone) => return Err(CallerGone),
                Err(Broken::Provider(message)) => {
                    return events.fail(PROVIDER_ERROR, message).await;
                }
            }
        }
        if at_end {
            if answer.finished {
                return answer.finish(turn, events).await;
            }
            let message = "the provider's stream ended before [DONE]".to_owned();
            return events.fail(PROVIDER_ERROR, message).await;
        }
    }
}

/// What has been received of the answer so far.
#[derive(Debug, Default)]
struct Answer {
    text: String,
    /// Tool calls by their `index`, assembled from fragments.
    tool_calls: BTreeMap<u32, PendingToolCall>,
    usage: Option<ApiUsage>,
    /// A `finish_reason` was seen.
    finished: bool,
}

#[derive(Debug, Default)]
struct PendingToolCall {
    id: String,
    name: String,
    arguments: String,
}

/// Why applying an event stopped the turn.
#[derive(Debug)]
enum Broken {
    CallerGone,
    /// A provider failure, to report to the caller.
    Provider(String),
}

impl From<CallerGone> for Broken {
    fn from(_: CallerGone) -> Self {
        Self::CallerGone
    }
}

impl Answer {
    /// Applies one event's data: forwards its text, collects tool call fragments and usage.
    async fn apply(&mut self, data: &str, events: &Events) -> Result<(), Broken> {
        let chunk: Chunk = serde_json::from_str(data).map_err(|error| {
            Broken::Provider(format!("the provider sent an unreadable event: {error}"))
        })?;
        if let Some(error) = chunk.error {
            let message = format!("the provider reported: {}", error.message);
            return Err(Broken::Provider(message));
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        // Only the first choice: we never ask for more than one (`n` is left at 1).
        let Some(choice) = chunk.choices.into_iter().next() else {
            return Ok(());
        };
        let delta = choice.delta.unwrap_or_default();
        if let Some(text) = delta.content.filter(|text| !text.is_empty()) {
            self.text.push_str(&text);
            events
                .send(turn_event::Event::Delta(TextDelta { text }))
                .await?;
        }
        for fragment in delta.tool_calls.unwrap_or_default() {
            let call = self.tool_calls.entry(fragment.index).or_default();
            if let Some(id) = fragment.id {
                call.id = id;
            }
            if let Some(function) = fragment.function {
                call.name.push_str(function.name.as_deref().unwrap_or(""));
                call.arguments
                    .push_str(function.arguments.as_deref().unwrap_or(""));
            }
        }
        if choice.finish_reason.is_some() {
            self.finished = true;
            self.emit_tool_calls(events).await?;
        }
        Ok(())
    }

    async fn emit_tool_calls(&mut self, events: &Events) -> Result<(), CallerGone> {
        for (index, call) in std::mem::take(&mut self.tool_calls) {
            let call_id = if call.id.is_empty() {
                format!("call-{index}")
            } else {
                call.id
            };
            let arguments_json = if call.arguments.trim().is_empty() {
                "{}".to_owned()
            } else {
                call.arguments
            };
            tracing::info!(%call_id, name = %call.name, "provider tool call");
            let call = ToolCall {
                call_id,
                name: call.name,
                arguments_json,
            };
            events.send(turn_event::Event::ToolCall(call)).await?;
        }
        Ok(())
    }

    /// Usage and done, after any tool call not yet reported.
    async fn finish(mut self, turn: &TurnRequest, events: &Events) -> Result<TurnEnd, CallerGone> {
        self.emit_tool_calls(events).await?;
        let usage = match self.usage {
            Some(usage) => Usage {
                input_tokens: usage.prompt_tokens,
                output_tokens: usage.completion_tokens,
            },
            // Estimated like the scripted provider does when the server reports none.
            None => Usage {
                input_tokens: count_tokens(&turn.text),
                output_tokens: count_tokens(&self.text),
            },
        };
        events.send(turn_event::Event::Usage(usage)).await?;
        events.send(turn_event::Event::Done(Done {})).await?;
        Ok(TurnEnd::Done)
    }
}

/// What an error response says: the `error.message` of an OpenAI-style JSON body, otherwise the
/// start of the body as text.
async fn error_detail(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(bytes)) => body.extend_from_slice(&bytes),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(&body) {
        return error.message;
    }
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        text
    }
}

/// An error with its sources, `outer: inner: …` (reqwest's own message omits the cause).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<ApiUsage>,
    error: Option<ApiError>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Delta {
    content: Option<String>,
    tool_calls: Option<Vec<ToolCallFragment>>,
}

#[derive(Debug, Deserialize)]
struct ToolCallFragment {
    #[serde(default)]
    index: u32,
    id: Option<String>,
    function: Option<FunctionFragment>,
}

#[derive(Debug, Deserialize)]
struct FunctionFragment {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
struct ApiUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ApiError,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(base_url: &str) -> OpenAiConfig {
        OpenAiConfig {
            base_url: base_url.to_owned(),
            model: "m".to_owned(),
            api_key: None,
        }
    }

    #[test]
    fn the_endpoint_is_the_base_url_plus_chat_completions() {
        let openai = OpenAi::new(&config("http://127.0.0.1:1/v1/")).expect("valid");
        assert_eq!(openai.endpoint, "http://127.0.0.1:1/v1/chat/completions");
    }

    #[test]
    fn https_and_other_schemes_are_refused_with_a_reason() {
        let error = OpenAi::new(&config("https://api.example.com/v1")).expect_err("no tls");
        assert!(
            error.to_string().contains("https is not supported"),
            "{error}"
        );
        assert!(OpenAi::new(&config("ftp://x")).is_err());
    }

    #[test]
    fn a_chunk_with_null_delta_and_tool_calls_still_parses() {
        let chunk: Chunk = serde_json::from_str(
            r#"{"choices":[{"index":0,"delta":{"content":null,"tool_calls":null},"finish_reason":null}],"usage":null}"#,
        )
        .expect("parses");
        assert_eq!(chunk.choices.len(), 1);
    }
}
