//! Scenarios with many sockets in one workspace, held by worker processes: fan-out, idle
//! memory and the reconnect storm. Each prints its figures and one `RESULT {json}` line that
//! `scripts/bench.sh` puts side by side with the same scenario against the other targets.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crawbl_infra::bus::{Channels, EventBus};
use crawbl_infra::jws::SigningKey;
use crawbl_loadtest::{process, rest};
use crawbl_proto::events::v1::{Event, MessageDelta, event};
use serde_json::{Value, json};

use crate::Flags;
use crate::workers::{Connected, Spec, Workers, unix_micros, unix_millis};

/// How long sockets keep listening after the last publish.
const DRAIN: Duration = Duration::from_secs(3);
/// How long the storm's sockets have, after the last send, to get every message.
const STORM_SETTLE: Duration = Duration::from_secs(30);

/// `sockets` sockets of one workspace spread over the edges in `--edge` (comma-separated),
/// while `rate` events per second are published for `seconds`, each carrying its publish time.
/// Prints the delivered events per second, the delivery latency, the losses and, with
/// `--pids`, the servers' CPU time per delivery and their resident memory.
pub async fn run(flags: &Flags) -> anyhow::Result<()> {
    let edges: Vec<&str> = flags.edge.split(',').collect();
    let account = account(flags, edges[0]).await?;
    let bus = match &flags.publish_command {
        Some(_) => None,
        None => Some(EventBus::redis(&flags.redis, Channels::from_env()?).await?),
    };
    let servers = Servers(flags.pids.clone());

    eprintln!(
        "fan-out: opening {} sockets over {} edge(s)",
        flags.sockets,
        edges.len()
    );
    let (mut workers, connected) = Workers::start(&Spec {
        edges: &edges,
        failover: None,
        token: &account.token,
        workspace: &account.workspace_id,
        sockets: flags.sockets,
        sources: flags.sources,
    })
    .await?;
    connected.print("connected");
    tokio::time::sleep(Duration::from_secs(1)).await;

    eprintln!(
        "fan-out: publishing {} events/s for {} s",
        flags.rate, flags.seconds
    );
    let cpu_before = servers.cpu_seconds()?;
    let publishing = Instant::now();
    let published = match &bus {
        Some(bus) => Some(publish(bus, &account.workspace_id, flags.rate, flags.seconds).await?),
        None => {
            run_publish_command(flags).await?;
            None
        }
    };
    let publishing = publishing.elapsed();
    tokio::time::sleep(DRAIN).await;
    let cpu = servers.cpu_seconds()? - cpu_before;
    let report = workers.report(Duration::ZERO, &[]).await?;
    // An external publisher numbers its events from 0: the highest seen tells how many.
    let published = published.unwrap_or(report.max_index.map_or(0, |last| last + 1));

    let expected = published * connected.sockets;
    let delivered = report.delivered;
    // From the first event's publish to the last delivery, so that a target that falls behind
    // is measured by when it caught up, not by when the publisher stopped.
    let window = match (report.first_sent_unix_us, report.last_arrival_unix_us) {
        (Some(first), Some(last)) if last > first => Duration::from_micros(last - first),
        _ => publishing,
    };
    let per_second = delivered as f64 / window.as_secs_f64();
    let latency = report
        .latency
        .percentiles()
        .context("no event was delivered")?;
    println!("fan-out results ({})", flags.label);
    println!("  sockets              {}", connected.sockets);
    println!("  edges                {}", edges.len());
    println!(
        "  published            {published} events at {} /s",
        flags.rate
    );
    println!("  delivered            {delivered} of {expected}");
    println!(
        "  undelivered          {} ({} s after the last publish)",
        expected.saturating_sub(delivered),
        DRAIN.as_secs()
    );
    println!(
        "  delivered per second {per_second:.0} (over {:.2} s, first publish → last delivery)",
        window.as_secs_f64()
    );
    println!("  publish → socket     {latency}");
    let mut result = json!({
        "sockets": connected.sockets,
        "rate": flags.rate,
        "deliveredPerSecond": per_second.round(),
        "undelivered": expected.saturating_sub(delivered),
        "p50Ms": millis(latency.p50),
        "p99Ms": millis(latency.p99),
        "maxMs": millis(latency.max),
    });
    if !servers.0.is_empty() {
        let per_delivery = cpu * 1e6 / delivered.max(1) as f64;
        println!(
            "  server CPU           {cpu:.2} s ({:.0} % of one core), {per_delivery:.2} µs per delivery",
            cpu * 100.0 / (publishing + DRAIN).as_secs_f64()
        );
        result["cpuMicrosPerDelivery"] = json!((per_delivery * 100.0).round() / 100.0);
    }
    print_result("fan-out", flags, result);
    Ok(())
}

/// Resident memory per idle authenticated socket: the servers' (`--pids`) RSS before and after
/// opening `sockets` sockets over the edges in `--edge`, which then stay idle for `--settle`.
pub async fn idle_memory(flags: &Flags) -> anyhow::Result<()> {
    let servers = Servers(flags.pids.clone());
    anyhow::ensure!(!servers.0.is_empty(), "--pids of the servers are required");
    let edges: Vec<&str> = flags.edge.split(',').collect();
    let account = account(flags, edges[0]).await?;
    let spec = Spec {
        edges: &edges,
        failover: None,
        token: &account.token,
        workspace: &account.workspace_id,
        sockets: edges.len(),
        sources: flags.sources,
    };
    // One socket per server first, so per-process and per-user state is already there.
    let (mut warm_up, _) = Workers::start(&spec).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = servers.resident_kib()?;
    eprintln!("idle: opening {} sockets", flags.sockets);
    let (mut workers, connected) = Workers::start(&Spec {
        sockets: flags.sockets,
        sources: flags.sources,
        ..spec
    })
    .await?;
    connected.print("connected");
    eprintln!("idle: waiting {} s for allocations to settle", flags.settle);
    tokio::time::sleep(Duration::from_secs(flags.settle)).await;
    let after = servers.resident_kib()?;
    // Every socket must still be there for the figure to mean anything.
    let report = workers.report(Duration::ZERO, &[]).await?;
    warm_up.report(Duration::ZERO, &[]).await?;
    anyhow::ensure!(report.down == 0, "{} sockets were closed", report.down);
    let per_socket = after.saturating_sub(before) as f64 * 1024.0 / connected.sockets as f64;
    // Then they all leave (their worker processes end): does the memory come back?
    drop(workers);
    eprintln!(
        "idle: the sockets left; waiting {} s before reading the servers' memory again",
        flags.settle
    );
    tokio::time::sleep(Duration::from_secs(flags.settle)).await;
    let left = servers.resident_kib()?;
    let returned_to = left as f64 / before as f64;
    println!("idle memory results ({})", flags.label);
    println!("  sockets              {}", connected.sockets);
    println!("  servers' RSS before  {before} KiB");
    println!("  servers' RSS after   {after} KiB");
    println!("  per idle socket      {:.1} KB", per_socket / 1000.0);
    println!("  after they left      {left} KiB ({returned_to:.2}× the RSS before)");
    print_result(
        "idle",
        flags,
        json!({
            "sockets": connected.sockets,
            "kbPerSocket": (per_socket / 100.0).round() / 10.0,
            "leftTimesBefore": (returned_to * 100.0).round() / 100.0,
        }),
    );
    Ok(())
}

/// The reconnect storm: `sockets` sockets on the first edge of `--edge A,B`, messages sent
/// over REST to B at `rate` per second for `seconds`; two seconds in, A (`--kill-pid`) is
/// killed and its sockets reconnect to B with `auth.since`. Prints how long until all were
/// back, and how many (socket, message) pairs never arrived as `message.new`.
pub async fn storm(flags: &Flags) -> anyhow::Result<()> {
    let edges: Vec<&str> = flags.edge.split(',').collect();
    let [doomed, survivor] = edges[..] else {
        bail!("storm needs --edge A,B: sockets start on A, which is killed, and move to B");
    };
    let kill_pid = flags.kill_pid.context("storm needs --kill-pid of edge A")?;
    let http = rest::http_client();
    let account = account(flags, survivor).await?;
    let conversation = match flags.peer_seed {
        Some(_) => "bench".to_owned(),
        None => rest::create_conversation(&http, survivor, &account).await?,
    };

    eprintln!("storm: opening {} sockets on {doomed}", flags.sockets);
    let (mut workers, connected) = Workers::start(&Spec {
        edges: &[doomed],
        failover: Some(survivor),
        token: &account.token,
        workspace: &account.workspace_id,
        sockets: flags.sockets,
        sources: flags.sources,
    })
    .await?;
    connected.print("connected");

    eprintln!(
        "storm: sending {} messages/s to {survivor} for {} s; killing {doomed} (pid {kill_pid}) after 2 s",
        flags.rate, flags.seconds
    );
    let sending = {
        let (http, account) = (http.clone(), account.clone());
        let (survivor, rate, seconds) = (survivor.to_owned(), flags.rate, flags.seconds);
        tokio::spawn(async move {
            send_at_rate(&http, &survivor, &account, &conversation, rate, seconds).await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = SystemTime::now();
    let status = tokio::process::Command::new("kill")
        .args(["-KILL", &kill_pid.to_string()])
        .status()
        .await?;
    anyhow::ensure!(status.success(), "kill -KILL {kill_pid} failed");
    let (sent, failed) = sending.await.context("the sender panicked")?;

    eprintln!(
        "storm: {} messages sent; waiting up to {} s for every socket to have them",
        sent.len(),
        STORM_SETTLE.as_secs()
    );
    let report = workers.report(STORM_SETTLE, &sent).await?;
    let all_back = report
        .last_back_unix_ms
        .map(|back| Duration::from_millis(back.saturating_sub(unix_millis(killed_at))));
    let outages = report.outages.percentiles();
    println!("reconnect storm results ({})", flags.label);
    println!("  sockets              {}", connected.sockets);
    println!(
        "  reconnections        {} ({} after `sync.lagged`; down for good: {}; told to refetch: {})",
        report.outages.count(),
        report.evictions,
        report.down,
        report.resets
    );
    if let (Some(all_back), Some(outages)) = (all_back, outages) {
        println!(
            "  all back after       {:.2} s (from the kill; clients wait 0.5–1.5 s before the first attempt)",
            all_back.as_secs_f64()
        );
        println!("  per-socket outage    {outages}");
    }
    println!(
        "  messages sent        {} ({failed} sends failed)",
        sent.len()
    );
    println!(
        "  durable lost         {} (socket, message) pairs of {}",
        report.missing,
        sent.len() as u64 * connected.sockets
    );
    print_result(
        "storm",
        flags,
        json!({
            "sockets": connected.sockets,
            "reconnected": report.outages.count(),
            "evictions": report.evictions,
            "resets": report.resets,
            "down": report.down,
            "allBackSeconds": all_back.map(|back| (back.as_secs_f64() * 100.0).round() / 100.0),
            "outageP99Ms": outages.map(|outages| millis(outages.p99)),
            "messagesSent": sent.len(),
            "durableLost": report.missing,
        }),
    );
    Ok(())
}

/// Sends a message every `1 / rate` seconds for `seconds`; the accepted messages' ids and the
/// number of failed sends.
async fn send_at_rate(
    http: &reqwest::Client,
    edge: &str,
    account: &rest::Account,
    conversation: &str,
    rate: f64,
    seconds: u64,
) -> (Vec<String>, usize) {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let (mut sent, mut failed) = (Vec::new(), 0);
    while Instant::now() < stop_at {
        ticker.tick().await;
        let local_id = uuid::Uuid::new_v4().to_string();
        match rest::send_message(http, edge, account, conversation, &local_id, "storm").await {
            Ok(id) => sent.push(id),
            Err(error) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("send failed: {error:#}");
                }
            }
        }
    }
    (sent, failed)
}

/// Publishes `rate` volatile events per second for `seconds` straight onto the workspace's
/// bus channel, as the services do; how many.
async fn publish(bus: &EventBus, workspace: &str, rate: f64, seconds: u64) -> anyhow::Result<u64> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let mut published = 0u64;
    while Instant::now() < stop_at {
        ticker.tick().await;
        let event = Event {
            workspace_id: workspace.to_owned(),
            kind: Some(event::Kind::MessageDelta(MessageDelta {
                message_id: "fan-out".to_owned(),
                conversation_id: "fan-out".to_owned(),
                agent_id: "fan-out".to_owned(),
                delta: unix_micros().to_string(),
                index: u32::try_from(published).unwrap_or(u32::MAX),
            })),
            ..Event::default()
        };
        bus.publish(&event).await.context("publishing")?;
        published += 1;
    }
    Ok(published)
}

/// Runs `--publish-command` (with `PUBLISH_RATE` and `PUBLISH_SECONDS` set) to its end.
async fn run_publish_command(flags: &Flags) -> anyhow::Result<()> {
    let command = flags.publish_command.as_deref().unwrap_or_default();
    let status = tokio::process::Command::new("sh")
        .args(["-c", command])
        .env("PUBLISH_RATE", flags.rate.to_string())
        .env("PUBLISH_SECONDS", flags.seconds.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .with_context(|| format!("running {command:?}"))?;
    anyhow::ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}

/// A user of the target: signed up on a Crawbl edge, or, with `--peer-seed`, a token minted
/// for the Node peer (and the floor, which checks none).
pub async fn account(flags: &Flags, edge: &str) -> anyhow::Result<rest::Account> {
    match &flags.peer_seed {
        Some(seed) => peer_account(seed),
        None => rest::sign_up(&rest::http_client(), edge).await,
    }
}

impl Connected {
    pub fn print(&self, label: &str) {
        let rate = self.sockets as f64 / self.elapsed.as_secs_f64();
        match self.handshakes.percentiles() {
            Some(latency) => println!("{label}: {rate:.0} connects/s; handshake {latency}"),
            None => println!("{label}: no socket opened"),
        }
    }
}

/// `RESULT {"scenario", "target", …figures}`: one line for the side-by-side table.
pub fn print_result(scenario: &str, flags: &Flags, mut figures: Value) {
    figures["scenario"] = json!(scenario);
    figures["target"] = json!(flags.label);
    println!("RESULT {figures}");
}

pub fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e4).round() / 10.0
}

/// The server processes measured: CPU time and resident memory, added up.
struct Servers(Vec<u32>);

impl Servers {
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        self.0.iter().map(|pid| process::cpu_seconds(*pid)).sum()
    }

    fn resident_kib(&self) -> anyhow::Result<u64> {
        self.0.iter().map(|pid| process::resident_kib(*pid)).sum()
    }
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
    let claims = json!({
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
