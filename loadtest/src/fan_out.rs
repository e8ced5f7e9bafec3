//! Fan-out and idle-memory scenarios: many sockets in one workspace.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crawbl_infra::bus::{Channels, EventBus};
use crawbl_infra::jws::SigningKey;
use crawbl_loadtest::rest;
use crawbl_loadtest::sio::SioClient;
use crawbl_loadtest::stats::Percentiles;
use crawbl_proto::events::v1::{Event, MessageDelta, event};

use crate::{Flags, open_sockets};

/// Sockets opened at once while setting up.
const SETUP_CONCURRENCY: usize = 128;
/// How long sockets keep listening after the last publish.
const DRAIN: Duration = Duration::from_secs(3);

/// `sockets` sockets of one workspace spread over the edges in `--edge` (comma-separated); a
/// publisher sends `rate` volatile events per second for `seconds` straight onto the
/// workspace's bus channel (as the services do), each carrying its publish time. Prints the
/// delivered events per second, the delivery latency and the losses.
pub async fn run(flags: &Flags) -> anyhow::Result<()> {
    let edges: Vec<&str> = flags.edge.split(',').collect();
    let account = match &flags.peer_seed {
        Some(seed) => peer_account(seed)?,
        None => rest::sign_up(&reqwest::Client::new(), edges[0]).await?,
    };
    let bus = if flags.publish {
        Some(EventBus::redis(&flags.redis, Channels::from_env()?).await?)
    } else {
        None
    };

    eprintln!(
        "fan-out: opening {} sockets over {} edge(s) from {} source address(es)",
        flags.sockets,
        edges.len(),
        flags.sources
    );
    let tokens = [account.token.clone()];
    let (round, sockets) = open_sockets(
        &edges,
        flags.sources,
        &tokens,
        flags.sockets,
        SETUP_CONCURRENCY,
    )
    .await?;
    round.print("connected");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let publishing = Duration::from_secs(flags.seconds);
    let stop_at = Instant::now() + publishing + DRAIN;
    let listeners: Vec<_> = sockets
        .into_iter()
        .map(|socket| tokio::spawn(listen(socket, stop_at)))
        .collect();

    let interval = Duration::from_secs_f64(1.0 / flags.rate.max(0.001));
    let mut ticker = tokio::time::interval(interval);
    let started = Instant::now();
    let mut published = 0u64;
    if bus.is_some() {
        eprintln!(
            "fan-out: publishing {} events/s for {} s",
            flags.rate, flags.seconds
        );
    } else {
        eprintln!(
            "fan-out: listening for {} s while another process publishes",
            flags.seconds
        );
    }
    while let Some(bus) = bus.as_ref().filter(|_| started.elapsed() < publishing) {
        ticker.tick().await;
        let event = Event {
            workspace_id: account.workspace_id.clone(),
            seq: 0,
            trace_context: Default::default(),
            origin: String::new(),
            kind: Some(event::Kind::MessageDelta(MessageDelta {
                message_id: "fan-out".to_owned(),
                conversation_id: "fan-out".to_owned(),
                agent_id: "fan-out".to_owned(),
                delta: unix_micros().to_string(),
                index: u32::try_from(published).unwrap_or(u32::MAX),
            })),
        };
        bus.publish(&event).await.context("publishing")?;
        published += 1;
    }

    if bus.is_none() {
        tokio::time::sleep_until((stop_at - DRAIN).into()).await;
    }
    let mut latencies = Vec::new();
    let mut indexes = std::collections::BTreeSet::new();
    for listener in listeners {
        let (received, seen) = listener.await.context("a listener panicked")?;
        latencies.extend(received);
        indexes.extend(seen);
    }
    if bus.is_none() {
        // The external publisher numbers its events from 0: the highest seen tells how many.
        published = indexes.last().map_or(0, |last| u64::from(*last) + 1);
    }
    let expected = published * flags.sockets as u64;
    let delivered = latencies.len() as u64;
    println!("fan-out results");
    println!("  sockets             {}", flags.sockets);
    println!("  edges               {}", edges.len());
    println!(
        "  published           {published} events at {} /s",
        flags.rate
    );
    println!("  delivered           {delivered} of {expected}");
    println!(
        "  lost                {}",
        expected.saturating_sub(delivered)
    );
    println!(
        "  delivered per second {:.0}",
        delivered as f64 / publishing.as_secs_f64()
    );
    match Percentiles::of(latencies) {
        Some(percentiles) => println!("  publish → socket    {percentiles}"),
        None => bail!("no event was delivered"),
    }
    Ok(())
}

/// The delivery latency and index of every fan-out event `socket` receives until `stop_at`.
async fn listen(mut socket: SioClient, stop_at: Instant) -> (Vec<Duration>, Vec<u32>) {
    let mut latencies = Vec::new();
    let mut indexes = Vec::new();
    loop {
        let remaining = stop_at.saturating_duration_since(Instant::now());
        let Some(event) = socket.next_event(remaining).await else {
            return (latencies, indexes);
        };
        if event.name != "message.delta" || event.payload()["messageId"] != "fan-out" {
            continue;
        }
        let sent = event.payload()["delta"]
            .as_str()
            .and_then(|micros| micros.parse::<u64>().ok());
        if let Some(sent) = sent {
            latencies.push(Duration::from_micros(unix_micros().saturating_sub(sent)));
        }
        if let Some(index) = event.payload()["index"].as_u64() {
            indexes.push(u32::try_from(index).unwrap_or(u32::MAX));
        }
    }
}

/// Resident memory per idle authenticated socket: the edge's (`--pid`) RSS before and after
/// opening `sockets` sockets that then stay idle.
pub async fn idle_memory(flags: &Flags) -> anyhow::Result<()> {
    let pid = flags.pid.context("--pid of the edge process is required")?;
    let http = reqwest::Client::new();
    let account = rest::sign_up(&http, &flags.edge).await?;
    // One socket first, so the edge's per-process and per-user state is already there.
    let warm_up = crate::connect(&flags.edge, &account.token).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = resident_kib(pid)?;
    let tokens = [account.token.clone()];
    let (round, sockets) = open_sockets(
        &[&flags.edge],
        flags.sources,
        &tokens,
        flags.sockets,
        SETUP_CONCURRENCY,
    )
    .await?;
    round.print("connected");
    // Let allocations settle and a ping round pass.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = resident_kib(pid)?;
    let per_socket = (after.saturating_sub(before)) as f64 * 1024.0 / flags.sockets as f64;
    println!("idle memory results");
    println!("  sockets             {}", sockets.len());
    println!("  edge RSS before     {before} KiB");
    println!("  edge RSS after      {after} KiB");
    println!("  per idle socket     {:.1} KB", per_socket / 1000.0);
    drop((warm_up, sockets));
    Ok(())
}

/// The workspace every Node-peer token names.
const PEER_WORKSPACE: &str = "bench";

/// A seed for the peer's signing key and the public key to give the peer (`PEER_PUBLIC_KEY`).
pub fn print_peer_key() {
    let key = SigningKey::generate("peer");
    println!("PEER_SEED={}", hex(&key.seed()));
    println!(
        "PEER_PUBLIC_KEY={}",
        URL_SAFE_NO_PAD.encode(key.public_key().to_bytes())
    );
}

/// A token the Node peer accepts: signed with the key from `seed_hex` like the edge's access
/// tokens (Ed25519 JWT, audience `crawbl-edge`), naming the peer's benchmark workspace.
fn peer_account(seed_hex: &str) -> anyhow::Result<rest::Account> {
    let bytes: Vec<u8> = (0..seed_hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(seed_hex.get(at..at + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .context("--peer-seed must be 64 hex digits")?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("--peer-seed must be 64 hex digits"))?;
    let expires = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
    let claims = serde_json::json!({
        "sub": "bench-user",
        "aud": "crawbl-edge",
        "exp": expires,
        "workspaces": [PEER_WORKSPACE],
    });
    Ok(rest::Account {
        token: SigningKey::from_seed("peer", &seed).sign(&claims)?,
        workspace_id: PEER_WORKSPACE.to_owned(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status: is the edge running?"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in the process status")
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}
