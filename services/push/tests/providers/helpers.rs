//! Senders configured for the fake providers.

use crawbl_push::{
    ApnsConfig, ApnsSender, EcSigningKey, FcmConfig, FcmSender, ServiceAccount, WebPushConfig,
    WebPushSender,
};
use ring::rand::SecureRandom as _;

use crate::support::fake_apns::{FakeApns, TeamKey};
use crate::support::fake_fcm::FakeFcm;
use crate::support::tls::TestCa;

pub const TOPIC: &str = "com.crawbl.app";
pub const VAPID_SUBJECT: &str = "mailto:push@crawbl.example";

/// The workspace's client TLS configuration, trusting the platform's roots and `ca`.
pub fn tls_trusting(ca: &TestCa) -> rustls::ClientConfig {
    (*crawbl_infra::tls::client_config(std::slice::from_ref(&ca.der)).expect("tls")).clone()
}

/// The same without the test CA.
pub fn tls_without_test_ca() -> rustls::ClientConfig {
    (*crawbl_infra::tls::client_config(&[]).expect("tls")).clone()
}

pub fn fcm_config(fake: &FakeFcm) -> FcmConfig {
    let account = ServiceAccount::from_json(&fake.service_account_json()).expect("account");
    FcmConfig::new(account)
        .with_endpoint(&fake.endpoint)
        .expect("endpoint")
}

pub fn fcm_sender(fake: &FakeFcm, tls: &rustls::ClientConfig) -> FcmSender {
    FcmSender::new(fcm_config(fake), tls).expect("sender")
}

pub fn apns_config(fake: &FakeApns, key: &TeamKey) -> ApnsConfig {
    ApnsConfig::new(
        EcSigningKey::from_pem(&key.pem).expect("p8"),
        &key.key_id,
        &key.team_id,
        TOPIC,
    )
    .expect("config")
    .with_endpoint(&fake.endpoint)
    .expect("endpoint")
}

pub fn apns_sender(fake: &FakeApns, key: &TeamKey, tls: &rustls::ClientConfig) -> ApnsSender {
    ApnsSender::new(apns_config(fake, key), tls).expect("sender")
}

/// A fresh VAPID key, from a random scalar.
pub fn vapid_key() -> EcSigningKey {
    let rng = ring::rand::SystemRandom::new();
    loop {
        let mut scalar = [0u8; 32];
        rng.fill(&mut scalar).expect("random");
        if let Ok(key) = EcSigningKey::from_scalar(&scalar) {
            return key;
        }
    }
}

pub fn webpush_sender(tls: &rustls::ClientConfig) -> WebPushSender {
    WebPushSender::new(
        WebPushConfig::new(vapid_key(), VAPID_SUBJECT).expect("config"),
        tls,
    )
    .expect("sender")
}

/// A device token as APNs hands them out: 32 bytes in hex.
pub fn apns_device_token(seed: u8) -> String {
    format!("{seed:02x}").repeat(32)
}

pub fn subscription(value: serde_json::Value) -> crawbl_push::Subscription {
    serde_json::from_value(value).expect("subscription")
}

/// Waits up to two seconds for `condition` (a server notices a refused handshake a moment after
/// the client gave up).
pub async fn eventually(condition: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if condition() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    condition()
}
