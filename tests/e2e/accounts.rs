//! Account deletion (`DELETE /v1/users/me`, issue 17) over real processes on both backends, with
//! two edge nodes and Redis: every credential of the user refused and every socket of theirs
//! disconnected on both nodes at once; the workspaces they alone owned gone from both services'
//! databases (checked with SQL), a member of one of them out of it at once; a workspace they
//! shared with another owner intact; a deletion that cannot reach the conversation service
//! changing nothing, and its retry finishing; the email free to sign up again.

use std::time::Duration;

use crawbl_proto::conversation::v1::AgentStatus;
use crawbl_proto::events::v1::{AgentStatusChanged, Event, event};
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::api::{Api, User, unique_email};
use crate::support::sio::{self, SioClient};
use crate::support::{Backend, Stack, TempDir, redis_url};

/// How soon the deletion must reach every socket and edge (logout's bound is 1 s; this stack
/// runs two instances of everything on a loaded test machine).
const AT_ONCE: Duration = Duration::from_secs(2);
/// How long a socket must stay quiet to show that nothing reaches it.
const QUIET: Duration = Duration::from_millis(700);
const WAIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "correct horse battery";

on_both_backends!(
    deleting_an_account_reaches_every_edge_at_once_and_leaves_nothing_of_what_it_alone_owned,
    a_deletion_that_cannot_reach_the_conversation_service_changes_nothing_and_its_retry_finishes,
);

/// A stack of separate processes with two edge nodes and Redis, and where its databases are.
struct TwoEdges {
    stack: Stack,
    auth_database: String,
    conversation_database: String,
    /// The conversation process edge 0 talks to, and its gRPC address.
    conversation: (&'static str, String),
    /// The SQLite files (kept until the test ends).
    _files: Option<TempDir>,
}

/// Postgres: two instances of every service (edge `i` talks to auth and conversation `i`), one
/// database. SQLite: one instance of each (a file belongs to one process), auth and
/// conversation with a file each.
async fn two_edges(backend: Backend) -> TwoEdges {
    match backend {
        Backend::Postgres => {
            let stack = Stack::replicated(2, 2, &[]).await;
            let internals = stack.internals.clone().expect("internals");
            TwoEdges {
                auth_database: internals.database_url.clone(),
                conversation_database: internals.database_url,
                conversation: ("conversation-0", internals.conversation_url),
                stack,
                _files: None,
            }
        }
        Backend::Sqlite => {
            let files = TempDir::new();
            let file =
                |name: &str| format!("sqlite://{}?mode=rwc", files.path().join(name).display());
            let (auth, conversation) = (file("auth.db"), file("conversation.db"));
            let stack = Stack::separate_processes_on(
                auth.clone(),
                2,
                &[
                    ("AUTH_DATABASE_URL", auth.as_str()),
                    ("CONVERSATION_DATABASE_URL", conversation.as_str()),
                ],
            )
            .await;
            let internals = stack.internals.clone().expect("internals");
            TwoEdges {
                stack,
                auth_database: auth,
                conversation_database: conversation,
                conversation: ("conversation", internals.conversation_url),
                _files: Some(files),
            }
        }
    }
}

/// A signed-up user with the refresh token and email too.
#[derive(Clone, Debug)]
struct Account {
    user: User,
    email: String,
    refresh_token: String,
}

fn account_of(email: &str, data: &Value) -> Account {
    let text = |value: &Value| value.as_str().expect("a string").to_owned();
    Account {
        user: User {
            token: text(&data["accessToken"]),
            user_id: text(&data["user"]["id"]),
            workspace_id: text(&data["workspaces"][0]["id"]),
        },
        email: email.to_owned(),
        refresh_token: text(&data["refreshToken"]),
    }
}

async fn sign_up(api: &Api, email: &str) -> Account {
    let (status, body) = api
        .post(
            "/v1/auth/sign-up",
            None,
            json!({"email": email, "password": PASSWORD, "displayName": "Test User"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    account_of(email, &body["data"])
}

async fn sign_in(api: &Api, email: &str) -> Account {
    let (status, body) = api
        .post(
            "/v1/auth/sign-in",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    account_of(email, &body["data"])
}

async fn refresh(api: &Api, refresh_token: &str) -> StatusCode {
    api.post(
        "/v1/auth/refresh",
        None,
        json!({"refreshToken": refresh_token}),
    )
    .await
    .0
}

async fn connect(edge: &str, token: &str) -> SioClient {
    sio::connect(edge, &[("x-token", token)], None)
        .await
        .expect("connect")
        .expect_connected()
}

async fn refused(edge: &str, token: &str) -> String {
    sio::connect(edge, &[("x-token", token)], None)
        .await
        .expect("connect")
        .expect_refused()
}

async fn delete_me(api: &Api, token: &str) -> (StatusCode, Value) {
    api.delete("/v1/users/me", token).await
}

/// The ids of the workspaces the token's user sees.
async fn workspace_ids(api: &Api, token: &str) -> Vec<String> {
    let (status, body) = api.get("/v1/workspaces", Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]
        .as_array()
        .expect("workspaces")
        .iter()
        .map(|workspace| workspace["id"].as_str().expect("id").to_owned())
        .collect()
}

/// `user` as `workspace_id`'s member.
fn in_workspace(user: &User, workspace_id: &str) -> User {
    User {
        workspace_id: workspace_id.to_owned(),
        ..user.clone()
    }
}

/// Publishes a volatile `agent.status` for a made-up agent on the workspace's event channel, as
/// a service would: every socket in the workspace's room gets it, nobody else.
async fn probe(workspace_id: &str, agent_id: &str) {
    let event = Event {
        workspace_id: workspace_id.to_owned(),
        kind: Some(event::Kind::AgentStatus(AgentStatusChanged {
            agent_id: agent_id.to_owned(),
            status: AgentStatus::Online as i32,
        })),
        ..Event::default()
    };
    let mut redis = redis::Client::open(redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("crawbl:events:{workspace_id}"))
        .arg(event.encode_to_vec())
        .query_async(&mut redis)
        .await
        .expect("PUBLISH");
}

fn is_probe(event: &sio::ServerEvent, agent_id: &str) -> bool {
    event.name == "agent.status" && event.payload()["agentId"] == agent_id
}

/// `SELECT COUNT(*) …` with one bound text parameter, straight from a service's database.
async fn count(database_url: &str, sql: &str, bind: &str) -> i64 {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let mut connection = sqlx::AnyConnection::connect(database_url)
        .await
        .expect("connect to the stack's database");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(bind)
        .fetch_one(&mut connection)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

/// How many rows each table of the conversation service holds for `workspace_id`.
async fn conversation_rows(stack: &TwoEdges, workspace_id: &str) -> Vec<(&'static str, i64)> {
    let mut rows = Vec::new();
    for table in [
        "agents",
        "conversations",
        "messages",
        "turns",
        "events",
        "workspace_sequences",
        "turn_usage",
        "workspace_month_usage",
        "read_states",
    ] {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE workspace_id = $1");
        rows.push((
            table,
            count(&stack.conversation_database, &sql, workspace_id).await,
        ));
    }
    rows
}

/// What auth holds of a user: `(table, rows)`.
async fn auth_rows(stack: &TwoEdges, user_id: &str) -> Vec<(&'static str, i64)> {
    let mut rows = Vec::new();
    for (table, sql) in [
        ("users", "SELECT COUNT(*) FROM users WHERE id = $1"),
        (
            "sessions",
            "SELECT COUNT(*) FROM sessions WHERE user_id = $1",
        ),
        (
            "refresh_tokens",
            "SELECT COUNT(*) FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id
             WHERE s.user_id = $1",
        ),
        (
            "api_keys",
            "SELECT COUNT(*) FROM api_keys WHERE user_id = $1",
        ),
        (
            "memberships",
            "SELECT COUNT(*) FROM memberships WHERE user_id = $1",
        ),
    ] {
        rows.push((table, count(&stack.auth_database, sql, user_id).await));
    }
    rows
}

async fn deleting_an_account_reaches_every_edge_at_once_and_leaves_nothing_of_what_it_alone_owned(
    backend: Backend,
) {
    let stack = two_edges(backend).await;
    let edges = [stack.stack.edge(0), stack.stack.edge(1)];
    let apis = [Api::new(edges[0]), Api::new(edges[1])];

    // Alice alone owns her first workspace; Carol is a member of it. Bob owns his, and made
    // Alice an owner of it too.
    let alice = sign_up(&apis[0], &unique_email()).await;
    let bob = sign_up(&apis[1], &unique_email()).await;
    let carol = sign_up(&apis[1], &unique_email()).await;
    let own = alice.user.workspace_id.clone();
    let shared = bob.user.workspace_id.clone();
    apis[0]
        .add_member(&alice.user, &carol.email, "member")
        .await;
    apis[1].add_member(&bob.user, &alice.email, "owner").await;

    // Data in both: a finished turn in each (and, below, one still running in her own when she
    // goes).
    let conversation = apis[0].create_conversation(&alice.user).await;
    let answered = apis[0]
        .send_and_wait(&alice.user, &conversation, "a1", "hello")
        .await;
    let (status, body) = apis[0]
        .post(
            &format!("/v1/workspaces/{own}/conversations/{conversation}/read"),
            Some(&alice.user.token),
            json!({"messageId": answered["reply"]["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alice_in_shared = in_workspace(&alice.user, &shared);
    let shared_conversation = apis[1].create_conversation(&bob.user).await;
    let from_alice = apis[0]
        .send_and_wait(&alice_in_shared, &shared_conversation, "a2", "hi Bob")
        .await;
    let alice_message = from_alice["message"]["id"].as_str().expect("id").to_owned();
    apis[1]
        .send_and_wait(&bob.user, &shared_conversation, "b1", "hi Alice")
        .await;

    // A second session and an API key (used once on edge 1, so cached there).
    let second = sign_in(&apis[1], &alice.email).await;
    let (status, created) = apis[0]
        .post(
            "/v1/api-keys",
            Some(&alice.user.token),
            json!({"name": "ci"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["data"]["key"].as_str().expect("key").to_owned();
    assert_eq!(workspace_ids(&apis[1], &key).await.len(), 2);

    // An API key cannot delete the account.
    let (status, body) = delete_me(&apis[1], &key).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "SESSION_REQUIRED");

    // Sockets of every credential on both nodes; Carol's and Bob's too.
    let mut alice_sockets = [
        connect(edges[0], &alice.user.token).await,
        connect(edges[1], &alice.user.token).await,
        connect(edges[1], &second.user.token).await,
        connect(edges[0], &key).await,
    ];
    let mut carol_socket = connect(edges[1], &carol.user.token).await;
    let mut bob_socket = connect(edges[0], &bob.user.token).await;
    probe(&own, "probe-before").await;
    carol_socket
        .events_until(WAIT, |event| is_probe(event, "probe-before"))
        .await;

    let slow_turn = Instant::now();
    let (status, body) = apis[0]
        .send(
            &alice.user,
            &conversation,
            "a3",
            "/slow 4000\nstill thinking",
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let before = conversation_rows(&stack, &own).await;
    for (table, rows) in &before {
        assert!(*rows > 0, "nothing in {table} to delete: {before:?}");
    }
    let shared_before = conversation_rows(&stack, &shared).await;

    let (status, body) = delete_me(&apis[0], &alice.user.token).await;
    let deadline = Instant::now() + AT_ONCE;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // Every socket of hers, on both nodes, whatever authenticated it.
    for (index, socket) in alice_sockets.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            socket.disconnected_within(left).await,
            "socket {index} of the deleted account still connected after {AT_ONCE:?}"
        );
    }
    // Every credential refused on both nodes, on REST and on the handshake; refresh tokens too.
    for (edge, api) in edges.iter().zip(&apis) {
        for token in [&alice.user.token, &second.user.token, &key] {
            let (status, body) = api.get("/v1/workspaces", Some(token)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{edge}: {body}");
            let message = refused(edge, token).await;
            assert!(message.contains("invalid"), "{edge}: {message}");
        }
        for refresh_token in [&alice.refresh_token, &second.refresh_token] {
            assert_eq!(refresh(api, refresh_token).await, StatusCode::UNAUTHORIZED);
        }
    }
    // A retry with the old token: the account is gone, and so is the token.
    let (status, body) = delete_me(&apis[1], &alice.user.token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Carol lost the workspace at once, on both nodes, and her socket left its room (but
    // stays connected, in her own workspace).
    for api in &apis {
        let (status, body) = api
            .get(&format!("/v1/workspaces/{own}"), Some(&carol.user.token))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(
            workspace_ids(api, &carol.user.token).await,
            std::slice::from_ref(&carol.user.workspace_id)
        );
        let (status, _) = api
            .get(
                &format!("/v1/workspaces/{own}/conversations/{conversation}/messages"),
                Some(&carol.user.token),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    probe(&own, "probe-after").await;
    probe(&carol.user.workspace_id, "probe-own").await;
    let seen = carol_socket
        .events_until(WAIT, |event| is_probe(event, "probe-own"))
        .await;
    assert!(
        !seen.iter().any(|event| is_probe(event, "probe-after")),
        "a deleted workspace's event reached a former member: {seen:#?}"
    );

    // Bob and the workspace he shared with her are untouched, her message in it included.
    assert!(
        !bob_socket.disconnected_within(QUIET).await,
        "the other owner's socket was dropped"
    );
    assert_eq!(
        workspace_ids(&apis[1], &bob.user.token).await,
        std::slice::from_ref(&shared)
    );
    let messages = apis[1]
        .all_messages(&bob.user, &shared_conversation, 50)
        .await;
    assert_eq!(messages.len(), 4, "{messages:#?}");
    let kept = messages
        .iter()
        .find(|message| message["id"] == alice_message.as_str())
        .expect("her message in the shared workspace stays");
    assert_eq!(kept["authorId"], alice.user.user_id.as_str());
    let (status, members) = apis[0]
        .get(
            &format!("/v1/workspaces/{shared}/members"),
            Some(&bob.user.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{members}");
    assert_eq!(
        members["data"].as_array().map(Vec::len),
        Some(1),
        "{members}"
    );
    assert_eq!(conversation_rows(&stack, &shared).await, shared_before);

    // Nothing of her or of her workspace is left in either database, the turn that was
    // running included: past the time it would have ended, it has written nothing.
    tokio::time::sleep_until(slow_turn + Duration::from_millis(5000)).await;
    let after = conversation_rows(&stack, &own).await;
    assert!(after.iter().all(|(_, rows)| *rows == 0), "{after:?}");
    let auth = auth_rows(&stack, &alice.user.user_id).await;
    assert!(auth.iter().all(|(_, rows)| *rows == 0), "{auth:?}");
    for sql in [
        "SELECT COUNT(*) FROM workspaces WHERE id = $1",
        "SELECT COUNT(*) FROM memberships WHERE workspace_id = $1",
    ] {
        assert_eq!(count(&stack.auth_database, sql, &own).await, 0, "{sql}");
    }
    assert_eq!(
        count(
            &stack.auth_database,
            "SELECT COUNT(*) FROM workspaces WHERE id = $1",
            &shared
        )
        .await,
        1
    );
    // Only the tombstone that keeps edges refusing her tokens until they expire.
    assert_eq!(
        count(
            &stack.auth_database,
            "SELECT COUNT(*) FROM deleted_users WHERE user_id = $1",
            &alice.user.user_id
        )
        .await,
        1
    );

    // The email is free again: a new account, with nothing of the old one.
    let again = sign_up(&apis[1], &alice.email).await;
    assert_ne!(again.user.user_id, alice.user.user_id);
    let mine = workspace_ids(&apis[0], &again.user.token).await;
    assert_eq!(mine, std::slice::from_ref(&again.user.workspace_id));
    assert!(!mine.contains(&own) && !mine.contains(&shared));
    let (status, listed) = apis[0]
        .get(
            &format!("/v1/workspaces/{}/conversations", again.user.workspace_id),
            Some(&again.user.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["data"], json!([]));
    connect(edges[1], &again.user.token).await;
}

async fn a_deletion_that_cannot_reach_the_conversation_service_changes_nothing_and_its_retry_finishes(
    backend: Backend,
) {
    let mut stack = two_edges(backend).await;
    let api = Api::new(stack.stack.edge(0));
    let alice = sign_up(&api, &unique_email()).await;
    let own = alice.user.workspace_id.clone();
    let conversation = api.create_conversation(&alice.user).await;
    api.send_and_wait(&alice.user, &conversation, "a1", "hello")
        .await;
    let before = conversation_rows(&stack, &own).await;

    let (process, grpc_url) = stack.conversation.clone();
    stack.stack.kill_process(process).await;
    let (status, body) = delete_me(&api, &alice.user.token).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE", "{body}");

    // Nothing happened: she is still signed in with all her data.
    stack.stack.respawn(process);
    crate::support::wait_for_grpc_health(&grpc_url).await;
    assert_eq!(
        workspace_ids(&api, &alice.user.token).await,
        std::slice::from_ref(&own)
    );
    assert_eq!(refresh(&api, &alice.refresh_token).await, StatusCode::OK);
    assert_eq!(conversation_rows(&stack, &own).await, before);
    let messages = api.all_messages(&alice.user, &conversation, 50).await;
    assert_eq!(messages.len(), 2);

    // The retry finishes it.
    let (status, body) = delete_me(&api, &alice.user.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let after = conversation_rows(&stack, &own).await;
    assert!(after.iter().all(|(_, rows)| *rows == 0), "{after:?}");
    let auth = auth_rows(&stack, &alice.user.user_id).await;
    assert!(auth.iter().all(|(_, rows)| *rows == 0), "{auth:?}");
    let (status, _) = api.get("/v1/users/me", Some(&alice.user.token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
