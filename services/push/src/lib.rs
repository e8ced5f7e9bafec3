//! Push notifications to devices whose user has no connected socket: one sender per provider,
//! each speaking the provider's own protocol, behind one interface.
//!
//! - **FCM HTTP v1** ([`providers::fcm`]): a Google service account's RS256 assertion exchanged
//!   for an OAuth 2.0 access token (cached, refreshed before it expires and after a 401), then
//!   `POST /v1/projects/{project}/messages:send`.
//! - **APNs** ([`providers::apns`]): HTTP/2 only, token-based authentication with an ES256
//!   provider token (reused for 50 minutes, replaced on `ExpiredProviderToken`).
//! - **Web Push** ([`providers::webpush`]): RFC 8030 delivery, the payload encrypted per
//!   RFC 8291 (`aes128gcm`), the sender identified per RFC 8292 (VAPID).
//!
//! The delivery pipeline builds [`Providers`] once from [`PushConfig::from_env`], checks each
//! registration with [`validate_target`], and for each device calls [`Providers::send`], whose
//! [`Outcome`] says what to do: nothing ([`Outcome::Sent`]), remove the device
//! ([`Outcome::InvalidToken`]), try again later ([`Outcome::Retry`]), or give up and keep the
//! device ([`Outcome::Rejected`]).
//!
//! # Environment
//!
//! A provider whose variables are all unset is **off**: one `info` line at start says so and
//! names what turns it on, and sends to its devices give [`Outcome::Rejected`]. Some of a
//! provider's variables without the others, or a file or key that cannot be used, stop the start
//! with an error naming the variable (never showing a key).
//!
//! | Variable | Meaning |
//! | --- | --- |
//! | `FCM_SERVICE_ACCOUNT_FILE` | Path of the Google service-account JSON key file (`client_email`, `private_key` (RSA, PEM), `project_id`, `token_uri`). Turns FCM on. |
//! | `FCM_ENDPOINT` | FCM's base URL, default `https://fcm.googleapis.com` (tests point it at a fake). The token endpoint is the key file's `token_uri`. |
//! | `APNS_KEY_FILE` | Path of the APNs signing key (`AuthKey_XXXXXXXXXX.p8`, PKCS#8 PEM; SEC1 PEM is accepted too). |
//! | `APNS_KEY_ID` | The key's id (10 characters, from Apple's developer account). |
//! | `APNS_TEAM_ID` | The developer team's id: the provider token's issuer. |
//! | `APNS_TOPIC` | The app's bundle id (`apns-topic`). The four `APNS_*` above turn APNs on together. |
//! | `APNS_ENDPOINT` | `production` (default, `https://api.push.apple.com`), `sandbox` (`https://api.sandbox.push.apple.com`, for development builds of the app), or a base URL. |
//! | `VAPID_PRIVATE_KEY` | The application server's P-256 key: the 32-byte private scalar in base64url (what `npx web-push generate-vapid-keys` prints as the private key) or a PEM (PKCS#8 or SEC1). Its public key, [`Providers::vapid_public_key`], is what browsers subscribe with. |
//! | `VAPID_SUBJECT` | A `mailto:` or `https:` contact for push services' operators (the VAPID `sub`). With `VAPID_PRIVATE_KEY`, turns Web Push on. |
//! | `SSL_CERT_FILE`, `SSL_CERT_DIR` | CA certificates trusted besides the platform's (a private CA; tests' fake providers). |
//!
//! # Dependencies, and why
//!
//! - **ring** (already in every build through rustls) does every cryptographic operation: RS256
//!   for the FCM assertion, ES256 for APNs and VAPID, ECDH P-256, HKDF-SHA256 and AES-128-GCM
//!   for RFC 8291, and the random salt and ephemeral keys. Its RSA and ECDSA are constant time.
//! - **p256** (RustCrypto, curve arithmetic and PKCS#8 only) reads EC private keys and derives
//!   their public key: ring loads a P-256 key only from a PKCS#8 document that carries the
//!   public key, not from the bare scalar `web-push` prints or a SEC1 PEM. It also checks that a
//!   subscription's `p256dh` is a point on the curve, and the tests use it (with `ecdh`, `ecdsa`)
//!   to verify what the senders produce independently of ring.
//! - **reqwest** (the workspace's, with `rustls-no-provider`, `http2` for APNs and `form` for
//!   the token exchange) over the workspace's rustls configuration on ring
//!   ([`crawbl_infra::tls`]).
//! - Not used (checked with `cargo info`): `a2` 0.10 brings rustls 0.22 and hyper-rustls 0.26
//!   beside the tree's rustls 0.23, and OpenSSL by default; `web-push` 0.11 brings `http` 0.2
//!   with hyper 0.14 + native TLS or isahc (libcurl), and `ece`, whose default backend is
//!   OpenSSL; `jsonwebtoken` 12 needs a second crypto stack (aws-lc-rs, or RustCrypto's `rsa`)
//!   for three small JWTs that ring signs directly.

pub mod config;
pub mod keys;
pub mod providers;
pub mod validate;

mod http;
mod jwt;

pub use config::{ApnsConfig, FcmConfig, PushConfig, ServiceAccount, WebPushConfig};
pub use keys::{EcSigningKey, RsaSigningKey};
pub use providers::{
    ApnsSender, FcmSender, Notification, Outcome, Platform, Providers, Subscription,
    SubscriptionKeys, Target, Urgency, WebPushSender,
};
pub use validate::{InvalidTarget, TargetInput, ValidationOptions, validate_target};
