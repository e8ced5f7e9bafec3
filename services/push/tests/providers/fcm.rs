use std::time::Duration;

use crawbl_push::{Notification, Outcome, ServiceAccount, Urgency};
use serde_json::json;

use crate::helpers::{eventually, fcm_config, fcm_sender, tls_trusting, tls_without_test_ca};
use crate::support::fake_fcm::{Answer, CLIENT_EMAIL, FakeFcm};
use crate::support::tls::TestCa;

const TOKEN: &str = "dQw4w9WgXcQ:APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ";

fn reply() -> Notification {
    Notification::new("Assistant", "Here is the summary you asked for")
        .with_data("conversationId", "c-1")
        .with_data("messageId", "m-1")
}

#[tokio::test]
async fn a_notification_reaches_fcm_with_its_title_body_and_data() {
    let ca = TestCa::new();
    let fake = FakeFcm::start(&ca).await;
    let sender = fcm_sender(&fake, &tls_trusting(&ca));

    assert_eq!(sender.send(TOKEN, &reply()).await, Outcome::Sent);

    assert_eq!(fake.refusals(), Vec::<String>::new());
    assert_eq!(
        fake.delivered(),
        vec![json!({
            "token": TOKEN,
            "notification": {"title": "Assistant", "body": "Here is the summary you asked for"},
            "data": {"conversationId": "c-1", "messageId": "m-1"},
        })]
    );
}

#[tokio::test]
async fn collapse_key_ttl_and_urgency_reach_the_android_and_apns_options() {
    let ca = TestCa::new();
    let fake = FakeFcm::start(&ca).await;
    let sender = fcm_sender(&fake, &tls_trusting(&ca));
    let mut notification = reply();
    notification.collapse_key = Some("c-1".into());
    notification.ttl = Some(Duration::from_secs(600));
    notification.urgency = Urgency::High;

    assert_eq!(sender.send(TOKEN, &notification).await, Outcome::Sent);

    let message = &fake.delivered()[0];
    assert_eq!(
        message["android"],
        json!({"collapse_key": "c-1", "ttl": "600s", "priority": "HIGH"})
    );
    assert_eq!(message["apns"]["headers"]["apns-collapse-id"], "c-1");
    let expiration: u64 = message["apns"]["headers"]["apns-expiration"]
        .as_str()
        .expect("a string")
        .parse()
        .expect("unix time");
    assert!(expiration > crate::support::jws::now() + 590);
}

#[tokio::test]
async fn one_access_token_serves_many_sends_even_at_once() {
    let ca = TestCa::new();
    let fake = FakeFcm::start(&ca).await;
    let sender = fcm_sender(&fake, &tls_trusting(&ca));

    let notification = reply();
    let sends = (0..5).map(|_| sender.send(TOKEN, &notification));
    let outcomes = futures::future::join_all(sends).await;
    assert!(
        outcomes.iter().all(|outcome| *outcome == Outcome::Sent),
        "{outcomes:?}"
    );
    assert_eq!(sender.send(TOKEN, &notification).await, Outcome::Sent);

    assert_eq!(fake.token_requests(), 1);
    let attempts = fake.attempts();
    assert_eq!(attempts.len(), 6);
    assert!(
        attempts
            .iter()
            .all(|attempt| attempt.access_token == attempts[0].access_token)
    );
}

#[tokio::test]
async fn an_access_token_is_replaced_before_it_expires() {
    let ca = TestCa::new();
    let fake = FakeFcm::start(&ca).await;
    // The sender replaces a token at half its life when that is under a minute: here after 1 s.
    fake.set_expires_in(2);
    let sender = fcm_sender(&fake, &tls_trusting(&ca));

    assert_eq!(sender.send(TOKEN, &reply()).await, Outcome::Sent);
    assert_eq!(sender.send(TOKEN, &reply()).await, Outcome::Sent);
    assert_eq!(fake.token_requests(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(sender.send(TOKEN, &reply()).await, Outcome::Sent);

    assert_eq!(fake.token_requests(), 2);
    // No request ever went out with an expired token.
    assert_eq!(fake.refusals(), Vec::<String>::new());
    let tokens: Vec<String> = fake
        .attempts()
        .into_iter()
        .map(|a| a.access_token)
        .collect();
    assert_eq!(tokens[0], tokens[1]);
    assert_ne!(tokens[1], tokens[2]);
}

#[tokio::test]
async fn a_401_gets_a_new_access_token_and_one_more_try() {
    let ca = TestCa::new();
    let fake = FakeFcm::start(&ca).await;
    let sender = fcm_sender(&fake, &tls_trusting(&ca));

    fake.script([Answer::unauthenticated()]);
    assert_eq!(sender.send(TOKEN, &reply()).await, Outcome::Sent);
    let attempts = fake.attempts();
    assert_eq!(attempts.len(), 2);
    assert_eq!((attempts[0].status, attempts[1].status), (401, 200));
    assert_ne!(attempts[0].access_token, attempts[1].access_token);
    assert_eq!(fake.token_requests(), 2);

    // Twice in a row: given up after the one retry, not looped.
    fake.script([Answer::unauthenticated(), Answer::unauthenticated()]);
    let outcome = sender.send(TOKEN, &reply()).await;
    assert!(matches!(outcome, Outcome::Rejected(_)), "{outcome:?}");
    assert_eq!(fake.attempts().len(), 4);
    assert_eq!(fake.token_requests(), 3);
}

#[tokio::test]
async fn fcm_errors_become_the_documented_outcomes() {
    let ca = TestCa::new();
    let fake = FakeFcm::start(&ca).await;
    let sender = fcm_sender(&fake, &tls_trusting(&ca));
    let cases = [
        (Answer::unregistered(), Outcome::InvalidToken),
        (Answer::invalid_token(), Outcome::InvalidToken),
        (
            Answer::quota_exceeded(30),
            Outcome::Retry {
                after: Some(Duration::from_secs(30)),
            },
        ),
        (Answer::unavailable(), Outcome::Retry { after: None }),
        (Answer::internal(), Outcome::Retry { after: None }),
    ];
    for (answer, expected) in cases {
        let status = answer.status;
        fake.script([answer]);
        assert_eq!(sender.send(TOKEN, &reply()).await, expected, "{status}");
    }
    fake.script([Answer::invalid_payload()]);
    let outcome = sender.send(TOKEN, &reply()).await;
    let Outcome::Rejected(reason) = outcome else {
        panic!("a 400 about the payload is not retried: {outcome:?}");
    };
    assert!(reason.contains("INVALID_ARGUMENT"), "{reason}");
    assert_eq!(fake.token_requests(), 1);
}

#[tokio::test]
async fn a_service_account_the_token_endpoint_refuses_rejects_the_send() {
    let ca = TestCa::new();
    let fake = FakeFcm::start(&ca).await;
    let json = fake.service_account_json().replace(
        CLIENT_EMAIL,
        "someone-else@crawbl-test.iam.gserviceaccount.com",
    );
    let account = ServiceAccount::from_json(&json).expect("account");
    let config = crawbl_push::FcmConfig::new(account)
        .with_endpoint(&fake.endpoint)
        .expect("endpoint");
    let sender = crawbl_push::FcmSender::new(config, &tls_trusting(&ca)).expect("sender");

    let outcome = sender.send(TOKEN, &reply()).await;

    assert!(matches!(outcome, Outcome::Rejected(_)), "{outcome:?}");
    assert_eq!(fake.refusals(), vec!["token: iss is not the client email"]);
    assert!(fake.attempts().is_empty());
}

#[tokio::test]
async fn fcm_over_https_is_refused_without_the_test_ca() {
    let ca = TestCa::new();
    let fake = FakeFcm::start(&ca).await;
    let sender =
        crawbl_push::FcmSender::new(fcm_config(&fake), &tls_without_test_ca()).expect("sender");

    assert_eq!(
        sender.send(TOKEN, &reply()).await,
        Outcome::Retry { after: None }
    );
    assert_eq!(fake.token_requests(), 0);
    assert!(eventually(|| fake.failed_handshakes() >= 1).await);
}

#[tokio::test]
async fn a_body_too_long_for_fcm_is_shortened_and_still_sent() {
    let ca = TestCa::new();
    let fake = FakeFcm::start(&ca).await;
    let sender = fcm_sender(&fake, &tls_trusting(&ca));
    let notification = Notification::new("Assistant", "word ".repeat(2000));

    assert_eq!(sender.send(TOKEN, &notification).await, Outcome::Sent);

    let body = fake.delivered()[0]["notification"]["body"]
        .as_str()
        .expect("body")
        .to_owned();
    assert!(body.len() < 4096 && body.ends_with('…'), "{}", body.len());
}
