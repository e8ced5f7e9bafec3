//! The OpenAI-compatible provider: `POST {base}/chat/completions` with `stream: true` over http
//! or https, and the server-sent events of each answer turned into turn events as they arrive.
//!
//! A turn is a loop of rounds. Each round sends the whole context (the system message, the
//! history as [`crate::context::openai_messages`] shapes it, and what earlier rounds added) with
//! the agent's tools as OpenAI `tools`, and streams the answer:
//! - `choices[0].delta.content` → a text delta, forwarded at once;
//! - `choices[0].delta.tool_calls` fragments → assembled per `index`;
//! - `usage` (asked for with `stream_options.include_usage`) → added to the turn's usage;
//!   without it, words are counted;
//! - `data: [DONE]` (or the end of the stream after a `finish_reason`) → the round is complete.
//!
//! When the answer asks for tools, each call is announced (`ToolCall`), run ([`TurnTools`]), its
//! result announced (`ToolResult`), and both are appended to the context for the next round.
//! An answer without tool calls ends the turn: one `Usage` (summed over the rounds), then done.
//! A model still asking for tools after `max_tool_rounds` rounds ends the turn with
//! `TOOL_ROUNDS_EXCEEDED`, after the text streamed so far.
//!
//! Failures end the turn with `PROVIDER_ERROR`, keeping the text streamed so far. A round that
//! failed before streaming anything (a connection error, 429, 5xx, a stream cut before its first
//! delta) is tried again up to `retries` times, after a short exponential backoff or the
//! server's `Retry-After` (at most [`MAX_BACKOFF`]). A turn that ends with an error after
//! complete rounds reports their usage first.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::bail;
use crawbl_proto::runtime::v1::{
    AgentConfig, Done, TextDelta, ToolCall, ToolResult, TurnRequest, Usage, turn_event,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::sse::SseDecoder;
use super::{CallerGone, Events, PROVIDER_ERROR, TOOL_ROUNDS_EXCEEDED, TurnEnd};
use crate::agents::Agent;
use crate::config::OpenAiConfig;
use crate::context::{openai_messages, tool_call};
use crate::tokens::count_tokens;
use crate::tools::{CallIds, ToolSettings, TurnTools};

/// How much of an error response's body is read for its message.
const MAX_ERROR_BODY: usize = 4096;
/// The first retry's pause; each further retry doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest pause before a retry, whatever `Retry-After` asks for.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct OpenAi {
    client: reqwest::Client,
    /// `{base}/chat/completions`.
    endpoint: String,
    /// The model of agents that name none.
    model: String,
    /// Never logged.
    api_key: Option<String>,
    limits: Limits,
}

/// Bounds of one turn.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Retries of a round that failed before streaming anything.
    pub(crate) retries: u32,
    /// Rounds of tool calls a turn may run.
    pub(crate) max_tool_rounds: u32,
}

impl OpenAi {
    pub(crate) fn new(
        config: &OpenAiConfig,
        client: reqwest::Client,
        limits: Limits,
    ) -> anyhow::Result<Self> {
        let base = config.base_url.trim().trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("OPENAI_BASE_URL={base:?} must start with http:// or https://");
        }
        Ok(Self {
            client,
            endpoint: format!("{base}/chat/completions"),
            model: config.model.clone(),
            api_key: config.api_key.clone(),
            limits,
        })
    }

    pub(super) async fn run(
        &self,
        turn: &TurnRequest,
        events: &Events,
        settings: &ToolSettings,
    ) -> Result<TurnEnd, CallerGone> {
        let agent = turn.agent.clone().unwrap_or_default();
        let tools = tokio::select! {
            tools = TurnTools::open(&agent, settings) => tools,
            () = events.closed() => return Err(CallerGone),
        };
        let ended = self.converse(turn, &agent, &tools, events).await;
        tools.close().await;
        ended
    }

    /// The rounds of the turn, until the model answers without tools or a bound is hit.
    async fn converse(
        &self,
        turn: &TurnRequest,
        agent: &AgentConfig,
        tools: &TurnTools,
        events: &Events,
    ) -> Result<TurnEnd, CallerGone> {
        let mut messages = openai_messages(turn, &system_prompt(turn, agent));
        let definitions = tools.definitions();
        let mut usage = Usage {
            model: self.model_for(agent).to_owned(),
            ..Usage::default()
        };
        let mut ids = CallIds::default();
        let mut rounds = 0;
        loop {
            let body = self.body(agent, &messages, &definitions);
            let answer = match self.answer(&body, events).await? {
                Ok(answer) => answer,
                Err(message) => {
                    return end_with_error(events, usage, PROVIDER_ERROR, message).await;
                }
            };
            let round_usage = answer.usage(&messages);
            usage.input_tokens = usage.input_tokens.saturating_add(round_usage.input_tokens);
            usage.output_tokens = usage
                .output_tokens
                .saturating_add(round_usage.output_tokens);
            if answer.tool_calls.is_empty() {
                events.send(turn_event::Event::Usage(usage.clone())).await?;
                events.send(turn_event::Event::Done(Done {})).await?;
                return Ok(TurnEnd::Done);
            }
            if rounds >= self.limits.max_tool_rounds {
                let message = format!(
                    "the model still asked for tools after {rounds} rounds of tool calls \
                     (RUNTIME_STUB_MAX_TOOL_ROUNDS)"
                );
                return end_with_error(events, usage, TOOL_ROUNDS_EXCEEDED, message).await;
            }
            rounds += 1;
            run_tool_calls(answer, rounds, tools, &mut ids, &mut messages, events).await?;
        }
    }

    /// The agent's model, or the configured one for agents that name none.
    fn model_for<'a>(&'a self, agent: &'a AgentConfig) -> &'a str {
        match agent.model.trim() {
            "" => self.model.as_str(),
            model => model,
        }
    }

    fn body(&self, agent: &AgentConfig, messages: &[Value], tools: &[Value]) -> Value {
        let model = self.model_for(agent);
        let mut body = json!({
            "model": model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if !tools.is_empty() {
            body["tools"] = json!(tools);
        }
        if let Some(temperature) = agent.temperature {
            // Through its shortest text, so 0.7f32 is sent as 0.7, not 0.699999988079071.
            let temperature: f64 = temperature
                .to_string()
                .parse()
                .unwrap_or(f64::from(temperature));
            body["temperature"] = json!(temperature);
        }
        body
    }

    /// One round's answer, retried while nothing was streamed; `Err` is the failure to report.
    async fn answer(
        &self,
        body: &Value,
        events: &Events,
    ) -> Result<Result<Answer, String>, CallerGone> {
        let mut attempt = 0;
        loop {
            let failure = match self.attempt(body, events).await? {
                Ok(answer) => return Ok(Ok(answer)),
                Err(failure) => failure,
            };
            if !failure.retryable {
                return Ok(Err(failure.message));
            }
            if attempt >= self.limits.retries {
                let tries = attempt + 1;
                let plural = if tries == 1 { "" } else { "s" };
                return Ok(Err(format!(
                    "{} (gave up after {tries} attempt{plural})",
                    failure.message
                )));
            }
            let pause = backoff(attempt, failure.retry_after);
            tracing::warn!(
                attempt = attempt + 1,
                pause_ms = pause.as_millis(),
                error = %failure.message,
                "provider request failed before streaming; retrying"
            );
            events.pause(pause).await?;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        body: &Value,
        events: &Events,
    ) -> Result<Result<Answer, Failure>, CallerGone> {
        let mut request = self.client.post(&self.endpoint).json(body);
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
                return Ok(Err(Failure::retryable(message, None)));
            }
        };
        let status = response.status();
        if !status.is_success() {
            let retry_after = retry_after(response.headers());
            let detail = error_detail(response).await;
            let message = format!("the provider answered {status}: {detail}");
            let retryable =
                status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            return Ok(Err(Failure {
                message,
                retryable,
                retry_after,
            }));
        }
        stream(response, events).await
    }
}

/// The system message: the agent's own prompt, else the runtime's persona for its slug (an agent
/// the runtime does not know is introduced by its name).
fn system_prompt(turn: &TurnRequest, agent: &AgentConfig) -> String {
    if !agent.system_prompt.trim().is_empty() {
        return agent.system_prompt.clone();
    }
    match Agent::from_slug(&turn.agent_slug) {
        Agent::Other(_) if !agent.name.trim().is_empty() => {
            Agent::Other(agent.name.trim()).system_prompt()
        }
        persona => persona.system_prompt(),
    }
}

/// Announces, runs and reports each tool call of `answer`, and appends the assistant's call
/// message and one `tool` message per result to `messages`.
async fn run_tool_calls(
    answer: Answer,
    round: u32,
    tools: &TurnTools,
    ids: &mut CallIds,
    messages: &mut Vec<Value>,
    events: &Events,
) -> Result<(), CallerGone> {
    let calls: Vec<ToolCall> = answer
        .tool_calls
        .into_iter()
        .map(|(index, call)| ToolCall {
            call_id: ids.unique(&call.id, || format!("call-{round}-{index}")),
            name: call.name,
            arguments_json: if call.arguments.trim().is_empty() {
                "{}".to_owned()
            } else {
                call.arguments
            },
        })
        .collect();
    let content = if answer.text.is_empty() {
        Value::Null
    } else {
        Value::String(answer.text)
    };
    messages.push(json!({
        "role": "assistant",
        "content": content,
        "tool_calls": calls
            .iter()
            .map(|call| tool_call(&call.call_id, &call.name, &call.arguments_json))
            .collect::<Vec<_>>(),
    }));
    for call in calls {
        tracing::info!(call_id = %call.call_id, name = %call.name, round, "model tool call");
        let (call_id, name, arguments_json) = (
            call.call_id.clone(),
            call.name.clone(),
            call.arguments_json.clone(),
        );
        events.send(turn_event::Event::ToolCall(call)).await?;
        let result_json = tokio::select! {
            result = tools.call(&name, &arguments_json) => result,
            () = events.closed() => return Err(CallerGone),
        };
        messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": result_json}));
        let result = ToolResult {
            call_id,
            result_json,
        };
        events.send(turn_event::Event::ToolResult(result)).await?;
    }
    Ok(())
}

/// Ends the turn with an error; the usage of the rounds already complete goes first.
async fn end_with_error(
    events: &Events,
    usage: Usage,
    code: &str,
    message: String,
) -> Result<TurnEnd, CallerGone> {
    if usage.input_tokens > 0 || usage.output_tokens > 0 {
        events.send(turn_event::Event::Usage(usage)).await?;
    }
    events.fail(code, message).await
}

/// Why a round failed.
#[derive(Debug)]
struct Failure {
    message: String,
    /// Nothing was streamed and the cause may pass (a connection error, 429, 5xx).
    retryable: bool,
    /// The server's `Retry-After`.
    retry_after: Option<Duration>,
}

impl Failure {
    fn retryable(message: String, retry_after: Option<Duration>) -> Self {
        Self {
            message,
            retryable: true,
            retry_after,
        }
    }

    fn fatal(message: String) -> Self {
        Self {
            message,
            retryable: false,
            retry_after: None,
        }
    }
}

/// The pause before retry number `attempt + 1`: `Retry-After` when the server gave one,
/// otherwise 250 ms doubled per attempt; never more than [`MAX_BACKOFF`].
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    retry_after
        .unwrap_or_else(|| FIRST_BACKOFF.saturating_mul(2_u32.saturating_pow(attempt)))
        .min(MAX_BACKOFF)
}

/// `Retry-After` in seconds (the HTTP-date form is not worth parsing for a pause of seconds).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Reads the event stream of a successful response: the round's answer, or why it broke.
async fn stream(
    mut response: reqwest::Response,
    events: &Events,
) -> Result<Result<Answer, Failure>, CallerGone> {
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
                return Ok(Err(answer.broken(message)));
            }
        };
        let datas = match datas {
            Ok(datas) => datas,
            Err(error) => return Ok(Err(Failure::fatal(error.to_string()))),
        };
        for data in datas {
            if data.trim() == "[DONE]" {
                return Ok(Ok(answer));
            }
            match answer.apply(&data, events).await {
                Ok(()) => {}
                Err(Broken::CallerGone) => return Err(CallerGone),
                Err(Broken::Provider(message)) => return Ok(Err(Failure::fatal(message))),
            }
        }
        if at_end {
            if answer.finished {
                return Ok(Ok(answer));
            }
            let message = "the provider's stream ended before [DONE]".to_owned();
            return Ok(Err(answer.broken(message)));
        }
    }
}

/// What has been received of one round's answer.
#[derive(Debug, Default)]
struct Answer {
    text: String,
    /// Tool calls by their `index`, assembled from fragments.
    tool_calls: BTreeMap<u32, PendingToolCall>,
    usage: Option<ApiUsage>,
    /// A `finish_reason` was seen.
    finished: bool,
    /// A text delta of this round reached the caller: the round can no longer be retried.
    streamed: bool,
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
            self.streamed = true;
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
        }
        Ok(())
    }

    /// The failure of a stream that broke: retryable only while nothing of it was streamed.
    fn broken(&self, message: String) -> Failure {
        if self.streamed {
            Failure::fatal(message)
        } else {
            Failure::retryable(message, None)
        }
    }

    /// The round's usage as the server reported it, otherwise estimated like the scripted
    /// provider does: words of the context sent (not the system message) and of the answer.
    fn usage(&self, messages: &[Value]) -> Usage {
        if let Some(usage) = self.usage {
            return Usage {
                input_tokens: usage.prompt_tokens,
                output_tokens: usage.completion_tokens,
                ..Usage::default()
            };
        }
        let input = messages
            .iter()
            .filter(|message| message["role"] != "system")
            .filter_map(|message| message["content"].as_str())
            .map(count_tokens)
            .fold(0_u32, u32::saturating_add);
        Usage {
            input_tokens: input,
            output_tokens: count_tokens(&self.text),
            ..Usage::default()
        }
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

    fn openai(base_url: &str) -> anyhow::Result<OpenAi> {
        let config = OpenAiConfig {
            base_url: base_url.to_owned(),
            model: "m".to_owned(),
            api_key: None,
        };
        let limits = Limits {
            retries: 2,
            max_tool_rounds: 8,
        };
        let http = crate::tls::HttpClients::new(&[]).expect("clients");
        OpenAi::new(&config, http.provider, limits)
    }

    #[test]
    fn the_endpoint_is_the_base_url_plus_chat_completions_over_http_or_https() {
        let plain = openai("http://127.0.0.1:1/v1/").expect("valid");
        assert_eq!(plain.endpoint, "http://127.0.0.1:1/v1/chat/completions");
        let tls = openai(" https://api.openai.com/v1 ").expect("valid");
        assert_eq!(tls.endpoint, "https://api.openai.com/v1/chat/completions");
        let error = openai("ftp://x").expect_err("not http");
        assert!(error.to_string().contains("http:// or https://"), "{error}");
    }

    #[test]
    fn a_chunk_with_null_delta_and_tool_calls_still_parses() {
        let chunk: Chunk = serde_json::from_str(
            r#"{"choices":[{"index":0,"delta":{"content":null,"tool_calls":null},"finish_reason":null}],"usage":null}"#,
        )
        .expect("parses");
        assert_eq!(chunk.choices.len(), 1);
    }

    #[test]
    fn backoff_doubles_honours_retry_after_and_is_capped() {
        assert_eq!(backoff(0, None), Duration::from_millis(250));
        assert_eq!(backoff(1, None), Duration::from_millis(500));
        assert_eq!(backoff(10, None), MAX_BACKOFF);
        assert_eq!(backoff(0, Some(Duration::ZERO)), Duration::ZERO);
        assert_eq!(
            backoff(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(backoff(0, Some(Duration::from_secs(3600))), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX, None), MAX_BACKOFF);
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "3".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn the_agent_chooses_model_and_temperature_and_its_prompt_replaces_the_persona() {
        let openai = openai("http://x/v1").expect("valid");
        let mut agent = AgentConfig::default();
        let body = openai.body(&agent, &[], &[]);
        assert_eq!(body["model"], "m");
        assert!(body.get("temperature").is_none() && body.get("tools").is_none());
        agent.model = "gpt-4o-mini".into();
        agent.temperature = Some(0.7);
        let body = openai.body(&agent, &[], &[json!({"type": "function"})]);
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["temperature"], json!(0.7));
        assert_eq!(body["tools"][0]["type"], "function");

        let turn = TurnRequest {
            agent_slug: "scout".into(),
            ..TurnRequest::default()
        };
        agent.name = "Scout".into();
        assert!(system_prompt(&turn, &agent).contains("You are Scout"));
        agent.system_prompt = "Talk like a pirate.".into();
        assert_eq!(system_prompt(&turn, &agent), "Talk like a pirate.");
    }
}
