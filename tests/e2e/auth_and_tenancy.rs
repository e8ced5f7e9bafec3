//! Identity and tenancy over the real edge and auth service (issue 3): which tokens are refused
//! on REST and on the Socket.IO handshake, refresh-token reuse, logout and API-key revocation
//! reaching every socket on two edge nodes within a second, workspace isolation and membership,
//! the service credential of internal RPCs, and sign-in rate limits.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use crawbl_infra::jws::SigningKey;
use crawbl_proto::auth::v1::auth_service_client::AuthServiceClient;
use crawbl_proto::auth::v1::{GetSigningKeysRequest, RotateSigningKeyRequest};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection as _;
use tokio::time::Instant;

use crate::support::api::{Api, User};
use crate::support::sio::{self, ServerEvent, SioClient};
use crate::support::{Internals, Stack};

const PASSWORD: &str = "correct horse battery";
/// How soon a revocation must reach every socket.
const AT_ONCE: Duration = Duration::from_secs(1);
const TURN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a socket must stay quiet to show that nothing reaches it.
const QUIET: Duration = Duration::from_millis(700);

/// A signed-up user with everything a session gives.
#[derive(Clone, Debug)]
struct Account {
    email: String,
    access_token: String,
    refresh_token: String,
    user_id: String,
    workspace_id: String,
}

impl Account {
    fn as_user(&self) -> User {
        User {
            token: self.access_token.clone(),
            user_id: self.user_id.clone(),
            workspace_id: self.workspace_id.clone(),
        }
    }
}

/// A REST answer with its headers.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// `method` `path` on `base` with `x-token` (or none), and a JSON body.
async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut request = crawbl_loadtest::rest::http_client().request(method, format!("{base}{path}"));
    if let Some(token) = token {
        request = request.header("x-token", token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(base: &str, path: &str, token: &str) -> Answer {
    call(base, reqwest::Method::GET, path, Some(token), None).await
}

async fn sign_up(base: &str) -> Account {
    let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
    let answer = call(
        base,
        reqwest::Method::POST,
        "/v1/auth/sign-up",
        None,
        Some(json!({"email": email, "password": PASSWORD, "displayName": "Test User"})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    account(email, &answer.body["data"])
}

async fn sign_in(base: &str, email: &str) -> Account {
    let answer = call(
        base,
        reqwest::Method::POST,
        "/v1/auth/sign-in",
        None,
        Some(json!({"email": email, "password": PASSWORD})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    account(email.to_owned(), &answer.body["data"])
}

fn account(email: String, data: &Value) -> Account {
    let text = |value: &Value| value.as_str().expect("a string").to_owned();
    Account {
        email,
        access_token: text(&data["accessToken"]),
        refresh_token: text(&data["refreshToken"]),
        user_id: text(&data["user"]["id"]),
        workspace_id: text(&data["workspaces"][0]["id"]),
    }
}

async fn refresh(base: &str, refresh_token: &str) -> Answer {
    call(
        base,
        reqwest::Method::POST,
        "/v1/auth/refresh",
        None,
        Some(json!({"refreshToken": refresh_token})),
    )
    .await
}

async fn logout(base: &str, token: &str) -> Answer {
    call(
        base,
        reqwest::Method::POST,
        "/v1/auth/logout",
        Some(token),
        None,
    )
    .await
}

async fn connect(base: &str, token: &str) -> SioClient {
    sio::connect(base, &[("x-token", token)], None)
        .await
        .expect("connect")
        .expect_connected()
}

async fn refused(base: &str, token: &str) -> String {
    sio::connect(base, &[("x-token", token)], None)
        .await
        .expect("connect")
        .expect_refused()
}

/// Asserts every socket is disconnected by `deadline`.
async fn assert_all_disconnected(sockets: &mut [SioClient], deadline: Instant, what: &str) {
    for (index, socket) in sockets.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            socket.disconnected_within(left).await,
            "{what}: socket {index} still connected after {AT_ONCE:?}"
        );
    }
}

fn internals(stack: &Stack) -> &Internals {
    stack
        .internals
        .as_ref()
        .expect("a stack of separate processes")
}

/// The key access tokens are signed with now, straight from auth's database, to forge tokens.
async fn signing_key(internals: &Internals) -> SigningKey {
    let mut connection = sqlx::PgConnection::connect(&internals.database_url)
        .await
        .expect("connect to the stack's database");
    let (kid, seed): (String, String) = sqlx::query_as(
        "SELECT kid, seed FROM signing_keys ORDER BY created_at DESC, kid DESC LIMIT 1",
    )
    .fetch_one(&mut connection)
    .await
    .expect("a signing key");
    let seed: [u8; 32] = STANDARD
        .decode(seed)
        .expect("base64")
        .try_into()
        .expect("32 bytes");
    SigningKey::from_seed(kid, &seed)
}

/// The claims of a (genuine) token, unverified.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
}

/// A gRPC client of auth carrying the stack's service credential.
fn auth_client(internals: &Internals) -> AuthServiceClient<crawbl_infra::grpc::Channel> {
    let token =
        crawbl_infra::grpc::ServiceToken::new(&internals.service_token).expect("a valid token");
    AuthServiceClient::new(
        crawbl_infra::grpc::channel_with_token(&internals.auth_url, token).expect("channel"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tampered_forged_revoked_and_wrong_audience_tokens_are_refused_on_rest_and_on_the_handshake()
 {
    let stack = Stack::separate_processes(1).await;
    let edge = stack.edge(0);
    let alice = sign_up(edge).await;
    let key = signing_key(internals(&stack)).await;
    let genuine = claims_of(&alice.access_token);
    let now = chrono::Utc::now().timestamp();
    let with = |changes: Value| {
        let mut claims = genuine.clone();
        for (field, value) in changes.as_object().expect("an object") {
            claims[field] = value.clone();
        }
        claims
    };

    // The forging is sound: the same claims signed again with the real key are accepted.
    let reissued = key.sign(&genuine).expect("sign");
    assert_eq!(
        get(edge, "/v1/workspaces", &reissued).await.status,
        StatusCode::OK
    );
    connect(edge, &reissued).await;

    let parts: Vec<&str> = alice.access_token.split('.').collect();
    let other_user_claims =
        URL_SAFE_NO_PAD.encode(with(json!({"sub": "someone-else"})).to_string());
    let none_header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": key.kid()}).to_string());
    let mut cases: Vec<(&str, String)> = vec![
        (
            "expired",
            key.sign(&with(json!({"exp": now - 1}))).expect("sign"),
        ),
        (
            "wrong audience",
            key.sign(&with(json!({"aud": "crawbl-admin"})))
                .expect("sign"),
        ),
        (
            "wrong issuer",
            key.sign(&with(json!({"iss": "evil"}))).expect("sign"),
        ),
        (
            "tampered claims",
            format!("{}.{other_user_claims}.{}", parts[0], parts[2]),
        ),
        ("tampered signature", {
            let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("base64");
            signature[7] ^= 0x20;
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                URL_SAFE_NO_PAD.encode(signature)
            )
        }),
        (
            "signed by another key with the same kid",
            SigningKey::generate(key.kid())
                .sign(&genuine)
                .expect("sign"),
        ),
        (
            "unknown key id",
            SigningKey::generate("k-unknown")
                .sign(&genuine)
                .expect("sign"),
        ),
        ("alg none", format!("{none_header}.{}.", parts[1])),
        ("garbage", "not-a-token".to_owned()),
    ];
    // Revoked: a session that logged out.
    let revoked = sign_in(edge, &alice.email).await;
    assert_eq!(
        logout(edge, &revoked.access_token).await.status,
        StatusCode::NO_CONTENT
    );
    cases.push(("revoked", revoked.access_token.clone()));

    for (case, token) in &cases {
        let answer = get(edge, "/v1/workspaces", token).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{case}: {}",
            answer.body
        );
        let expected_code = if *case == "expired" {
            "TOKEN_EXPIRED"
        } else {
            "UNAUTHENTICATED"
        };
        assert_eq!(answer.code(), expected_code, "{case}");
        let message = refused(edge, token).await;
        assert!(
            message.contains("invalid") || message.contains("expired"),
            "{case}: {message}"
        );
    }
    // The genuine token still works after all that.
    assert_eq!(
        get(edge, "/v1/workspaces", &alice.access_token)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_disconnects_the_sessions_sockets_on_both_edges_within_a_second_and_only_them() {
    let stack = Stack::separate_processes(2).await;
    let (first, second) = (stack.edge(0), stack.edge(1));
    let alice = sign_up(first).await;
    let other_session = sign_in(first, &alice.email).await;

    let mut sockets = vec![
        connect(first, &alice.access_token).await,
        connect(second, &alice.access_token).await,
    ];
    let mut bystander = connect(second, &other_session.access_token).await;
    assert_eq!(
        get(second, "/v1/workspaces", &alice.access_token)
            .await
            .status,
        StatusCode::OK
    );

    let answer = logout(first, &alice.access_token).await;
    let deadline = Instant::now() + AT_ONCE;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);

    assert_all_disconnected(&mut sockets, deadline, "logout").await;
    for edge in [first, second] {
        let answer = get(edge, "/v1/workspaces", &alice.access_token).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{edge}: {}",
            answer.body
        );
        refused(edge, &alice.access_token).await;
    }
    // The session's refresh token is dead too; the user's other session lives on.
    assert_eq!(
        refresh(first, &alice.refresh_token).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        !bystander.disconnected_within(QUIET).await,
        "another session's socket was dropped"
    );
    assert_eq!(
        get(second, "/v1/workspaces", &other_session.access_token)
            .await
            .status,
        StatusCode::OK
    );
    // Logging out needs a credential, and API keys are not sessions.
    let answer = call(first, reqwest::Method::POST, "/v1/auth/logout", None, None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_refresh_token_kills_the_whole_session_everywhere() {
    let stack = Stack::separate_processes(2).await;
    let (first, second) = (stack.edge(0), stack.edge(1));
    let alice = sign_up(first).await;

    let rotated = refresh(second, &alice.refresh_token).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let rotated = account(alice.email.clone(), &rotated.body["data"]);
    assert_ne!(rotated.refresh_token, alice.refresh_token);
    assert_eq!(
        claims_of(&rotated.access_token)["sid"],
        claims_of(&alice.access_token)["sid"]
    );
    let mut sockets = vec![
        connect(first, &rotated.access_token).await,
        connect(second, &alice.access_token).await,
    ];

    // Someone presents the already-exchanged refresh token.
    let reuse = refresh(first, &alice.refresh_token).await;
    let deadline = Instant::now() + AT_ONCE;
    assert_eq!(reuse.status, StatusCode::UNAUTHORIZED, "{}", reuse.body);
    assert_eq!(reuse.code(), "REFRESH_TOKEN_REUSED");

    assert_all_disconnected(&mut sockets, deadline, "refresh token reuse").await;
    for edge in [first, second] {
        for token in [&alice.access_token, &rotated.access_token] {
            let answer = get(edge, "/v1/workspaces", token).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
        }
    }
    let answer = refresh(second, &rotated.refresh_token).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_shown_once_work_like_tokens_and_their_revocation_reaches_every_edge_at_once()
{
    let stack = Stack::separate_processes(2).await;
    let (first, second) = (stack.edge(0), stack.edge(1));
    let alice = sign_up(first).await;
    let mallory = sign_up(first).await;

    let created = call(
        first,
        reqwest::Method::POST,
        "/v1/api-keys",
        Some(&alice.access_token),
        Some(json!({"name": "ci"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let key = created.body["data"]["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let key_id = created.body["data"]["id"].as_str().expect("id").to_owned();
    assert!(key.starts_with("cak_"));

    let listed = get(second, "/v1/api-keys", &alice.access_token).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["data"][0]["id"], key_id.as_str());
    assert!(
        !listed.body.to_string().contains(&key),
        "the key is shown only once"
    );

    // Accepted exactly like an access token: Bearer or X-Token, REST or handshake.
    let bearer = crawbl_loadtest::rest::http_client()
        .get(format!("{second}/v1/workspaces"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("GET");
    assert_eq!(bearer.status(), StatusCode::OK);
    let workspace = get(
        first,
        &format!("/v1/workspaces/{}", alice.workspace_id),
        &key,
    )
    .await;
    assert_eq!(workspace.status, StatusCode::OK, "{}", workspace.body);
    let mut sockets = vec![
        connect(first, &key).await,
        sio::connect(second, &[], Some(json!({"token": key})))
            .await
            .expect("connect")
            .expect_connected(),
    ];
    let mut session_socket = connect(second, &alice.access_token).await;

    // Nobody else can revoke it; API keys cannot log out.
    let theirs = call(
        first,
        reqwest::Method::DELETE,
        &format!("/v1/api-keys/{key_id}"),
        Some(&mallory.access_token),
        None,
    )
    .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert_eq!(
        logout(first, &key).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let revoked = call(
        second,
        reqwest::Method::DELETE,
        &format!("/v1/api-keys/{key_id}"),
        Some(&alice.access_token),
        None,
    )
    .await;
    let deadline = Instant::now() + AT_ONCE;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);
    assert_all_disconnected(&mut sockets, deadline, "key revocation").await;
    for edge in [first, second] {
        let answer = get(edge, "/v1/workspaces", &key).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{edge}: {}",
            answer.body
        );
        refused(edge, &key).await;
    }
    assert!(!session_socket.disconnected_within(QUIET).await);
    let listed = get(first, "/v1/api-keys", &alice.access_token).await;
    assert_eq!(listed.body["data"], json!([]));
}

/// Every workspace-scoped route, as `(method, path)`.
fn workspace_routes(
    workspace_id: &str,
    conversation_id: &str,
    user_id: &str,
) -> Vec<(reqwest::Method, String, Option<Value>)> {
    use reqwest::Method;
    let w = format!("/v1/workspaces/{workspace_id}");
    let c = format!("{w}/conversations/{conversation_id}");
    vec![
        (Method::GET, w.clone(), None),
        (Method::GET, format!("{w}/agents"), None),
        (Method::GET, format!("{w}/conversations"), None),
        (Method::POST, format!("{w}/conversations"), Some(json!({}))),
        (Method::GET, c.clone(), None),
        (Method::DELETE, c.clone(), None),
        (Method::GET, format!("{c}/messages"), None),
        (
            Method::POST,
            format!("{c}/messages"),
            Some(json!({"localId": "x", "content": {"type": "text", "text": "hi"}})),
        ),
        (Method::GET, format!("{w}/events"), None),
        (Method::GET, format!("{w}/members"), None),
        (
            Method::POST,
            format!("{w}/members"),
            Some(json!({"email": "someone@example.com"})),
        ),
        (Method::DELETE, format!("{w}/members/{user_id}"), None),
    ]
}

/// The events of one turn on `socket`, up to the agent going back online.
/// Every event of a turn, up to the usage update that follows the agent's return online.
async fn turn_events(socket: &mut SioClient) -> Vec<ServerEvent> {
    let (mut seen_update, mut online) = (false, false);
    socket
        .events_until(TURN_TIMEOUT, move |event| {
            seen_update |= event.name == "message.updated";
            online |= seen_update
                && event.name == "agent.status"
                && event.payload()["status"] == "online";
            online && event.name == "usage.update"
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_gets_404_on_every_workspace_route_and_joins_no_room() {
    let stack = Stack::separate_processes(2).await;
    let (first, second) = (stack.edge(0), stack.edge(1));
    let owner = sign_up(first).await;
    let stranger = sign_up(second).await;
    let api = Api::new(first);
    let conversation = api.create_conversation(&owner.as_user()).await;

    for edge in [first, second] {
        for (method, path, body) in
            workspace_routes(&owner.workspace_id, &conversation, &owner.user_id)
        {
            let answer = call(
                edge,
                method.clone(),
                &path,
                Some(&stranger.access_token),
                body,
            )
            .await;
            assert_eq!(
                answer.status,
                StatusCode::NOT_FOUND,
                "{method} {path}: {}",
                answer.body
            );
            assert_eq!(answer.code(), "WORKSPACE_NOT_FOUND", "{method} {path}");
        }
    }
    let listed = get(first, "/v1/workspaces", &stranger.access_token).await;
    assert!(!listed.body.to_string().contains(&owner.workspace_id));
    // The conversation survived the stranger's DELETE.
    let kept = get(
        first,
        &format!(
            "/v1/workspaces/{}/conversations/{conversation}",
            owner.workspace_id
        ),
        &owner.access_token,
    )
    .await;
    assert_eq!(kept.status, StatusCode::OK);

    // A handshake naming the workspace is refused; one without joins only the stranger's own.
    let named = sio::connect(
        second,
        &[("x-token", &stranger.access_token)],
        Some(json!({"workspaceId": owner.workspace_id})),
    )
    .await
    .expect("connect")
    .expect_refused();
    assert!(named.contains("workspace not found"), "{named}");
    let mut outsider = connect(second, &stranger.access_token).await;
    let mut member = connect(second, &owner.access_token).await;
    let (status, body) = api
        .send(&owner.as_user(), &conversation, "l1", "hello")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    turn_events(&mut member).await;
    if let Some(event) = outsider.next_event(QUIET).await {
        panic!("a non-member's socket received {event:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_add_and_remove_members_and_removal_takes_effect_at_once_on_every_edge() {
    let stack = Stack::separate_processes(2).await;
    let (first, second) = (stack.edge(0), stack.edge(1));
    let owner = sign_up(first).await;
    let bob = sign_up(second).await;
    let carol = sign_up(second).await;
    let api = Api::new(first);
    let conversation = api.create_conversation(&owner.as_user()).await;
    let members_path = format!("/v1/workspaces/{}/members", owner.workspace_id);
    // Bob is connected (following all his workspaces) before he is added.
    let mut bob_socket = connect(second, &bob.access_token).await;

    let added = call(
        first,
        reqwest::Method::POST,
        &members_path,
        Some(&owner.access_token),
        Some(json!({"email": bob.email.to_uppercase()})),
    )
    .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    assert_eq!(added.body["data"]["user"]["id"], bob.user_id.as_str());
    assert_eq!(added.body["data"]["role"], "member");
    // His socket on the other edge is told, so his app lists the workspace at once.
    let joined = bob_socket
        .events_until(TURN_TIMEOUT, |event| event.name == "workspace.joined")
        .await;
    assert_eq!(joined.len(), 1, "{joined:?}");
    assert_eq!(
        joined[0].payload(),
        &json!({"workspaceId": owner.workspace_id})
    );

    // At once, on the other edge: Bob sees the workspace, and his socket is in its room.
    let workspace = get(
        second,
        &format!("/v1/workspaces/{}", owner.workspace_id),
        &bob.access_token,
    )
    .await;
    assert_eq!(workspace.status, StatusCode::OK, "{}", workspace.body);
    assert_eq!(workspace.body["data"]["role"], "member");
    assert!(workspace.body["data"]["runtime"]["state"].is_string());
    let (status, _) = api.send(&owner.as_user(), &conversation, "l1", "one").await;
    assert_eq!(status, StatusCode::CREATED);
    turn_events(&mut bob_socket).await;

    // A member sees the members but does not manage them.
    let listed = get(second, &members_path, &bob.access_token).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(2));
    let by_member = call(
        second,
        reqwest::Method::POST,
        &members_path,
        Some(&bob.access_token),
        Some(json!({"email": carol.email})),
    )
    .await;
    assert_eq!(
        by_member.status,
        StatusCode::FORBIDDEN,
        "{}",
        by_member.body
    );
    assert_eq!(by_member.code(), "OWNER_REQUIRED");
    let unknown = call(
        first,
        reqwest::Method::POST,
        &members_path,
        Some(&owner.access_token),
        Some(json!({"email": "nobody-here@example.com"})),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.code(), "USER_NOT_FOUND");
    let last_owner = call(
        first,
        reqwest::Method::DELETE,
        &format!("{members_path}/{}", owner.user_id),
        Some(&owner.access_token),
        None,
    )
    .await;
    assert_eq!(last_owner.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(last_owner.code(), "LAST_OWNER");

    // Removal: at once Bob gets 404 on both edges and his socket leaves the room (but stays).
    let removed = call(
        first,
        reqwest::Method::DELETE,
        &format!("{members_path}/{}", bob.user_id),
        Some(&owner.access_token),
        None,
    )
    .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.body);
    for edge in [first, second] {
        let answer = get(
            edge,
            &format!("/v1/workspaces/{}", owner.workspace_id),
            &bob.access_token,
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{edge}: {}",
            answer.body
        );
    }
    let mut owner_socket = connect(first, &owner.access_token).await;
    let (status, _) = api.send(&owner.as_user(), &conversation, "l2", "two").await;
    assert_eq!(status, StatusCode::CREATED);
    turn_events(&mut owner_socket).await;
    let left = bob_socket.next_event(QUIET).await.expect("workspace.left");
    assert_eq!(left.name, "workspace.left");
    assert_eq!(left.payload(), &json!({"workspaceId": owner.workspace_id}));
    if let Some(event) = bob_socket.next_event(QUIET).await {
        panic!("a removed member's socket received {event:?}");
    }
    assert!(
        !bob_socket
            .disconnected_within(Duration::from_millis(100))
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_create_and_list_workspaces_and_edit_their_profile() {
    let stack = Stack::embedded().await;
    let edge = stack.edge(0);
    let alice = sign_up(edge).await;
    let mut socket = connect(edge, &alice.access_token).await;

    let me = get(edge, "/v1/users/me", &alice.access_token).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["data"]["email"], alice.email.as_str());
    let renamed = call(
        edge,
        reqwest::Method::PATCH,
        "/v1/users/me",
        Some(&alice.access_token),
        Some(json!({"displayName": "Alice"})),
    )
    .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["data"]["displayName"], "Alice");
    let blank = call(
        edge,
        reqwest::Method::PATCH,
        "/v1/users/me",
        Some(&alice.access_token),
        Some(json!({"displayName": "  "})),
    )
    .await;
    assert_eq!(blank.status, StatusCode::BAD_REQUEST);

    let created = call(
        edge,
        reqwest::Method::POST,
        "/v1/workspaces",
        Some(&alice.access_token),
        Some(json!({"name": "Research"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let workspace_id = created.body["data"]["id"].as_str().expect("id").to_owned();
    assert_eq!(created.body["data"]["role"], "owner");

    let listed = get(edge, "/v1/workspaces", &alice.access_token).await;
    let ids: Vec<&str> = listed.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|workspace| workspace["id"].as_str())
        .collect();
    assert_eq!(ids, [alice.workspace_id.as_str(), workspace_id.as_str()]);
    let fetched = get(
        edge,
        &format!("/v1/workspaces/{workspace_id}"),
        &alice.access_token,
    )
    .await;
    assert_eq!(fetched.status, StatusCode::OK, "{}", fetched.body);
    assert_eq!(fetched.body["data"]["name"], "Research");
    assert!(fetched.body["data"]["runtime"]["state"].is_string());

    // The new workspace has its agents on first use, and the open socket is in its room.
    let user = User {
        token: alice.access_token.clone(),
        user_id: alice.user_id.clone(),
        workspace_id: workspace_id.clone(),
    };
    let api = Api::new(edge);
    let conversation = api.create_conversation(&user).await;
    let (status, _) = api.send(&user, &conversation, "l1", "hi").await;
    assert_eq!(status, StatusCode::CREATED);
    let events = turn_events(&mut socket).await;
    assert!(events.iter().all(|event| event.name != "message.new"
        || event.payload()["workspaceId"] == workspace_id.as_str()));
    let joined: Vec<_> = events
        .iter()
        .filter(|event| event.name == "workspace.joined")
        .collect();
    assert_eq!(joined.len(), 1, "{events:?}");
    assert_eq!(joined[0].payload()["workspaceId"], workspace_id.as_str());

    // In the embedded stack too, logout disconnects at once.
    assert_eq!(
        logout(edge, &alice.access_token).await.status,
        StatusCode::NO_CONTENT
    );
    assert!(socket.disconnected_within(AT_ONCE).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_rate_limited_per_account_and_per_address_with_retry_after() {
    let stack = Stack::embedded().await;
    let edge = stack.edge(0);
    let alice = sign_up(edge).await;
    let attempt = |email: String, password: &'static str| async move {
        call(
            edge,
            reqwest::Method::POST,
            "/v1/auth/sign-in",
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await
    };

    // Unknown emails fail exactly like wrong passwords.
    let wrong_password = attempt(alice.email.clone(), "wrong password").await;
    let unknown = attempt("nobody@example.com".to_owned(), "wrong password").await;
    for answer in [&wrong_password, &unknown] {
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.code(), "INVALID_CREDENTIALS");
    }
    assert_eq!(
        unknown.body["error"]["message"],
        wrong_password.body["error"]["message"]
    );

    // Per account: 5 failures, then even the right password waits.
    for _ in 1..5 {
        let answer = attempt(alice.email.clone(), "wrong password").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    let limited = attempt(alice.email.clone(), PASSWORD).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
    assert_eq!(limited.code(), "RATE_LIMITED");
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=900).contains(&retry_after), "{retry_after}");

    // Per address: 20 failures on any accounts from one address (this test's loopback).
    for index in 0..20 {
        let _ = attempt(format!("guess-{index}@example.com"), "wrong password").await;
    }
    let other = sign_up(edge).await;
    let limited = attempt(other.email.clone(), PASSWORD).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
    assert!(limited.headers.contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_rpcs_without_the_service_credential_fail_with_unauthenticated_and_key_rotation_reaches_the_edge_at_once()
 {
    let stack = Stack::separate_processes(1).await;
    let internals = internals(&stack);
    let edge = stack.edge(0);

    for (service, url) in [
        (Service::Auth, &internals.auth_url),
        (Service::Conversation, &internals.conversation_url),
        (Service::RuntimeProxy, &internals.runtime_proxy_url),
    ] {
        // An internal API without the credential: refused.
        let status = call_without_credential(service, url).await;
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{service:?}: {status:?}"
        );
        // Health needs none (probes, grpcurl).
        let channel = crawbl_infra::grpc::channel_without_credential(url).expect("channel");
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap_or_else(|status| panic!("{url}: health refused: {status:?}"));
    }

    // With the credential: rotate the signing key; a token of the new key works on the edge at
    // once (the edge fetches keys on an unknown kid), and tokens of the old key still do.
    let alice = sign_up(edge).await;
    let mut auth = auth_client(internals);
    let before = auth
        .get_signing_keys(GetSigningKeysRequest {})
        .await
        .expect("get keys")
        .into_inner();
    let after = auth
        .rotate_signing_key(RotateSigningKeyRequest {})
        .await
        .expect("rotate")
        .into_inner();
    assert_eq!(after.keys[1].kid, before.keys[0].kid);
    let fresh = sign_in(edge, &alice.email).await;
    let header = fresh.access_token.split('.').next().expect("header");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("b64")).expect("json");
    assert_eq!(header["kid"], after.keys[0].kid.as_str());
    for token in [&fresh.access_token, &alice.access_token] {
        assert_eq!(
            get(edge, "/v1/workspaces", token).await.status,
            StatusCode::OK
        );
        connect(edge, token).await;
    }
}

#[derive(Clone, Copy, Debug)]
enum Service {
    Auth,
    Conversation,
    RuntimeProxy,
}

/// One RPC of `service` at `url` without any credential; its failure.
async fn call_without_credential(service: Service, url: &str) -> tonic::Status {
    use crawbl_proto::conversation::v1::ListAgentsRequest;
    use crawbl_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
    use crawbl_proto::runtimeproxy::v1::GetRuntimeRequest;
    use crawbl_proto::runtimeproxy::v1::runtime_proxy_client::RuntimeProxyClient;
    let channel = crawbl_infra::grpc::channel_without_credential(url).expect("channel");
    let result = match service {
        Service::Auth => AuthServiceClient::new(channel)
            .get_signing_keys(GetSigningKeysRequest {})
            .await
            .map(|_| ()),
        Service::Conversation => ConversationServiceClient::new(channel)
            .list_agents(ListAgentsRequest {
                workspace_id: "w".to_owned(),
                ..ListAgentsRequest::default()
            })
            .await
            .map(|_| ()),
        Service::RuntimeProxy => RuntimeProxyClient::new(channel)
            .get_runtime(GetRuntimeRequest {
                workspace_id: "w".to_owned(),
            })
            .await
            .map(|_| ()),
    };
    match result {
        Ok(()) => panic!("{service:?}: a call without the service credential succeeded"),
        Err(status) => status,
    }
}
