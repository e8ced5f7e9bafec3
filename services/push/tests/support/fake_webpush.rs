//! A fake Web Push service (RFC 8030), over TLS with a test CA's certificate or over plain
//! HTTP on loopback. It plays the browser's side too: [`FakePushService::subscribe`] makes a
//! user agent's key pair and authentication secret and returns the subscription a browser would.
//!
//! Each `POST /push/{id}` is checked as a push service and a browser would:
//! - `Authorization: vapid t=<JWT>, k=<key>` (RFC 8292): the ES256 signature verified with `k`
//!   (RustCrypto `p256`), `aud` this service's origin, `exp` in the future and at most 24 hours
//!   ahead, `sub` a `mailto:` or `https:` URL (else 401);
//! - `TTL` present, `Content-Encoding: aes128gcm`, an `Urgency` and `Topic` if any well formed
//!   (else 400);
//! - the body decrypted per RFC 8291 / RFC 8188 with the subscription's private key and auth
//!   secret, written here from the RFCs apart from the sender's code (ECDH with `p256`, HKDF
//!   and AES-128-GCM with ring), every record and its padding checked (else 400);
//!
//! then the next scripted answer (a status and headers), else 201 Created, and the plaintext is
//! recorded. An unknown subscription id is 410 Gone.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom as _;
use serde_json::{Value, json};

use super::jws;
use super::tls::{TestCa, bind, serve_https};

/// A scripted answer: a status and headers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
        }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.headers.push(("retry-after", seconds.to_string()));
        self
    }
}

/// A message that passed every check.
#[derive(Debug, Clone)]
pub struct Received {
    pub subscription_id: usize,
    /// The encrypted body as it arrived.
    pub body: Vec<u8>,
    pub plaintext: Vec<u8>,
    pub ttl: u64,
    pub urgency: Option<String>,
    pub topic: Option<String>,
    /// The VAPID public key (`k=`), base64url.
    pub vapid_key: String,
    pub vapid_claims: Value,
    pub status: u16,
}

impl Received {
    /// The plaintext as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.plaintext).expect("a JSON payload")
    }
}

struct UserAgent {
    secret: p256::SecretKey,
    public: Vec<u8>,
    auth: [u8; 16],
}

#[derive(Default)]
struct State_ {
    subscriptions: HashMap<usize, Arc<UserAgent>>,
    script: VecDeque<Answer>,
    received: Vec<Received>,
    refusals: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State_>>,
    origin: String,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running fake push service; it stops with the test's runtime.
pub struct FakePushService {
    /// `https://127.0.0.1:PORT` (or `http://`): the VAPID `aud` it expects.
    pub origin: String,
    shared: Shared,
}

impl FakePushService {
    /// Serves over TLS with a certificate of `ca`.
    pub async fn start(ca: &TestCa) -> Self {
        let (tcp, address) = bind().await;
        let (shared, app) = app(format!("https://{address}"));
        serve_https(tcp, app, ca);
        Self {
            origin: shared.origin.clone(),
            shared,
        }
    }

    /// Serves over plain HTTP on loopback (what a test-only validation flag allows).
    pub async fn start_plain() -> Self {
        let (tcp, address) = bind().await;
        let (shared, app) = app(format!("http://{address}"));
        tokio::spawn(async move { axum::serve(tcp, app).await });
        Self {
            origin: shared.origin.clone(),
            shared,
        }
    }

    /// A new subscription, as `PushSubscription.toJSON()` gives it:
    /// `{"endpoint", "expirationTime": null, "keys": {"p256dh", "auth"}}`.
    pub fn subscribe(&self) -> Value {
        let rng = ring::rand::SystemRandom::new();
        let secret = loop {
            let mut scalar = [0u8; 32];
            rng.fill(&mut scalar).expect("random");
            if let Ok(secret) = p256::SecretKey::from_slice(&scalar) {
                break secret;
            }
        };
        let mut auth = [0u8; 16];
        rng.fill(&mut auth).expect("random");
        let public = secret.public_key().to_sec1_bytes().to_vec();
        let subscription = json!({
            "endpoint": "",
            "expirationTime": null,
            "keys": {"p256dh": URL_SAFE_NO_PAD.encode(&public), "auth": URL_SAFE_NO_PAD.encode(auth)},
        });
        let mut state = self.shared.state();
        let id = state.subscriptions.len() + 1;
        state.subscriptions.insert(
            id,
            Arc::new(UserAgent {
                secret,
                public,
                auth,
            }),
        );
        let mut subscription = subscription;
        subscription["endpoint"] = json!(format!("{}/push/{id}", self.origin));
        subscription
    }

    /// The user agent's private key (the 32-byte scalar) and auth secret of subscription `id`,
    /// for a check by another implementation.
    pub fn user_agent_secrets(&self, id: usize) -> ([u8; 32], [u8; 16]) {
        let state = self.shared.state();
        let user_agent = state.subscriptions.get(&id).expect("a subscription");
        let mut scalar = [0u8; 32];
        scalar.copy_from_slice(user_agent.secret.to_bytes().as_ref());
        (scalar, user_agent.auth)
    }

    /// The next answers, in order, before the default 201s.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.shared.state().script.extend(answers);
    }

    /// Every message that passed the checks, whatever was answered.
    pub fn received(&self) -> Vec<Received> {
        self.shared.state().received.clone()
    }

    /// The messages answered 201.
    pub fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|received| received.status == 201)
            .collect()
    }

    /// Why requests were refused by the checks.
    pub fn refusals(&self) -> Vec<String> {
        self.shared.state().refusals.clone()
    }
}

fn app(origin: String) -> (Shared, Router) {
    let shared = Shared {
        state: Arc::default(),
        origin,
    };
    let app = Router::new()
        .route("/push/{id}", post(push))
        .with_state(shared.clone());
    (shared, app)
}

async fn push(
    State(shared): State<Shared>,
    Path(id): Path<usize>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let refuse = |status: StatusCode, why: String| {
        shared.state().refusals.push(why.clone());
        (status, why).into_response()
    };
    let Some(user_agent) = shared.state().subscriptions.get(&id).cloned() else {
        return refuse(StatusCode::GONE, format!("no subscription {id}"));
    };
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());

    let Some((token, key)) = header("authorization").and_then(parse_vapid) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "no `vapid t=…, k=…` authorization".into(),
        );
    };
    let Ok(public_key) = URL_SAFE_NO_PAD.decode(&key) else {
        return refuse(StatusCode::UNAUTHORIZED, "k is not base64url".into());
    };
    let verified = match jws::verify_es256(&token, &public_key) {
        Ok(verified) => verified,
        Err(why) => return refuse(StatusCode::UNAUTHORIZED, format!("vapid: {why}")),
    };
    let claims = verified.claims;
    let now = jws::now();
    let exp = claims["exp"].as_u64().unwrap_or(0);
    let sub = claims["sub"].as_str().unwrap_or("");
    if claims["aud"] != shared.origin.as_str() {
        return refuse(
            StatusCode::UNAUTHORIZED,
            format!("vapid aud {} is not {}", claims["aud"], shared.origin),
        );
    }
    if exp <= now || exp > now + 24 * 3600 {
        return refuse(
            StatusCode::UNAUTHORIZED,
            format!("vapid exp {exp} is past or more than 24 hours ahead"),
        );
    }
    if !(sub.starts_with("mailto:") || sub.starts_with("https:")) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            format!("vapid sub {sub:?} is not mailto: or https:"),
        );
    }

    let Some(ttl) = header("ttl").and_then(|ttl| ttl.parse::<u64>().ok()) else {
        return refuse(StatusCode::BAD_REQUEST, "no TTL".into());
    };
    if header("content-encoding") != Some("aes128gcm") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Content-Encoding is not aes128gcm".into(),
        );
    }
    let urgency = header("urgency").map(str::to_owned);
    if let Some(urgency) = &urgency
        && !["very-low", "low", "normal", "high"].contains(&urgency.as_str())
    {
        return refuse(StatusCode::BAD_REQUEST, format!("urgency {urgency}"));
    }
    let topic = header("topic").map(str::to_owned);
    if let Some(topic) = &topic
        && (topic.len() > 32
            || !topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return refuse(StatusCode::BAD_REQUEST, format!("topic {topic}"));
    }
    if body.len() > 4096 {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "body over 4096 bytes".into());
    }
    let plaintext = match decrypt(&body, &user_agent) {
        Ok(plaintext) => plaintext,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, format!("decrypt: {why}")),
    };

    let scripted = shared.state().script.pop_front();
    let status = scripted.as_ref().map_or(201, |answer| answer.status);
    shared.state().received.push(Received {
        subscription_id: id,
        body: body.to_vec(),
        plaintext,
        ttl,
        urgency,
        topic,
        vapid_key: key,
        vapid_claims: claims,
        status,
    });
    let mut response = StatusCode::from_u16(status)
        .expect("status")
        .into_response();
    if status == 201 {
        response.headers_mut().insert(
            "location",
            format!("{}/message/{id}", shared.origin)
                .parse()
                .expect("location"),
        );
    }
    for (name, value) in scripted.map(|answer| answer.headers).unwrap_or_default() {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}

/// `vapid t=…, k=…` (parameters in any order, comma-separated).
fn parse_vapid(value: &str) -> Option<(String, String)> {
    let parameters = value.strip_prefix("vapid ")?;
    let mut token = None;
    let mut key = None;
    for parameter in parameters.split(',') {
        let (name, value) = parameter.trim().split_once('=')?;
        match name {
            "t" => token = Some(value.to_owned()),
            "k" => key = Some(value.to_owned()),
            _ => {}
        }
    }
    Some((token?, key?))
}

/// RFC 8291 §3 and RFC 8188 §2, from the user agent's side.
fn decrypt(body: &[u8], user_agent: &UserAgent) -> Result<Vec<u8>, String> {
    // RFC 8188 §2.1: salt (16) | rs (4) | idlen (1) | keyid (idlen) | records.
    if body.len() < 21 {
        return Err("shorter than the header".into());
    }
    let salt = &body[..16];
    let record_size = u32::from_be_bytes(body[16..20].try_into().expect("4 bytes")) as usize;
    let id_length = usize::from(body[20]);
    if record_size < 18 {
        return Err(format!("record size {record_size}"));
    }
    // RFC 8291 §4: the keyid is the sender's ephemeral public key, 65 bytes uncompressed.
    if id_length != 65 || body.len() < 21 + id_length {
        return Err(format!("keyid length {id_length}"));
    }
    let as_public = &body[21..21 + id_length];
    let records = &body[21 + id_length..];
    if records.is_empty() {
        return Err("no record".into());
    }
    let as_public_key = p256::PublicKey::from_sec1_bytes(as_public)
        .map_err(|_| "keyid is not a P-256 point".to_owned())?;

    // RFC 8291 §3.3-3.4.
    let shared_secret = p256::ecdh::diffie_hellman(
        user_agent.secret.to_nonzero_scalar(),
        as_public_key.as_affine(),
    );
    let mut key_info = b"WebPush: info\x00".to_vec();
    key_info.extend_from_slice(&user_agent.public);
    key_info.extend_from_slice(as_public);
    let ikm = hkdf(
        &user_agent.auth,
        shared_secret.raw_secret_bytes().as_ref(),
        &key_info,
        32,
    );
    let cek = hkdf(salt, &ikm, b"Content-Encoding: aes128gcm\x00", 16);
    let nonce_base = hkdf(salt, &ikm, b"Content-Encoding: nonce\x00", 12);
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, &cek).expect("key"),
    );

    let chunks: Vec<&[u8]> = records.chunks(record_size).collect();
    let mut plaintext = Vec::new();
    for (sequence, chunk) in chunks.iter().enumerate() {
        let last = sequence + 1 == chunks.len();
        // RFC 8188 §2.3: the nonce is the base XOR the sequence number (96-bit big endian).
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&nonce_base);
        for (byte, counter) in nonce[4..].iter_mut().zip((sequence as u64).to_be_bytes()) {
            *byte ^= counter;
        }
        let mut record = chunk.to_vec();
        let opened = key
            .open_in_place(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::empty(),
                &mut record,
            )
            .map_err(|_| format!("record {sequence} does not authenticate"))?;
        // RFC 8188 §2: data, a delimiter (2 in the last record, 1 before), zero padding.
        let delimiter_at = opened
            .iter()
            .rposition(|&byte| byte != 0)
            .ok_or_else(|| format!("record {sequence} has no delimiter"))?;
        let expected = if last { 2 } else { 1 };
        if opened[delimiter_at] != expected {
            return Err(format!(
                "record {sequence} ends with delimiter {}",
                opened[delimiter_at]
            ));
        }
        plaintext.extend_from_slice(&opened[..delimiter_at]);
    }
    Ok(plaintext)
}

/// HKDF-SHA256 (RFC 5869): extract with `salt`, expand `info` to `length` bytes.
fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8], length: usize) -> Vec<u8> {
    struct Length(usize);
    impl ring::hkdf::KeyType for Length {
        fn len(&self) -> usize {
            self.0
        }
    }
    let mut output = vec![0u8; length];
    ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, salt)
        .extract(ikm)
        .expand(&[info], Length(length))
        .expect("length")
        .fill(&mut output)
        .expect("fill");
    output
}
