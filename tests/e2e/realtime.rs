//! The real-time edge at scale: replay on reconnect (`auth.since`), per-workspace bus channels,
//! Redis restarts and edge deaths, `workspace.subscribe`, typing that lapses, slow sockets, and
//! bad packets. Real processes, real Redis, real Socket.IO clients (ours and, in
//! [`the_javascript_client_replays_what_it_missed_after_reconnecting_to_the_other_node`], the
//! npm `socket.io-client` that apps use).

use std::time::Duration;

use prost::Message as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::api::{Api, User};
use crate::support::redis_server::RedisServer;
use crate::support::scrape::Scrape;
use crate::support::sio::{self, Next, ServerEvent, SioClient};
use crate::support::{Options, Stack, redis_url};

const WAIT: Duration = Duration::from_secs(30);
/// How long a socket must stay quiet to show that nothing more (no duplicate) arrives.
const QUIET: Duration = Duration::from_millis(700);
/// Durable events of one plain turn: the user's `message.new`, the agent's `message.new` and
/// `message.updated`.
const DURABLE_PER_TURN: u64 = 3;

async fn connect(edge: &str, user: &User, auth: Option<Value>) -> SioClient {
    sio::connect(edge, &[("x-token", &user.token)], auth)
        .await
        .expect("connect")
        .expect_connected()
}

/// The `seq` of a durable event (its second argument), `None` for volatile ones.
fn seq_of(event: &ServerEvent) -> Option<u64> {
    event.args.get(1)?.get("seq")?.as_u64()
}

fn seqs(events: &[ServerEvent]) -> Vec<u64> {
    events.iter().filter_map(seq_of).collect()
}

/// Every event up to (and including) durable `seq`.
async fn until_seq(socket: &mut SioClient, seq: u64) -> Vec<ServerEvent> {
    socket
        .events_until(WAIT, |event| seq_of(event) == Some(seq))
        .await
}

/// Every event until the agent is back online and the workspace's usage is told (the end of a
/// turn).
async fn until_online(socket: &mut SioClient) -> Vec<ServerEvent> {
    let mut online = false;
    socket
        .events_until(WAIT, move |event| {
            online |= event.name == "agent.status" && event.payload()["status"] == "online";
            online && event.name == "usage.update"
        })
        .await
}

async fn assert_quiet(socket: &mut SioClient) {
    if let Some(event) = socket.next_event(QUIET).await {
        panic!("unexpected extra event {event:?}");
    }
}

/// A few dozen words, so a turn streams for a while.
fn long_text(tag: &str, words: usize) -> String {
    (0..words)
        .map(|index| format!("{tag}-{index}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reconnects_to_the_other_node_with_since_gets_exactly_what_it_missed_then_live_events()
 {
    let stack = Stack::separate_processes(2).await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;

    let mut first = connect(stack.edge(0), &user, None).await;
    api.send_and_wait(&user, &conversation, "m1", "before the drop")
        .await;
    assert_eq!(seqs(&until_seq(&mut first, 3).await), [1, 2, 3]);
    drop(first);

    // Missed while away: two turns.
    api.send_and_wait(&user, &conversation, "m2", "while away")
        .await;
    api.send_and_wait(&user, &conversation, "m3", "still away")
        .await;

    let mut second = connect(
        stack.edge(1),
        &user,
        Some(json!({"since": {user.workspace_id.clone(): 3}})),
    )
    .await;
    let replayed = until_seq(&mut second, 9).await;
    assert_eq!(
        seqs(&replayed),
        (4..=9).collect::<Vec<_>>(),
        "{replayed:#?}"
    );
    assert!(
        replayed.iter().all(|event| seq_of(event).is_some()),
        "only durable events are replayed: {replayed:#?}"
    );
    // Exactly what the log serves, with the live events' position argument.
    let logged = api.all_events(&user, 3).await;
    assert_eq!(logged.len(), replayed.len());
    for (event, logged) in replayed.iter().zip(&logged) {
        assert_eq!(event.name, logged["type"].as_str().expect("type"));
        assert_eq!(event.payload(), &logged["payload"]);
        assert_eq!(
            event.args[1],
            json!({"workspaceId": user.workspace_id, "seq": logged["seq"]})
        );
    }
    assert_quiet(&mut second).await;

    // Then live events, continuing the sequence with nothing replayed twice.
    api.send_and_wait(&user, &conversation, "m4", "back again")
        .await;
    let live = until_online(&mut second).await;
    assert_eq!(seqs(&live), [10, 11, 12]);
    assert!(live.iter().any(|event| event.name == "message.delta"));
    assert_quiet(&mut second).await;
}

/// A durable event as if a second publisher had logged it: a system message, committed to the
/// log (and marked published, so the relay leaves it alone) but not on the bus.
async fn log_event(database_url: &str, user: &User, conversation: &str, seq: u64) -> Vec<u8> {
    use crawbl_proto::conversation::v1 as conv;
    use sqlx::Connection as _;
    let now = chrono::Utc::now().timestamp_millis();
    let event = crawbl_proto::events::v1::Event {
        workspace_id: user.workspace_id.clone(),
        seq,
        kind: Some(crawbl_proto::events::v1::event::Kind::MessageNew(
            conv::Message {
                id: uuid::Uuid::now_v7().to_string(),
                workspace_id: user.workspace_id.clone(),
                conversation_id: conversation.to_owned(),
                role: conv::MessageRole::System.into(),
                content: Some(conv::MessageContent {
                    r#type: "text".to_owned(),
                    text: format!("logged {seq}"),
                    ..conv::MessageContent::default()
                }),
                status: conv::MessageStatus::Delivered.into(),
                created_at_ms: now,
                updated_at_ms: now,
                ..conv::Message::default()
            },
        )),
        ..Default::default()
    };
    let envelope = event.encode_to_vec();
    let mut database = sqlx::postgres::PgConnection::connect(database_url)
        .await
        .expect("connect to the stack's database");
    let seq = i64::try_from(seq).expect("seq");
    sqlx::query(
        "INSERT INTO events (workspace_id, seq, envelope, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&user.workspace_id)
    .bind(seq)
    .bind(&envelope)
    .bind(now)
    .execute(&mut database)
    .await
    .expect("log an event");
    sqlx::query(
        "UPDATE workspace_sequences SET last_seq = $2, published_seq = $2 WHERE workspace_id = $1",
    )
    .bind(&user.workspace_id)
    .bind(seq)
    .execute(&mut database)
    .await
    .expect("advance the sequence");
    envelope
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_delivers_durable_events_once_and_in_order_filling_gaps_from_the_log() {
    let stack = Stack::separate_processes(1).await;
    let database_url = stack.internals.clone().expect("internals").database_url;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let mut socket = connect(stack.edge(0), &user, None).await;
    api.send_and_wait(&user, &conversation, "m1", "hello").await;
    until_online(&mut socket).await;

    let mut redis = redis_connection(&redis_url()).await;
    let channel = format!("crawbl:events:{}", user.workspace_id);
    let mut envelopes = std::collections::BTreeMap::new();
    for seq in 4..=9 {
        envelopes.insert(
            seq,
            log_event(&database_url, &user, &conversation, seq).await,
        );
    }
    let mut publish = async |seq: u64| {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(&envelopes[&seq])
            .query_async(&mut redis)
            .await
            .expect("PUBLISH");
    };

    // 5 arrives without 4: it waits, then 4 comes from the log, and the rest of the log with it.
    let published = tokio::time::Instant::now();
    publish(5).await;
    let first = socket.next_event(WAIT).await.expect("an event");
    assert!(
        published.elapsed() >= Duration::from_millis(200),
        "the gap was filled after a short wait, not at once"
    );
    assert_eq!(seq_of(&first), Some(4));
    let rest = until_seq(&mut socket, 9).await;
    assert_eq!(seqs(&rest), [5, 6, 7, 8, 9]);
    assert_eq!(rest[0].payload()["content"]["text"], "logged 5");

    // Late and repeated copies are dropped.
    for seq in [4, 6, 9, 5] {
        publish(seq).await;
    }
    assert_quiet(&mut socket).await;

    // Out of order but complete: delivered in order without waiting for the log.
    for seq in [11, 10] {
        envelopes.insert(
            seq,
            log_event(&database_url, &user, &conversation, seq).await,
        );
    }
    let mut publish = async |seq: u64| {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(&envelopes[&seq])
            .query_async(&mut redis)
            .await
            .expect("PUBLISH");
    };
    publish(11).await;
    publish(10).await;
    assert_eq!(seqs(&until_seq(&mut socket, 11).await), [10, 11]);
    assert_quiet(&mut socket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_older_than_the_log_keeps_gets_sync_reset_then_live_events() {
    use sqlx::Connection as _;
    let stack = Stack::separate_processes(1).await;
    let database_url = stack.internals.clone().expect("internals").database_url;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    api.send_and_wait(&user, &conversation, "m1", "soon forgotten")
        .await;
    // Retention pruned the first two events.
    let mut database = sqlx::postgres::PgConnection::connect(&database_url)
        .await
        .expect("connect to the stack's database");
    sqlx::query("DELETE FROM events WHERE workspace_id = $1 AND seq <= 2")
        .bind(&user.workspace_id)
        .execute(&mut database)
        .await
        .expect("prune");

    let mut kept = connect(
        stack.edge(0),
        &user,
        Some(json!({"since": {user.workspace_id.clone(): 2}})),
    )
    .await;
    assert_eq!(seqs(&until_seq(&mut kept, 3).await), [3]);

    let mut pruned = connect(
        stack.edge(0),
        &user,
        Some(json!({"since": {user.workspace_id.clone(): 0}})),
    )
    .await;
    let reset = pruned.next_event(WAIT).await.expect("sync.reset");
    assert_eq!(reset.name, "sync.reset");
    assert_eq!(reset.payload(), &json!({"workspaceId": user.workspace_id}));
    assert_quiet(&mut pruned).await;
    api.send_and_wait(&user, &conversation, "m2", "live").await;
    assert_eq!(seqs(&until_seq(&mut pruned, 6).await), [4, 5, 6]);
    assert_eq!(seqs(&until_seq(&mut kept, 6).await), [4, 5, 6]);
}

async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis")
}

/// How many clients (edge nodes) subscribe to the workspace's event channel.
async fn subscribers(
    redis: &mut redis::aio::MultiplexedConnection,
    numsub: &str,
    workspace_id: &str,
) -> u64 {
    let (_, count): (String, u64) = redis::cmd("PUBSUB")
        .arg(numsub)
        .arg(format!("crawbl:events:{workspace_id}"))
        .query_async(redis)
        .await
        .expect("PUBSUB NUMSUB");
    count
}

/// Waits until the subscriber count is `expected`.
async fn subscribers_become(
    redis: &mut redis::aio::MultiplexedConnection,
    numsub: &str,
    workspace_id: &str,
    expected: u64,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let count = subscribers(redis, numsub, workspace_id).await;
        if count == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{workspace_id} has {count} subscribing nodes, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_subscribes_to_a_workspace_only_while_it_has_sockets_in_it() {
    let stack = Stack::separate_processes(2).await;
    let api = Api::new(stack.edge(0));
    let alice = api.sign_up().await;
    let bob = api.sign_up().await;
    let mut redis = redis_connection(&redis_url()).await;
    assert_eq!(
        subscribers(&mut redis, "NUMSUB", &alice.workspace_id).await,
        0
    );

    let mut alice_on_0 = connect(stack.edge(0), &alice, None).await;
    let mut bob_on_1 = connect(stack.edge(1), &bob, None).await;
    subscribers_become(&mut redis, "NUMSUB", &alice.workspace_id, 1).await;
    subscribers_become(&mut redis, "NUMSUB", &bob.workspace_id, 1).await;

    // A publish on Alice's channel reaches one node, the one with her socket; Bob's node never
    // sees it.
    let probe = crawbl_proto::events::v1::Event {
        workspace_id: alice.workspace_id.clone(),
        kind: Some(crawbl_proto::events::v1::event::Kind::AgentStatus(
            crawbl_proto::events::v1::AgentStatusChanged {
                agent_id: "probe".to_owned(),
                status: crawbl_proto::conversation::v1::AgentStatus::Online.into(),
            },
        )),
        ..Default::default()
    };
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg(format!("crawbl:events:{}", alice.workspace_id))
        .arg(probe.encode_to_vec())
        .query_async(&mut redis)
        .await
        .expect("PUBLISH");
    assert_eq!(
        receivers, 1,
        "exactly one edge node receives the workspace's events"
    );
    let event = alice_on_0
        .next_event(WAIT)
        .await
        .expect("the probe arrives");
    assert_eq!(event.name, "agent.status");
    assert_eq!(event.payload()["agentId"], "probe");
    assert_quiet(&mut bob_on_1).await;

    // More sockets on a node that already follows the workspace change nothing; the other node
    // follows it once it has a socket there, and stops when the socket goes.
    let alice_on_0_again = connect(stack.edge(0), &alice, None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        subscribers(&mut redis, "NUMSUB", &alice.workspace_id).await,
        1
    );
    let alice_on_1 = connect(stack.edge(1), &alice, None).await;
    subscribers_become(&mut redis, "NUMSUB", &alice.workspace_id, 2).await;
    drop(alice_on_1);
    subscribers_become(&mut redis, "NUMSUB", &alice.workspace_id, 1).await;
    drop(alice_on_0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        subscribers(&mut redis, "NUMSUB", &alice.workspace_id).await,
        1
    );
    drop(alice_on_0_again);
    subscribers_become(&mut redis, "NUMSUB", &alice.workspace_id, 0).await;
    assert_eq!(
        subscribers(&mut redis, "NUMSUB", &bob.workspace_id).await,
        1
    );

    // Leaving a room through workspace.unsubscribe counts too.
    let ack = bob_on_1
        .emit_with_ack(
            "workspace.unsubscribe",
            &[json!({"workspaceIds": [bob.workspace_id]})],
            WAIT,
        )
        .await
        .expect("ack");
    assert_eq!(ack[0]["ok"], true, "{ack:?}");
    subscribers_become(&mut redis, "NUMSUB", &bob.workspace_id, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_pub_sub_carries_every_event_when_configured() {
    let stack = Stack::separate_processes_with(2, &[("REDIS_SHARDED_PUBSUB", "true")]).await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let mut redis = redis_connection(&redis_url()).await;
    let mut on_0 = connect(stack.edge(0), &user, None).await;
    let mut on_1 = connect(stack.edge(1), &user, None).await;
    subscribers_become(&mut redis, "SHARDNUMSUB", &user.workspace_id, 2).await;
    assert_eq!(
        subscribers(&mut redis, "NUMSUB", &user.workspace_id).await,
        0
    );

    api.send_and_wait(&user, &conversation, "m1", "over shards")
        .await;
    for socket in [&mut on_0, &mut on_1] {
        let events = until_seq(socket, 3).await;
        assert_eq!(seqs(&events), [1, 2, 3]);
        assert!(events.iter().any(|event| event.name == "message.delta"));
        until_online(socket).await;
    }
    drop(on_1);
    subscribers_become(&mut redis, "SHARDNUMSUB", &user.workspace_id, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connected_client_ends_with_every_durable_event_in_order_across_a_redis_restart() {
    let mut redis = RedisServer::start().await;
    let redis_at = redis.url();
    let stack = Stack::separate_processes_with(
        2,
        &[
            ("REDIS_URL", redis_at.as_str()),
            ("RUNTIME_STUB_TOKEN_DELAY_MS", "15"),
        ],
    )
    .await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let mut sockets = vec![
        connect(stack.edge(0), &user, None).await,
        connect(stack.edge(1), &user, None).await,
        connect(stack.edge(1), &user, None).await,
    ];

    const TURNS: u64 = 8;
    let sends = async {
        for turn in 0..TURNS {
            let text = long_text(&format!("turn{turn}"), 20);
            api.send_and_wait(&user, &conversation, &format!("m{turn}"), &text)
                .await;
        }
    };
    let outage = async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        redis.stop().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        redis.start_again().await;
    };
    tokio::join!(sends, outage);

    let last = TURNS * DURABLE_PER_TURN;
    assert_eq!(api.all_events(&user, 0).await.len() as u64, last);
    for socket in &mut sockets {
        let events = until_seq(socket, last).await;
        assert_eq!(
            seqs(&events),
            (1..=last).collect::<Vec<_>>(),
            "every durable event once, in order (logs in {})",
            stack.logs()
        );
        until_online(socket).await;
        // The relay publishes what Redis missed once it is back: nothing may arrive twice.
        while let Some(event) = socket.next_event(QUIET).await {
            assert!(seq_of(&event).is_none(), "a durable event again: {event:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_edge_reconnect_to_the_other_with_since_and_lose_nothing() {
    let mut stack =
        Stack::separate_processes_with(2, &[("RUNTIME_STUB_TOKEN_DELAY_MS", "15")]).await;
    let survivor_edge = stack.edge(1).to_owned();
    let api = Api::new(&survivor_edge);
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let mut doomed = connect(stack.edge(0), &user, None).await;
    let mut survivor = connect(&survivor_edge, &user, None).await;

    const TURNS: u64 = 6;
    let last = TURNS * DURABLE_PER_TURN;
    let sends = async {
        for turn in 0..TURNS {
            let text = long_text(&format!("turn{turn}"), 20);
            api.send_and_wait(&user, &conversation, &format!("m{turn}"), &text)
                .await;
        }
    };
    let doomed_client = async {
        // Until the node dies, mid-stream.
        let mut seen = Vec::new();
        loop {
            match doomed.next(WAIT).await {
                Next::Event(event) => {
                    if let Some(seq) = seq_of(&event) {
                        seen.push(seq);
                    }
                    if seen.len() == 5 {
                        stack.kill_edge(0).await;
                    }
                }
                Next::Ended => break,
                Next::Quiet => panic!("the killed edge's socket never ended"),
            }
        }
        let since = seen.last().copied().unwrap_or(0);
        let mut reconnected = connect(
            &survivor_edge,
            &user,
            Some(json!({"since": {user.workspace_id.clone(): since}})),
        )
        .await;
        seen.extend(seqs(&until_seq(&mut reconnected, last).await));
        (seen, reconnected)
    };
    let ((), (seen, mut reconnected)) = tokio::join!(sends, doomed_client);
    assert_eq!(seen, (1..=last).collect::<Vec<_>>());
    assert_eq!(
        seqs(&until_seq(&mut survivor, last).await),
        (1..=last).collect::<Vec<_>>()
    );
    until_online(&mut reconnected).await;
    while let Some(event) = reconnected.next_event(QUIET).await {
        assert!(seq_of(&event).is_none(), "a durable event again: {event:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_all_in_one_stack_keeps_delivering_its_own_events_while_redis_is_down() {
    let mut redis = RedisServer::start().await;
    let stack = Stack::embedded_with(Options {
        redis_url: Some(redis.url()),
        ..Options::default()
    })
    .await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let mut socket = connect(stack.edge(0), &user, None).await;

    redis.stop().await;
    api.send_and_wait(&user, &conversation, "m1", "redis is gone")
        .await;
    let events = until_online(&mut socket).await;
    assert_eq!(seqs(&events), [1, 2, 3]);
    assert!(events.iter().any(|event| event.name == "message.delta"));

    // Redis back: the relay publishes the logged events again; the socket gets no duplicate.
    redis.start_again().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    api.send_and_wait(&user, &conversation, "m2", "redis is back")
        .await;
    let events = until_seq(&mut socket, 6).await;
    assert_eq!(seqs(&events), [4, 5, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_in_the_handshake_is_validated_and_a_position_the_log_cannot_serve_gets_sync_reset() {
    let stack = Stack::embedded().await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let stranger = api.sign_up().await;
    let other_workspace = api.create_workspace(&user, "Second").await;
    let conversation = api.create_conversation(&user).await;
    api.send_and_wait(&user, &conversation, "m1", "hello").await;

    let refused = |auth: Value| {
        let edge = stack.edge(0).to_owned();
        let token = user.token.clone();
        async move {
            sio::connect(&edge, &[("x-token", &token)], Some(auth))
                .await
                .expect("connect")
                .expect_refused()
        }
    };
    let ws = user.workspace_id.clone();
    assert_eq!(
        refused(json!({"since": 3})).await,
        "invalid auth payload: since must be an object like {\"<workspaceId>\": <seq>}"
    );
    assert_eq!(
        refused(json!({"since": {ws.clone(): -1}})).await,
        format!("invalid auth payload: since.{ws} must be a whole number of at least 0")
    );
    assert_eq!(
        refused(json!({"since": {ws.clone(): "2"}})).await,
        format!("invalid auth payload: since.{ws} must be a whole number of at least 0")
    );
    assert_eq!(
        refused(json!({"since": {stranger.workspace_id.clone(): 0}})).await,
        "workspace not found"
    );
    assert_eq!(
        refused(json!({"workspaceId": ws, "since": {other_workspace.clone(): 0}})).await,
        format!(
            "invalid auth payload: since names {other_workspace}, which is not auth.workspaceId"
        )
    );

    // From the start of the log: everything, in order.
    let mut from_start = connect(
        stack.edge(0),
        &user,
        Some(json!({"since": {ws.clone(): 0}})),
    )
    .await;
    assert_eq!(seqs(&until_seq(&mut from_start, 3).await), [1, 2, 3]);
    assert_quiet(&mut from_start).await;

    // A position past the log's end cannot be served: sync.reset, then live events.
    let mut ahead = connect(
        stack.edge(0),
        &user,
        Some(json!({"since": {ws.clone(): 1000}})),
    )
    .await;
    let reset = ahead.next_event(WAIT).await.expect("sync.reset");
    assert_eq!(reset.name, "sync.reset");
    assert_eq!(reset.payload(), &json!({"workspaceId": ws}));
    api.send_and_wait(&user, &conversation, "m2", "again").await;
    assert_eq!(seqs(&until_seq(&mut ahead, 6).await), [4, 5, 6]);
    assert_eq!(seqs(&until_seq(&mut from_start, 6).await), [4, 5, 6]);
}

/// Emits `event` with `payload` and returns the ack's single argument.
async fn request(socket: &SioClient, event: &str, payload: Value) -> Value {
    let mut args = socket
        .emit_with_ack(event, &[payload], WAIT)
        .await
        .expect("ack");
    assert_eq!(args.len(), 1, "{args:?}");
    args.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_subscribe_and_unsubscribe_change_rooms_and_answer_with_acks() {
    let stack = Stack::embedded().await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let stranger = api.sign_up().await;
    let second = User {
        workspace_id: api.create_workspace(&user, "Second").await,
        ..user.clone()
    };
    let first_conversation = api.create_conversation(&user).await;
    let second_conversation = api.create_conversation(&second).await;
    api.send_and_wait(&second, &second_conversation, "s1", "before subscribing")
        .await;

    let mut socket = connect(
        stack.edge(0),
        &user,
        Some(json!({"workspaceId": user.workspace_id})),
    )
    .await;
    // Subscribing with since replays the second workspace's log, then the ack comes.
    let answer = request(
        &socket,
        "workspace.subscribe",
        json!({"workspaceIds": [second.workspace_id], "since": {second.workspace_id.clone(): 0}}),
    )
    .await;
    assert_eq!(
        answer,
        json!({"ok": true, "workspaceIds": [second.workspace_id]})
    );
    let replayed = until_seq(&mut socket, 3).await;
    assert_eq!(seqs(&replayed), [1, 2, 3]);
    assert!(
        replayed
            .iter()
            .all(|event| event.payload()["workspaceId"] == second.workspace_id)
    );

    // Live events of both now; then none of the first once unsubscribed.
    api.send_and_wait(&second, &second_conversation, "s2", "subscribed")
        .await;
    assert_eq!(seqs(&until_seq(&mut socket, 6).await), [4, 5, 6]);
    let answer = request(
        &socket,
        "workspace.unsubscribe",
        json!({"workspaceIds": [user.workspace_id]}),
    )
    .await;
    assert_eq!(
        answer,
        json!({"ok": true, "workspaceIds": [user.workspace_id]})
    );
    until_online(&mut socket).await;
    api.send_and_wait(&user, &first_conversation, "f1", "unheard")
        .await;
    assert_quiet(&mut socket).await;

    // Errors: all or nothing.
    let answer = request(
        &socket,
        "workspace.subscribe",
        json!({"workspaceIds": [user.workspace_id, stranger.workspace_id]}),
    )
    .await;
    assert_eq!(answer["ok"], false);
    assert_eq!(answer["error"]["code"], "WORKSPACE_NOT_FOUND");
    for payload in [
        json!("nope"),
        json!({"workspaceIds": "w"}),
        json!({"workspaceIds": []}),
        json!({"workspaceIds": [user.workspace_id], "since": {user.workspace_id.clone(): -4}}),
    ] {
        let answer = request(&socket, "workspace.subscribe", payload.clone()).await;
        assert_eq!(answer["ok"], false, "{payload}");
        assert_eq!(answer["error"]["code"], "INVALID_PAYLOAD", "{payload}");
        assert!(answer["error"]["message"].is_string());
    }
    assert_quiet(&mut socket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_that_never_stops_is_stopped_by_the_edge_after_its_ttl() {
    let stack = Stack::embedded_with(Options {
        env: vec![("AGENT_TYPING_TTL_MS", "300".to_owned())],
        ..Options::default()
    })
    .await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let mut socket = connect(stack.edge(0), &user, None).await;
    // The agent types, then stays silent for 2 s before its first token.
    let (status, body) = api
        .send(&user, &conversation, "slow", "/slow 2000\nhello")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let until_typing = socket
        .events_until(WAIT, |event| event.name == "agent.typing")
        .await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        until_typing.last().expect("typing").payload()["isTyping"],
        true
    );
    let stop = socket
        .events_until(WAIT, |event| event.name == "agent.typing")
        .await;
    let waited = started.elapsed();
    assert_eq!(stop.last().expect("typing").payload()["isTyping"], false);
    assert!(
        stop.iter().all(|event| event.name != "message.delta"),
        "typing lapsed before the first token: {stop:#?}"
    );
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_millis(1500),
        "typing lapsed after {waited:?}"
    );
    // The turn still ends as usual.
    let rest = until_online(&mut socket).await;
    assert!(rest.iter().any(|event| event.name == "message.updated"));
}

/// An Engine.IO long-polling client that does not poll: the server has to buffer what it sends.
struct Poller {
    http: reqwest::Client,
    url: String,
}

impl Poller {
    async fn connect(edge: &str, token: &str) -> Self {
        let http = crawbl_loadtest::rest::http_client();
        let base = format!("{edge}/socket.io/?EIO=4&transport=polling");
        let open = http
            .get(&base)
            .send()
            .await
            .expect("open")
            .text()
            .await
            .expect("body");
        let handshake: Value =
            serde_json::from_str(open.strip_prefix('0').expect("open packet")).expect("json");
        let url = format!("{base}&sid={}", handshake["sid"].as_str().expect("sid"));
        let poller = Self { http, url };
        poller
            .post(format!("40/v1,{}", json!({"token": token})))
            .await;
        let mut connected = Vec::new();
        while !connected
            .iter()
            .any(|packet: &String| packet.starts_with("40/v1,"))
        {
            assert!(connected.len() < 10, "{connected:?}");
            connected.extend(poller.poll().await);
        }
        poller
    }

    async fn post(&self, body: String) {
        let response = self
            .http
            .post(&self.url)
            .body(body)
            .send()
            .await
            .expect("post");
        assert!(response.status().is_success());
    }

    /// One poll: the packets the server had waiting (pings are answered).
    async fn poll(&self) -> Vec<String> {
        let response = self.http.get(&self.url).send().await.expect("poll");
        if !response.status().is_success() {
            return Vec::new();
        }
        let body = response.text().await.expect("body");
        let packets: Vec<String> = body.split('\u{1e}').map(str::to_owned).collect();
        if packets.iter().any(|packet| packet == "2") {
            self.post("3".to_owned()).await;
        }
        packets
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_cannot_keep_up_drops_volatile_events_and_is_disconnected_with_a_reason() {
    let stack = Stack::embedded_with(Options {
        token_delay_ms: 0,
        ..Options::default()
    })
    .await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let poller = Poller::connect(stack.edge(0), &user.token).await;

    // 400 deltas for a socket whose buffer holds 128 packets, then the final message.updated.
    let text = long_text("word", 400);
    api.send_and_wait(&user, &conversation, "m1", &text).await;
    // The reply is stored before its `message.updated` reaches the edge: polling any earlier
    // could make room for it.
    let deadline = tokio::time::Instant::now() + WAIT;
    while Scrape::of(stack.edge(0)).await.sum(
        "crawbl_events_dropped_total",
        &["reason=\"socket_evicted\""],
    ) == 0.0
    {
        assert!(tokio::time::Instant::now() < deadline, "never evicted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut packets = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !packets
        .iter()
        .any(|packet: &String| packet.starts_with("41/v1"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never disconnected; got {} packets: {:?}… (logs in {})",
            packets.len(),
            packets
                .iter()
                .map(|packet| packet.chars().take(40).collect::<String>())
                .collect::<Vec<_>>(),
            stack.logs()
        );
        packets.extend(poller.poll().await);
    }
    let events: Vec<(String, Value)> = packets
        .iter()
        .filter_map(|packet| packet.strip_prefix("42/v1,"))
        .filter_map(|body| serde_json::from_str::<Vec<Value>>(body).ok())
        .map(|mut args| {
            let name = args.remove(0).as_str().unwrap_or_default().to_owned();
            (name, args.first().cloned().unwrap_or_default())
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    let deltas = names
        .iter()
        .filter(|name| **name == "message.delta")
        .count();
    assert!(deltas > 0 && deltas < 400, "{deltas} deltas");
    assert_eq!(
        names.iter().filter(|name| **name == "message.new").count(),
        2
    );
    assert!(!names.contains(&"message.updated"), "{names:?}");
    let (_, reason) = events
        .iter()
        .find(|(name, _)| name == "sync.lagged")
        .expect("told why");
    assert_eq!(reason["code"], "SLOW_CONSUMER");
    assert!(
        reason["message"]
            .as_str()
            .expect("message")
            .contains("since")
    );

    // What it missed comes back with since.
    let mut again = connect(
        stack.edge(0),
        &user,
        Some(json!({"since": {user.workspace_id.clone(): 2}})),
    )
    .await;
    let replayed = until_seq(&mut again, 3).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].name, "message.updated");
    assert_eq!(replayed[0].payload()["status"], "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_and_wrong_payloads_never_break_the_edge() {
    let stack = Stack::embedded().await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let subscribe = json!({"workspaceIds": [user.workspace_id]});
    let frames = [
        "42/v1,not json".to_owned(),
        "42/v1,[]".to_owned(),
        "42/v1,[123, {}]".to_owned(),
        "42/v1,{\"a\": 1}".to_owned(),
        "42/v1,[\"workspace.subscribe\"]".to_owned(),
        "42/v1,9[\"workspace.subscribe\", null, 1, 2]".to_owned(),
        "42/v1,[\"no.such.event\", 1]".to_owned(),
        "43/v1,77[\"an ack nobody asked for\"]".to_owned(),
        "49/v1,".to_owned(),
        "4".to_owned(),
        "".to_owned(),
        "\u{0}\u{1}garbage".to_owned(),
    ];
    for frame in frames {
        let socket = connect(stack.edge(0), &user, None).await;
        socket.send_raw(frame.clone());
        // The socket either ignored the frame (and still answers) or was closed for it.
        match socket
            .emit_with_ack(
                "workspace.subscribe",
                std::slice::from_ref(&subscribe),
                Duration::from_secs(5),
            )
            .await
        {
            Ok(answer) => assert_eq!(answer[0]["ok"], true, "after {frame:.40}: {answer:?}"),
            Err(error) => assert!(
                error.to_string().contains("ended"),
                "after {frame:.40}: {error}"
            ),
        }
    }
    // A packet over 64 KiB ends the connection.
    let mut oversized = connect(stack.edge(0), &user, None).await;
    oversized.send_raw(format!(
        "42/v1,[\"workspace.subscribe\", \"{}\"]",
        "x".repeat(70 * 1024)
    ));
    assert!(oversized.disconnected_within(WAIT).await);

    // Wrong payloads get an error ack.
    let socket = connect(stack.edge(0), &user, None).await;
    let answer = socket
        .emit_with_ack("workspace.unsubscribe", &[json!(42)], WAIT)
        .await
        .expect("ack");
    assert_eq!(answer[0]["error"]["code"], "INVALID_PAYLOAD");
    let answer = socket
        .emit_with_ack("workspace.subscribe", &[], WAIT)
        .await
        .expect("ack");
    assert_eq!(answer[0]["error"]["code"], "INVALID_PAYLOAD");

    // The edge is fine: a turn still reaches a new socket.
    let mut fresh = connect(stack.edge(0), &user, None).await;
    let conversation = api.create_conversation(&user).await;
    api.send_and_wait(&user, &conversation, "m1", "still there")
        .await;
    assert_eq!(seqs(&until_seq(&mut fresh, 3).await), [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_client_replays_what_it_missed_after_reconnecting_to_the_other_node() {
    let stack = Stack::separate_processes(2).await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let outcome = crate::support::js::run_replay(
        stack.edge(0),
        stack.edge(1),
        &user.token,
        &user.workspace_id,
        &conversation,
    )
    .await;
    // The script checks the contract itself; these check what it reports.
    assert_eq!(outcome["before"], json!([1, 2, 3]), "{outcome:#}");
    assert_eq!(
        outcome["replayed"],
        json!([4, 5, 6, 7, 8, 9]),
        "{outcome:#}"
    );
    assert_eq!(outcome["live"], json!([10, 11, 12]), "{outcome:#}");
    let logged: Vec<u64> = api
        .all_events(&user, 3)
        .await
        .iter()
        .map(|event| event["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(json!(logged[..6]), outcome["replayed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_client_works_over_long_polling_websocket_and_the_upgrade_with_acks_binary_and_reconnects()
 {
    let stack = Stack::embedded().await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let outcome = crate::support::js::run_contract(
        stack.edge(0),
        &user.token,
        &user.workspace_id,
        &conversation,
    )
    .await;
    // The script checks the contract itself; these check what it reports.
    for transport in ["polling", "websocket", "upgrade"] {
        assert_eq!(outcome[transport]["reconnected"], true, "{outcome:#}");
        assert_eq!(
            outcome[transport]["errorCode"], "CONVERSATION_NOT_FOUND",
            "{outcome:#}"
        );
    }
    assert_eq!(outcome["upgrade"]["before_cut"], "websocket", "{outcome:#}");
    // Each transport's message.send made one message.
    let messages = api.all_messages(&user, &conversation, 50).await;
    let over: Vec<&str> = messages
        .iter()
        .filter_map(|message| message["content"]["text"].as_str())
        .filter(|text| text.starts_with("over "))
        .collect();
    assert_eq!(over.len(), 3, "{over:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_works_over_long_polling_and_websocket_with_acks_binary_and_reconnects() {
    let stack = Stack::embedded().await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let outcome = crate::support::python::run_contract(
        stack.edge(0),
        &user.token,
        &user.workspace_id,
        &conversation,
    )
    .await;
    for transport in ["polling", "websocket"] {
        assert_eq!(outcome[transport]["connected"], transport, "{outcome:#}");
        assert_eq!(outcome[transport]["reconnected"], true, "{outcome:#}");
        assert_eq!(
            outcome[transport]["errorCode"], "CONVERSATION_NOT_FOUND",
            "{outcome:#}"
        );
    }
    let messages = api.all_messages(&user, &conversation, 50).await;
    let over = messages
        .iter()
        .filter_map(|message| message["content"]["text"].as_str())
        .filter(|text| text.starts_with("python over "))
        .count();
    assert_eq!(over, 2);
}
