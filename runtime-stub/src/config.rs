//! Settings of one runtime-stub process, read from the environment. A runtime started by
//! runtime-proxy's process driver inherits the proxy's environment, so these are set where the
//! proxy (or the `crawbl` launcher) runs.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use crawbl_infra::config::{optional, parse_or, required};
use rustls::pki_types::CertificateDer;

use crate::provider::Pace;

/// How a runtime-stub listens, which provider answers, and how fast scripted agents "type".
#[derive(Debug, Clone)]
pub struct Config {
    /// `RUNTIME_STUB_LISTEN`; port 0 lets the OS choose, and the chosen address is announced on
    /// stdout (see [`crate::LISTENING_PREFIX`]).
    pub listen: SocketAddr,
    /// The pause before each streamed token of the scripted provider:
    /// `RUNTIME_STUB_TOKEN_DELAY_MS` (default 20), or one second divided by
    /// `RUNTIME_STUB_TOKENS_PER_SECOND` (setting both is an error).
    pub token_delay: Duration,
    /// `RUNTIME_STUB_LATENCY_MS` (default 0): an extra pause before the scripted agent's first
    /// event, like a model's time to first token.
    pub first_token_latency: Duration,
    /// `RUNTIME_PROVIDER`: `scripted` (default) or `openai`.
    pub provider: ProviderConfig,
    /// `RUNTIME_STUB_EXIT_WITH_PARENT`: stop when stdin reaches end of file. The process driver
    /// sets it and keeps a pipe to stdin open, so a runtime never outlives a proxy that was killed
    /// without the chance to kill its children.
    pub exit_with_parent: bool,
    /// `RUNTIME_STUB_MAX_TOOL_ROUNDS` (default 8): how many rounds of tool calls one turn may run
    /// before a model that keeps asking for tools ends it with `TOOL_ROUNDS_EXCEEDED`.
    pub max_tool_rounds: u32,
    /// `RUNTIME_STUB_TOOL_TIMEOUT_MS` (default 30000): the longest one tool call may take (and
    /// connecting to and listing one MCP server); past it the model gets an error result.
    pub tool_timeout: Duration,
    /// `RUNTIME_STUB_PROVIDER_RETRIES` (default 2): how many times a provider request that failed
    /// before streaming anything (429, 5xx, a connection error) is tried again.
    pub provider_retries: u32,
    /// CA certificates trusted for https on top of the platform's: the PEM file named by
    /// `SSL_CERT_FILE` and the files of the `SSL_CERT_DIR` directories, read once at start.
    pub extra_root_certificates: Vec<CertificateDer<'static>>,
}

/// Which provider answers turns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderConfig {
    Scripted,
    OpenAi(OpenAiConfig),
}

/// An OpenAI-compatible chat-completions endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenAiConfig {
    /// `OPENAI_BASE_URL`, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`;
    /// requests go to `{base}/chat/completions`.
    pub base_url: String,
    /// `OPENAI_MODEL`: the model of agents that name none.
    pub model: String,
    /// `OPENAI_API_KEY`, sent as a bearer token when set.
    pub api_key: Option<String>,
}

impl std::fmt::Debug for OpenAiConfig {
    // The key must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token_delay: Duration::from_millis(20),
            first_token_latency: Duration::ZERO,
            provider: ProviderConfig::Scripted,
            exit_with_parent: false,
            max_tool_rounds: 8,
            tool_timeout: Duration::from_secs(30),
            provider_retries: 2,
            extra_root_certificates: Vec::new(),
        }
    }
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let defaults = Self::default();
        let rate = match optional("RUNTIME_STUB_TOKENS_PER_SECOND") {
            Some(_) => Some(parse_or::<f64>("RUNTIME_STUB_TOKENS_PER_SECOND", 0.0)?),
            None => None,
        };
        let token_delay = token_delay(
            optional("RUNTIME_STUB_TOKEN_DELAY_MS").is_some(),
            parse_or("RUNTIME_STUB_TOKEN_DELAY_MS", millis(defaults.token_delay))?,
            rate,
        )?;
        Ok(Self {
            listen: parse_or("RUNTIME_STUB_LISTEN", defaults.listen)?,
            token_delay,
            first_token_latency: Duration::from_millis(parse_or("RUNTIME_STUB_LATENCY_MS", 0)?),
            provider: provider_from_env()?,
            exit_with_parent: parse_or("RUNTIME_STUB_EXIT_WITH_PARENT", defaults.exit_with_parent)?,
            max_tool_rounds: parse_or("RUNTIME_STUB_MAX_TOOL_ROUNDS", defaults.max_tool_rounds)?,
            tool_timeout: tool_timeout(parse_or(
                "RUNTIME_STUB_TOOL_TIMEOUT_MS",
                millis(defaults.tool_timeout),
            )?)?,
            provider_retries: parse_or("RUNTIME_STUB_PROVIDER_RETRIES", defaults.provider_retries)?,
            extra_root_certificates: crawbl_infra::tls::extra_roots_from_env(
                optional("SSL_CERT_FILE").as_deref(),
                optional("SSL_CERT_DIR").as_deref(),
            )?,
        })
    }

    /// The scripted provider's pace.
    pub fn pace(&self) -> Pace {
        Pace {
            first_token_latency: self.first_token_latency,
            token_delay: self.token_delay,
        }
    }
}

/// The token delay from its two spellings; `rate` is `RUNTIME_STUB_TOKENS_PER_SECOND` when set.
fn token_delay(delay_set: bool, delay_ms: u64, rate: Option<f64>) -> anyhow::Result<Duration> {
    match rate {
        None => Ok(Duration::from_millis(delay_ms)),
        Some(_) if delay_set => {
            bail!("set RUNTIME_STUB_TOKEN_DELAY_MS or RUNTIME_STUB_TOKENS_PER_SECOND, not both")
        }
        Some(rate) if rate.is_finite() && rate > 0.0 => Ok(Duration::from_secs_f64(1.0 / rate)),
        Some(rate) => {
            bail!("RUNTIME_STUB_TOKENS_PER_SECOND={rate} is not valid: expected a positive number")
        }
    }
}

fn tool_timeout(millis: u64) -> anyhow::Result<Duration> {
    if millis == 0 {
        bail!("RUNTIME_STUB_TOOL_TIMEOUT_MS=0 is not valid: a tool needs some time to run");
    }
    Ok(Duration::from_millis(millis))
}

fn provider_from_env() -> anyhow::Result<ProviderConfig> {
    let kind = optional("RUNTIME_PROVIDER").unwrap_or_else(|| "scripted".to_owned());
    match kind.trim() {
        "scripted" => Ok(ProviderConfig::Scripted),
        "openai" => Ok(ProviderConfig::OpenAi(OpenAiConfig {
            base_url: required("OPENAI_BASE_URL")
                .context("RUNTIME_PROVIDER=openai needs OPENAI_BASE_URL")?,
            model: required("OPENAI_MODEL")
                .context("RUNTIME_PROVIDER=openai needs OPENAI_MODEL")?,
            api_key: optional("OPENAI_API_KEY"),
        })),
        other => bail!("RUNTIME_PROVIDER={other:?} is not valid: expected scripted or openai"),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_per_second_sets_the_delay_between_tokens() {
        assert_eq!(
            token_delay(false, 20, Some(50.0)).expect("valid"),
            Duration::from_millis(20)
        );
        assert_eq!(
            token_delay(false, 20, Some(0.5)).expect("valid"),
            Duration::from_secs(2)
        );
        assert_eq!(
            token_delay(true, 5, None).expect("valid"),
            Duration::from_millis(5)
        );
    }

    #[test]
    fn both_spellings_of_the_pace_or_a_bad_rate_are_refused() {
        assert!(token_delay(true, 5, Some(10.0)).is_err());
        assert!(token_delay(false, 5, Some(-1.0)).is_err());
        assert!(token_delay(false, 5, Some(0.0)).is_err());
        assert!(token_delay(false, 5, Some(f64::INFINITY)).is_err());
    }

    #[test]
    fn a_zero_tool_timeout_is_refused() {
        assert!(tool_timeout(0).is_err());
        assert_eq!(
            tool_timeout(250).expect("valid"),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn the_api_key_never_shows_in_debug_output() {
        let config = OpenAiConfig {
            base_url: "http://x".into(),
            model: "m".into(),
            api_key: Some("sk-secret".into()),
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("sk-secret") && shown.contains("redacted"),
            "{shown}"
        );
    }
}
