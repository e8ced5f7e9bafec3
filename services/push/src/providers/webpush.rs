//! Web Push: delivery to a browser's push service (RFC 8030), the payload encrypted for the
//! subscription (RFC 8291, `aes128gcm` of RFC 8188), the sender identified with VAPID
//! (RFC 8292).
//!
//! Encryption: an ephemeral P-256 key pair per message; ECDH with the subscription's `p256dh`;
//! `IKM = HKDF(salt = auth, ECDH secret, "WebPush: info\0" || ua_public || as_public, 32)`;
//! a random 16-byte salt; `CEK = HKDF(salt, IKM, "Content-Encoding: aes128gcm\0", 16)`,
//! `NONCE = HKDF(salt, IKM, "Content-Encoding: nonce\0", 12)`; one record, the plaintext
//! followed by the last-record delimiter `0x02`, sealed with AES-128-GCM. The body is the header
//! `salt || rs (u32, 4096) || idlen (65) || as_public` and the record.
//!
//! VAPID: `Authorization: vapid t=<JWT>, k=<public key>`, the JWT ES256-signed with `aud` = the
//! endpoint's origin, `exp` = 12 hours from now (RFC 8292 allows up to 24) and `sub` = the
//! configured contact.
//!
//! Answers: 201 (or any 2xx) is delivered; 404 and 410 mean the subscription is gone; 413 is a
//! payload too large (refused); 429 and 5xx are retried.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{StatusCode, Url};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{aead, agreement, hkdf};
use serde::Serialize;
use serde_json::json;

use crate::config::WebPushConfig;
use crate::http::{self, Versions, bounded_body, clip, network_error};
use crate::jwt;
use crate::keys::{EcSigningKey, P256_PUBLIC_KEY_LEN, decode_base64url};
use crate::providers::{Notification, Outcome, Subscription, Urgency, by_status};
use crate::validate::AUTH_SECRET_LEN;

/// How long a push service keeps a message for an offline browser when the notification does
/// not say.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a VAPID JWT is valid.
const VAPID_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// The record size announced in the header.
const RECORD_SIZE: u32 = 4096;
/// The largest body push services must accept (RFC 8030 §7.2).
const MAX_BODY: usize = 4096;
/// salt (16) + rs (4) + idlen (1) + keyid (65).
const HEADER_LEN: usize = 16 + 4 + 1 + P256_PUBLIC_KEY_LEN;
/// The GCM tag.
const TAG_LEN: usize = 16;
/// The largest plaintext that fits in [`MAX_BODY`]: one record, its delimiter and tag.
pub const MAX_PLAINTEXT: usize = MAX_BODY - HEADER_LEN - TAG_LEN - 1;

/// Sends to Web Push subscriptions.
#[derive(Debug)]
pub struct WebPushSender {
    http: reqwest::Client,
    vapid_key: EcSigningKey,
    subject: String,
    rng: SystemRandom,
}

#[derive(Serialize)]
struct VapidClaims<'a> {
    aud: &'a str,
    exp: u64,
    sub: &'a str,
}

impl WebPushSender {
    pub fn new(config: WebPushConfig, tls: &rustls::ClientConfig) -> anyhow::Result<Self> {
        Ok(Self {
            http: http::client(tls, Versions::Any)?,
            vapid_key: config.vapid_key,
            subject: config.subject,
            rng: SystemRandom::new(),
        })
    }

    /// The VAPID public key, unpadded base64url: the `applicationServerKey` browsers subscribe
    /// with.
    pub fn public_key(&self) -> String {
        self.vapid_key.public_key_base64url()
    }

    /// Sends `notification` to `subscription`. The service worker receives the JSON
    /// `{"title", "body", "data": {…}}` (and `"tag"`, the collapse key, when set).
    pub async fn send(&self, subscription: &Subscription, notification: &Notification) -> Outcome {
        let Ok(endpoint) = Url::parse(&subscription.endpoint) else {
            return Outcome::InvalidToken;
        };
        let (Ok(ua_public), Ok(auth)) = (
            decode_base64url(&subscription.keys.p256dh),
            decode_base64url(&subscription.keys.auth),
        ) else {
            return Outcome::InvalidToken;
        };
        let Some(notification) = notification.fitted(MAX_PLAINTEXT, |n| plaintext(n).len()) else {
            return Outcome::Rejected("the notification is larger than a Web Push message".into());
        };
        let body = match encrypt(&plaintext(&notification), &ua_public, &auth, &self.rng) {
            Ok(body) => body,
            Err(EncryptError::BadSubscriptionKey) => return Outcome::InvalidToken,
            Err(EncryptError::Crypto) => {
                return Outcome::Rejected("encrypting the web push payload failed".into());
            }
        };
        let authorization = match self.vapid_authorization(&endpoint) {
            Ok(authorization) => authorization,
            Err(error) => {
                tracing::error!(error = %error, "signing the vapid token failed");
                return Outcome::Rejected("signing the vapid token failed".into());
            }
        };
        let ttl = notification.ttl.unwrap_or(DEFAULT_TTL);
        let mut request = self
            .http
            .post(endpoint)
            .header("authorization", authorization)
            .header("content-encoding", "aes128gcm")
            .header("content-type", "application/octet-stream")
            .header("ttl", ttl.as_secs().to_string())
            .body(body);
        if notification.urgency == Urgency::High {
            request = request.header("urgency", "high");
        }
        if let Some(key) = &notification.collapse_key {
            request = request.header("topic", topic(key));
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return network_error("webpush", error),
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Sent;
        }
        let headers = response.headers().clone();
        let body = bounded_body(response).await;
        let reason = format!("webpush {status}: {}", clip(body.trim(), 200));
        let outcome = match status {
            StatusCode::NOT_FOUND | StatusCode::GONE => Outcome::InvalidToken,
            _ => by_status(status, &headers, reason.clone()),
        };
        match &outcome {
            Outcome::Rejected(_) => tracing::warn!(%reason, "a push service refused a message"),
            _ => tracing::debug!(%reason, ?outcome, "a push service did not take a message"),
        }
        outcome
    }

    /// `vapid t=<JWT>, k=<public key>` for `endpoint`'s push service.
    fn vapid_authorization(&self, endpoint: &Url) -> anyhow::Result<String> {
        let audience = endpoint.origin().ascii_serialization();
        let token = jwt::es256(
            &self.vapid_key,
            &json!({"typ": "JWT", "alg": "ES256"}),
            &VapidClaims {
                aud: &audience,
                exp: jwt::now_unix() + VAPID_LIFETIME.as_secs(),
                sub: &self.subject,
            },
        )?;
        Ok(format!(
            "vapid t={token}, k={}",
            self.vapid_key.public_key_base64url()
        ))
    }
}

/// What the service worker gets.
fn plaintext(notification: &Notification) -> Vec<u8> {
    let mut payload = json!({
        "title": notification.title,
        "body": notification.body,
        "data": notification.data,
    });
    if let Some(key) = &notification.collapse_key {
        payload["tag"] = json!(key);
    }
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// `key` as a `Topic` header: up to 32 characters of the base64url alphabet (RFC 8030 §5.4);
/// a key that is not one is replaced by a digest of it, so that equal keys still collapse.
fn topic(key: &str) -> String {
    let fits = !key.is_empty()
        && key.len() <= 32
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if fits {
        return key.to_owned();
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest.as_ref()[..24])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EncryptError {
    /// `p256dh` is not a P-256 point or `auth` not 16 bytes.
    BadSubscriptionKey,
    /// The random source or a primitive failed.
    Crypto,
}

/// `plaintext` encrypted for the subscription keys `ua_public` and `auth_secret`, as one
/// `aes128gcm` body (RFC 8291 §3.4).
pub(crate) fn encrypt(
    plaintext: &[u8],
    ua_public: &[u8],
    auth_secret: &[u8],
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, EncryptError> {
    if ua_public.len() != P256_PUBLIC_KEY_LEN || auth_secret.len() != AUTH_SECRET_LEN {
        return Err(EncryptError::BadSubscriptionKey);
    }
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EncryptError::Crypto);
    }
    let crypto = |_| EncryptError::Crypto;
    let ephemeral =
        agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, rng).map_err(crypto)?;
    let as_public = ephemeral.compute_public_key().map_err(crypto)?;
    let as_public = as_public.as_ref();

    let key_info = [b"WebPush: info\0".as_slice(), ua_public, as_public].concat();
    let mut ikm = [0u8; 32];
    agreement::agree_ephemeral(
        ephemeral,
        &agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, ua_public),
        |ecdh_secret| {
            hkdf::Salt::new(hkdf::HKDF_SHA256, auth_secret)
                .extract(ecdh_secret)
                .expand(&[&key_info], Length(32))
                .and_then(|okm| okm.fill(&mut ikm))
        },
    )
    // ring checks the peer's point: a key off the curve ends here.
    .map_err(|_| EncryptError::BadSubscriptionKey)?
    .map_err(crypto)?;

    let mut salt = [0u8; 16];
    rng.fill(&mut salt).map_err(crypto)?;
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(&ikm);
    let mut cek = [0u8; 16];
    prk.expand(&[b"Content-Encoding: aes128gcm\0"], Length(cek.len()))
        .and_then(|okm| okm.fill(&mut cek))
        .map_err(crypto)?;
    let mut nonce = [0u8; aead::NONCE_LEN];
    prk.expand(&[b"Content-Encoding: nonce\0"], Length(nonce.len()))
        .and_then(|okm| okm.fill(&mut nonce))
        .map_err(crypto)?;

    let key =
        aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &cek).map_err(crypto)?);
    let mut record = Vec::with_capacity(plaintext.len() + 1 + TAG_LEN);
    record.extend_from_slice(plaintext);
    // The delimiter of the last (and only) record; no padding.
    record.push(0x02);
    // The first record's nonce is NONCE itself (XOR with sequence number 0).
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::empty(),
        &mut record,
    )
    .map_err(crypto)?;

    let mut body = Vec::with_capacity(HEADER_LEN + record.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(P256_PUBLIC_KEY_LEN as u8);
    body.extend_from_slice(as_public);
    body.extend_from_slice(&record);
    Ok(body)
}

/// An HKDF output length for ring.
struct Length(usize);

impl hkdf::KeyType for Length {
    fn len(&self) -> usize {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_of_the_largest_size_fits_in_4096_bytes() {
        let secret = p256::SecretKey::from_slice(&[7; 32]).expect("scalar");
        let ua_public = secret.public_key().to_sec1_bytes();
        let rng = SystemRandom::new();
        let body = encrypt(&vec![b'a'; MAX_PLAINTEXT], &ua_public, &[1; 16], &rng).expect("body");
        assert_eq!(body.len(), MAX_BODY);
        assert_eq!(&body[16..20], &RECORD_SIZE.to_be_bytes());
        assert_eq!(usize::from(body[20]), P256_PUBLIC_KEY_LEN);
        assert_eq!(body[21], 0x04);
        assert_eq!(
            encrypt(&vec![b'a'; MAX_PLAINTEXT + 1], &ua_public, &[1; 16], &rng),
            Err(EncryptError::Crypto)
        );
    }

    #[test]
    fn a_key_off_the_curve_or_of_the_wrong_size_is_a_bad_subscription() {
        let rng = SystemRandom::new();
        let mut off_curve = [4u8; 65];
        off_curve[64] = 5;
        for (key, auth) in [
            (off_curve.as_slice(), [1u8; 16].as_slice()),
            (&[4u8; 64], &[1u8; 16]),
            (&[4u8; 65], &[1u8; 15]),
        ] {
            assert_eq!(
                encrypt(b"hello", key, auth, &rng),
                Err(EncryptError::BadSubscriptionKey)
            );
        }
    }

    #[test]
    fn topics_are_short_base64url() {
        assert_eq!(topic("conversation_1"), "conversation_1");
        let hashed = topic("conversation:0194f1c2-7d7e-7c3a-9a55-000000000001");
        assert_eq!(hashed.len(), 32);
        assert!(
            hashed
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
}
