//! Apple Push Notification service: HTTP/2 only, token-based authentication.
//!
//! The provider token is an ES256 JWT (header `alg: ES256, kid: key id`, claims `iss: team id,
//! iat`) signed with the team's `.p8` key. Apple refuses one older than an hour
//! (`ExpiredProviderToken`) and one replaced more often than every 20 minutes
//! (`TooManyProviderTokenUpdates`), so one token is shared by every send and replaced after 50
//! minutes, or at once when Apple answers `ExpiredProviderToken` (the send is then tried once
//! more).
//!
//! A notification is `POST {endpoint}/3/device/{token}` with `apns-topic` (the bundle id),
//! `apns-push-type: alert` and `apns-priority: 10`; the body is `{"aps": {"alert": {title,
//! body}, "sound": "default"}, …data}`. Errors follow Apple's "Handling notification responses
//! from APNs": 410 (`Unregistered`, `ExpiredToken`) and 400 `BadDeviceToken` /
//! `DeviceTokenNotForTopic` mean the token is useless; 429 and 5xx are retried.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::ApnsConfig;
use crate::http::{self, Versions, bounded_body, clip, network_error};
use crate::jwt;
use crate::keys::EcSigningKey;
use crate::providers::{Notification, Outcome, by_status};

/// How long one provider token is used (Apple: between 20 and 60 minutes).
pub const PROVIDER_TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);
/// APNs' limit on a notification's payload.
const MAX_PAYLOAD: usize = 4096;
/// The longest `apns-collapse-id` APNs accepts.
const MAX_COLLAPSE_ID: usize = 64;

/// Sends to APNs device tokens.
#[derive(Debug)]
pub struct ApnsSender {
    http: reqwest::Client,
    key: EcSigningKey,
    key_id: String,
    team_id: String,
    topic: String,
    /// `{endpoint}/3/device/`.
    device_url: String,
    provider_token: Mutex<Option<ProviderToken>>,
}

#[derive(Debug, Clone)]
struct ProviderToken {
    value: String,
    issued: Instant,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    kid: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    reason: String,
}

impl ApnsSender {
    pub fn new(config: ApnsConfig, tls: &rustls::ClientConfig) -> anyhow::Result<Self> {
        let sender = Self {
            http: http::client(tls, Versions::Http2Only)?,
            device_url: format!(
                "{}/3/device/",
                config.endpoint.as_str().trim_end_matches('/')
            ),
            key: config.key,
            key_id: config.key_id,
            team_id: config.team_id,
            topic: config.topic,
            provider_token: Mutex::new(None),
        };
        // Sign once now, so a key ring cannot use fails at start rather than at the first push.
        sender.provider_token(None)?;
        Ok(sender)
    }

    /// Sends `notification` to the device with `token` (hex, as registered).
    pub async fn send(&self, token: &str, notification: &Notification) -> Outcome {
        if token.is_empty() || !token.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Outcome::InvalidToken;
        }
        let Some(notification) = notification.fitted(MAX_PAYLOAD, payload_size) else {
            return Outcome::Rejected("the notification is larger than APNs' 4096 bytes".into());
        };
        let payload = payload(&notification);
        let url = format!("{}{token}", self.device_url);
        let mut refused: Option<String> = None;
        loop {
            let provider_token = match self.provider_token(refused.as_deref()) {
                Ok(provider_token) => provider_token,
                Err(error) => {
                    tracing::error!(error = %error, "signing the apns provider token failed");
                    return Outcome::Rejected("signing the apns provider token failed".into());
                }
            };
            let mut request = self
                .http
                .post(&url)
                .header("authorization", format!("bearer {provider_token}"))
                .header("apns-topic", &self.topic)
                .header("apns-push-type", "alert")
                .header("apns-priority", "10")
                .json(&payload);
            if let Some(key) = &notification.collapse_key {
                request = request.header("apns-collapse-id", collapse_id(key));
            }
            if let Some(ttl) = notification.ttl {
                request = request.header(
                    "apns-expiration",
                    (jwt::now_unix() + ttl.as_secs()).to_string(),
                );
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) => return network_error("apns", error),
            };
            let status = response.status();
            if status.is_success() {
                return Outcome::Sent;
            }
            let headers = response.headers().clone();
            let body = bounded_body(response).await;
            let error = serde_json::from_str::<ErrorBody>(&body).unwrap_or_default();
            if status == StatusCode::FORBIDDEN
                && error.reason == "ExpiredProviderToken"
                && refused.is_none()
            {
                tracing::debug!("apns says the provider token expired; signing a new one");
                refused = Some(provider_token);
                continue;
            }
            return outcome(status, &headers, &error.reason);
        }
    }

    /// The shared provider token, or a new one when there is none, it is 50 minutes old, or it is
    /// `refused` (APNs just called it expired).
    fn provider_token(&self, refused: Option<&str>) -> anyhow::Result<String> {
        let mut cached = self
            .provider_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = cached.as_ref()
            && token.issued.elapsed() < PROVIDER_TOKEN_LIFETIME
            && refused != Some(token.value.as_str())
        {
            return Ok(token.value.clone());
        }
        let value = jwt::es256(
            &self.key,
            &Header {
                alg: "ES256",
                kid: &self.key_id,
            },
            &Claims {
                iss: &self.team_id,
                iat: jwt::now_unix(),
            },
        )?;
        *cached = Some(ProviderToken {
            value: value.clone(),
            issued: Instant::now(),
        });
        Ok(value)
    }
}

fn outcome(status: StatusCode, headers: &reqwest::header::HeaderMap, reason: &str) -> Outcome {
    let description = format!("apns {status} {}", clip(reason, 100));
    let outcome = match (status, reason) {
        (StatusCode::GONE, _) => Outcome::InvalidToken,
        (StatusCode::BAD_REQUEST, "BadDeviceToken" | "DeviceTokenNotForTopic") => {
            Outcome::InvalidToken
        }
        _ => by_status(status, headers, description.clone()),
    };
    match &outcome {
        Outcome::Rejected(_) if status == StatusCode::FORBIDDEN => {
            tracing::error!(reason = %description, "apns refused our credentials");
        }
        Outcome::Rejected(_) => {
            tracing::warn!(reason = %description, "apns refused a notification")
        }
        _ => {
            tracing::debug!(reason = %description, ?outcome, "apns did not deliver a notification")
        }
    }
    outcome
}

/// The JSON payload: `aps` with the alert, then the data keys (an `aps` data key is dropped: it
/// would replace Apple's dictionary).
fn payload(notification: &Notification) -> Value {
    let mut payload: Map<String, Value> = notification
        .data
        .iter()
        .filter(|(key, _)| key.as_str() != "aps")
        .map(|(key, value)| (key.clone(), json!(value)))
        .collect();
    payload.insert(
        "aps".into(),
        json!({
            "alert": {"title": notification.title, "body": notification.body},
            "sound": "default",
        }),
    );
    Value::Object(payload)
}

fn payload_size(notification: &Notification) -> usize {
    serde_json::to_vec(&payload(notification)).map_or(usize::MAX, |json| json.len())
}

/// `key` as an `apns-collapse-id`: itself when it fits in 64 bytes of visible ASCII, else the
/// hex SHA-256 of it (64 characters), so that equal keys still collapse.
pub(crate) fn collapse_id(key: &str) -> String {
    if !key.is_empty() && key.len() <= MAX_COLLAPSE_ID && key.bytes().all(|b| b.is_ascii_graphic())
    {
        return key.to_owned();
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_puts_the_alert_in_aps_beside_the_data() {
        let notification = Notification::new("Title", "Body")
            .with_data("conversationId", "c1")
            .with_data("aps", "not allowed");
        assert_eq!(
            payload(&notification),
            json!({"aps": {"alert": {"title": "Title", "body": "Body"}, "sound": "default"},
                   "conversationId": "c1"})
        );
    }

    #[test]
    fn a_long_collapse_key_is_hashed_to_64_characters() {
        assert_eq!(collapse_id("conversation-1"), "conversation-1");
        let long = collapse_id(&"x".repeat(65));
        assert_eq!(long.len(), 64);
        assert_eq!(long, collapse_id(&"x".repeat(65)));
        assert_eq!(collapse_id("with space").len(), 64);
    }
}
