use std::time::Duration;

use crawbl_push::providers::webpush::{DEFAULT_TTL, MAX_PLAINTEXT};
use crawbl_push::{
    Notification, Outcome, Platform, Target, TargetInput, Urgency, ValidationOptions,
    validate_target,
};
use serde_json::json;

use crate::helpers::{
    VAPID_SUBJECT, subscription, tls_trusting, tls_without_test_ca, webpush_sender,
};
use crate::support::fake_webpush::{Answer, FakePushService};
use crate::support::tls::TestCa;

fn reply() -> Notification {
    Notification::new("Assistant", "Done: the report is ready ✓")
        .with_data("conversationId", "c-3")
        .with_data("messageId", "m-3")
}

#[tokio::test]
async fn a_notification_reaches_the_push_service_encrypted_and_vapid_signed() {
    let ca = TestCa::new();
    let service = FakePushService::start(&ca).await;
    let sender = webpush_sender(&tls_trusting(&ca));
    let subscription = subscription(service.subscribe());

    assert_eq!(sender.send(&subscription, &reply()).await, Outcome::Sent);

    assert_eq!(service.refusals(), Vec::<String>::new());
    let delivered = service.delivered();
    assert_eq!(delivered.len(), 1);
    let message = &delivered[0];
    assert_eq!(
        message.json(),
        json!({"title": "Assistant", "body": "Done: the report is ready ✓",
               "data": {"conversationId": "c-3", "messageId": "m-3"}})
    );
    assert_eq!(message.ttl, DEFAULT_TTL.as_secs());
    assert_eq!(message.urgency, None);
    assert_eq!(message.topic, None);
    assert_eq!(message.vapid_key, sender.public_key());
    assert_eq!(message.vapid_claims["sub"], VAPID_SUBJECT);
    assert_eq!(message.vapid_claims["aud"], service.origin.as_str());
}

#[tokio::test]
async fn ttl_urgency_and_collapse_key_become_web_push_headers() {
    let ca = TestCa::new();
    let service = FakePushService::start(&ca).await;
    let sender = webpush_sender(&tls_trusting(&ca));
    let subscription = subscription(service.subscribe());
    let mut notification = reply();
    notification.ttl = Some(Duration::from_secs(120));
    notification.urgency = Urgency::High;
    notification.collapse_key = Some("conversation:0194f1c2-7d7e".into());

    assert_eq!(
        sender.send(&subscription, &notification).await,
        Outcome::Sent
    );

    let message = &service.delivered()[0];
    assert_eq!(message.ttl, 120);
    assert_eq!(message.urgency.as_deref(), Some("high"));
    // Not base64url, so a digest of it (the service checks the alphabet and length).
    assert_eq!(message.topic.as_ref().map(String::len), Some(32));
    assert_eq!(message.json()["tag"], "conversation:0194f1c2-7d7e");
}

#[tokio::test]
async fn each_message_is_encrypted_afresh() {
    let ca = TestCa::new();
    let service = FakePushService::start(&ca).await;
    let sender = webpush_sender(&tls_trusting(&ca));
    let first = subscription(service.subscribe());
    let second = subscription(service.subscribe());

    for target in [&first, &second, &first] {
        assert_eq!(sender.send(target, &reply()).await, Outcome::Sent);
    }
    let delivered = service.delivered();
    let ids: Vec<usize> = delivered.iter().map(|m| m.subscription_id).collect();
    assert_eq!(ids, vec![1, 2, 1]);
    assert!(delivered.iter().all(|m| m.json()["title"] == "Assistant"));
}

#[tokio::test]
async fn push_service_answers_become_the_documented_outcomes() {
    let ca = TestCa::new();
    let service = FakePushService::start(&ca).await;
    let sender = webpush_sender(&tls_trusting(&ca));
    let subscription = subscription(service.subscribe());
    let cases = [
        (Answer::status(410), Outcome::InvalidToken),
        (Answer::status(404), Outcome::InvalidToken),
        (
            Answer::status(429).with_retry_after(45),
            Outcome::Retry {
                after: Some(Duration::from_secs(45)),
            },
        ),
        (Answer::status(503), Outcome::Retry { after: None }),
        (Answer::status(500), Outcome::Retry { after: None }),
    ];
    for (answer, expected) in cases {
        let status = answer.status;
        service.script([answer]);
        assert_eq!(
            sender.send(&subscription, &reply()).await,
            expected,
            "{status}"
        );
    }
    for status in [413, 400, 403] {
        service.script([Answer::status(status)]);
        let outcome = sender.send(&subscription, &reply()).await;
        assert!(
            matches!(outcome, Outcome::Rejected(_)),
            "{status}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn a_subscription_the_service_does_not_know_is_invalid() {
    let ca = TestCa::new();
    let service = FakePushService::start(&ca).await;
    let sender = webpush_sender(&tls_trusting(&ca));
    let mut gone = service.subscribe();
    gone["endpoint"] = json!(format!("{}/push/999", service.origin));

    assert_eq!(
        sender.send(&subscription(gone), &reply()).await,
        Outcome::InvalidToken
    );
}

#[tokio::test]
async fn a_body_too_long_for_one_message_is_shortened_to_fit() {
    let ca = TestCa::new();
    let service = FakePushService::start(&ca).await;
    let sender = webpush_sender(&tls_trusting(&ca));
    let subscription = subscription(service.subscribe());
    let notification = Notification::new("Assistant", "ü".repeat(5000));

    assert_eq!(
        sender.send(&subscription, &notification).await,
        Outcome::Sent
    );

    let message = &service.delivered()[0];
    assert!(message.plaintext.len() <= MAX_PLAINTEXT);
    let body = message.json()["body"].as_str().expect("body").to_owned();
    assert!(body.ends_with('…') && body.len() > 3000, "{}", body.len());
}

#[tokio::test]
async fn web_push_over_https_is_refused_without_the_test_ca() {
    let ca = TestCa::new();
    let service = FakePushService::start(&ca).await;
    let sender = webpush_sender(&tls_without_test_ca());

    assert_eq!(
        sender
            .send(&subscription(service.subscribe()), &reply())
            .await,
        Outcome::Retry { after: None }
    );
    assert!(service.received().is_empty());
}

#[tokio::test]
async fn a_browser_subscription_validated_for_tests_is_delivered_over_loopback_http() {
    let service = FakePushService::start_plain().await;
    let input: TargetInput = serde_json::from_value(service.subscribe()).expect("input");

    assert_eq!(
        validate_target("webpush", &input, ValidationOptions::default())
            .expect_err("loopback refused by default")
            .code(),
        "INVALID_SUBSCRIPTION"
    );
    let target = validate_target(
        "webpush",
        &input,
        ValidationOptions {
            allow_loopback_http: true,
        },
    )
    .expect("allowed for tests");
    assert_eq!(target.platform(), Platform::WebPush);
    let Target::WebPush { subscription } = &target else {
        panic!("a web push target");
    };

    let sender = webpush_sender(&tls_without_test_ca());
    assert_eq!(sender.send(subscription, &reply()).await, Outcome::Sent);
    assert_eq!(service.delivered()[0].json()["title"], "Assistant");
}
