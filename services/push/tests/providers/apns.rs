use std::time::Duration;

use crawbl_push::{Notification, Outcome};
use serde_json::json;

use crate::helpers::{
    TOPIC, apns_config, apns_device_token, apns_sender, eventually, tls_trusting,
    tls_without_test_ca,
};
use crate::support::fake_apns::{Answer, FakeApns, TeamKey};
use crate::support::tls::TestCa;

fn reply() -> Notification {
    Notification::new("Researcher", "I found three sources")
        .with_data("conversationId", "c-2")
        .with_data("messageId", "m-2")
}

async fn fake() -> (TestCa, TeamKey, FakeApns) {
    let ca = TestCa::new();
    let key = TeamKey::generate();
    let fake = FakeApns::start(&ca, &key, TOPIC).await;
    (ca, key, fake)
}

#[tokio::test]
async fn a_notification_reaches_apns_over_http2_with_a_verified_provider_token() {
    let (ca, key, fake) = fake().await;
    let sender = apns_sender(&fake, &key, &tls_trusting(&ca));
    let token = apns_device_token(0xab);

    assert_eq!(sender.send(&token, &reply()).await, Outcome::Sent);

    assert_eq!(fake.refusals(), Vec::<String>::new());
    let delivered = fake.delivered();
    assert_eq!(delivered.len(), 1);
    let delivery = &delivered[0];
    assert_eq!(delivery.device_token, token);
    assert_eq!(
        delivery.payload,
        json!({
            "aps": {"alert": {"title": "Researcher", "body": "I found three sources"}, "sound": "default"},
            "conversationId": "c-2",
            "messageId": "m-2",
        })
    );
    let header = |name: &str| delivery.headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(header("apns-topic"), Some(TOPIC));
    assert_eq!(header("apns-push-type"), Some("alert"));
    assert_eq!(header("apns-priority"), Some("10"));
    assert_eq!(header("apns-collapse-id"), None);
    assert_eq!(header("apns-expiration"), None);
}

#[tokio::test]
async fn collapse_key_and_ttl_become_apns_headers() {
    let (ca, key, fake) = fake().await;
    let sender = apns_sender(&fake, &key, &tls_trusting(&ca));
    let mut notification = reply();
    notification.collapse_key = Some("c-2".into());
    notification.ttl = Some(Duration::from_secs(3600));

    assert_eq!(
        sender.send(&apns_device_token(1), &notification).await,
        Outcome::Sent
    );

    let delivery = &fake.delivered()[0];
    let header = |name: &str| delivery.headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(header("apns-collapse-id"), Some("c-2"));
    let expiration: u64 = header("apns-expiration")
        .expect("expiration")
        .parse()
        .expect("number");
    assert!(expiration >= crate::support::jws::now() + 3590);
}

#[tokio::test]
async fn one_provider_token_serves_every_send() {
    let (ca, key, fake) = fake().await;
    let sender = apns_sender(&fake, &key, &tls_trusting(&ca));
    let notification = reply();

    let sends = (0..4u8).map(|seed| {
        let token = apns_device_token(seed);
        let notification = &notification;
        let sender = &sender;
        async move { sender.send(&token, notification).await }
    });
    let outcomes = futures::future::join_all(sends).await;
    assert!(
        outcomes.iter().all(|outcome| *outcome == Outcome::Sent),
        "{outcomes:?}"
    );

    let attempts = fake.attempts();
    assert_eq!(attempts.len(), 4);
    assert!(
        attempts
            .iter()
            .all(|a| a.provider_token == attempts[0].provider_token)
    );
}

#[tokio::test]
async fn an_expired_provider_token_is_replaced_and_the_send_tried_once_more() {
    let (ca, key, fake) = fake().await;
    let sender = apns_sender(&fake, &key, &tls_trusting(&ca));
    let token = apns_device_token(7);

    fake.script([Answer::new(403, "ExpiredProviderToken")]);
    assert_eq!(sender.send(&token, &reply()).await, Outcome::Sent);
    assert_eq!(sender.send(&token, &reply()).await, Outcome::Sent);

    let attempts = fake.attempts();
    assert_eq!(attempts.len(), 3);
    assert_ne!(attempts[0].provider_token, attempts[1].provider_token);
    // The new token is the one kept.
    assert_eq!(attempts[1].provider_token, attempts[2].provider_token);

    fake.script([
        Answer::new(403, "ExpiredProviderToken"),
        Answer::new(403, "ExpiredProviderToken"),
    ]);
    let outcome = sender.send(&token, &reply()).await;
    assert!(matches!(outcome, Outcome::Rejected(_)), "{outcome:?}");
    assert_eq!(fake.attempts().len(), 5);
}

#[tokio::test]
async fn apns_errors_become_the_documented_outcomes() {
    let (ca, key, fake) = fake().await;
    let sender = apns_sender(&fake, &key, &tls_trusting(&ca));
    let token = apns_device_token(9);
    let cases = [
        (Answer::unregistered(), Outcome::InvalidToken),
        (Answer::new(400, "BadDeviceToken"), Outcome::InvalidToken),
        (
            Answer::new(400, "DeviceTokenNotForTopic"),
            Outcome::InvalidToken,
        ),
        (
            Answer::too_many_requests(Some(12)),
            Outcome::Retry {
                after: Some(Duration::from_secs(12)),
            },
        ),
        (
            Answer::too_many_requests(None),
            Outcome::Retry { after: None },
        ),
        (
            Answer::new(500, "InternalServerError"),
            Outcome::Retry { after: None },
        ),
        (
            Answer::new(503, "ServiceUnavailable"),
            Outcome::Retry { after: None },
        ),
    ];
    for (answer, expected) in cases {
        let reason = answer.reason;
        fake.script([answer]);
        assert_eq!(sender.send(&token, &reply()).await, expected, "{reason}");
    }
    for reason in ["BadCollapseId", "TopicDisallowed", "BadExpirationDate"] {
        fake.script([Answer::new(400, reason)]);
        let outcome = sender.send(&token, &reply()).await;
        assert!(
            matches!(&outcome, Outcome::Rejected(text) if text.contains(reason)),
            "{reason}: {outcome:?}"
        );
    }
    fake.script([Answer::new(413, "PayloadTooLarge")]);
    assert!(matches!(
        sender.send(&token, &reply()).await,
        Outcome::Rejected(_)
    ));
}

#[tokio::test]
async fn a_token_signed_with_another_key_is_refused_by_apns_and_rejected() {
    let (ca, key, fake) = fake().await;
    let mut other = TeamKey::generate();
    other.key_id = key.key_id.clone();
    other.team_id = key.team_id.clone();
    let sender = apns_sender(&fake, &other, &tls_trusting(&ca));

    let outcome = sender.send(&apns_device_token(3), &reply()).await;

    assert!(matches!(outcome, Outcome::Rejected(_)), "{outcome:?}");
    assert_eq!(
        fake.refusals(),
        vec!["InvalidProviderToken: the ES256 signature does not verify"]
    );
}

#[tokio::test]
async fn a_device_token_that_is_not_hex_is_invalid_without_a_request() {
    let (ca, key, fake) = fake().await;
    let sender = apns_sender(&fake, &key, &tls_trusting(&ca));

    for token in ["", "../../3/device/x", "zz"] {
        assert_eq!(sender.send(token, &reply()).await, Outcome::InvalidToken);
    }
    assert!(fake.attempts().is_empty() && fake.refusals().is_empty());
}

#[tokio::test]
async fn apns_refuses_http1_and_clients_without_the_test_ca() {
    let (ca, key, fake) = fake().await;

    // A client that offers only HTTP/1.1 does not get through the handshake.
    let mut http1 = tls_trusting_alpn(&ca, b"http/1.1");
    http1.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client = reqwest::Client::builder()
        .http1_only()
        .tls_backend_preconfigured(http1)
        .build()
        .expect("client");
    let url = format!("{}/3/device/{}", fake.endpoint, apns_device_token(1));
    assert!(client.post(&url).body("{}").send().await.is_err());
    // Nor one that negotiates no protocol at all.
    let client = reqwest::Client::builder()
        .http1_only()
        .tls_backend_preconfigured(tls_trusting(&ca))
        .build()
        .expect("client");
    assert!(client.post(&url).body("{}").send().await.is_err());
    assert!(eventually(|| fake.refused_connections() == 2).await);

    let sender = crawbl_push::ApnsSender::new(apns_config(&fake, &key), &tls_without_test_ca())
        .expect("sender");
    assert_eq!(
        sender.send(&apns_device_token(1), &reply()).await,
        Outcome::Retry { after: None }
    );
    assert!(eventually(|| fake.refused_connections() == 3).await);
    assert!(fake.attempts().is_empty());
}

fn tls_trusting_alpn(ca: &TestCa, protocol: &[u8]) -> rustls::ClientConfig {
    let mut tls = tls_trusting(ca);
    tls.alpn_protocols = vec![protocol.to_vec()];
    tls
}
