//! The HTTP side shared by the senders: clients on the workspace's rustls configuration (ring,
//! platform roots plus `SSL_CERT_FILE`/`SSL_CERT_DIR`, see [`crawbl_infra::tls`]), `Retry-After`,
//! and reading a bounded error body.

use std::time::{Duration, SystemTime};

use anyhow::Context;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::providers::Outcome;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A provider that has not answered by then is treated as unavailable (the delivery is retried).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of an error body read, to log and to classify it.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Which HTTP versions a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Versions {
    /// HTTP/2 when the server offers it (ALPN), else HTTP/1.1: FCM and Web Push.
    Any,
    /// HTTP/2 only, as APNs requires.
    Http2Only,
}

/// A client for one provider. Redirects are never followed: a provider does not redirect, and a
/// Web Push endpoint (a URL a user registered) must not send the server's requests elsewhere.
pub(crate) fn client(
    tls: &rustls::ClientConfig,
    versions: Versions,
) -> anyhow::Result<reqwest::Client> {
    let mut tls = tls.clone();
    let builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    // A preconfigured rustls configuration is used as it is: reqwest adds no ALPN of its own.
    let builder = match versions {
        Versions::Any => {
            tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            builder
        }
        Versions::Http2Only => {
            tls.alpn_protocols = vec![b"h2".to_vec()];
            builder.http2_prior_knowledge()
        }
    };
    builder
        .tls_backend_preconfigured(tls)
        .build()
        .context("building the push HTTP client")
}

/// `Retry-After` as a delay: seconds, or an HTTP date (a date in the past is no delay).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(
        date.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A provider that is busy or failing: try again later, after `Retry-After` when it says so.
pub(crate) fn retry(headers: &HeaderMap) -> Outcome {
    Outcome::Retry {
        after: retry_after(headers),
    }
}

/// Up to [`MAX_ERROR_BODY`] bytes of a response body, as text (lossy); a body that breaks off
/// is what arrived until then.
pub(crate) async fn bounded_body(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ERROR_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// At most `max` characters of `text`, for a log line or a [`Outcome::Rejected`] reason.
pub(crate) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A failed request (connection refused, TLS refused, timeout, a broken response): the provider
/// may be reachable later.
pub(crate) fn network_error(provider: &'static str, error: reqwest::Error) -> Outcome {
    // Without the URL: it holds a device token or a subscription's endpoint. With the causes:
    // reqwest's own text is short ("error sending request"), the cause says what went wrong (a
    // certificate, a refused connection).
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    tracing::warn!(provider, error = %text, "push request failed");
    Outcome::Retry { after: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_is_read_as_seconds_or_as_a_date() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(120)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(90));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&later).expect("value"));
        let after = retry_after(&headers).expect("a delay");
        assert!(after > Duration::from_secs(80) && after <= Duration::from_secs(90));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn clip_cuts_on_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("ééééé", 2), "éé…");
    }
}
