//! Rate limits of the edge: sends per user (429 with `Retry-After`), failed handshakes per client
//! address (`connect_error`), and that neither touches anyone else.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crawbl_loadtest::sio::{self, ConnectOutcome};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::api::Api;
use crate::support::{Options, Stack};

fn limited(env: &[(&'static str, &str)]) -> Options {
    Options {
        env: env
            .iter()
            .map(|(key, value)| (*key, (*value).to_owned()))
            .collect(),
        ..Options::default()
    }
}

#[tokio::test]
async fn sends_past_a_users_limit_get_429_with_retry_after_and_other_users_send_on() {
    let stack = Stack::embedded_with(limited(&[
        ("SEND_LIMIT_PER_SECOND", "1"),
        ("SEND_LIMIT_BURST", "3"),
    ]))
    .await;
    let api = Api::new(stack.edge(0));
    let (greedy, other) = (api.sign_up().await, api.sign_up().await);
    let conversation = api.create_conversation(&greedy).await;
    let path = format!(
        "{}/v1/workspaces/{}/conversations/{conversation}/messages",
        api.base, greedy.workspace_id
    );
    let http = crawbl_loadtest::rest::http_client();
    let send = |local_id: String| {
        http.post(&path)
            .header("x-token", &greedy.token)
            .json(&json!({"localId": local_id, "content": {"type": "text", "text": "hi"}}))
            .send()
    };

    for index in 0..3 {
        let response = send(format!("ok-{index}")).await.expect("send");
        assert_eq!(response.status(), StatusCode::CREATED, "within the burst");
    }
    let refused = send("over".to_owned()).await.expect("send");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let body: serde_json::Value = refused.json().await.expect("json body");
    assert_eq!(body["error"]["code"], "RATE_LIMITED", "{body}");
    // Refused sends were not stored.
    let stored = api.all_messages(&greedy, &conversation, 100).await;
    assert!(
        stored.iter().all(|message| message["localId"] != "over"),
        "a refused send was stored"
    );

    let elsewhere = api.create_conversation(&other).await;
    let (status, body) = api.send(&other, &elsewhere, "theirs", "hello").await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "another user is not limited: {body}"
    );

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let again = send("over".to_owned()).await.expect("send");
    assert_eq!(
        again.status(),
        StatusCode::CREATED,
        "allowed again after Retry-After"
    );
}

#[tokio::test]
async fn a_flood_of_bad_handshakes_from_one_address_is_refused_before_any_token_check_and_others_connect()
 {
    let stack = Stack::embedded_with(limited(&[
        ("FAILED_HANDSHAKE_LIMIT_PER_SECOND", "0.05"),
        ("FAILED_HANDSHAKE_LIMIT_BURST", "5"),
    ]))
    .await;
    let edge = stack.edge(0);
    let api = Api::new(edge);
    let user = api.sign_up().await;
    let flooder = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let bystander = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let handshake = |source: IpAddr, token: String| async move {
        let headers = [("x-token", token.as_str())];
        sio::connect_from(Some(source), edge, &headers, None)
            .await
            .expect("the edge answers every handshake")
    };

    let mut messages = Vec::new();
    for attempt in 0..200 {
        match handshake(flooder, format!("not-a-token-{attempt}")).await {
            ConnectOutcome::Refused(message) => messages.push(message),
            ConnectOutcome::Connected(_) => panic!("a bad token connected"),
        }
    }
    let token_checked = messages
        .iter()
        .filter(|message| message.contains("invalid or revoked token"))
        .count();
    let limited = messages
        .iter()
        .filter(|message| message.contains("too many failed handshakes"))
        .count();
    assert_eq!(
        token_checked, 5,
        "the burst is checked, the rest refused: {messages:?}"
    );
    assert_eq!(limited, 195);

    // The flooded address waits, even with a good token; every other address is unaffected.
    match handshake(flooder, user.token.clone()).await {
        ConnectOutcome::Refused(message) => assert!(message.contains("retry in"), "{message}"),
        ConnectOutcome::Connected(_) => panic!("the flooded address connected at once"),
    }
    assert!(matches!(
        handshake(bystander, user.token.clone()).await,
        ConnectOutcome::Connected(_)
    ));
    let (status, _) = api.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    // Good handshakes never count: many from one address all connect.
    let mut open = Vec::new();
    for _ in 0..30 {
        match handshake(bystander, user.token.clone()).await {
            ConnectOutcome::Connected(client) => open.push(client),
            ConnectOutcome::Refused(message) => panic!("a good handshake was refused: {message}"),
        }
    }
}
