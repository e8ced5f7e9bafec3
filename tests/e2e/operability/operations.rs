//! The operations view's API (issue 20): every edge node with its sockets, the workspace's
//! runtime, its event and turn counts and its latest turn failures, for owners and admins only;
//! and cross-origin access (`ALLOWED_ORIGINS`) on REST and Socket.IO long-polling.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::api::{Api, User, socket, unique_email};
use crate::support::{Options, Stack};

const WAIT: Duration = Duration::from_secs(30);

fn operations_path(user: &User) -> String {
    format!("/v1/workspaces/{}/operations", user.workspace_id)
}

/// The sockets each node of `view` reports, by node id.
fn sockets_by_node(view: &Value) -> Vec<(String, u64, bool)> {
    view["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|node| {
                    (
                        node["id"].as_str().unwrap_or_default().to_owned(),
                        node["sockets"].as_u64().unwrap_or_default(),
                        node["current"].as_bool().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Polls the view on `api` until `done` holds, or panics with the last view.
async fn view_until(api: &Api, user: &User, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = api.get(&operations_path(user), Some(&user.token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let view = body["data"].clone();
        if done(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "the view never got there: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Two edges sharing Redis: each lists both with their own sockets, a killed one drops out within
/// the presence TTL, and the workspace's turns, events and failures are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_see_every_node_the_runtime_rates_and_why_turns_failed() {
    let mut stack = Stack::separate_processes_with(2, &[("PRESENCE_TTL_MS", "900")]).await;
    let (first, second) = (Api::new(stack.edge(0)), Api::new(stack.edge(1)));
    let owner = first.sign_up().await;
    let conversation = first.create_conversation(&owner).await;

    // Members are told it is for owners and admins; bad windows are refused.
    let member_email = unique_email();
    let member = first.sign_up_as(&member_email).await;
    first.add_member(&owner, &member_email, "member").await;
    let member = User {
        workspace_id: owner.workspace_id.clone(),
        ..member
    };
    let (status, body) = first
        .get(&operations_path(&member), Some(&member.token))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "ADMIN_REQUIRED");
    for window in ["0", "86401", "-1", "soon"] {
        let path = format!("{}?windowSeconds={window}", operations_path(&owner));
        let (status, body) = first.get(&path, Some(&owner.token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{window}: {body}");
    }

    // Two sockets on the first node, one on the second: each node answers for both.
    let _sockets = [
        socket(stack.edge(0), &owner).await,
        socket(stack.edge(0), &owner).await,
        socket(stack.edge(1), &owner).await,
    ];
    let from_first = view_until(&first, &owner, |view| sockets_by_node(view).len() >= 2).await;
    let mine = sockets_by_node(&from_first);
    let first_id = mine
        .iter()
        .find(|(_, _, current)| *current)
        .expect("current")
        .0
        .clone();
    assert_eq!(mine.iter().filter(|(_, _, current)| *current).count(), 1);
    let from_second = view_until(&second, &owner, |view| {
        sockets_by_node(view)
            .iter()
            .any(|(id, sockets, _)| *id == first_id && *sockets == 2)
    })
    .await;
    let second_id = sockets_by_node(&from_second)
        .into_iter()
        .find(|(_, _, current)| *current)
        .map(|(id, sockets, _)| {
            assert_eq!(sockets, 1);
            id
        })
        .expect("current");
    view_until(&first, &owner, |view| {
        sockets_by_node(view)
            .iter()
            .any(|(id, sockets, _)| *id == second_id && *sockets == 1)
    })
    .await;

    // One turn answered, one failed: both counted, the failure with its code and reply.
    first
        .send_and_wait(&owner, &conversation, "fine", "hello there")
        .await;
    let failed = first
        .send_and_wait(&owner, &conversation, "broken", "/fail")
        .await;
    let view = view_until(&first, &owner, |view| {
        view["rates"]["turns"] == 2 && !view["recentErrors"][0].is_null()
    })
    .await;
    assert_eq!(view["rates"]["windowSeconds"], 60);
    // Each send: the user message and the reply, new and updated.
    assert!(
        view["rates"]["events"].as_u64().unwrap_or_default() >= 4,
        "{view:#}"
    );
    assert_eq!(
        view["runtimes"][0]["workspaceId"],
        owner.workspace_id.as_str()
    );
    assert_eq!(view["runtimes"][0]["state"], "ready");
    let error = &view["recentErrors"][0];
    assert_eq!(error["code"], "PROVIDER_ERROR", "{view:#}");
    assert_eq!(error["conversationId"], conversation.as_str());
    assert_eq!(error["messageId"], failed["reply"]["id"], "{failed:#}");
    assert!(error["at"].is_string());
    assert_eq!(view["recentErrors"].as_array().map(Vec::len), Some(1));

    // A node that dies (no goodbye) drops out once its report expires.
    stack.kill_edge(1).await;
    view_until(&first, &owner, |view| {
        !sockets_by_node(view)
            .iter()
            .any(|(id, _, _)| *id == second_id)
    })
    .await;
}

/// `ALLOWED_ORIGINS` lets the named web origins call REST and long-polling, and no other; off,
/// no origin gets CORS headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_get_cors_on_rest_and_long_polling_and_others_do_not() {
    let allowed = "https://app.example.com";
    let stack = Stack::embedded_with(Options {
        env: vec![(
            "ALLOWED_ORIGINS",
            format!("{allowed}, http://localhost:3000"),
        )],
        ..Options::default()
    })
    .await;
    let closed = Stack::embedded().await;
    let client = reqwest::Client::new();
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let allow_origin =
        |response: &reqwest::Response| header(response, "access-control-allow-origin");
    let preflight = |base: &str, path: &str, origin: &str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{base}{path}"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };

    for path in ["/v1/auth/sign-in", "/socket.io/?EIO=4&transport=polling"] {
        let response = preflight(stack.edge(0), path, allowed)
            .await
            .expect("preflight");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        assert_eq!(allow_origin(&response).as_deref(), Some(allowed), "{path}");
        let methods = header(&response, "access-control-allow-methods").unwrap_or_default();
        assert!(methods.contains("POST"), "{path}: {methods}");
        let headers = header(&response, "access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            headers.contains("authorization") && headers.contains("x-token"),
            "{headers}"
        );

        let other = preflight(stack.edge(0), path, "https://evil.example.com")
            .await
            .expect("preflight");
        assert_eq!(allow_origin(&other), None, "{path}");
        let off = preflight(closed.edge(0), path, allowed)
            .await
            .expect("preflight");
        assert_eq!(allow_origin(&off), None, "{path}");
    }

    // The real requests: a REST error and a long-polling handshake carry the header.
    let response = client
        .post(format!("{}/v1/auth/sign-in", stack.edge(0)))
        .header("origin", allowed)
        .json(&serde_json::json!({"email": unique_email(), "password": "wrong password"}))
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(allow_origin(&response).as_deref(), Some(allowed));
    let handshake = client
        .get(format!(
            "{}/socket.io/?EIO=4&transport=polling",
            stack.edge(0)
        ))
        .header("origin", allowed)
        .send()
        .await
        .expect("handshake");
    assert_eq!(handshake.status(), StatusCode::OK);
    assert_eq!(allow_origin(&handshake).as_deref(), Some(allowed));
    assert!(
        handshake
            .text()
            .await
            .unwrap_or_default()
            .contains("\"sid\"")
    );
}
