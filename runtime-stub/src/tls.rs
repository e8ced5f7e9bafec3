//! TLS for the runtime's outgoing HTTP (model providers and MCP servers): rustls on ring, never
//! aws-lc-rs or openssl. reqwest is built with `rustls-no-provider`, so it has no crypto of its
//! own; every client here gets a rustls configuration built by [`client_config`].
//!
//! The configuration itself (trusted roots: the platform's plus `SSL_CERT_FILE`/`SSL_CERT_DIR`,
//! which [`crate::Config::from_env`] reads once at start) is shared with the other components:
//! [`crawbl_infra::tls`].

use std::time::Duration;

use anyhow::Context;
use crawbl_infra::tls::client_config;
use rustls::pki_types::CertificateDer;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The two HTTP clients of a runtime, sharing one TLS configuration.
#[derive(Debug, Clone)]
pub(crate) struct HttpClients {
    /// For model providers.
    pub(crate) provider: reqwest::Client,
    /// For MCP servers: no idle pooling (rmcp's advice: a pooled connection whose previous
    /// response was not read to the end stalls the next request) and no redirects (a tool server
    /// must not send the runtime's requests elsewhere).
    pub(crate) mcp: reqwest::Client,
}

impl HttpClients {
    pub(crate) fn new(extra_roots: &[CertificateDer<'static>]) -> anyhow::Result<Self> {
        let tls = client_config(extra_roots)?;
        let provider = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tls_backend_preconfigured((*tls).clone())
            .build()
            .context("building the provider's HTTP client")?;
        let mcp = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured((*tls).clone())
            .build()
            .context("building the MCP HTTP client")?;
        Ok(Self { provider, mcp })
    }
}
