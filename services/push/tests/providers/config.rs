use std::collections::HashMap;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crawbl_push::{Notification, Outcome, Platform, Providers, PushConfig, Target};

use crate::helpers::{TOPIC, apns_device_token, subscription};
use crate::support::fake_apns::{FakeApns, TeamKey};
use crate::support::fake_fcm::FakeFcm;
use crate::support::fake_webpush::FakePushService;
use crate::support::tls::TestCa;

/// A directory of its own under the system's temp dir, removed at drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("crawbl-push-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write");
        path.to_str().expect("utf-8").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn from(variables: &HashMap<&str, String>) -> anyhow::Result<PushConfig> {
    PushConfig::from_lookup(|name| variables.get(name).cloned())
}

#[tokio::test]
async fn every_provider_configured_from_the_environment_delivers() {
    let ca = TestCa::new();
    let fcm = FakeFcm::start(&ca).await;
    let key = TeamKey::generate();
    let apns = FakeApns::start(&ca, &key, TOPIC).await;
    let push_service = FakePushService::start(&ca).await;
    let files = TempDir::new("env");
    let vapid_scalar = [0x42u8; 32];
    let variables = HashMap::from([
        (
            "FCM_SERVICE_ACCOUNT_FILE",
            files.write("service-account.json", &fcm.service_account_json()),
        ),
        ("FCM_ENDPOINT", fcm.endpoint.clone()),
        ("APNS_KEY_FILE", files.write("AuthKey.p8", &key.pem)),
        ("APNS_KEY_ID", key.key_id.clone()),
        ("APNS_TEAM_ID", key.team_id.clone()),
        ("APNS_TOPIC", TOPIC.to_owned()),
        ("APNS_ENDPOINT", apns.endpoint.clone()),
        ("VAPID_PRIVATE_KEY", URL_SAFE_NO_PAD.encode(vapid_scalar)),
        (
            "VAPID_SUBJECT",
            "https://crawbl.example/push-contact".to_owned(),
        ),
        // The test CA reaches the senders the way an operator's private CA would.
        ("SSL_CERT_FILE", files.write("ca.pem", &ca.pem)),
    ]);
    let providers = Providers::new(from(&variables).expect("config")).expect("providers");
    for platform in Platform::ALL {
        assert!(providers.is_enabled(platform), "{platform}");
    }
    let notification = Notification::new("Assistant", "Hello").with_data("conversationId", "c");

    let targets = [
        Target::Fcm {
            token: "fcm-token-1".into(),
        },
        Target::Apns {
            token: apns_device_token(5),
        },
        Target::WebPush {
            subscription: subscription(push_service.subscribe()),
        },
    ];
    for target in &targets {
        assert_eq!(
            providers.send(target, &notification).await,
            Outcome::Sent,
            "{target:?}"
        );
    }

    assert_eq!(fcm.delivered()[0]["notification"]["body"], "Hello");
    assert_eq!(apns.delivered()[0].payload["aps"]["alert"]["body"], "Hello");
    let received = &push_service.delivered()[0];
    assert_eq!(received.json()["body"], "Hello");
    // The key browsers subscribe with is the one that signs.
    let expected_public = p256::SecretKey::from_slice(&vapid_scalar)
        .expect("scalar")
        .public_key()
        .to_sec1_bytes();
    assert_eq!(
        providers.vapid_public_key(),
        Some(URL_SAFE_NO_PAD.encode(&expected_public))
    );
    assert_eq!(
        Some(received.vapid_key.clone()),
        providers.vapid_public_key()
    );
}

#[tokio::test]
async fn a_provider_that_is_off_rejects_its_devices_and_the_others_still_send() {
    let ca = TestCa::new();
    let push_service = FakePushService::start(&ca).await;
    let variables = HashMap::from([
        ("VAPID_PRIVATE_KEY", URL_SAFE_NO_PAD.encode([0x42u8; 32])),
        ("VAPID_SUBJECT", "mailto:ops@crawbl.example".to_owned()),
    ]);
    let mut config = from(&variables).expect("config");
    config.extra_root_certificates = vec![ca.der.clone()];
    let providers = Providers::new(config).expect("providers");
    let notification = Notification::new("Assistant", "Hello");

    assert!(!providers.is_enabled(Platform::Fcm) && !providers.is_enabled(Platform::Apns));
    assert_eq!(
        providers
            .send(&Target::Fcm { token: "t".into() }, &notification)
            .await,
        Outcome::Rejected("fcm push is off".into())
    );
    assert_eq!(
        providers
            .send(
                &Target::Apns {
                    token: apns_device_token(1)
                },
                &notification
            )
            .await,
        Outcome::Rejected("apns push is off".into())
    );
    let target = Target::WebPush {
        subscription: subscription(push_service.subscribe()),
    };
    assert_eq!(providers.send(&target, &notification).await, Outcome::Sent);
}

#[test]
fn no_variables_leave_every_provider_off() {
    let providers = Providers::new(from(&HashMap::new()).expect("config")).expect("providers");
    for platform in Platform::ALL {
        assert!(!providers.is_enabled(platform));
    }
    assert_eq!(providers.vapid_public_key(), None);
}

#[test]
fn a_key_file_that_is_not_an_ec_key_names_its_variable() {
    let files = TempDir::new("bad-key");
    let variables = HashMap::from([
        (
            "APNS_KEY_FILE",
            files.write(
                "AuthKey.p8",
                crate::support::fake_fcm::TEST_SERVICE_ACCOUNT_KEY,
            ),
        ),
        ("APNS_KEY_ID", "ABC123DEFG".to_owned()),
        ("APNS_TEAM_ID", "DEF123GHIJ".to_owned()),
        ("APNS_TOPIC", TOPIC.to_owned()),
    ]);
    let error = format!("{:#}", from(&variables).expect_err("an RSA key"));
    assert!(error.contains("APNS_KEY_FILE"), "{error}");
    assert!(!error.contains("BEGIN"), "{error}");
}
