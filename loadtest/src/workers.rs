//! Client processes for scenarios with more sockets than one process should hold (a process
//! may open at most 20,000 files here, and one process's event loop would be the bottleneck).
//!
//! The scenario's process starts `crawbl-load worker …` children. Each opens its share of
//! sockets, prints `connected <count> <millis> <handshake histogram>`, and then watches its
//! sockets: it answers pings, times fan-out events, notes every durable `message.new` and, given
//! `--failover`, reconnects a socket whose connection ended to that edge with `auth.since`, the
//! way socket.io-client does (1 s backoff with ±50 % jitter, doubling up to 5 s). On the line
//! `report <wait ms> [message ids…]` it waits until every socket has every id named (or the wait
//! runs out) and prints `report <json>`; it exits when its stdin closes.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use crawbl_loadtest::sio::{self, Handshake, WebSocket};
use crawbl_loadtest::stats::Histogram;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::Flags;

/// Sockets one worker process opens at most.
const SOCKETS_PER_WORKER: usize = 5_000;
/// Handshakes one worker has in flight while setting up.
const SETUP_CONCURRENCY: usize = 64;
/// Reconnection attempts per socket before it gives up.
const RECONNECT_ATTEMPTS: u32 = 20;

/// What the sockets are to connect to, as a scenario sees it.
pub struct Spec<'a> {
    /// Sockets are spread over these edges in turn.
    pub edges: &'a [&'a str],
    /// Where a socket whose connection ends reconnects; `None`: it stays down.
    pub failover: Option<&'a str>,
    pub token: &'a str,
    /// The workspace whose last `seq` a reconnecting socket sends as `auth.since`.
    pub workspace: &'a str,
    pub sockets: usize,
    /// Source addresses per worker (`127.0.0.x`, each worker its own).
    pub sources: u8,
}

/// The running worker processes.
pub struct Workers {
    children: Vec<Worker>,
}

struct Worker {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

/// How the sockets' connections went.
pub struct Connected {
    pub sockets: u64,
    /// From the first handshake to the last worker's last.
    pub elapsed: Duration,
    pub handshakes: Histogram,
}

/// Everything the workers' sockets saw, added up.
#[derive(Default)]
pub struct Report {
    /// Fan-out events received, the highest index among them, and when the last arrived
    /// (Unix microseconds).
    pub delivered: u64,
    pub max_index: Option<u64>,
    pub last_arrival_unix_us: Option<u64>,
    /// The publish time of the earliest fan-out event received (Unix microseconds).
    pub first_sent_unix_us: Option<u64>,
    /// Publish → socket, per fan-out event.
    pub latency: Histogram,
    /// (socket, message id) pairs of the report's ids that never arrived.
    pub missing: u64,
    /// Connection loss → connected again, per reconnection.
    pub outages: Histogram,
    /// When the last socket was connected again (Unix milliseconds), if one was.
    pub last_back_unix_ms: Option<u64>,
    /// Sockets whose connection ended for good: no failover, or every attempt failed.
    pub down: u64,
    /// `sync.lagged` evictions: the server found a socket's buffer full.
    pub evictions: u64,
    /// `sync.reset`s: the server could not replay and told the socket to refetch over REST.
    pub resets: u64,
}

impl Workers {
    /// Starts enough workers for `spec.sockets` and waits until every socket is connected.
    pub async fn start(spec: &Spec<'_>) -> anyhow::Result<(Self, Connected)> {
        let count = spec.sockets.div_ceil(SOCKETS_PER_WORKER).max(1);
        let program = std::env::current_exe().context("finding crawbl-load's own path")?;
        let mut children = Vec::with_capacity(count);
        for index in 0..count {
            let share = spec.sockets / count + usize::from(index < spec.sockets % count);
            let first_source = 1 + index * usize::from(spec.sources.max(1));
            let first_source = u8::try_from(first_source)
                .ok()
                .filter(|first| first.checked_add(spec.sources).is_some())
                .context("too many workers × --sources for 127.0.0.x")?;
            let mut command = Command::new(&program);
            command
                .args(["worker", "--edge", &spec.edges.join(",")])
                .args(["--token", spec.token, "--workspace", spec.workspace])
                .args(["--sockets", &share.to_string()])
                .args(["--sources", &spec.sources.to_string()])
                .args(["--first-source", &first_source.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true);
            if let Some(failover) = spec.failover {
                command.args(["--failover", failover]);
            }
            let mut child = command.spawn().context("starting a worker process")?;
            let stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            children.push(Worker {
                _child: child,
                stdin,
                lines: BufReader::new(stdout).lines(),
            });
        }

        let mut connected = Connected {
            sockets: 0,
            elapsed: Duration::ZERO,
            handshakes: Histogram::default(),
        };
        for worker in &mut children {
            let line = worker.next_line().await?;
            let mut words = line.splitn(4, ' ');
            let (Some("connected"), Some(sockets), Some(millis), Some(histogram)) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                bail!("a worker said {line:?}, expected `connected …`");
            };
            connected.sockets += sockets.parse::<u64>()?;
            connected.elapsed = connected
                .elapsed
                .max(Duration::from_millis(millis.parse()?));
            connected
                .handshakes
                .merge(&Histogram::decode(histogram).context("a worker's handshake histogram")?);
        }
        Ok((Self { children }, connected))
    }

    /// Every worker's report, added up: each waits up to `wait` for `expected` ids.
    pub async fn report(&mut self, wait: Duration, expected: &[String]) -> anyhow::Result<Report> {
        let command = format!("report {} {}\n", wait.as_millis(), expected.join(" "));
        for worker in &mut self.children {
            worker.stdin.write_all(command.as_bytes()).await?;
            worker.stdin.flush().await?;
        }
        let mut total = Report::default();
        for worker in &mut self.children {
            let line = worker.next_line().await?;
            let report: Value = serde_json::from_str(
                line.strip_prefix("report ")
                    .with_context(|| format!("a worker said {line:?}, expected `report …`"))?,
            )?;
            let number = |key: &str| report[key].as_u64().unwrap_or(0);
            let histogram = |key: &str| {
                Histogram::decode(report[key].as_str().unwrap_or_default())
                    .with_context(|| format!("a worker's {key} histogram"))
            };
            total.delivered += number("delivered");
            total.max_index = total.max_index.max(report["maxIndex"].as_u64());
            total.last_arrival_unix_us = total
                .last_arrival_unix_us
                .max(report["lastArrival"].as_u64());
            total.first_sent_unix_us =
                earliest(total.first_sent_unix_us, report["firstSent"].as_u64());
            total.latency.merge(&histogram("latency")?);
            total.missing += number("missing");
            total.outages.merge(&histogram("outages")?);
            total.last_back_unix_ms = total.last_back_unix_ms.max(report["lastBack"].as_u64());
            total.down += number("down");
            total.evictions += number("evictions");
            total.resets += number("resets");
        }
        Ok(total)
    }
}

impl Worker {
    async fn next_line(&mut self) -> anyhow::Result<String> {
        self.lines
            .next_line()
            .await?
            .context("a worker exited early (its errors are above)")
    }
}

/// What all of a worker's sockets share. The histograms are the worker's, not each socket's:
/// one is 800 KB, too much to keep per socket.
struct Shared {
    token: String,
    workspace: String,
    failover: Option<String>,
    latency: Mutex<Histogram>,
    outages: Mutex<Histogram>,
}

/// What a report asks for: these ids at every socket, by this time.
struct Expect {
    ids: HashSet<String>,
    deadline: tokio::time::Instant,
}

/// What one socket saw (its latencies and outages go to the worker's histograms).
#[derive(Default)]
struct Tally {
    delivered: u64,
    max_index: Option<u64>,
    last_arrival: Option<u64>,
    first_sent: Option<u64>,
    message_ids: HashSet<String>,
    last_seq: u64,
    last_back: Option<SystemTime>,
    down: bool,
    evictions: u64,
    resets: u64,
}

/// The `worker` subcommand: see the module's documentation.
pub async fn run(flags: &Flags) -> anyhow::Result<()> {
    let token = flags.token.clone().context("worker needs --token")?;
    let shared = Arc::new(Shared {
        token,
        workspace: flags.workspace.clone().unwrap_or_default(),
        failover: flags.failover.clone(),
        latency: Mutex::default(),
        outages: Mutex::default(),
    });
    let edges: Vec<&str> = flags.edge.split(',').collect();
    let started = Instant::now();
    let mut handshakes = Histogram::default();
    let opened: Vec<_> = futures::stream::iter(0..flags.sockets)
        .map(|index| {
            let offset = u8::try_from(index % usize::from(flags.sources.max(1))).unwrap_or(0);
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, flags.first_source + offset));
            let (edge, token) = (edges[index % edges.len()], shared.token.as_str());
            async move {
                let begun = Instant::now();
                let socket = match sio::handshake(Some(source), edge, &[("x-token", token)], None)
                    .await
                    .with_context(|| format!("connecting to {edge} from {source}"))?
                {
                    Handshake::Connected(socket) => socket,
                    Handshake::Refused(message) => bail!("handshake refused: {message}"),
                };
                anyhow::Ok((begun.elapsed(), source, socket))
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let (expect_tx, expect_rx) = watch::channel(None::<Arc<Expect>>);
    let mut tasks = Vec::with_capacity(opened.len());
    for result in opened {
        let (took, source, socket) = result?;
        handshakes.record(took);
        tasks.push(tokio::spawn(watch_socket(
            socket,
            source,
            shared.clone(),
            expect_rx.clone(),
        )));
    }
    println!(
        "connected {} {} {}",
        tasks.len(),
        started.elapsed().as_millis(),
        handshakes.encode()
    );

    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = commands.next_line().await? {
        let mut words = line.split_whitespace();
        if words.next() != Some("report") {
            bail!("unknown command {line:?}");
        }
        let wait: u64 = words.next().context("report <wait ms> [ids…]")?.parse()?;
        let ids: HashSet<String> = words.map(str::to_owned).collect();
        let expect = Arc::new(Expect {
            ids,
            deadline: tokio::time::Instant::now() + Duration::from_millis(wait),
        });
        expect_tx.send_replace(Some(expect.clone()));
        let mut report = Tally::default();
        let mut missing = 0;
        let mut down = 0;
        for task in tasks.drain(..) {
            let tally = task.await.context("a socket's task panicked")?;
            report.delivered += tally.delivered;
            report.max_index = report.max_index.max(tally.max_index);
            report.last_arrival = report.last_arrival.max(tally.last_arrival);
            report.first_sent = earliest(report.first_sent, tally.first_sent);
            report.last_back = report.last_back.max(tally.last_back);
            missing += expect.ids.difference(&tally.message_ids).count();
            down += u64::from(tally.down);
            report.evictions += tally.evictions;
            report.resets += tally.resets;
        }
        let report = json!({
            "delivered": report.delivered,
            "maxIndex": report.max_index,
            "lastArrival": report.last_arrival,
            "firstSent": report.first_sent,
            "latency": lock(&shared.latency).encode(),
            "missing": missing,
            "outages": lock(&shared.outages).encode(),
            "lastBack": report.last_back.map(unix_millis),
            "down": down,
            "evictions": report.evictions,
            "resets": report.resets,
        });
        println!("report {report}");
    }
    Ok(())
}

/// Reads one socket until a report's ids are all in (or its wait runs out), reconnecting as
/// the module's documentation says.
async fn watch_socket(
    mut socket: Box<WebSocket>,
    source: IpAddr,
    shared: Arc<Shared>,
    mut expect: watch::Receiver<Option<Arc<Expect>>>,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let wanted = expect.borrow().clone();
        if let Some(wanted) = &wanted
            && wanted.ids.is_subset(&tally.message_ids)
        {
            return tally;
        }
        let deadline = wanted.as_ref().map(|wanted| wanted.deadline);
        let ended = tokio::select! {
            frame = socket.next() => match frame {
                Some(Ok(Frame::Text(text))) => {
                    if text.as_str() == "2" {
                        socket.send(Frame::text("3")).await.is_err()
                    } else if text.starts_with("41/v1") {
                        // Disconnected by the server (after `sync.lagged`): the app would
                        // connect again with `auth.since`, and so does this socket.
                        let _ = socket.as_mut().close(None).await;
                        true
                    } else {
                        tally.note(text.as_str(), &shared.latency);
                        false
                    }
                }
                Some(Ok(Frame::Close(_)) | Err(_)) | None => true,
                Some(Ok(_)) => false,
            },
            changed = expect.changed() => {
                if changed.is_err() {
                    return tally;
                }
                false
            }
            () = sleep_until(deadline) => return tally,
        };
        if !ended {
            continue;
        }
        let lost_at = Instant::now();
        match reconnect(&shared, source, tally.last_seq, deadline).await {
            Some(again) => {
                socket = again;
                lock(&shared.outages).record(lost_at.elapsed());
                tally.last_back = Some(SystemTime::now());
            }
            None => {
                tally.down = true;
                // Down for good: wait for the report, then tell what arrived.
                while expect.borrow().is_none() {
                    if expect.changed().await.is_err() {
                        break;
                    }
                }
                return tally;
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Connects to the failover edge with `auth.since`, backing off as socket.io-client does.
async fn reconnect(
    shared: &Shared,
    source: IpAddr,
    last_seq: u64,
    give_up_at: Option<tokio::time::Instant>,
) -> Option<Box<WebSocket>> {
    let failover = shared.failover.as_deref()?;
    let auth = json!({"since": {shared.workspace.as_str(): last_seq}});
    for attempt in 0..RECONNECT_ATTEMPTS {
        let mut jitter = [0u8; 2];
        rand::fill(&mut jitter[..]);
        let jitter = 0.5 + f64::from(u16::from_le_bytes(jitter)) / f64::from(u16::MAX);
        let backoff = (1000.0 * 2f64.powi(attempt.min(3).cast_signed())).min(5000.0) * jitter;
        tokio::time::sleep(Duration::from_millis(backoff as u64)).await;
        if give_up_at.is_some_and(|at| tokio::time::Instant::now() >= at) {
            return None;
        }
        let headers = [("x-token", shared.token.as_str())];
        if let Ok(Handshake::Connected(socket)) =
            sio::handshake(Some(source), failover, &headers, Some(auth.clone())).await
        {
            return Some(socket);
        }
    }
    None
}

impl Tally {
    /// Counts one text packet: fan-out deltas are timed without parsing the whole packet;
    /// other events are parsed for the ids of new messages and the last `seq`.
    fn note(&mut self, packet: &str, latency: &Mutex<Histogram>) {
        let Some(body) = packet.strip_prefix("42/v1,[") else {
            return;
        };
        if body.starts_with("\"message.delta\"") {
            if !body.contains("\"messageId\":\"fan-out\"") {
                return;
            }
            self.delivered += 1;
            let now = unix_micros();
            self.last_arrival = self.last_arrival.max(Some(now));
            if let Some(sent) = number_after(body, "\"delta\":\"") {
                self.first_sent = earliest(self.first_sent, Some(sent));
                lock(latency).record(Duration::from_micros(now.saturating_sub(sent)));
            }
            self.max_index = self.max_index.max(number_after(body, "\"index\":"));
            return;
        }
        let Some(event) = sio::parse_event(packet) else {
            return;
        };
        match event.name.as_str() {
            "sync.lagged" => self.evictions += 1,
            "sync.reset" => self.resets += 1,
            _ => {}
        }
        if event.name == "message.new"
            && let Some(id) = event.payload()["id"].as_str()
        {
            self.message_ids.insert(id.to_owned());
        }
        if let Some(seq) = event.args.get(1).and_then(|meta| meta["seq"].as_u64()) {
            self.last_seq = self.last_seq.max(seq);
        }
    }
}

fn earliest(first: Option<u64>, second: Option<u64>) -> Option<u64> {
    match (first, second) {
        (Some(first), Some(second)) => Some(first.min(second)),
        (first, second) => first.or(second),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The decimal number right after `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits = &text[start..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

pub fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_deltas_are_read_without_parsing_the_packet() {
        let mut tally = Tally::default();
        let latency = Mutex::default();
        let sent = unix_micros();
        tally.note(&format!(
            r#"42/v1,["message.delta",{{"messageId":"fan-out","conversationId":"c","agentId":"a","delta":"{sent}","index":7}}]"#
        ), &latency);
        tally.note(
            r#"42/v1,["message.delta",{"messageId":"m1","delta":"12","index":9}]"#,
            &latency,
        );
        tally.note(
            r#"42/v1,["message.new",{"id":"m2","workspaceId":"w"},{"workspaceId":"w","seq":41}]"#,
            &latency,
        );
        assert_eq!(tally.delivered, 1);
        assert_eq!(tally.max_index, Some(7));
        assert_eq!(lock(&latency).count(), 1);
        assert!(tally.message_ids.contains("m2"));
        assert_eq!(tally.last_seq, 41);
    }
}
