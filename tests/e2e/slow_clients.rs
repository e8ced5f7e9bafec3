//! Clients that stop reading (issue 18): each costs a bounded number of bytes while it is
//! connected, is let go within a bound, and what it held is freed.

use std::time::Duration;

use futures::StreamExt as _;

use crate::support::api::{Api, User};
use crate::support::scrape::Scrape;
use crate::support::sio::{self, SioClient};
use crate::support::{Options, Stack, resident_kib};

/// The edge's default byte bound per socket (`SOCKET_BUFFER_BYTES`).
const BUFFER_BYTES: u64 = 256 * 1024;
/// What one stalled socket may hold besides its queue: tungstenite's write buffer (128 KiB by
/// default) plus the frame being written.
const WRITE_BUFFER_BYTES: u64 = 128 * 1024 + 32 * 1024;
/// Eviction waits 5 s for a socket to take `sync.lagged`, then its writer gets 5 s to drain.
const LET_GO_WITHIN: Duration = Duration::from_secs(20);
const STALLED: u64 = 40;
const SENDS: usize = 150;
const BATCH: usize = 5;

/// [`SENDS`] messages of 16 KB, [`BATCH`] at a time, each batch once `reader` has every reply
/// of the previous one (a client that reads keeps up; stalled ones fall behind); the highest
/// resident memory of `pid` seen meanwhile.
async fn big_sends(
    api: &Api,
    user: &User,
    conversation: &str,
    reader: &mut SioClient,
    round: &str,
    pid: u32,
) -> u64 {
    let text = format!("{round} {}", "x".repeat(16 * 1024));
    let mut peak = 0;
    let mut events = Vec::new();
    for batch in 0..SENDS / BATCH {
        for i in 0..BATCH {
            let local_id = format!("{round}-{batch}-{i}");
            let (status, body) = api.send(user, conversation, &local_id, &text).await;
            assert!(status.is_success(), "{status}: {body}");
        }
        let mut replies = 0;
        events.extend(
            reader
                .events_until(Duration::from_secs(60), |event| {
                    replies += usize::from(
                        event.name == "message.updated" && event.payload()["status"] == "delivered",
                    );
                    replies == BATCH
                })
                .await,
        );
        peak = peak.max(resident_kib(pid));
    }
    let sent = events
        .iter()
        .filter(|event| {
            event.name == "message.new"
                && event.payload()["role"] == "user"
                && event.payload()["content"]["text"] == text.as_str()
        })
        .count();
    assert_eq!(sent, SENDS, "the reader got every message of {round}");
    assert!(
        !events.iter().any(|event| event.name == "sync.lagged"),
        "the reader was never evicted"
    );
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_cost_bounded_bytes_are_let_go_and_the_others_get_everything() {
    let stack = Stack::embedded_with(Options {
        token_delay_ms: 0,
        ..Options::default()
    })
    .await;
    let edge = stack.edge(0);
    let api = Api::new(edge);
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let token = [("x-token", user.token.as_str())];
    let mut reader = sio::connect(edge, &token, None)
        .await
        .expect("connect")
        .expect_connected();
    let pid = stack.pid("crawbl");
    // The same load once without stalled clients: what the turns themselves allocate for good
    // (the runtime, caches, the database's pages) is not the stalled clients'.
    big_sends(&api, &user, &conversation, &mut reader, "warm-up", pid).await;
    let before = resident_kib(pid);

    // Raw websockets that connect to /v1 and then never read again.
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        match sio::handshake(None, edge, &token, None)
            .await
            .expect("handshake")
        {
            sio::Handshake::Connected(socket) => stalled.push(socket),
            sio::Handshake::Refused(message) => panic!("refused: {message}"),
        }
    }
    let peak = big_sends(&api, &user, &conversation, &mut reader, "stalled", pid).await;

    // While stalled, each costs its queue and write buffer at most (and some slack for the
    // rest of the process). The queue counts the bytes of its packets; the allocator holds each
    // in its size class, up to a quarter more (a 16.1 KB packet takes 20 KiB).
    let growth = peak.saturating_sub(before);
    let bound = STALLED * (BUFFER_BYTES * 5 / 4 + WRITE_BUFFER_BYTES) / 1024 + 4 * 1024;
    eprintln!("slow clients: {before} KiB before, {peak} KiB at the peak (bound {bound} KiB)");
    assert!(
        growth <= bound,
        "{growth} KiB more at the peak for {STALLED} stalled sockets (bound {bound} KiB)"
    );

    // Every stalled socket is let go: the edge counts the reader alone, and each stalled
    // connection, read now, ends after what the kernel still held.
    let deadline = tokio::time::Instant::now() + LET_GO_WITHIN;
    loop {
        let scrape = Scrape::of(edge).await;
        if scrape.value("crawbl_socket_connections") == 1.0 {
            assert_eq!(
                scrape.sum("crawbl_sockets_evicted_total", &[]),
                STALLED as f64,
                "each stalled socket was evicted once"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stalled sockets still connected {LET_GO_WITHIN:?} after the last send: {} (logs in {})",
            scrape.value("crawbl_socket_connections"),
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for mut socket in stalled {
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(_)) = socket.next().await {}
        })
        .await;
        assert!(ended.is_ok(), "a stalled connection was never closed");
    }

    // What they held comes back (the allocator returns freed pages after a short delay).
    let target = before + growth / 4;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut after = resident_kib(pid);
    while after > target && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = resident_kib(pid);
    }
    eprintln!(
        "resident: {before} KiB before, {peak} KiB at the peak, {after} KiB after ({STALLED} stalled sockets)"
    );
    assert!(
        after <= target,
        "{after} KiB after the stalled sockets left ({before} KiB before, {peak} KiB at the peak)"
    );
}
