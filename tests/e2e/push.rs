//! Push notifications to offline devices (SPEC §9, issue 19), against local servers that speak
//! each provider's protocol and verify what they receive: FCM HTTP v1 (OAuth token exchange
//! with a verified RS256 assertion) and APNs (HTTP/2 only, verified ES256 provider tokens) over
//! TLS with a test CA (`SSL_CERT_FILE`), and a Web Push service that checks the VAPID JWT and
//! decrypts the RFC 8291 payload.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use ring::rand::SecureRandom as _;
use serde_json::{Value, json};

use crate::push_support::fake_apns::{self, FakeApns, TeamKey};
use crate::push_support::fake_fcm::{self, FakeFcm};
use crate::push_support::fake_webpush::FakePushService;
use crate::push_support::tls::TestCa;
use crate::support::api::{Api, User, socket, unique_email};
use crate::support::{Backend, Options, Stack, TempDir};

const TOPIC: &str = "com.crawbl.app";
/// Long enough for every push of a reply to have gone out (and a wrong extra one with it).
const QUIET: Duration = Duration::from_millis(1500);
const WAIT: Duration = Duration::from_secs(20);

on_both_backends!(an_offline_member_gets_one_push_per_device_and_nobody_else_gets_any);

/// The three fake providers and the settings that point a stack at them.
struct Providers {
    fcm: FakeFcm,
    apns: FakeApns,
    webpush: FakePushService,
    /// Holds the key files the settings name.
    _files: TempDir,
    env: Vec<(&'static str, String)>,
}

impl Providers {
    async fn start() -> Self {
        let ca = TestCa::new();
        let key = TeamKey::generate();
        let fcm = FakeFcm::start(&ca).await;
        let apns = FakeApns::start(&ca, &key, TOPIC).await;
        let webpush = FakePushService::start(&ca).await;
        let files = TempDir::new();
        let write = |name: &str, text: &str| {
            let path = files.path().join(name);
            std::fs::write(&path, text).expect("write a key file");
            path.display().to_string()
        };
        let env = vec![
            ("SSL_CERT_FILE", write("ca.pem", &ca.pem)),
            (
                "FCM_SERVICE_ACCOUNT_FILE",
                write("service-account.json", &fcm.service_account_json()),
            ),
            ("FCM_ENDPOINT", fcm.endpoint.clone()),
            ("APNS_KEY_FILE", write("AuthKey.p8", &key.pem)),
            ("APNS_KEY_ID", key.key_id.clone()),
            ("APNS_TEAM_ID", key.team_id.clone()),
            ("APNS_TOPIC", TOPIC.to_owned()),
            ("APNS_ENDPOINT", apns.endpoint.clone()),
            ("VAPID_PRIVATE_KEY", vapid_private_key()),
            ("VAPID_SUBJECT", "mailto:push@crawbl.example".to_owned()),
            // The fake push service listens on 127.0.0.1.
            ("PUSH_ALLOW_LOOPBACK_HTTP", "true".to_owned()),
        ];
        Self {
            fcm,
            apns,
            webpush,
            _files: files,
            env,
        }
    }

    fn options(&self, mut options: Options) -> Options {
        options.env.extend(self.env.iter().cloned());
        options
    }

    /// Every push the providers accepted: (provider, device token or endpoint, payload).
    fn delivered(&self) -> Vec<Push> {
        let fcm = self.fcm.delivered().into_iter().map(|message| Push {
            provider: "fcm",
            device: message["token"].as_str().unwrap_or_default().to_owned(),
            title: message["notification"]["title"].clone(),
            body: message["notification"]["body"].clone(),
            data: message["data"].clone(),
        });
        let apns = self.apns.delivered().into_iter().map(|attempt| Push {
            provider: "apns",
            device: attempt.device_token.clone(),
            title: attempt.payload["aps"]["alert"]["title"].clone(),
            body: attempt.payload["aps"]["alert"]["body"].clone(),
            data: attempt.payload.clone(),
        });
        let webpush = self.webpush.delivered().into_iter().map(|received| {
            let payload = received.json();
            Push {
                provider: "webpush",
                device: received.subscription_id.to_string(),
                title: payload["title"].clone(),
                body: payload["body"].clone(),
                data: payload["data"].clone(),
            }
        });
        fcm.chain(apns).chain(webpush).collect()
    }

    /// What FCM answered each send, in order.
    fn fcm_answers(&self) -> Vec<u16> {
        self.fcm
            .attempts()
            .iter()
            .map(|attempt| attempt.status)
            .collect()
    }

    /// What the fakes refused (a bad signature, a payload that does not decrypt, …): nothing.
    fn assert_no_refusals(&self) {
        assert_eq!(self.fcm.refusals(), Vec::<String>::new(), "fcm refusals");
        assert_eq!(self.apns.refusals(), Vec::<String>::new(), "apns refusals");
        assert_eq!(
            self.webpush.refusals(),
            Vec::<String>::new(),
            "webpush refusals"
        );
    }

    /// Waits until `count` pushes were delivered, then a quiet moment more; the pushes.
    async fn wait_for(&self, count: usize) -> Vec<Push> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.delivered().len() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{count} pushes expected; delivered: {:?}",
                self.delivered()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(QUIET).await;
        self.delivered()
    }
}

#[derive(Debug, Clone)]
struct Push {
    provider: &'static str,
    device: String,
    title: Value,
    body: Value,
    data: Value,
}

fn vapid_private_key() -> String {
    let rng = ring::rand::SystemRandom::new();
    loop {
        let mut scalar = [0u8; 32];
        rng.fill(&mut scalar).expect("random");
        if p256::SecretKey::from_slice(&scalar).is_ok() {
            return URL_SAFE_NO_PAD.encode(scalar);
        }
    }
}

/// A random FCM registration token.
fn fcm_token() -> String {
    format!("fcm-{}", uuid::Uuid::new_v4().simple())
}

/// A random APNs device token (32 bytes, hex).
fn apns_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

async fn register(api: &Api, user: &User, body: Value) -> (StatusCode, Value) {
    api.post("/v1/devices", Some(&user.token), body).await
}

async fn register_ok(api: &Api, user: &User, body: Value) -> String {
    let (status, answer) = register(api, user, body).await;
    assert_eq!(status, StatusCode::CREATED, "register a device: {answer}");
    answer["data"]["id"].as_str().expect("id").to_owned()
}

async fn devices(api: &Api, user: &User) -> Vec<Value> {
    let (status, body) = api.get("/v1/devices", Some(&user.token)).await;
    assert_eq!(status, StatusCode::OK, "list devices: {body}");
    body["data"].as_array().expect("devices").clone()
}

/// A member of `owner`'s workspace.
async fn member(api: &Api, owner: &User) -> User {
    let email = unique_email();
    let user = api.sign_up_as(&email).await;
    api.add_member(owner, &email, "member").await;
    user
}

/// An owner's conversation and a member of the workspace with no socket.
struct Away {
    owner: User,
    conversation: String,
    away: User,
}

async fn away_member(api: &Api) -> Away {
    let owner = api.sign_up().await;
    let conversation = api.create_conversation(&owner).await;
    let away = member(api, &owner).await;
    Away {
        owner,
        conversation,
        away,
    }
}

/// The (first) agent reply of the conversation.
async fn agent_reply(api: &Api, user: &User, conversation: &str) -> Value {
    api.all_messages(user, conversation, 50)
        .await
        .into_iter()
        .find(|message| message["role"] == "agent")
        .expect("the agent's reply")
}

async fn agent_name(api: &Api, user: &User, agent_id: &str) -> String {
    let (status, body) = api
        .get(
            &format!("/v1/workspaces/{}/agents/{agent_id}", user.workspace_id),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "agent: {body}");
    body["data"]["name"].as_str().expect("name").to_owned()
}

/// An agent reply ends (delivered): each device of the offline member gets exactly one push with
/// the agent's name and the data to open the conversation; the online member, the member who
/// muted the conversation and the one who muted everything get none.
async fn an_offline_member_gets_one_push_per_device_and_nobody_else_gets_any(backend: Backend) {
    let providers = Providers::start().await;
    let stack = Stack::embedded_with(providers.options(backend.options().await)).await;
    let api = Api::new(stack.edge(0));
    let owner = api.sign_up().await;
    let conversation = api.create_conversation(&owner).await;
    let offline = member(&api, &owner).await;
    let online = member(&api, &owner).await;
    let muted_conversation = member(&api, &owner).await;
    let muted_all = member(&api, &owner).await;

    let offline_fcm = fcm_token();
    let offline_apns = apns_token();
    register_ok(
        &api,
        &offline,
        json!({"platform": "fcm", "token": offline_fcm}),
    )
    .await;
    register_ok(
        &api,
        &offline,
        json!({"platform": "apns", "token": offline_apns, "appId": TOPIC}),
    )
    .await;
    let subscription = providers.webpush.subscribe();
    register_ok(
        &api,
        &offline,
        json!({"platform": "webpush", "subscription": subscription}),
    )
    .await;
    for user in [&online, &muted_conversation, &muted_all] {
        register_ok(&api, user, json!({"platform": "fcm", "token": fcm_token()})).await;
    }
    let (status, body) = api
        .put(
            &format!(
                "/v1/workspaces/{}/conversations/{conversation}/push",
                owner.workspace_id
            ),
            &muted_conversation.token,
            json!({"muted": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "mute the conversation: {body}");
    assert_eq!(body["data"]["mutedConversationIds"], json!([conversation]));
    let (status, body) = api
        .put(
            "/v1/users/me/push",
            &muted_all.token,
            json!({"muted": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "mute everything: {body}");
    assert_eq!(body["data"]["muted"], json!(true));
    let _watching = socket(stack.edge(0), &online).await;

    let sent = api
        .send_and_wait(&owner, &conversation, "push-1", "hello agent")
        .await;
    let reply_id = sent["reply"]["id"]
        .as_str()
        .or_else(|| sent["replies"][0]["id"].as_str())
        .map(str::to_owned);
    let pushes = providers.wait_for(3).await;
    providers.assert_no_refusals();
    assert_eq!(pushes.len(), 3, "one push per device: {pushes:?}");
    let mut providers_seen: Vec<&str> = pushes.iter().map(|push| push.provider).collect();
    providers_seen.sort_unstable();
    assert_eq!(providers_seen, ["apns", "fcm", "webpush"]);
    let fcm = pushes
        .iter()
        .find(|push| push.provider == "fcm")
        .expect("fcm");
    assert_eq!(fcm.device, offline_fcm);
    let apns = pushes
        .iter()
        .find(|push| push.provider == "apns")
        .expect("apns");
    assert_eq!(apns.device, offline_apns);

    // The reply the pushes are about, and its agent.
    let reply = agent_reply(&api, &owner, &conversation).await;
    if let Some(reply_id) = reply_id {
        assert_eq!(reply["id"].as_str(), Some(reply_id.as_str()));
    }
    let name = agent_name(&api, &owner, reply["agentId"].as_str().expect("agentId")).await;
    for push in &pushes {
        assert_eq!(push.title, json!(name), "{push:?}");
        let body = push.body.as_str().expect("a body");
        assert!(!body.is_empty(), "{push:?}");
        assert_eq!(
            push.data["workspaceId"],
            json!(owner.workspace_id),
            "{push:?}"
        );
        assert_eq!(push.data["conversationId"], json!(conversation), "{push:?}");
        assert_eq!(push.data["messageId"], reply["id"], "{push:?}");
        let seq: u64 = push.data["seq"]
            .as_str()
            .and_then(|seq| seq.parse().ok())
            .expect("seq");
        assert!(seq > 0, "{push:?}");
    }
}

/// A token the provider calls unregistered is removed with its device; a 503 is retried and the
/// push then delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_token_is_removed_and_a_503_is_retried_then_delivered_once() {
    let providers = Providers::start().await;
    providers.apns.script([fake_apns::Answer::unregistered()]);
    providers.fcm.script([fake_fcm::Answer::unavailable()]);
    let stack = Stack::embedded_with(providers.options(Options::default())).await;
    let api = Api::new(stack.edge(0));
    let Away {
        owner,
        conversation,
        away,
    } = away_member(&api).await;
    let fcm = fcm_token();
    let fcm_device = register_ok(&api, &away, json!({"platform": "fcm", "token": fcm})).await;
    register_ok(
        &api,
        &away,
        json!({"platform": "apns", "token": apns_token()}),
    )
    .await;

    api.send_and_wait(&owner, &conversation, "push-retry", "hello")
        .await;
    let pushes = providers.wait_for(1).await;
    providers.assert_no_refusals();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0].device, fcm);
    assert_eq!(
        providers.fcm_answers(),
        [503, 200],
        "retried once, then delivered"
    );
    assert_eq!(providers.apns.attempts().len(), 1);

    // The unregistered device is gone; the other stays.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left: Vec<String> = devices(&api, &away)
            .await
            .iter()
            .map(|device| device["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        if left == [fcm_device.clone()] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "devices: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = api.get("/metrics", None).await;
    let metrics = metrics.as_str().unwrap_or_default();
    assert!(
        metrics.contains(
            r#"crawbl_push_notifications_total{provider="apns",result="token_removed"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"crawbl_push_notifications_total{provider="fcm",result="retried"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"crawbl_push_notifications_total{provider="fcm",result="sent"} 1"#),
        "{metrics}"
    );
}

/// A push still waiting to be retried when the sending process is killed goes out once after it
/// starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_survives_a_restart_of_the_sending_process() {
    let providers = Providers::start().await;
    providers.fcm.script([fake_fcm::Answer::quota_exceeded(4)]);
    let stack = Stack::embedded_with(providers.options(Options::default())).await;
    let api = Api::new(stack.edge(0));
    let Away {
        owner,
        conversation,
        away,
    } = away_member(&api).await;
    let token = fcm_token();
    register_ok(&api, &away, json!({"platform": "fcm", "token": token})).await;
    api.send_and_wait(&owner, &conversation, "push-restart", "hello")
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while providers.fcm.attempts().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no push attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Refused with Retry-After: 4 s; the process dies before it retries (a moment after the
    // refusal, so the retry time is recorded: killed before that, the delivery waits out its
    // 30 s lease instead).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dir = stack.kill().await;
    assert!(providers.fcm.delivered().is_empty());
    let _stack = Stack::embedded_in(dir, providers.options(Options::default())).await;
    let pushes = providers.wait_for(1).await;
    providers.assert_no_refusals();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0].device, token);
    assert_eq!(providers.fcm_answers(), [429, 200]);
}

/// Presence is cluster-wide and expires: a member connected to another edge node gets no push;
/// once that node is SIGKILLed (no clean disconnect), they count as offline within the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_expires_when_an_edge_node_is_killed() {
    let providers = Providers::start().await;
    let mut env: Vec<(&str, &str)> = providers
        .env
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect();
    env.push(("PRESENCE_TTL_MS", "1500"));
    let mut stack = Stack::separate_processes_with(2, &env).await;
    let api = Api::new(stack.edge(0));
    let Away {
        owner,
        conversation,
        away,
    } = away_member(&api).await;
    register_ok(
        &api,
        &away,
        json!({"platform": "fcm", "token": fcm_token()}),
    )
    .await;

    // Connected to edge 1 only: online.
    let _socket = socket(stack.edge(1), &away).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.send_and_wait(&owner, &conversation, "while-online", "hello")
        .await;
    tokio::time::sleep(QUIET).await;
    assert!(
        providers.delivered().is_empty(),
        "{:?}",
        providers.delivered()
    );

    stack.kill_edge(1).await;
    // The node's mark expires (1.5 s) without anyone removing it.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    api.send_and_wait(&owner, &conversation, "after-the-node-died", "hello")
        .await;
    let pushes = providers.wait_for(1).await;
    providers.assert_no_refusals();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
}

/// Registrations are checked (400/422 with stable codes), idempotent per token, moved to the
/// user who registers a token last, invisible to other users, and removed on logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_registrations_are_checked_isolated_and_end_with_their_session() {
    let providers = Providers::start().await;
    let stack = Stack::embedded_with(providers.options(Options::default())).await;
    let api = Api::new(stack.edge(0));
    let email = unique_email();
    let alice = api.sign_up_as(&email).await;
    let bob = api.sign_up().await;

    // The key browsers subscribe with is the one the server signs with.
    let (status, body) = api.get("/v1/devices/webpush-key", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let scalar = providers
        .env
        .iter()
        .find(|(key, _)| *key == "VAPID_PRIVATE_KEY")
        .map(|(_, value)| URL_SAFE_NO_PAD.decode(value).expect("base64url"))
        .expect("a VAPID key");
    let public = p256::SecretKey::from_slice(&scalar)
        .expect("a P-256 scalar")
        .public_key()
        .to_sec1_bytes();
    assert_eq!(
        body["data"]["publicKey"],
        json!(URL_SAFE_NO_PAD.encode(public))
    );

    for (body, status, code) in [
        (
            json!({"platform": "sms", "token": "abc"}),
            400,
            "UNKNOWN_PLATFORM",
        ),
        (
            json!({"platform": "apns", "token": "not-hex"}),
            422,
            "INVALID_DEVICE_TOKEN",
        ),
        (
            json!({"platform": "fcm", "token": ""}),
            422,
            "INVALID_DEVICE_TOKEN",
        ),
        (json!({"platform": "fcm"}), 422, "INVALID_DEVICE_TOKEN"),
        (
            json!({"platform": "webpush", "token": "abc"}),
            422,
            "INVALID_SUBSCRIPTION",
        ),
        (
            json!({"platform": "webpush", "subscription": {"endpoint": "https://push.example/x", "keys": {"p256dh": "AAAA", "auth": "BBBB"}}}),
            422,
            "INVALID_SUBSCRIPTION",
        ),
        (
            json!({"platform": "webpush", "subscription": {"endpoint": "http://10.0.0.1/x", "keys": {"p256dh": "AAAA", "auth": "BBBB"}}}),
            422,
            "INVALID_SUBSCRIPTION",
        ),
        (
            json!({"platform": "fcm", "token": "a", "subscription": {}}),
            400,
            "INVALID_DEVICE",
        ),
        (json!({"platform": "fcm", "token": 7}), 400, "INVALID_JSON"),
    ] {
        let (answer, error) = register(&api, &alice, body.clone()).await;
        assert_eq!(answer.as_u16(), status, "{body}: {error}");
        assert_eq!(error["error"]["code"], json!(code), "{body}: {error}");
    }

    // Idempotent per token.
    let token = fcm_token();
    let first = register_ok(&api, &alice, json!({"platform": "fcm", "token": token})).await;
    let again = register_ok(&api, &alice, json!({"platform": "fcm", "token": token})).await;
    assert_eq!(first, again);
    let listed = devices(&api, &alice).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["platform"], json!("fcm"));
    assert_eq!(listed[0]["token"], json!(token));

    // Another user cannot see or delete it.
    assert!(devices(&api, &bob).await.is_empty());
    let (status, body) = api
        .delete(&format!("/v1/devices/{first}"), &bob.token)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], json!("DEVICE_NOT_FOUND"));
    assert_eq!(devices(&api, &alice).await.len(), 1);

    // Bob signs in on that phone: the token is his now.
    let moved = register_ok(&api, &bob, json!({"platform": "fcm", "token": token})).await;
    assert_eq!(moved, first);
    assert!(devices(&api, &alice).await.is_empty());
    assert_eq!(devices(&api, &bob).await.len(), 1);
    let (status, _) = api
        .delete(&format!("/v1/devices/{moved}"), &bob.token)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(devices(&api, &bob).await.is_empty());

    // Logging out of the session that registered a device removes it.
    let apns = apns_token();
    register_ok(&api, &alice, json!({"platform": "apns", "token": apns})).await;
    let (status, body) = api
        .post("/v1/auth/logout", Some(&alice.token), json!({}))
        .await;
    assert!(status.is_success(), "logout: {body}");
    let (status, body) = api
        .post(
            "/v1/auth/sign-in",
            None,
            json!({"email": email, "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "sign in: {body}");
    let alice_again = User {
        token: body["data"]["accessToken"]
            .as_str()
            .expect("token")
            .to_owned(),
        ..alice.clone()
    };
    assert!(devices(&api, &alice_again).await.is_empty());

    // Deleting the account deletes its devices: the token registered again is a new device.
    let carol = api.sign_up().await;
    let shared = fcm_token();
    let before = register_ok(&api, &carol, json!({"platform": "fcm", "token": shared})).await;
    let (status, body) = api.delete("/v1/users/me", &carol.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let after = register_ok(&api, &bob, json!({"platform": "fcm", "token": shared})).await;
    assert_ne!(before, after);

    // An API key cannot register a device (it belongs to no session).
    let (status, body) = api
        .post(
            "/v1/api-keys",
            Some(&alice_again.token),
            json!({"name": "ci"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let key = User {
        token: body["data"]["key"].as_str().expect("key").to_owned(),
        ..alice_again.clone()
    };
    let (status, body) =
        register(&api, &key, json!({"platform": "fcm", "token": fcm_token()})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], json!("SESSION_REQUIRED"));
}

/// A reply that fails partway (the runtime's `/fail`: part of the text, then an error) is
/// pushed too, with what it said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_fails_is_pushed_too() {
    let providers = Providers::start().await;
    let stack = Stack::embedded_with(providers.options(Options::default())).await;
    let api = Api::new(stack.edge(0));
    let Away {
        owner,
        conversation,
        away,
    } = away_member(&api).await;
    register_ok(
        &api,
        &away,
        json!({"platform": "fcm", "token": fcm_token()}),
    )
    .await;
    api.send_and_wait(&owner, &conversation, "push-fail", "/fail")
        .await;
    let pushes = providers.wait_for(1).await;
    providers.assert_no_refusals();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    let reply = agent_reply(&api, &owner, &conversation).await;
    assert_ne!(reply["status"], json!("delivered"), "{reply}");
    assert_eq!(pushes[0].data["messageId"], reply["id"]);
    let said = reply["content"]["text"].as_str().unwrap_or_default();
    let body = pushes[0].body.as_str().unwrap_or_default();
    if said.is_empty() {
        assert_eq!(body, "The reply failed.");
    } else {
        assert!(
            said.starts_with(body.trim_end_matches('…')),
            "{body} / {said}"
        );
    }
}
