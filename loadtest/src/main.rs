//! `crawbl-load`: benchmark scenarios against a running stack; each prints its figures.
//!
//! ```text
//! crawbl-load send-path --edge URL [--senders 8] [--seconds 20]
//! crawbl-load handshake --edge URL [--sockets 2000] [--concurrency 64] [--users 10] [--cold 200]
//! crawbl-load fan-out   --edge URL[,URL…] [--redis URL | --publish-command CMD] [--sockets 1000]
//!                       [--rate 10] [--seconds 20] [--sources 4] [--pids PID,…]
//! crawbl-load idle      --edge URL[,URL…] --pids PID,… [--sockets 5000] [--settle 30]
//! crawbl-load storm     --edge A,B --kill-pid PID_OF_A [--sockets 10000] [--rate 2] [--seconds 10]
//! crawbl-load peer-key              # a signing seed and public key for the Node peer
//! ```
//!
//! Scenarios with many sockets spread them over worker processes ([`workers`]). Against the
//! Node peer (`bench/node-peer`) or the raw floor (`bench/floor`), `--peer-seed HEX` mints the
//! tokens instead of signing up, and `--publish-command` publishes the fan-out events (run with
//! `PUBLISH_RATE` and `PUBLISH_SECONDS` set). `--label` names the target in the `RESULT` line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use crawbl_loadtest::rest::{self, Account};
use crawbl_loadtest::sio::{self, ConnectOutcome};
use crawbl_loadtest::stats::Percentiles;

const USAGE: &str = "usage: crawbl-load send-path --edge URL [--senders N] [--seconds S]
       crawbl-load handshake --edge URL [--sockets N] [--concurrency N] [--users N] [--cold N]
       crawbl-load fan-out --edge URL[,URL...] [--redis URL | --publish-command CMD] [--sockets N] [--rate R] [--seconds S] [--sources N] [--pids PID,...]
       crawbl-load idle --edge URL[,URL...] --pids PID,... [--sockets N] [--settle S]
       crawbl-load storm --edge A,B --kill-pid PID [--sockets N] [--rate R] [--seconds S]
       crawbl-load peer-key
  common: [--peer-seed HEX] [--label NAME] [--sources N]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("send-path") => send_path(&Flags::parse(&args[1..])?).await,
        Some("handshake") => handshake(&Flags::parse(&args[1..])?).await,
        Some("fan-out") => fan_out::run(&Flags::parse(&args[1..])?).await,
        Some("idle") => fan_out::idle_memory(&Flags::parse(&args[1..])?).await,
        Some("storm") => fan_out::storm(&Flags::parse(&args[1..])?).await,
        Some("worker") => workers::run(&Flags::parse(&args[1..])?).await,
        Some("peer-key") => {
            fan_out::print_peer_key();
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

mod fan_out;
mod workers;

pub(crate) struct Flags {
    edge: String,
    redis: String,
    rate: f64,
    sources: u8,
    pids: Vec<u32>,
    kill_pid: Option<u32>,
    peer_seed: Option<String>,
    publish_command: Option<String>,
    label: String,
    settle: u64,
    senders: usize,
    seconds: u64,
    sockets: usize,
    concurrency: usize,
    users: usize,
    cold: usize,
    // Set by a scenario for its worker processes.
    token: Option<String>,
    workspace: Option<String>,
    failover: Option<String>,
    first_source: u8,
}

impl Flags {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut flags = Self {
            edge: "http://127.0.0.1:8080".to_owned(),
            redis: "redis://127.0.0.1:6379".to_owned(),
            rate: 10.0,
            sources: 4,
            pids: Vec::new(),
            kill_pid: None,
            peer_seed: None,
            publish_command: None,
            label: "crawbl".to_owned(),
            settle: 30,
            senders: 8,
            seconds: 20,
            sockets: 2000,
            concurrency: 64,
            users: 10,
            cold: 200,
            token: None,
            workspace: None,
            failover: None,
            first_source: 1,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--edge" => flags.edge = value.trim_end_matches('/').to_owned(),
                "--redis" => flags.redis = value.clone(),
                "--rate" => flags.rate = value.parse().context("--rate")?,
                "--sources" => flags.sources = value.parse().context("--sources (1..=254)")?,
                "--pids" => {
                    flags.pids = value
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .context("--pids PID,PID,…")?;
                }
                "--kill-pid" => flags.kill_pid = Some(value.parse().context("--kill-pid")?),
                "--peer-seed" => flags.peer_seed = Some(value.clone()),
                "--publish-command" => flags.publish_command = Some(value.clone()),
                "--label" => flags.label = value.clone(),
                "--settle" => flags.settle = value.parse().context("--settle")?,
                "--senders" => flags.senders = value.parse().context("--senders")?,
                "--seconds" => flags.seconds = value.parse().context("--seconds")?,
                "--sockets" => flags.sockets = value.parse().context("--sockets")?,
                "--concurrency" => flags.concurrency = value.parse().context("--concurrency")?,
                "--users" => flags.users = value.parse().context("--users")?,
                "--cold" => flags.cold = value.parse().context("--cold")?,
                "--token" => flags.token = Some(value.clone()),
                "--workspace" => flags.workspace = Some(value.clone()),
                "--failover" => flags.failover = Some(value.trim_end_matches('/').to_owned()),
                "--first-source" => flags.first_source = value.parse().context("--first-source")?,
                other => bail!("unknown flag {other}\n{USAGE}"),
            }
        }
        Ok(flags)
    }
}

/// Sends messages over REST from `senders` closed-loop clients (one conversation each) for
/// `seconds`, and measures, at another socket of the workspace, the time from the start of each
/// REST call to that message's `message.new`.
async fn send_path(flags: &Flags) -> anyhow::Result<()> {
    let http = rest::http_client();
    let account = fan_out::account(flags, &flags.edge).await?;
    let mut conversations = Vec::new();
    for sender in 0..flags.senders {
        conversations.push(match flags.peer_seed {
            // The peer keeps no conversations: any id is one.
            Some(_) => format!("bench-{sender}"),
            None => rest::create_conversation(&http, &flags.edge, &account).await?,
        });
    }

    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut watcher = connect(&flags.edge, &account.token).await?;
    let watching = {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Some(event) = watcher.next_event(Duration::from_secs(3600)).await {
                if event.name == "message.new"
                    && let Some(local_id) = event.payload()["localId"].as_str()
                {
                    lock(&arrivals).insert(local_id.to_owned(), Instant::now());
                }
            }
        })
    };

    eprintln!(
        "send-path: {} senders for {} s against {}",
        flags.senders, flags.seconds, flags.edge
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(flags.seconds);
    let senders =
        conversations
            .iter()
            .enumerate()
            .map(|(sender, conversation)| {
                let (http, account) = (&http, &account);
                async move {
                    run_sender(http, &flags.edge, account, conversation, sender, deadline).await
                }
            });
    let results = futures::future::join_all(senders).await;
    let elapsed = started.elapsed();

    let mut sent = Vec::new();
    let mut errors = 0;
    for (starts, failed) in results {
        sent.extend(starts);
        errors += failed;
    }
    // Give the last messages time to arrive.
    let grace = Instant::now() + Duration::from_secs(5);
    while Instant::now() < grace && lock(&arrivals).len() < sent.len() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watching.abort();

    let arrivals = lock(&arrivals).clone();
    let latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(local_id, start, _)| arrivals.get(local_id).map(|at| *at - *start))
        .collect();
    let answers = Percentiles::of(sent.iter().map(|(_, _, answer)| *answer).collect())
        .context("no send was accepted")?;
    let lost = sent.len() - latencies.len();
    println!("send-path results ({})", flags.label);
    println!("  senders           {}", flags.senders);
    println!("  duration          {:.1} s", elapsed.as_secs_f64());
    println!("  sends accepted    {}", sent.len());
    println!(
        "  sends per second  {:.1}",
        sent.len() as f64 / elapsed.as_secs_f64()
    );
    println!("  send errors       {errors}");
    println!("  message.new lost  {lost}");
    let latency = Percentiles::of(latencies).context("no message.new arrived")?;
    println!("  REST → message.new at another socket: {latency}");
    println!("  REST → 201: {answers}");
    fan_out::print_result(
        "send-path",
        flags,
        serde_json::json!({
            "sendsPerSecond": (sent.len() as f64 / elapsed.as_secs_f64()).round(),
            "p50Ms": fan_out::millis(latency.p50),
            "p99Ms": fan_out::millis(latency.p99),
            "answerP99Ms": fan_out::millis(answers.p99),
            "lost": lost,
            "errors": errors,
        }),
    );
    Ok(())
}

/// One closed-loop client: sends, waits for 201, sends again, until `deadline`. Returns each
/// accepted message's local id with the time its call started and how long the 201 took, and
/// the number of failed calls.
async fn run_sender(
    http: &reqwest::Client,
    edge: &str,
    account: &Account,
    conversation: &str,
    sender: usize,
    deadline: Instant,
) -> (Vec<(String, Instant, Duration)>, usize) {
    let mut accepted = Vec::new();
    let mut failed = 0;
    let mut index = 0;
    while Instant::now() < deadline {
        let local_id = format!("s{sender}-{index}");
        index += 1;
        let start = Instant::now();
        match rest::send_message(
            http,
            edge,
            account,
            conversation,
            &local_id,
            "benchmark message",
        )
        .await
        {
            Ok(_) => accepted.push((local_id, start, start.elapsed())),
            Err(error) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("send failed: {error:#}");
                }
            }
        }
    }
    (accepted, failed)
}

/// Handshake authentication: opens `sockets` Socket.IO connections, `concurrency` at a time,
/// cycling through `users` signed-up users whose memberships the edge has already cached (the
/// steady state), then `cold` more with one new user each (each handshake also fetches that
/// user's memberships once). Every socket stays open to the end.
async fn handshake(flags: &Flags) -> anyhow::Result<()> {
    let http = rest::http_client();
    let mut tokens = Vec::new();
    for _ in 0..flags.users.max(1) {
        tokens.push(rest::sign_up(&http, &flags.edge).await?.token);
    }
    let mut open = Vec::new();
    // One handshake per user first, so their memberships are cached as in steady state.
    for token in &tokens {
        open.push(connect(&flags.edge, token).await?);
    }
    eprintln!(
        "handshake: {} sockets against {}",
        flags.sockets, flags.edge
    );
    let (warm, sockets) =
        open_sockets(&[&flags.edge], 1, &tokens, flags.sockets, flags.concurrency).await?;
    open.extend(sockets);
    warm.print(&format!(
        "warm: {} sockets, {} users, {} in flight",
        flags.sockets,
        tokens.len(),
        flags.concurrency
    ));
    if flags.cold > 0 {
        let mut fresh = Vec::new();
        for _ in 0..flags.cold {
            fresh.push(rest::sign_up(&http, &flags.edge).await?.token);
        }
        let (cold, sockets) =
            open_sockets(&[&flags.edge], 1, &fresh, flags.cold, flags.concurrency).await?;
        open.extend(sockets);
        cold.print(&format!(
            "cold: {} sockets, one new user each (memberships fetched once), {} in flight",
            flags.cold, flags.concurrency
        ));
    }
    println!("{} sockets open at the end", open.len());
    Ok(())
}

struct Round {
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Round {
    fn print(&self, label: &str) {
        let rate = self.latencies.len() as f64 / self.elapsed.as_secs_f64();
        match Percentiles::of(self.latencies.clone()) {
            Some(percentiles) => println!("{label}: {rate:.0} connects/s; handshake {percentiles}"),
            None => println!("{label}: no socket opened"),
        }
    }
}

/// Opens `count` sockets, `concurrency` at a time, cycling through `tokens` and `edges`, from
/// the source addresses `127.0.0.1 ..= 127.0.0.{sources}` in turn.
async fn open_sockets(
    edges: &[&str],
    sources: u8,
    tokens: &[String],
    count: usize,
    concurrency: usize,
) -> anyhow::Result<(Round, Vec<sio::SioClient>)> {
    use futures::StreamExt as _;
    let started = Instant::now();
    let results: Vec<anyhow::Result<(Duration, sio::SioClient)>> = futures::stream::iter(0..count)
        .map(|index| {
            let token = &tokens[index % tokens.len()];
            let edge = edges[index % edges.len()];
            let source =
                std::net::Ipv4Addr::new(127, 0, 0, 1 + (index % usize::from(sources.max(1))) as u8);
            async move {
                let begun = Instant::now();
                let socket = connect_from(Some(source.into()), edge, token).await?;
                Ok((begun.elapsed(), socket))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut latencies = Vec::with_capacity(count);
    let mut sockets = Vec::with_capacity(count);
    for result in results {
        let (latency, socket) = result?;
        latencies.push(latency);
        sockets.push(socket);
    }
    Ok((Round { elapsed, latencies }, sockets))
}

/// A socket on `/v1` authenticated by `token` with `X-Token`, once the server acknowledged it.
async fn connect(edge: &str, token: &str) -> anyhow::Result<sio::SioClient> {
    connect_from(None, edge, token).await
}

async fn connect_from(
    source: Option<std::net::IpAddr>,
    edge: &str,
    token: &str,
) -> anyhow::Result<sio::SioClient> {
    match sio::connect_from(source, edge, &[("x-token", token)], None).await? {
        ConnectOutcome::Connected(client) => Ok(client),
        ConnectOutcome::Refused(message) => bail!("handshake refused: {message}"),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
