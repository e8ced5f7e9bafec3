//! A fake APNs over TLS and HTTP/2 only (ALPN `h2`; HTTP/1.1 is refused, as Apple does),
//! checking each `POST /3/device/{token}` as APNs documents:
//!
//! - `authorization: bearer <JWT>`: ES256, verified with the team key's public key; `kid` the
//!   key id, `iss` the team id, `iat` within the last hour (else 403 `ExpiredProviderToken`; a
//!   bad signature or key id is 403 `InvalidProviderToken`, none is 403
//!   `MissingProviderToken`);
//! - `apns-topic` the app's bundle id (400 `BadTopic`/`MissingTopic`), `apns-push-type: alert`
//!   (400 `InvalidPushType`), `apns-priority` 10 or 5 (400 `BadPriority`), a hex token (400
//!   `BadDeviceToken`), a JSON body with `aps` (400 `PayloadEmpty`/`BadPayload`);
//!
//! then the next scripted [`Answer`], else 200 with an `apns-id`, and the delivery is recorded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde_json::{Value, json};

use super::jws;
use super::tls::{TestCa, bind, serve_h2_only};

/// A team's APNs signing key, as Apple hands it out: a PKCS#8 PEM (`.p8`) with its ids.
pub struct TeamKey {
    /// The `.p8` file's text.
    pub pem: String,
    /// The public key, uncompressed SEC1.
    pub public_key: Vec<u8>,
    pub key_id: String,
    pub team_id: String,
}

impl TeamKey {
    /// A fresh key (ring writes PKCS#8 with the public key, as Apple's `.p8` files are).
    pub fn generate() -> Self {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let rng = ring::rand::SystemRandom::new();
        let document =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, document.as_ref(), &rng)
                .expect("pkcs8");
        Self {
            pem: pem("PRIVATE KEY", document.as_ref()),
            public_key: pair.public_key().as_ref().to_vec(),
            key_id: "ABC123DEFG".to_owned(),
            team_id: "DEF123GHIJ".to_owned(),
        }
    }
}

/// `der` as PEM with `label`.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A scripted answer to one request that passed the checks.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub reason: &'static str,
    pub headers: Vec<(&'static str, String)>,
    /// 410 carries the time the token stopped being valid.
    pub timestamp: Option<u64>,
}

impl Answer {
    pub fn new(status: u16, reason: &'static str) -> Self {
        Self {
            status,
            reason,
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// 410 `Unregistered`, with its timestamp (milliseconds), as APNs answers.
    pub fn unregistered() -> Self {
        Self {
            timestamp: Some(jws::now() * 1000),
            ..Self::new(410, "Unregistered")
        }
    }

    pub fn too_many_requests(retry_after_seconds: Option<u64>) -> Self {
        let mut answer = Self::new(429, "TooManyRequests");
        if let Some(seconds) = retry_after_seconds {
            answer.headers.push(("retry-after", seconds.to_string()));
        }
        answer
    }
}

/// One request that passed the checks.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub device_token: String,
    pub provider_token: String,
    pub headers: HeaderMap,
    pub payload: Value,
    pub status: u16,
}

#[derive(Default)]
struct State_ {
    script: VecDeque<Answer>,
    attempts: Vec<Attempt>,
    refusals: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State_>>,
    public_key: Arc<Vec<u8>>,
    key_id: String,
    team_id: String,
    topic: String,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running fake APNs; it stops with the test's runtime.
pub struct FakeApns {
    /// `https://127.0.0.1:PORT`: what `APNS_ENDPOINT` would be.
    pub endpoint: String,
    shared: Shared,
    refused_connections: Arc<AtomicUsize>,
}

impl FakeApns {
    /// Serves for `key`'s team and the app `topic`, over TLS with a certificate of `ca`.
    pub async fn start(ca: &TestCa, key: &TeamKey, topic: &str) -> Self {
        let shared = Shared {
            state: Arc::default(),
            public_key: Arc::new(key.public_key.clone()),
            key_id: key.key_id.clone(),
            team_id: key.team_id.clone(),
            topic: topic.to_owned(),
        };
        let app = Router::new()
            .route("/3/device/{token}", post(device))
            .with_state(shared.clone());
        let (tcp, address) = bind().await;
        let refused_connections = serve_h2_only(tcp, app, ca);
        Self {
            endpoint: format!("https://{address}"),
            shared,
            refused_connections,
        }
    }

    /// The next answers, in order, before the default 200s.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.shared.state().script.extend(answers);
    }

    /// Every request that passed the checks, answered as scripted or delivered.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.shared.state().attempts.clone()
    }

    /// The requests answered 200.
    pub fn delivered(&self) -> Vec<Attempt> {
        self.attempts()
            .into_iter()
            .filter(|attempt| attempt.status == 200)
            .collect()
    }

    /// Why requests were refused by the checks.
    pub fn refusals(&self) -> Vec<String> {
        self.shared.state().refusals.clone()
    }

    /// Connections refused: a failed TLS handshake, or no `h2` negotiated.
    pub fn refused_connections(&self) -> usize {
        self.refused_connections.load(Ordering::SeqCst)
    }
}

fn answer(status: u16, reason: &str, timestamp: Option<u64>) -> Response {
    let mut body = json!({ "reason": reason });
    if let Some(timestamp) = timestamp {
        body["timestamp"] = json!(timestamp);
    }
    (
        StatusCode::from_u16(status).expect("status"),
        [("apns-id", "00000000-0000-0000-0000-000000000000")],
        axum::Json(body),
    )
        .into_response()
}

async fn device(
    State(shared): State<Shared>,
    Path(device_token): Path<String>,
    version: Version,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let refuse = |status: u16, reason: &'static str, why: String| {
        shared.state().refusals.push(format!("{reason}: {why}"));
        answer(status, reason, None)
    };
    if version != Version::HTTP_2 {
        return refuse(505, "BadVersion", format!("{version:?}"));
    }
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let Some(provider_token) =
        header("authorization").and_then(|value| value.strip_prefix("bearer "))
    else {
        return refuse(403, "MissingProviderToken", "no bearer token".into());
    };
    let provider_token = provider_token.to_owned();
    let verified = match jws::verify_es256(&provider_token, &shared.public_key) {
        Ok(verified) => verified,
        Err(why) => return refuse(403, "InvalidProviderToken", why),
    };
    if verified.header["kid"] != shared.key_id.as_str() {
        return refuse(403, "InvalidProviderToken", "kid is not the key id".into());
    }
    if verified.claims["iss"] != shared.team_id.as_str() {
        return refuse(403, "InvalidProviderToken", "iss is not the team id".into());
    }
    let Some(iat) = verified.claims["iat"].as_u64() else {
        return refuse(403, "InvalidProviderToken", "no iat".into());
    };
    let now = jws::now();
    if iat > now + 60 || now.saturating_sub(iat) >= 3600 {
        return refuse(403, "ExpiredProviderToken", format!("iat {iat}, now {now}"));
    }
    match header("apns-topic") {
        None => return refuse(400, "MissingTopic", "no apns-topic".into()),
        Some(topic) if topic != shared.topic => {
            return refuse(400, "BadTopic", format!("topic {topic}"));
        }
        Some(_) => {}
    }
    if header("apns-push-type") != Some("alert") {
        return refuse(400, "InvalidPushType", "apns-push-type is not alert".into());
    }
    if !matches!(header("apns-priority"), None | Some("10" | "5")) {
        return refuse(400, "BadPriority", "apns-priority".into());
    }
    if device_token.len() < 64 || !device_token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return refuse(400, "BadDeviceToken", "not hex".into());
    }
    if body.is_empty() {
        return refuse(400, "PayloadEmpty", "empty body".into());
    }
    if body.len() > 4096 {
        return refuse(413, "PayloadTooLarge", body.len().to_string());
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return refuse(400, "BadPayload", "not JSON".into());
    };
    if !payload["aps"].is_object() {
        return refuse(400, "BadPayload", "no aps dictionary".into());
    }
    let scripted = shared.state().script.pop_front();
    let status = scripted.as_ref().map_or(200, |answer| answer.status);
    shared.state().attempts.push(Attempt {
        device_token,
        provider_token,
        headers: headers.clone(),
        payload,
        status,
    });
    match scripted {
        None => (
            StatusCode::OK,
            [("apns-id", "00000000-0000-0000-0000-000000000001")],
        )
            .into_response(),
        Some(scripted) => {
            let mut response = answer(scripted.status, scripted.reason, scripted.timestamp);
            for (name, value) in scripted.headers {
                response
                    .headers_mut()
                    .insert(name, value.parse().expect("header value"));
            }
            response
        }
    }
}
