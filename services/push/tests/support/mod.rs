//! Fake push providers that speak the real protocols and verify what they receive: FCM HTTP v1
//! with its OAuth token endpoint ([`fake_fcm`]), APNs over HTTP/2 ([`fake_apns`]), and a Web Push
//! service that decrypts what it gets ([`fake_webpush`]), all over TLS with a throwaway test CA
//! ([`tls`]).
//!
//! Reusable by other test crates:
//! `#[path = "../services/push/tests/support/mod.rs"] mod push_support;` (the path relative to
//! the including file), with `axum` (feature `form`), `base64`, `hyper`, `hyper-util`, `p256`
//! (features `ecdh`, `ecdsa`), `rcgen`, `ring`, `rustls`, `serde_json`, `tokio` and
//! `tokio-rustls` as dev-dependencies. The servers listen on 127.0.0.1, port 0, and stop with
//! the test's runtime.

#![allow(dead_code)]

pub mod fake_apns;
pub mod fake_fcm;
pub mod fake_webpush;
pub mod jws;
pub mod tls;
