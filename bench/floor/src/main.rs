//! The raw floor of the fan-out benchmark: the least a server can do to deliver the same
//! frames to the same clients. No Socket.IO library, no Redis, no token check, no task per
//! socket: it answers the websocket upgrade, the Engine.IO open and the `/v1` connect with fixed
//! packets (so `crawbl-load` drives it like the real targets), and then writes each published
//! frame, encoded once, straight to every socket with one non-blocking `write` each (frames
//! that queued up meanwhile go in the same write). What is
//! left is the kernel's cost of a TCP write over loopback, the limit this machine allows.
//!
//! ```text
//! crawbl-floor serve 127.0.0.1:9100 127.0.0.1:9101   # websockets, control
//! crawbl-floor serve 127.0.0.1:9200 127.0.0.1:9201   # a second node, as many as wanted
//! PUBLISH_RATE=10 PUBLISH_SECONDS=10 crawbl-floor publish 127.0.0.1:9101,127.0.0.1:9201
//! ```
//!
//! Nodes share nothing (no bus): `publish` asks each, over its control port, to broadcast `PUBLISH_RATE` fan-out events
//! per second for `PUBLISH_SECONDS` (each carrying its publish time), and returns when it has.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

const USAGE: &str = "usage: crawbl-floor serve WEBSOCKET_ADDRESS CONTROL_ADDRESS
       PUBLISH_RATE=R PUBLISH_SECONDS=S crawbl-floor publish CONTROL_ADDRESS[,CONTROL_ADDRESS...]";

/// Connected sockets are spread over this many shards, each written by its own task, so a
/// broadcast uses both cores.
const SHARDS: usize = 2;
/// Per-socket read buffer.
const READ_BUFFER_BYTES: usize = 512;
/// The largest client frame or upgrade request the floor reads.
const MAX_INPUT: usize = 64 * 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", sockets, control] => serve(sockets, control).await,
        ["publish", control] => publish(control).await,
        _ => bail!("{USAGE}"),
    }
}

/// The sockets that completed the `/v1` connect, by connection number, in shards.
struct Registry {
    shards: Vec<Shard>,
    next: AtomicU64,
}

struct Shard {
    sockets: Mutex<HashMap<u64, OwnedWriteHalf>>,
    frames: mpsc::UnboundedSender<Arc<[u8]>>,
}

impl Registry {
    /// The shards, each with a writer task that puts published frames on its sockets.
    fn start() -> Arc<Self> {
        let mut shards = Vec::with_capacity(SHARDS);
        let mut inboxes = Vec::with_capacity(SHARDS);
        for _ in 0..SHARDS {
            let (frames, inbox) = mpsc::unbounded_channel();
            shards.push(Shard {
                sockets: Mutex::default(),
                frames,
            });
            inboxes.push(inbox);
        }
        let registry = Arc::new(Self {
            shards,
            next: AtomicU64::new(0),
        });
        for (index, inbox) in inboxes.into_iter().enumerate() {
            tokio::spawn(write_shard(registry.clone(), index, inbox));
        }
        registry
    }

    fn sockets(&self, id: u64) -> std::sync::MutexGuard<'_, HashMap<u64, OwnedWriteHalf>> {
        let index = usize::try_from(id).unwrap_or_default() % SHARDS;
        self.shards[index]
            .sockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, frame: Arc<[u8]>) {
        for shard in &self.shards {
            let _ = shard.frames.send(frame.clone());
        }
    }
}

/// Writes each frame to every socket of one shard. Frames published while the last ones were
/// being written go out together, one write per socket, as any server that keeps up must do.
/// A socket whose buffer cannot take the whole write is dropped: a partial frame would corrupt
/// its stream.
async fn write_shard(
    registry: Arc<Registry>,
    index: usize,
    mut inbox: mpsc::UnboundedReceiver<Arc<[u8]>>,
) {
    let mut batch = Vec::new();
    while let Some(frame) = inbox.recv().await {
        batch.clear();
        batch.extend_from_slice(&frame);
        while let Ok(frame) = inbox.try_recv() {
            batch.extend_from_slice(&frame);
        }
        registry
            .sockets(index as u64)
            .retain(|_, socket| socket.try_write(&batch).ok() == Some(batch.len()));
        // Let handshakes and the control port in between batches.
        tokio::task::yield_now().await;
    }
}

async fn serve(sockets: &str, control: &str) -> anyhow::Result<()> {
    let sockets = TcpListener::bind(sockets).await.context("binding")?;
    let control = TcpListener::bind(control).await.context("binding")?;
    let registry = Registry::start();
    let publisher = registry.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = control.accept().await {
            tokio::spawn(answer_control(stream, publisher.clone()));
        }
    });
    loop {
        let stream = match sockets.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, most likely: refuse for a moment, do not die.
                eprintln!("accepting: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let id = registry.next.fetch_add(1, Ordering::Relaxed);
            let _ = serve_socket(stream, id, &registry).await;
            registry.sockets(id).remove(&id);
        });
    }
}

/// Upgrades the connection, answers the Engine.IO open and the `/v1` connect, registers the
/// socket for broadcasts and then reads (and ignores) what the client sends until it closes.
async fn serve_socket(stream: TcpStream, id: u64, registry: &Registry) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let (reader, mut writer) = stream.into_split();
    // Clients send a few small frames; a default 8 KiB buffer would be most of a socket's memory.
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let key = read_upgrade_request(&mut reader).await?;
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    writer.write_all(response.as_bytes()).await?;
    let open = r#"0{"sid":"floor","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":65536}"#;
    writer.write_all(&text_frame(open)).await?;
    let mut writer = Some(writer);
    loop {
        let payload = read_client_frame(&mut reader).await?;
        if payload.starts_with(b"40/v1,")
            && let Some(mut connecting) = writer.take()
        {
            connecting
                .write_all(&text_frame(r#"40/v1,{"sid":"floor"}"#))
                .await?;
            registry.sockets(id).insert(id, connecting);
        }
    }
}

/// The `Sec-WebSocket-Key` of the HTTP upgrade request.
async fn read_upgrade_request(reader: &mut BufReader<OwnedReadHalf>) -> anyhow::Result<String> {
    let mut key = None;
    let mut read = 0;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await?;
        read += n;
        anyhow::ensure!(n > 0 && read <= MAX_INPUT, "bad upgrade request");
        if line == "\r\n" {
            return key.context("no Sec-WebSocket-Key");
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("sec-websocket-key")
        {
            key = Some(value.trim().to_owned());
        }
    }
}

/// One client frame's payload, unmasked (clients always mask, RFC 6455 §5.3).
async fn read_client_frame(reader: &mut BufReader<OwnedReadHalf>) -> anyhow::Result<Vec<u8>> {
    let mut header = [0u8; 2];
    reader.read_exact(&mut header).await?;
    let length = match header[1] & 0x7f {
        126 => u64::from(reader.read_u16().await?),
        127 => reader.read_u64().await?,
        short => u64::from(short),
    };
    let length = usize::try_from(length)
        .ok()
        .filter(|length| *length <= MAX_INPUT)
        .context("client frame too large")?;
    let mut mask = [0u8; 4];
    if header[1] & 0x80 != 0 {
        reader.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await?;
    for (index, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[index % 4];
    }
    Ok(payload)
}

/// A final, unmasked text frame (server frames are never masked).
fn text_frame(text: &str) -> Vec<u8> {
    let mut frame = Vec::with_capacity(text.len() + 4);
    frame.push(0x81);
    match u16::try_from(text.len()) {
        Ok(short) if short < 126 => frame.push(short as u8),
        Ok(medium) => {
            frame.push(126);
            frame.extend_from_slice(&medium.to_be_bytes());
        }
        Err(_) => {
            frame.push(127);
            frame.extend_from_slice(&(text.len() as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(text.as_bytes());
    frame
}

/// One control connection: `publish <rate> <seconds>` → broadcasts, then `published <n>`.
async fn answer_control(stream: TcpStream, registry: Arc<Registry>) {
    let (reader, mut writer) = stream.into_split();
    let Ok(Some(line)) = BufReader::new(reader).lines().next_line().await else {
        return;
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let (Some(rate), Some(seconds)) = (
        words.get(1).and_then(|rate| rate.parse::<f64>().ok()),
        words.get(2).and_then(|seconds| seconds.parse::<u64>().ok()),
    ) else {
        let _ = writer
            .write_all(b"error: expected publish <rate> <seconds>\n")
            .await;
        return;
    };
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    // A count, not a deadline, so that every node publishes the same events.
    let count = (rate * seconds as f64).round() as u64;
    let mut index = 0u64;
    while index < count {
        ticker.tick().await;
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_micros())
            .unwrap_or_default();
        let packet = format!(
            r#"42/v1,["message.delta",{{"messageId":"fan-out","conversationId":"fan-out","agentId":"fan-out","delta":"{micros}","index":{index}}}]"#
        );
        registry.publish(text_frame(&packet).into());
        index += 1;
    }
    let _ = writer
        .write_all(format!("published {index}\n").as_bytes())
        .await;
}

/// Publishes through every server's control port at once (comma-separated addresses).
async fn publish(controls: &str) -> anyhow::Result<()> {
    let rate = std::env::var("PUBLISH_RATE").context("PUBLISH_RATE")?;
    let seconds = std::env::var("PUBLISH_SECONDS").context("PUBLISH_SECONDS")?;
    let command = format!("publish {rate} {seconds}\n");
    let publishing = controls.split(',').map(|control| {
        let command = command.clone();
        async move {
            let stream = TcpStream::connect(control)
                .await
                .with_context(|| format!("connecting to the floor's control port {control}"))?;
            let (reader, mut writer) = stream.into_split();
            writer.write_all(command.as_bytes()).await?;
            let answer = BufReader::new(reader)
                .lines()
                .next_line()
                .await?
                .context("the floor closed the control connection")?;
            anyhow::Ok(format!("{control}: {answer}"))
        }
    });
    for answer in futures::future::join_all(publishing).await {
        println!("{}", answer?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_frames_use_the_shortest_length_encoding() {
        assert_eq!(text_frame("hi"), b"\x81\x02hi");
        let medium = "x".repeat(126);
        assert_eq!(text_frame(&medium)[..4], [0x81, 126, 0, 126]);
        let long = "x".repeat(70_000);
        let frame = text_frame(&long);
        assert_eq!(frame[..2], [0x81, 127]);
        assert_eq!(
            u64::from_be_bytes(frame[2..10].try_into().unwrap_or_default()),
            70_000
        );
        assert_eq!(frame.len(), 70_010);
    }
}
