//! Faults of what the stack depends on, while clients use it. Postgres is stopped in the middle
//! of a stream of sends and started again (SPEC §8): requests fail fast with 503 and recover by
//! themselves, no message is half-written, and no durable event is lost. The stack runs as
//! separate processes on a private Postgres and a private Redis, so stopping them touches no
//! other test.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::Stack;
use crate::support::api::{Api, User};
use crate::support::postgres_server::PostgresServer;
use crate::support::redis_server::RedisServer;
use crate::support::sio::{self, Next, SioClient};

/// Longest any request may take while Postgres is down (or going down). A service's pool waits
/// at most 1 s for a Postgres connection (`infra::db`) before the service answers
/// `DATABASE_UNAVAILABLE`, and a request makes at most one such wait, since it gives up at its
/// first failed query; the other 2 s are margin for the gRPC hop and the edge on two cores
/// shared with builds, while still telling a fast failure from the 5 s wait there was before.
const FAIL_FAST: Duration = Duration::from_secs(3);
/// Longest from Postgres accepting connections again until a send is stored, with no process
/// restarted: the pools open a connection on the next request, so this is mostly margin.
const RECOVERY: Duration = Duration::from_secs(5);
/// How long Postgres stays down.
const OUTAGE: Duration = Duration::from_secs(5);
/// Concurrent senders; each starts its next send this long after its previous one ended, so
/// together they stay under the edge's per-user send limit (5 a second).
const SENDERS: usize = 2;
const PACE: Duration = Duration::from_millis(500);
/// Sends stored before the outage, and after recovery, before the test moves on.
const STORED_BEFORE: usize = 6;
const STORED_AFTER: usize = 6;
/// No answer within this is a hang.
const HANG: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(30);

/// One request and how it was answered.
#[derive(Debug, Clone)]
struct Answer {
    started: Instant,
    elapsed: Duration,
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

impl Answer {
    fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    fn ended(&self) -> Instant {
        self.started + self.elapsed
    }

    /// 503 with the stable code of a database outage and a `Retry-After` of whole seconds.
    fn is_database_unavailable(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE
            && self.code() == Some("DATABASE_UNAVAILABLE")
            && self
                .retry_after
                .as_deref()
                .and_then(|seconds| seconds.parse::<u64>().ok())
                .is_some_and(|seconds| seconds >= 1)
    }
}

/// A send and its answer.
#[derive(Debug, Clone)]
struct Attempt {
    local_id: String,
    text: String,
    answer: Answer,
}

impl Attempt {
    fn message_id(&self) -> Option<&str> {
        self.answer.body["data"]["id"].as_str()
    }
}

/// A client of one edge that times every request and reads `Retry-After`.
#[derive(Clone)]
struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    fn new(base: &str, user: &User) -> Self {
        Self {
            base: base.to_owned(),
            token: user.token.clone(),
            http: {
                crawbl_loadtest::rest::install_tls_provider();
                reqwest::Client::builder()
                    .timeout(HANG)
                    .build()
                    .expect("http client")
            },
        }
    }

    async fn get(&self, path: &str) -> Answer {
        let request = self
            .http
            .get(format!("{}{path}", self.base))
            .header("x-token", &self.token);
        answer(request, &format!("GET {path}")).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-token", &self.token)
            .json(&body);
        answer(request, &format!("POST {path}")).await
    }
}

async fn answer(request: reqwest::RequestBuilder, what: &str) -> Answer {
    let started = Instant::now();
    let response = request
        .send()
        .await
        .unwrap_or_else(|error| panic!("{what}: no answer ({error}); a hang or a crash"));
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.expect("body");
    Answer {
        started,
        elapsed: started.elapsed(),
        status,
        retry_after,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

/// What the senders share: every send so far, and whether to stop.
#[derive(Default)]
struct Sends {
    log: Mutex<Vec<Attempt>>,
    finished: AtomicBool,
}

impl Sends {
    fn snapshot(&self) -> Vec<Attempt> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn stored_since(&self, since: Instant) -> usize {
        self.snapshot()
            .iter()
            .filter(|send| {
                send.answer.started >= since && send.answer.status == StatusCode::CREATED
            })
            .count()
    }

    /// Waits until `count` sends started at or after `since` were stored.
    async fn until_stored_since(&self, since: Instant, count: usize) {
        let deadline = Instant::now() + WAIT;
        while self.stored_since(since) < count {
            assert!(
                Instant::now() < deadline,
                "fewer than {count} sends stored within {WAIT:?}: {:#?}",
                self.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn messages_path(user: &User, conversation: &str) -> String {
    format!(
        "/v1/workspaces/{}/conversations/{conversation}/messages",
        user.workspace_id
    )
}

/// Sends `{prefix}-0`, `{prefix}-1`, … until told to stop.
async fn send_until_finished(client: Client, path: String, prefix: &str, sends: Arc<Sends>) {
    for index in 0.. {
        if sends.finished.load(Ordering::Acquire) {
            return;
        }
        let local_id = format!("{prefix}-{index}");
        let text = format!("message {local_id}");
        let answer = client
            .post(
                &path,
                json!({"localId": local_id, "content": {"type": "text", "text": text}}),
            )
            .await;
        sends
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Attempt {
                local_id,
                text,
                answer,
            });
        tokio::time::sleep(PACE).await;
    }
}

/// When Postgres went down and came back.
struct Outage {
    /// `pg_ctl stop` was called.
    stopping: Instant,
    /// `pg_ctl stop` returned: the server has exited.
    stopped: Instant,
    /// `pg_ctl start` was called.
    starting: Instant,
    /// `pg_ctl start` returned: the server accepts connections.
    started: Instant,
    /// The same on the wall clock, to compare with the timestamps of messages.
    started_at: chrono::DateTime<chrono::Utc>,
    /// The reads made while it was down, by what they read.
    reads: Vec<(&'static str, Answer)>,
    /// `/readyz` while it was down.
    readiness: Answer,
    /// The send whose reply was streaming when Postgres stopped.
    long: Answer,
}

/// 200 words: the agent's echo streams for a second or more (one delta per word).
fn long_text() -> String {
    (0..200)
        .map(|index| format!("word{index}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Waits until the agent's reply in `conversation` is stored and streaming.
async fn until_a_reply_streams(api: &Api, user: &User, conversation: &str) {
    let deadline = Instant::now() + WAIT;
    while !api
        .all_messages(user, conversation, 10)
        .await
        .iter()
        .any(|message| message["role"] == "agent" && message["status"] == "streaming")
    {
        assert!(
            Instant::now() < deadline,
            "no reply streamed within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `seq` of a durable event (its second argument); `None` for volatile ones.
fn seq_of(event: &sio::ServerEvent) -> Option<u64> {
    event.args.get(1)?.get("seq")?.as_u64()
}

async fn connect(edge: &str, user: &User, auth: Option<Value>) -> SioClient {
    sio::connect(edge, &[("x-token", &user.token)], auth)
        .await
        .expect("connect")
        .expect_connected()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_requests_fail_fast_with_503_and_when_it_returns_sends_recover_with_nothing_lost_or_half_written()
 {
    let mut postgres = PostgresServer::create().await;
    let redis = RedisServer::start().await;
    let redis_at = redis.url();
    let stack =
        Stack::separate_processes_on(postgres.url(), 1, &[("REDIS_URL", redis_at.as_str())]).await;
    let edge = stack.edge(0).to_owned();
    let api = Api::new(&edge);
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let long_conversation = api.create_conversation(&user).await;
    let mut socket = connect(&edge, &user, None).await;
    let client = Client::new(&edge, &user);
    let path = messages_path(&user, &conversation);
    let test_started = Instant::now();

    let sends = Arc::new(Sends::default());
    let senders = futures::future::join_all((0..SENDERS).map(|sender| {
        let prefix = format!("s{sender}");
        let (client, path, sends) = (client.clone(), path.clone(), sends.clone());
        async move { send_until_finished(client, path, &prefix, sends).await }
    }));
    let outage = async {
        sends.until_stored_since(test_started, STORED_BEFORE).await;
        // A reply that is streaming when Postgres goes down must still end once it is back.
        let long = client
            .post(
                &messages_path(&user, &long_conversation),
                json!({"localId": "long", "content": {"type": "text", "text": long_text()}}),
            )
            .await;
        assert_eq!(long.status, StatusCode::CREATED, "{long:#?}");
        until_a_reply_streams(&api, &user, &long_conversation).await;
        let stopping = Instant::now();
        postgres.stop().await;
        let stopped = Instant::now();

        // Meanwhile the senders keep sending; every read that needs the database fails too.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let workspace = format!("/v1/workspaces/{}", user.workspace_id);
        let reads = [
            ("messages", format!("{path}?limit=10")),
            ("conversations", format!("{workspace}/conversations")),
            (
                "conversation",
                format!("{workspace}/conversations/{conversation}"),
            ),
            ("agents", format!("{workspace}/agents")),
            ("events", format!("{workspace}/events?after=0")),
            ("users/me (auth)", "/v1/users/me".to_owned()),
        ]
        .map(|(name, read)| {
            let client = &client;
            async move { (name, client.get(&read).await) }
        });
        let reads = futures::future::join_all(reads).await;
        let readiness = client.get("/readyz").await;
        let down_for = stopped.elapsed();
        tokio::time::sleep(OUTAGE.saturating_sub(down_for)).await;

        let starting = Instant::now();
        postgres.start().await;
        let started = Instant::now();
        let started_at = chrono::Utc::now();
        sends.until_stored_since(started, STORED_AFTER).await;
        sends.finished.store(true, Ordering::Release);
        Outage {
            stopping,
            stopped,
            starting,
            started,
            started_at,
            reads,
            readiness,
            long,
        }
    };
    let (_, outage) = tokio::join!(senders, outage);
    let attempts = sends.snapshot();
    let logs = stack.logs();

    // Every send was answered fast, 201 or the database's 503; never a 500, never a hang.
    for send in &attempts {
        let answer = &send.answer;
        assert!(
            answer.status == StatusCode::CREATED || answer.is_database_unavailable(),
            "send {} answered {} {:?} (retry-after {:?}); logs in {logs}",
            send.local_id,
            answer.status,
            answer.body,
            answer.retry_after
        );
        assert!(
            answer.elapsed < FAIL_FAST,
            "send {} took {:?} ({}); logs in {logs}",
            send.local_id,
            answer.elapsed,
            answer.status
        );
    }
    let down =
        |answer: &Answer| answer.started >= outage.stopped && answer.ended() <= outage.starting;
    let failed_while_down: Vec<&Attempt> =
        attempts.iter().filter(|send| down(&send.answer)).collect();
    assert!(
        failed_while_down.len() >= 3,
        "too few sends while Postgres was down: {failed_while_down:#?}"
    );
    for send in &failed_while_down {
        assert!(
            send.answer.is_database_unavailable(),
            "a send while Postgres was down: {send:#?}"
        );
    }
    for (read, answer) in &outage.reads {
        assert!(
            answer.is_database_unavailable() && answer.elapsed < FAIL_FAST,
            "GET {read} while Postgres was down: {answer:#?}; logs in {logs}"
        );
    }
    // Readiness is the services' gRPC health and Redis: a service that answers
    // DATABASE_UNAVAILABLE at once is serving, and taking every node out of the load balancer
    // for a dependency they all share would only turn those 503s into refused connections.
    assert_eq!(
        (outage.readiness.status, &outage.readiness.body["status"]),
        (StatusCode::OK, &json!("ready")),
        "/readyz while Postgres was down: {:#?}",
        outage.readiness
    );
    assert!(outage.readiness.elapsed < FAIL_FAST);

    // Back by itself: the first send stored after the restart, and none failing after it.
    let first_stored_after = attempts
        .iter()
        .filter(|send| send.answer.started >= outage.started)
        .find(|send| send.answer.status == StatusCode::CREATED)
        .expect("a send stored after the restart");
    let recovery = first_stored_after
        .answer
        .ended()
        .saturating_duration_since(outage.started);
    assert!(
        recovery < RECOVERY,
        "the first send was stored {recovery:?} after Postgres was back"
    );
    for send in attempts
        .iter()
        .filter(|send| send.answer.started >= first_stored_after.answer.started)
    {
        assert_eq!(
            send.answer.status,
            StatusCode::CREATED,
            "after recovery: {send:#?}"
        );
    }

    // Every failed send, retried with its localId, is stored once; a send whose commit
    // happened but whose answer was lost gets its message back instead of a second one.
    let mut stored: BTreeMap<String, String> = BTreeMap::new();
    let long_id = outage.long.body["data"]["id"].as_str().expect("id");
    stored.insert("long".to_owned(), long_id.to_owned());
    let mut stored_before_their_retry = 0;
    for send in &attempts {
        let id = if send.answer.status == StatusCode::CREATED {
            send.message_id().expect("201 has the message").to_owned()
        } else {
            let retry = client
                .post(
                    &path,
                    json!({"localId": send.local_id, "content": {"type": "text", "text": send.text}}),
                )
                .await;
            assert_eq!(
                retry.status,
                StatusCode::CREATED,
                "retry of {send:#?}: {retry:#?}"
            );
            let created_at = retry.body["data"]["createdAt"].as_str().expect("createdAt");
            if chrono::DateTime::parse_from_rfc3339(created_at).expect("RFC 3339")
                < outage.started_at
            {
                stored_before_their_retry += 1;
            }
            tokio::time::sleep(PACE / 2).await;
            retry.body["data"]["id"].as_str().expect("id").to_owned()
        };
        assert!(
            stored.insert(send.local_id.clone(), id).is_none(),
            "localId {} used twice",
            send.local_id
        );
    }

    // The agent answers what was stored; wait until every turn has ended.
    let deadline = Instant::now() + WAIT;
    let (messages, events) = loop {
        let mut messages = api.all_messages(&user, &conversation, 100).await;
        messages.extend(api.all_messages(&user, &long_conversation, 100).await);
        let events = api.all_events(&user, 0).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let streaming = messages
            .iter()
            .filter(|message| message["status"] == "streaming")
            .count();
        if streaming == 0 && api.all_events(&user, 0).await.len() == events.len() {
            break (messages, events);
        }
        assert!(
            Instant::now() < deadline,
            "{streaming} messages still streaming after {WAIT:?}: {messages:#?}; logs in {logs}"
        );
    };

    // Every message that got a 201 is there exactly once, and no other user message.
    let user_messages: Vec<&Value> = messages
        .iter()
        .filter(|message| message["role"] == "user")
        .collect();
    let mut by_local_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for message in &user_messages {
        by_local_id
            .entry(message["localId"].as_str().expect("localId").to_owned())
            .or_default()
            .push(message["id"].as_str().expect("id").to_owned());
    }
    let expected: BTreeMap<String, Vec<String>> = stored
        .iter()
        .map(|(local_id, id)| (local_id.clone(), vec![id.clone()]))
        .collect();
    assert_eq!(
        by_local_id, expected,
        "user messages by localId; logs in {logs}"
    );

    // No half-written message: every agent message ended, and every stored user message was
    // answered (its turn may have failed while the database was down, but not silently).
    let agent_messages: Vec<&Value> = messages
        .iter()
        .filter(|message| message["role"] == "agent")
        .collect();
    let statuses: BTreeMap<String, usize> =
        agent_messages
            .iter()
            .fold(BTreeMap::new(), |mut counts, message| {
                *counts
                    .entry(message["status"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
                counts
            });
    let answered: BTreeSet<&str> = agent_messages
        .iter()
        .filter_map(|message| message["content"]["text"].as_str())
        .filter_map(|text| text.split_once("You said: ").map(|(_, said)| said))
        .collect();
    let unanswered: Vec<&str> = user_messages
        .iter()
        .filter_map(|message| message["content"]["text"].as_str())
        .filter(|text| !answered.contains(text))
        .collect();

    // Every durable event of the workspace reached the socket once, in order: 1..=last.
    let last = events.len() as u64;
    assert_eq!(
        events
            .iter()
            .filter_map(|event| event["seq"].as_u64())
            .collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>(),
        "the log has no gaps"
    );
    assert_eq!(
        last,
        (user_messages.len() + 2 * agent_messages.len()) as u64,
        "one message.new per message and one message.updated per agent message: {events:#?}"
    );
    let mut seen = Vec::new();
    let mut reconnects = 0;
    while seen.last().copied().unwrap_or(0) < last {
        match socket.next(WAIT).await {
            Next::Event(event) => seen.extend(seq_of(&event)),
            Next::Ended => {
                reconnects += 1;
                let since = seen.last().copied().unwrap_or(0);
                socket = connect(
                    &edge,
                    &user,
                    Some(json!({"since": {user.workspace_id.clone(): since}})),
                )
                .await;
            }
            Next::Quiet => break,
        }
    }
    let received: BTreeSet<u64> = seen.iter().copied().collect();
    let lost = (1..=last).filter(|seq| !received.contains(seq)).count();
    let duplicates = seen.len() - received.len();

    let sends_while_down = attempts
        .iter()
        .filter(|send| send.answer.status != StatusCode::CREATED)
        .collect::<Vec<_>>();
    let slowest_503 = sends_while_down
        .iter()
        .map(|send| send.answer.elapsed)
        .max();
    let conversation_log =
        std::fs::read_to_string(stack.dir().join("conversation.log")).unwrap_or_default();
    let turns_that_waited = conversation_log
        .matches("the database is unavailable; the turn waits for it")
        .count();
    eprintln!(
        "postgres: stop took {:?}, down {:?}, start took {:?}\n\
         sends: {} ({} stored at once, {} got 503, slowest 503 {slowest_503:?}; \
         {stored_before_their_retry} of those were stored before their retry)\n\
         reads while down: {:?}\n\
         first send stored {recovery:?} after the restart; turns that waited for the database: \
         {turns_that_waited}\n\
         user messages {}, agent messages {statuses:?}, unanswered {}\n\
         durable events {last}: lost {lost}, duplicates {duplicates}, socket reconnects {reconnects}",
        outage.stopped - outage.stopping,
        outage.starting - outage.stopped,
        outage.started - outage.starting,
        attempts.len(),
        attempts.len() - sends_while_down.len(),
        sends_while_down.len(),
        outage
            .reads
            .iter()
            .map(|(read, answer)| (*read, answer.elapsed))
            .collect::<Vec<_>>(),
        user_messages.len(),
        unanswered.len(),
    );
    assert_eq!(
        seen,
        (1..=last).collect::<Vec<_>>(),
        "every durable event once, in order: {lost} lost, {duplicates} duplicated; logs in {logs}"
    );
    assert_eq!(lost, 0);
    assert!(
        agent_messages.iter().all(|message| matches!(
            message["status"].as_str(),
            Some("delivered" | "incomplete" | "failed")
        )),
        "an agent message did not end: {statuses:?}"
    );
    assert!(
        unanswered.is_empty(),
        "user messages the agent never answered: {unanswered:?}; logs in {logs}"
    );

    // Agents are not left busy by turns the outage interrupted.
    let (status, agents) = api
        .get(
            &format!("/v1/workspaces/{}/agents", user.workspace_id),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for agent in agents["data"].as_array().expect("agents") {
        assert_eq!(agent["status"], "online", "{agent}");
    }
    let (status, _) = api.get("/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
}
