//! Firebase Cloud Messaging, HTTP v1 API.
//!
//! Authentication is OAuth 2.0 for a service account (RFC 7523): an RS256-signed assertion
//! (`iss` = the account's email, `scope` = firebase.messaging, `aud` = its `token_uri`, valid one
//! hour) is exchanged at `token_uri` for an access token. The token is cached and shared by every
//! send until a minute before its `expires_in` (at most half its life for short ones); a 401 from
//! FCM drops it, and the send is tried once more with a fresh one. One task fetches while the
//! others wait for its token, so a burst of sends makes one token request.
//!
//! A message is `POST {endpoint}/v1/projects/{project_id}/messages:send`. Errors follow
//! <https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode>: `UNREGISTERED` (404),
//! `SENDER_ID_MISMATCH` (403) and an `INVALID_ARGUMENT` about `message.token` (400) mean the
//! token is useless here; `QUOTA_EXCEEDED` (429), `UNAVAILABLE` (503) and `INTERNAL` (500) are
//! retried, after `Retry-After` when given.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::config::{FcmConfig, ServiceAccount};
use crate::http::{self, Versions, bounded_body, clip, network_error};
use crate::jwt;
use crate::providers::{Notification, Outcome, Urgency, by_status};

/// The OAuth 2.0 scope of sending messages.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The grant type of a signed JWT assertion (RFC 7523).
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How long a signed assertion is valid (Google's maximum).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
/// How long before its expiry an access token is replaced.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// FCM's limit on a message's payload (notification and data).
const MAX_PAYLOAD: usize = 4096;

/// Sends to FCM registration tokens.
#[derive(Debug)]
pub struct FcmSender {
    http: reqwest::Client,
    account: ServiceAccount,
    send_url: String,
    access_token: Mutex<Option<AccessToken>>,
}

#[derive(Debug, Clone)]
struct AccessToken {
    value: String,
    refresh_at: Instant,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Seconds; Google says 3599.
    expires_in: Option<u64>,
}

impl FcmSender {
    pub fn new(config: FcmConfig, tls: &rustls::ClientConfig) -> anyhow::Result<Self> {
        let send_url = format!(
            "{}/v1/projects/{}/messages:send",
            config.endpoint.as_str().trim_end_matches('/'),
            config.service_account.project_id
        );
        Ok(Self {
            http: http::client(tls, Versions::Any)?,
            account: config.service_account,
            send_url,
            access_token: Mutex::new(None),
        })
    }

    /// Sends `notification` to the device with registration `token`.
    pub async fn send(&self, token: &str, notification: &Notification) -> Outcome {
        let Some(notification) = notification.fitted(MAX_PAYLOAD, payload_size) else {
            return Outcome::Rejected("the notification is larger than FCM's 4096 bytes".into());
        };
        let message = message(token, &notification);
        let mut refused: Option<String> = None;
        loop {
            let access_token = match self.access_token(refused.as_deref()).await {
                Ok(access_token) => access_token,
                Err(outcome) => return outcome,
            };
            let response = match self
                .http
                .post(&self.send_url)
                .bearer_auth(&access_token)
                .json(&message)
                .send()
                .await
            {
                Ok(response) => response,
                Err(error) => return network_error("fcm", error),
            };
            if response.status() == StatusCode::UNAUTHORIZED && refused.is_none() {
                // Revoked, or expired earlier than it said: once more with a new token.
                tracing::debug!("fcm refused the access token; fetching a new one");
                refused = Some(access_token);
                continue;
            }
            return outcome(response).await;
        }
    }

    /// The cached access token, or a new one when there is none, it is about to expire, or it is
    /// `refused` (FCM just answered 401 to it).
    async fn access_token(&self, refused: Option<&str>) -> Result<String, Outcome> {
        let mut cached = self.access_token.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.refresh_at
            && refused != Some(token.value.as_str())
        {
            return Ok(token.value.clone());
        }
        let token = self.fetch_access_token().await?;
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    async fn fetch_access_token(&self) -> Result<AccessToken, Outcome> {
        let now = jwt::now_unix();
        let mut header = Map::from_iter([
            ("alg".to_owned(), json!("RS256")),
            ("typ".to_owned(), json!("JWT")),
        ]);
        if let Some(kid) = &self.account.private_key_id {
            header.insert("kid".to_owned(), json!(kid));
        }
        let claims = AssertionClaims {
            iss: &self.account.client_email,
            scope: SCOPE,
            aud: self.account.token_uri.as_str(),
            iat: now,
            exp: now + ASSERTION_LIFETIME.as_secs(),
        };
        let assertion = match jwt::rs256(&self.account.private_key, &header, &claims) {
            Ok(assertion) => assertion,
            Err(error) => {
                tracing::error!(error = %error, "signing the fcm token assertion failed");
                return Err(Outcome::Rejected("signing the fcm assertion failed".into()));
            }
        };
        let requested = Instant::now();
        let response = self
            .http
            .post(self.account.token_uri.clone())
            .form(&[("grant_type", GRANT_TYPE), ("assertion", &assertion)])
            .send()
            .await
            .map_err(|error| network_error("fcm", error))?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = bounded_body(response).await;
            let reason = format!(
                "the token endpoint refused the service account: {status} {}",
                clip(&body, 200)
            );
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                tracing::warn!(%status, "fcm token endpoint is unavailable");
                return Err(http::retry(&headers));
            }
            tracing::error!(%status, body = %clip(&body, 500), "fcm token endpoint refused the service account");
            return Err(Outcome::Rejected(reason));
        }
        let token: TokenResponse = response.json().await.map_err(|error| {
            tracing::warn!(error = %error, "fcm token endpoint answered something else than a token");
            Outcome::Retry { after: None }
        })?;
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(3600));
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        tracing::debug!(expires_in = lifetime.as_secs(), "fcm access token fetched");
        Ok(AccessToken {
            value: token.access_token,
            refresh_at: requested + lifetime - margin,
        })
    }
}

/// The `messages:send` body.
fn message(token: &str, notification: &Notification) -> Value {
    let mut message = json!({
        "token": token,
        "notification": {"title": notification.title, "body": notification.body},
    });
    if !notification.data.is_empty() {
        message["data"] = json!(notification.data);
    }
    let mut android = Map::new();
    if let Some(key) = &notification.collapse_key {
        android.insert("collapse_key".into(), json!(key));
    }
    if let Some(ttl) = notification.ttl {
        // A google.protobuf.Duration in JSON: seconds with an "s".
        android.insert("ttl".into(), json!(format!("{}s", ttl.as_secs())));
    }
    if notification.urgency == Urgency::High {
        android.insert("priority".into(), json!("HIGH"));
    }
    if !android.is_empty() {
        message["android"] = Value::Object(android);
    }
    let mut apns_headers = Map::new();
    if let Some(key) = &notification.collapse_key {
        apns_headers.insert(
            "apns-collapse-id".into(),
            json!(super::apns::collapse_id(key)),
        );
    }
    if let Some(ttl) = notification.ttl {
        apns_headers.insert(
            "apns-expiration".into(),
            json!((jwt::now_unix() + ttl.as_secs()).to_string()),
        );
    }
    if !apns_headers.is_empty() {
        message["apns"] = json!({ "headers": apns_headers });
    }
    json!({ "message": message })
}

/// The part of a message FCM counts against its 4096 bytes.
fn payload_size(notification: &Notification) -> usize {
    let payload = json!({
        "notification": {"title": notification.title, "body": notification.body},
        "data": notification.data,
    });
    serde_json::to_vec(&payload).map_or(usize::MAX, |json| json.len())
}

/// A Google API error: `{"error": {"code", "message", "status", "details": […]}}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorFields,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorFields {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<Value>,
}

impl ErrorFields {
    /// FCM's own error code (`UNREGISTERED`, `INVALID_ARGUMENT`, …), from the `FcmError` detail.
    fn fcm_code(&self) -> Option<&str> {
        self.details.iter().find_map(|detail| {
            let kind = detail.get("@type")?.as_str()?;
            kind.ends_with("google.firebase.fcm.v1.FcmError")
                .then(|| detail.get("errorCode")?.as_str())
                .flatten()
        })
    }

    /// Whether a 400 is about the registration token (rather than the rest of the message).
    fn is_about_the_token(&self) -> bool {
        let field_violation = self.details.iter().any(|detail| {
            detail
                .get("fieldViolations")
                .and_then(Value::as_array)
                .is_some_and(|violations| {
                    violations.iter().any(|violation| {
                        violation.get("field").and_then(Value::as_str) == Some("message.token")
                    })
                })
        });
        field_violation
            || self
                .message
                .to_ascii_lowercase()
                .contains("registration token")
    }
}

async fn outcome(response: reqwest::Response) -> Outcome {
    let status = response.status();
    if status.is_success() {
        return Outcome::Sent;
    }
    let headers = response.headers().clone();
    let body = bounded_body(response).await;
    let error = serde_json::from_str::<ErrorBody>(&body)
        .unwrap_or_default()
        .error;
    let code = error.fcm_code().unwrap_or(error.status.as_str());
    let reason = format!("fcm {status} {code}: {}", clip(&error.message, 200));
    let outcome = match (status, code) {
        (StatusCode::NOT_FOUND, "UNREGISTERED") => Outcome::InvalidToken,
        (StatusCode::FORBIDDEN, "SENDER_ID_MISMATCH") => Outcome::InvalidToken,
        (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT") if error.is_about_the_token() => {
            Outcome::InvalidToken
        }
        _ => by_status(status, &headers, reason.clone()),
    };
    match &outcome {
        Outcome::Rejected(_) => tracing::warn!(%reason, "fcm refused a message"),
        _ => tracing::debug!(%reason, ?outcome, "fcm did not deliver a message"),
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_carries_the_notification_data_and_options() {
        let mut notification = Notification::new("Title", "Body").with_data("conversationId", "c1");
        let plain = message("tok", &notification);
        assert_eq!(
            plain,
            json!({"message": {"token": "tok", "notification": {"title": "Title", "body": "Body"},
                "data": {"conversationId": "c1"}}})
        );
        notification.collapse_key = Some("c1".into());
        notification.ttl = Some(Duration::from_secs(60));
        notification.urgency = Urgency::High;
        let full = message("tok", &notification);
        assert_eq!(
            full["message"]["android"],
            json!({"collapse_key": "c1", "ttl": "60s", "priority": "HIGH"})
        );
        assert_eq!(full["message"]["apns"]["headers"]["apns-collapse-id"], "c1");
    }

    #[test]
    fn error_details_are_read_as_fcm_documents_them() {
        let body: ErrorBody = serde_json::from_value(json!({"error": {
            "code": 400, "message": "The registration token is not a valid FCM registration token",
            "status": "INVALID_ARGUMENT",
            "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"},
                {"@type": "type.googleapis.com/google.rpc.BadRequest",
                 "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]}
            ]}}))
        .expect("body");
        assert_eq!(body.error.fcm_code(), Some("INVALID_ARGUMENT"));
        assert!(body.error.is_about_the_token());

        let other: ErrorBody = serde_json::from_value(json!({"error": {
            "code": 400, "message": "Invalid value at 'message.data[0].value'", "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "message.data[0].value"}]}]}}))
        .expect("body");
        assert!(!other.error.is_about_the_token());
        assert_eq!(other.error.fcm_code(), None);
    }
}
