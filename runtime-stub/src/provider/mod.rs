//! Where an agent's words come from. A [`Provider`] runs one turn and writes its events to the
//! caller's stream; it is an enum because there are exactly two and both are known here.

mod openai;
mod scripted;
mod sse;

use std::time::Duration;

use crawbl_proto::runtime::v1::{TurnError, TurnEvent, TurnRequest, turn_event};
use tokio::sync::mpsc;
use tonic::Status;

pub use openai::OpenAi;
pub use scripted::Pace;

use crate::config::{Config, ProviderConfig};
use crate::tools::ToolSettings;

/// `TurnError.code` of a provider failure: an HTTP or network error, an unreadable stream, or a
/// scripted `/fail`.
pub const PROVIDER_ERROR: &str = "PROVIDER_ERROR";
/// `TurnError.code` of a turn whose model kept asking for tools past
/// `RUNTIME_STUB_MAX_TOOL_ROUNDS` rounds.
pub const TOOL_ROUNDS_EXCEEDED: &str = "TOOL_ROUNDS_EXCEEDED";

#[derive(Debug, Clone)]
pub enum Provider {
    /// Deterministic replies (see [`crate::script`](mod@crate::script)) paced like a model typing.
    Scripted(Pace),
    /// An OpenAI-compatible `/chat/completions` endpoint, streamed.
    OpenAi(OpenAi),
}

impl Provider {
    /// The provider `config` selects; `http` is the client an OpenAI-compatible provider uses.
    pub(crate) fn from_config(config: &Config, http: reqwest::Client) -> anyhow::Result<Self> {
        Ok(match &config.provider {
            ProviderConfig::Scripted => Self::Scripted(config.pace()),
            ProviderConfig::OpenAi(settings) => Self::OpenAi(OpenAi::new(
                settings,
                http,
                openai::Limits {
                    retries: config.provider_retries,
                    max_tool_rounds: config.max_tool_rounds,
                },
            )?),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Scripted(_) => "scripted",
            Self::OpenAi(_) => "openai",
        }
    }

    /// Runs `turn`, streaming its events to `events`. Every turn that is not abandoned by its
    /// caller ends with exactly one `done` or `error` event.
    pub(crate) async fn run(
        &self,
        turn: &TurnRequest,
        events: &Events,
        tools: &ToolSettings,
    ) -> TurnEnd {
        let ended = match self {
            Self::Scripted(pace) => scripted::run(*pace, turn, events, tools).await,
            Self::OpenAi(openai) => openai.run(turn, events, tools).await,
        };
        ended.unwrap_or(TurnEnd::CallerGone)
    }
}

/// How a turn ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TurnEnd {
    Done,
    Failed,
    CallerGone,
}

/// The caller has gone away (its stream was dropped): stop working on the turn.
#[derive(Debug)]
pub(crate) struct CallerGone;

/// The caller's end of a turn's event stream.
#[derive(Debug, Clone)]
pub(crate) struct Events(pub(crate) mpsc::Sender<Result<TurnEvent, Status>>);

impl Events {
    pub(crate) async fn send(&self, event: turn_event::Event) -> Result<(), CallerGone> {
        self.0
            .send(Ok(TurnEvent { event: Some(event) }))
            .await
            .map_err(|_| CallerGone)
    }

    /// Ends the turn with an error event.
    pub(crate) async fn fail(&self, code: &str, message: String) -> Result<TurnEnd, CallerGone> {
        tracing::warn!(code, %message, "turn failed");
        self.send(turn_event::Event::Error(TurnError {
            message,
            code: code.to_owned(),
        }))
        .await?;
        Ok(TurnEnd::Failed)
    }

    /// Resolves once the caller has gone away.
    pub(crate) async fn closed(&self) {
        self.0.closed().await;
    }

    /// Waits `pause`, or stops early when the caller goes away: a cancelled turn must stop now,
    /// not after the next token's delay.
    pub(crate) async fn pause(&self, pause: Duration) -> Result<(), CallerGone> {
        if pause.is_zero() {
            return if self.0.is_closed() {
                Err(CallerGone)
            } else {
                Ok(())
            };
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => Ok(()),
            () = self.closed() => Err(CallerGone),
        }
    }
}
