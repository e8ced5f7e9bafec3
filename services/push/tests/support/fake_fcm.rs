//! A fake FCM HTTP v1 over TLS (a test CA's certificate): Google's OAuth 2.0 token endpoint and
//! `messages:send`, each checking what it receives as the real ones do.
//!
//! - `POST /token` (form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=…`):
//!   the assertion's RS256 signature is verified with the service account's public key, and its
//!   claims (`iss` = the account's email, `scope` = firebase.messaging, `aud` = this token URI,
//!   `iat` now, `exp` = at most an hour later). It answers `{"access_token", "expires_in",
//!   "token_type": "Bearer"}` with the chosen `expires_in`, or 400 `invalid_grant`.
//! - `POST /v1/projects/{project}/messages:send`: the bearer token must be one it issued and
//!   not expired (else 401 `UNAUTHENTICATED`), the project the account's, the body a message
//!   with a token, a notification and string data. Then the next scripted [`Answer`] if any,
//!   else 200 `{"name": "projects/…/messages/N"}`, and the message is recorded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio_rustls::rustls::pki_types::PrivatePkcs8KeyDer;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;

use super::jws;
use super::tls::{TestCa, bind, serve_https};

/// A test-only RSA key (2048 bits, `openssl genpkey -algorithm RSA`), never used anywhere else.
pub const TEST_SERVICE_ACCOUNT_KEY: &str = include_str!("keys/test-service-account.pem");
pub const CLIENT_EMAIL: &str = "crawbl-push@crawbl-test.iam.gserviceaccount.com";
pub const PROJECT_ID: &str = "crawbl-test";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A scripted answer to one `messages:send` that passed the checks.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

impl Answer {
    /// FCM's answer for a token whose app was uninstalled.
    pub fn unregistered() -> Self {
        Self::error(
            404,
            "NOT_FOUND",
            "UNREGISTERED",
            "Requested entity was not found.",
        )
    }

    /// A 400 about the token, with the field violation FCM sends.
    pub fn invalid_token() -> Self {
        let mut answer = Self::error(
            400,
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
        );
        answer.body["error"]["details"]
            .as_array_mut()
            .expect("details")
            .push(json!({"@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "message.token",
                    "description": "The registration token is not a valid FCM registration token"}]}));
        answer
    }

    /// A 400 about something else than the token.
    pub fn invalid_payload() -> Self {
        Self::error(
            400,
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "Invalid value at 'message.android.ttl'",
        )
    }

    pub fn quota_exceeded(retry_after_seconds: u64) -> Self {
        let mut answer = Self::error(
            429,
            "RESOURCE_EXHAUSTED",
            "QUOTA_EXCEEDED",
            "Quota exceeded.",
        );
        answer
            .headers
            .push(("retry-after", retry_after_seconds.to_string()));
        answer
    }

    pub fn unavailable() -> Self {
        Self::error(
            503,
            "UNAVAILABLE",
            "UNAVAILABLE",
            "The service is unavailable.",
        )
    }

    pub fn internal() -> Self {
        Self::error(500, "INTERNAL", "INTERNAL", "Internal error encountered.")
    }

    /// A 401, as FCM answers a revoked access token.
    pub fn unauthenticated() -> Self {
        let mut answer = Self::error(
            401,
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
        answer.body["error"]["details"] = json!([]);
        answer
    }

    fn error(status: u16, google_status: &str, fcm_code: &str, message: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: json!({"error": {
                "code": status, "message": message, "status": google_status,
                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                             "errorCode": fcm_code}]}}),
        }
    }
}

/// One `messages:send` that reached the checks' end.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub access_token: String,
    /// The `message` object.
    pub message: Value,
    /// What was answered.
    pub status: u16,
}

#[derive(Default)]
struct State_ {
    expires_in: u64,
    issued: Vec<(String, Instant)>,
    token_requests: usize,
    attempts: Vec<Attempt>,
    script: VecDeque<Answer>,
    refusals: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State_>>,
    token_uri: String,
    public_key: Arc<Vec<u8>>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running fake FCM; it stops with the test's runtime.
pub struct FakeFcm {
    /// `https://127.0.0.1:PORT`: what `FCM_ENDPOINT` would be.
    pub endpoint: String,
    /// `https://127.0.0.1:PORT/token`: the service account's `token_uri`.
    pub token_uri: String,
    shared: Shared,
    failed_handshakes: Arc<AtomicUsize>,
}

impl FakeFcm {
    /// Serves over TLS with a certificate of `ca`; access tokens live an hour until
    /// [`Self::set_expires_in`].
    pub async fn start(ca: &TestCa) -> Self {
        let key = PrivatePkcs8KeyDer::from_pem_slice(TEST_SERVICE_ACCOUNT_KEY.as_bytes())
            .expect("test key");
        let pair = ring::signature::RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()).expect("rsa");
        let public_key = ring::signature::KeyPair::public_key(&pair)
            .as_ref()
            .to_vec();
        let state = Arc::new(Mutex::new(State_ {
            expires_in: 3600,
            ..State_::default()
        }));
        let (tcp, address) = bind().await;
        let shared = Shared {
            state,
            token_uri: format!("https://{address}/token"),
            public_key: Arc::new(public_key),
        };
        let app = Router::new()
            .route("/token", post(token))
            .route("/v1/projects/{project}/messages:send", post(send))
            .with_state(shared.clone());
        let failed_handshakes = serve_https(tcp, app, ca);
        Self {
            endpoint: format!("https://{address}"),
            token_uri: shared.token_uri.clone(),
            shared,
            failed_handshakes,
        }
    }

    /// The service-account JSON key file a sender is configured with.
    pub fn service_account_json(&self) -> String {
        json!({
            "type": "service_account",
            "project_id": PROJECT_ID,
            "private_key_id": "0123456789abcdef",
            "private_key": TEST_SERVICE_ACCOUNT_KEY,
            "client_email": CLIENT_EMAIL,
            "client_id": "1234567890",
            "token_uri": self.token_uri,
        })
        .to_string()
    }

    /// The `expires_in` of the access tokens issued from now on.
    pub fn set_expires_in(&self, seconds: u64) {
        self.shared.state().expires_in = seconds;
    }

    /// The next answers to `messages:send`, in order, before the default 200s.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.shared.state().script.extend(answers);
    }

    /// How many access tokens were asked for (and issued).
    pub fn token_requests(&self) -> usize {
        self.shared.state().token_requests
    }

    /// Every send that passed the checks, answered as scripted or delivered.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.shared.state().attempts.clone()
    }

    /// The messages delivered (answered 200).
    pub fn delivered(&self) -> Vec<Value> {
        self.attempts()
            .into_iter()
            .filter(|attempt| attempt.status == 200)
            .map(|attempt| attempt.message)
            .collect()
    }

    /// Why requests were refused by the checks (a bad assertion, an unknown token, …).
    pub fn refusals(&self) -> Vec<String> {
        self.shared.state().refusals.clone()
    }

    /// TLS handshakes that failed (a client that does not trust the CA).
    pub fn failed_handshakes(&self) -> usize {
        self.failed_handshakes.load(Ordering::SeqCst)
    }
}

fn refuse(shared: &Shared, status: StatusCode, body: Value, why: String) -> Response {
    shared.state().refusals.push(why);
    (status, axum::Json(body)).into_response()
}

async fn token(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Response {
    let invalid_grant = |why: String| {
        refuse(
            &shared,
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": why}),
            format!("token: {why}"),
        )
    };
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some("application/x-www-form-urlencoded")
    {
        return invalid_grant("not a form".into());
    }
    if form.get("grant_type").map(String::as_str) != Some(GRANT_TYPE) {
        return invalid_grant(format!("grant_type is {:?}", form.get("grant_type")));
    }
    let Some(assertion) = form.get("assertion") else {
        return invalid_grant("no assertion".into());
    };
    let verified = match jws::verify_rs256(assertion, &shared.public_key) {
        Ok(verified) => verified,
        Err(why) => return invalid_grant(why),
    };
    let claims = &verified.claims;
    let now = jws::now();
    let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
        return invalid_grant("iat or exp missing".into());
    };
    let checks = [
        (verified.header["typ"] == "JWT", "typ is not JWT"),
        (claims["iss"] == CLIENT_EMAIL, "iss is not the client email"),
        (claims["scope"] == SCOPE, "scope is not firebase.messaging"),
        (
            claims["aud"] == shared.token_uri.as_str(),
            "aud is not the token URI",
        ),
        (iat <= now + 60 && iat + 60 >= now, "iat is not now"),
        (
            exp > now && exp <= iat + 3600,
            "exp is past or more than an hour after iat",
        ),
    ];
    if let Some((_, why)) = checks.iter().find(|(ok, _)| !ok) {
        return invalid_grant((*why).to_owned());
    }
    let mut state = shared.state();
    state.token_requests += 1;
    let value = format!("fake-access-token-{}", state.token_requests);
    let expires_in = state.expires_in;
    state.issued.push((
        value.clone(),
        Instant::now() + Duration::from_secs(expires_in),
    ));
    axum::Json(json!({"access_token": value, "expires_in": expires_in, "token_type": "Bearer"}))
        .into_response()
}

async fn send(
    State(shared): State<Shared>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let unauthenticated = |why: &str| {
        refuse(
            &shared,
            StatusCode::UNAUTHORIZED,
            Answer::unauthenticated().body,
            format!("send: {why}"),
        )
    };
    let Some(access_token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_owned)
    else {
        return unauthenticated("no bearer token");
    };
    let valid = shared
        .state()
        .issued
        .iter()
        .any(|(issued, until)| *issued == access_token && Instant::now() < *until);
    if !valid {
        return unauthenticated("an unknown or expired access token");
    }
    let bad_request = |why: &str| {
        refuse(
            &shared,
            StatusCode::BAD_REQUEST,
            json!({"error": {"code": 400, "message": why, "status": "INVALID_ARGUMENT"}}),
            format!("send: {why}"),
        )
    };
    if project != PROJECT_ID {
        return refuse(
            &shared,
            StatusCode::NOT_FOUND,
            json!({"error": {"code": 404, "status": "NOT_FOUND"}}),
            format!("send: unknown project {project}"),
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("the body is not JSON");
    };
    let message = &body["message"];
    let strings = |value: &Value| {
        value
            .as_object()
            .is_some_and(|map| map.values().all(Value::is_string))
    };
    let well_formed = message["token"]
        .as_str()
        .is_some_and(|token| !token.is_empty())
        && message["notification"]["title"].is_string()
        && message["notification"]["body"].is_string()
        && (message["data"].is_null() || strings(&message["data"]));
    if !well_formed {
        return bad_request("not a message with a token, a notification and string data");
    }
    let answer = shared.state().script.pop_front();
    let (status, headers, body) = match answer {
        Some(answer) => (answer.status, answer.headers, answer.body),
        None => {
            let count = shared.state().attempts.len();
            (
                200,
                Vec::new(),
                json!({"name": format!("projects/{PROJECT_ID}/messages/{count}")}),
            )
        }
    };
    shared.state().attempts.push(Attempt {
        access_token,
        message: message.clone(),
        status,
    });
    let mut response = (
        StatusCode::from_u16(status).expect("status"),
        axum::Json(body),
    )
        .into_response();
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}
