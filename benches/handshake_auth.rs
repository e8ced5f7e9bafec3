//! Handshake authentication throughput: how many Socket.IO connections per second one edge
//! accepts when each handshake carries an access token verified locally (Ed25519 signature,
//! claims, revocation set, cached memberships; no gRPC call).
//!
//! ```sh
//! cargo bench --bench handshake_auth                 # 2000 sockets, 64 handshakes in flight
//! HANDSHAKE_SOCKETS=5000 HANDSHAKE_CONCURRENCY=128 cargo bench --bench handshake_auth
//! ```
//!
//! It starts the embedded stack (`crawbl`, SQLite in a temporary folder, every component in one
//! process) on loopback, signs up a few users, then opens the sockets with a minimal client
//! (websocket upgrade, Engine.IO open, Socket.IO connect on `/v1` with `X-Token`, wait for the
//! connect acknowledgement) and keeps them all open until the end. A second, smaller round uses a
//! fresh user per socket, so each handshake also fetches that user's memberships from auth once.
//! Client and server share the machine's cores.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const CRAWBL: &str = env!("CARGO_BIN_EXE_crawbl");
const PASSWORD: &str = "correct horse battery";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sockets: usize = setting("HANDSHAKE_SOCKETS", 2000)?;
    let concurrency: usize = setting("HANDSHAKE_CONCURRENCY", 64)?;
    let users: usize = setting("HANDSHAKE_USERS", 10)?;
    let cold_sockets: usize = setting("HANDSHAKE_COLD_SOCKETS", 200)?;

    let dir = std::env::temp_dir().join(format!("crawbl-bench-{}", std::process::id()));
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let mut stack = tokio::process::Command::new(CRAWBL)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("CRAWBL_DATA_DIR", dir.join("data"))
        .env("EDGE_LISTEN", format!("127.0.0.1:{port}"))
        .env("AUTH_LISTEN", "127.0.0.1:0")
        .env("CONVERSATION_LISTEN", "127.0.0.1:0")
        .env("RUNTIME_PROXY_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting crawbl")?;
    let result = run(&base, sockets, concurrency, users, cold_sockets).await;
    let _ = stack.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(
    base: &str,
    sockets: usize,
    concurrency: usize,
    users: usize,
    cold_sockets: usize,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    wait_until_healthy(&http, base).await?;
    println!(
        "handshake authentication benchmark: edge {base}, {} CPUs",
        cpus()
    );

    let mut tokens = Vec::new();
    for _ in 0..users.max(1) {
        tokens.push(sign_up(&http, base).await?);
    }
    // One handshake per user first, so their memberships are cached as in steady state.
    let mut open = Vec::new();
    for token in &tokens {
        open.push(handshake(base, token).await?);
    }
    let warm = measure(base, &tokens, sockets, concurrency).await?;
    warm.print(&format!(
        "warm: {sockets} sockets, {} users, {concurrency} in flight",
        tokens.len()
    ));
    open.extend(warm.sockets);

    if cold_sockets > 0 {
        let mut fresh = Vec::new();
        for _ in 0..cold_sockets {
            fresh.push(sign_up(&http, base).await?);
        }
        let cold = measure(base, &fresh, cold_sockets, concurrency).await?;
        cold.print(&format!(
            "cold: {cold_sockets} sockets, one new user each (memberships fetched once), \
             {concurrency} in flight"
        ));
        open.extend(cold.sockets);
    }
    println!("{} sockets open at the end", open.len());
    Ok(())
}

struct Round {
    elapsed: Duration,
    latencies: Vec<Duration>,
    sockets: Vec<Socket>,
}

impl Round {
    fn print(&self, label: &str) {
        let mut latencies = self.latencies.clone();
        latencies.sort();
        let percentile = |p: f64| {
            let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
            latencies.get(index).copied().unwrap_or_default()
        };
        println!(
            "{label}: {:.0} connects/s ({} in {:.2} s); handshake p50 {:.1} ms, p99 {:.1} ms",
            latencies.len() as f64 / self.elapsed.as_secs_f64(),
            latencies.len(),
            self.elapsed.as_secs_f64(),
            percentile(0.50).as_secs_f64() * 1000.0,
            percentile(0.99).as_secs_f64() * 1000.0,
        );
    }
}

/// Opens `count` sockets, `concurrency` at a time, cycling through `tokens`.
async fn measure(
    base: &str,
    tokens: &[String],
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Round> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<(Duration, Socket)>> = futures::stream::iter(0..count)
        .map(|index| {
            let token = tokens[index % tokens.len()].clone();
            async move {
                let begun = Instant::now();
                let socket = handshake(base, &token).await?;
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
    Ok(Round {
        elapsed,
        latencies,
        sockets,
    })
}

/// One Socket.IO connection on `/v1` authenticated by `token`, up to the server's acknowledgement.
async fn handshake(base: &str, token: &str) -> anyhow::Result<Socket> {
    let url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        base.replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request()?;
    request.headers_mut().insert("x-token", token.parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    let open = next_text(&mut socket).await?;
    if !open.starts_with('0') {
        bail!("expected an Engine.IO open packet, got {open:?}");
    }
    socket.send(Frame::text("40/v1,")).await?;
    loop {
        let packet = next_text(&mut socket).await?;
        if packet.starts_with("40/v1,") {
            return Ok(socket);
        }
        if packet == "2" {
            socket.send(Frame::text("3")).await?;
            continue;
        }
        bail!("handshake refused or unexpected packet: {packet}");
    }
}

async fn next_text(socket: &mut Socket) -> anyhow::Result<String> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .context("no packet within 30 s")?
            .context("websocket closed")??;
        if let Frame::Text(text) = frame {
            return Ok(text.as_str().to_owned());
        }
    }
}

async fn sign_up(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    let response: Value = http
        .post(format!("{base}/v1/auth/sign-up"))
        .json(&json!({"email": email, "password": PASSWORD, "displayName": "Bench"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    response["data"]["accessToken"]
        .as_str()
        .map(str::to_owned)
        .context("no access token in the sign-up answer")
}

async fn wait_until_healthy(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(format!("{base}/healthz")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the edge at {base} is not healthy after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn setting<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(raw) => raw
            .parse()
            .map_err(|error| anyhow::anyhow!("{name}={raw:?}: {error}")),
        Err(_) => Ok(default),
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
