//! A small Socket.IO v5 client over Engine.IO v4 websockets, speaking the protocol as
//! `socket.io-client` does: open packet, namespace connect with an auth payload, ping/pong,
//! events with any number of arguments both ways, acks, `connect_error`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub const NAMESPACE: &str = "/v1";

/// An event the server sent: its name and arguments.
#[derive(Debug, Clone)]
pub struct ServerEvent {
    pub name: String,
    pub args: Vec<Value>,
}

impl ServerEvent {
    pub fn payload(&self) -> &Value {
        &self.args[0]
    }
}

/// Acks awaited, by ack id.
type PendingAcks = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<Value>>>>>;

pub struct SioClient {
    events: mpsc::UnboundedReceiver<ServerEvent>,
    /// Packets to send; dropping it closes the websocket.
    outgoing: mpsc::UnboundedSender<String>,
    acks: PendingAcks,
    next_ack_id: AtomicU64,
}

/// What [`SioClient::next`] found.
#[derive(Debug)]
pub enum Next {
    Event(ServerEvent),
    /// Nothing arrived in time.
    Quiet,
    /// The server disconnected the socket or the connection closed.
    Ended,
}

#[derive(Debug)]
pub enum ConnectOutcome {
    Connected(SioClient),
    /// The server's `connect_error` message.
    Refused(String),
}

/// Connects to `base_url` (`http://host:port`) on namespace `/v1`.
pub async fn connect(
    base_url: &str,
    headers: &[(&str, &str)],
    auth: Option<Value>,
) -> anyhow::Result<ConnectOutcome> {
    connect_from(None, base_url, headers, auth).await
}

/// A websocket to a Socket.IO server.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the namespace handshake of [`handshake`] ended with.
pub enum Handshake {
    /// Connected to `/v1`: the websocket, to read events from.
    Connected(Box<WebSocket>),
    /// The server's `connect_error` message.
    Refused(String),
}

/// [`connect`] from the local address `source` (e.g. one of several `127.0.0.x`), so one
/// process can hold more connections to one server than one source address has ports.
pub async fn connect_from(
    source: Option<std::net::IpAddr>,
    base_url: &str,
    headers: &[(&str, &str)],
    auth: Option<Value>,
) -> anyhow::Result<ConnectOutcome> {
    let socket = match handshake(source, base_url, headers, auth).await? {
        Handshake::Connected(socket) => socket,
        Handshake::Refused(message) => return Ok(ConnectOutcome::Refused(message)),
    };
    Ok(ConnectOutcome::Connected(SioClient::run(socket)))
}

/// Opens a websocket to `base_url` from `source` and connects to `/v1` with `auth`, answering
/// pings meanwhile; the socket is the caller's to read from afterwards.
pub async fn handshake(
    source: Option<std::net::IpAddr>,
    base_url: &str,
    headers: &[(&str, &str)],
    auth: Option<Value>,
) -> anyhow::Result<Handshake> {
    let url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        base_url.replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes())?,
            value.parse()?,
        );
    }
    let (mut socket, _) = match source {
        None => tokio_tungstenite::connect_async(request).await?,
        Some(source) => {
            let host = request.uri().host().unwrap_or("127.0.0.1").to_owned();
            let port = request.uri().port_u16().unwrap_or(80);
            let server = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .next()
                .ok_or_else(|| anyhow::anyhow!("{host} does not resolve"))?;
            let tcp = match source {
                std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            tcp.bind(std::net::SocketAddr::new(source, 0))?;
            let stream = tcp.connect(server).await?;
            stream.set_nodelay(true)?;
            tokio_tungstenite::client_async(
                request,
                tokio_tungstenite::MaybeTlsStream::Plain(stream),
            )
            .await?
        }
    };

    let open = next_text(&mut socket).await?;
    anyhow::ensure!(
        open.starts_with('0'),
        "expected an open packet, got {open:?}"
    );

    let auth = auth.map(|auth| auth.to_string()).unwrap_or_default();
    socket
        .send(Frame::text(format!("40{NAMESPACE},{auth}")))
        .await?;
    loop {
        let packet = next_text(&mut socket).await?;
        if packet == "2" {
            socket.send(Frame::text("3")).await?;
        } else if packet.starts_with(&format!("40{NAMESPACE},")) {
            return Ok(Handshake::Connected(Box::new(socket)));
        } else if let Some(body) = packet.strip_prefix(&format!("44{NAMESPACE},")) {
            let error: Value = serde_json::from_str(body)?;
            let message = error["message"].as_str().unwrap_or(body).to_owned();
            return Ok(Handshake::Refused(message));
        } else {
            anyhow::bail!("unexpected packet during connect: {packet:?}");
        }
    }
}

impl SioClient {
    /// Reads `socket` on a task of its own: events into the client's queue, pongs, acks.
    fn run(socket: Box<WebSocket>) -> Self {
        let mut socket = *socket;
        let (events_tx, events) = mpsc::unbounded_channel();
        let (outgoing, mut outgoing_rx) = mpsc::unbounded_channel::<String>();
        let acks = PendingAcks::default();
        let acks_to_answer = acks.clone();
        tokio::spawn(async move {
            // However the connection ends, acks still awaited fail at once.
            let _unanswered = FailPendingAcks(acks_to_answer.clone());
            loop {
                tokio::select! {
                    frame = socket.next() => {
                        let Some(Ok(frame)) = frame else { return };
                        let Frame::Text(text) = frame else { continue };
                        if text.as_str() == "2" {
                            if socket.send(Frame::text("3")).await.is_err() { return; }
                        } else if text.as_str().starts_with(&format!("41{NAMESPACE}")) {
                            // The server disconnected this socket: the event stream ends.
                            let _ = socket.close(None).await;
                            return;
                        } else if let Some((id, args)) = parse_ack(text.as_str()) {
                            let waiting = acks_to_answer
                                .lock()
                                .ok()
                                .and_then(|mut acks| acks.remove(&id));
                            if let Some(waiting) = waiting {
                                let _ = waiting.send(args);
                            }
                        } else if let Some(event) = parse_event(text.as_str())
                            && events_tx.send(event).is_err()
                        {
                            return;
                        }
                    }
                    packet = outgoing_rx.recv() => {
                        let Some(packet) = packet else { let _ = socket.close(None).await; return };
                        if socket.send(Frame::text(packet)).await.is_err() { return; }
                    }
                }
            }
        });
        Self {
            events,
            outgoing,
            acks,
            next_ack_id: AtomicU64::new(0),
        }
    }
}

/// Drops every awaited ack when the connection's task ends.
struct FailPendingAcks(PendingAcks);

impl Drop for FailPendingAcks {
    fn drop(&mut self) {
        if let Ok(mut acks) = self.0.lock() {
            acks.clear();
        }
    }
}

/// `43/v1,<id>[args…]`
fn parse_ack(packet: &str) -> Option<(u64, Vec<Value>)> {
    let body = packet.strip_prefix(&format!("43{NAMESPACE},"))?;
    let split = body.find('[')?;
    let id = body[..split].parse().ok()?;
    let Value::Array(args) = serde_json::from_str(&body[split..]).ok()? else {
        return None;
    };
    Some((id, args))
}

/// An event packet, `42/v1,[name, args…]`.
pub fn parse_event(packet: &str) -> Option<ServerEvent> {
    let body = packet.strip_prefix(&format!("42{NAMESPACE},"))?;
    let Value::Array(mut items) = serde_json::from_str(body).ok()? else {
        return None;
    };
    if items.is_empty() {
        return None;
    }
    let Value::String(name) = items.remove(0) else {
        return None;
    };
    Some(ServerEvent { name, args: items })
}

async fn next_text<S>(socket: &mut S) -> anyhow::Result<String>
where
    S: futures::Stream<Item = Result<Frame, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .map_err(|_| anyhow::anyhow!("no packet within 10s"))?
            .ok_or_else(|| anyhow::anyhow!("websocket closed"))??;
        if let Frame::Text(text) = frame {
            return Ok(text.as_str().to_owned());
        }
    }
}

impl ConnectOutcome {
    pub fn expect_connected(self) -> SioClient {
        match self {
            Self::Connected(client) => client,
            Self::Refused(message) => panic!("handshake refused: {message}"),
        }
    }

    pub fn expect_refused(self) -> String {
        match self {
            Self::Connected(_) => panic!("handshake accepted, expected connect_error"),
            Self::Refused(message) => message,
        }
    }
}

impl std::fmt::Debug for SioClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SioClient")
    }
}

impl SioClient {
    /// Sends an event with `args` (no ack asked).
    pub fn emit(&self, event: &str, args: &[Value]) {
        let mut packet = vec![Value::String(event.to_owned())];
        packet.extend_from_slice(args);
        self.send_raw(format!("42{NAMESPACE},{}", Value::Array(packet)));
    }

    /// Sends an event with `args` and waits up to `wait` for the server's ack; its arguments.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        args: &[Value],
        wait: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        let id = self.next_ack_id.fetch_add(1, Ordering::Relaxed);
        let (sender, answer) = oneshot::channel();
        self.acks
            .lock()
            .map_err(|_| anyhow::anyhow!("ack table poisoned"))?
            .insert(id, sender);
        let mut packet = vec![Value::String(event.to_owned())];
        packet.extend_from_slice(args);
        anyhow::ensure!(
            self.send_raw(format!("42{NAMESPACE},{id}{}", Value::Array(packet))),
            "the connection ended before {event} was sent"
        );
        tokio::time::timeout(wait, answer)
            .await
            .map_err(|_| anyhow::anyhow!("no ack for {event} within {wait:?}"))?
            .map_err(|_| anyhow::anyhow!("the connection ended before the ack for {event}"))
    }

    /// Sends a raw Engine.IO text frame, e.g. a malformed packet; false when the connection
    /// has ended.
    pub fn send_raw(&self, frame: String) -> bool {
        self.outgoing.send(frame).is_ok()
    }

    /// Whether the server ends this socket (disconnects it or closes its connection) within
    /// `wait`; events that arrive before are dropped.
    pub async fn disconnected_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return false,
                Ok(None) => return true,
                Ok(Some(_)) => {}
            }
        }
    }

    /// The next event, or whether the wait ran out or the socket ended.
    pub async fn next(&mut self, wait: Duration) -> Next {
        match tokio::time::timeout(wait, self.events.recv()).await {
            Err(_) => Next::Quiet,
            Ok(None) => Next::Ended,
            Ok(Some(event)) => Next::Event(event),
        }
    }

    /// The next event, or `None` if none arrives within `wait` (or the socket ended).
    pub async fn next_event(&mut self, wait: Duration) -> Option<ServerEvent> {
        tokio::time::timeout(wait, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Every event until (and including) the first for which `last` holds; panics after `wait`.
    pub async fn events_until(
        &mut self,
        wait: Duration,
        mut last: impl FnMut(&ServerEvent) -> bool,
    ) -> Vec<ServerEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut events = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(event) = self.next_event(remaining).await else {
                panic!("timed out after {wait:?}; events so far: {events:#?}");
            };
            let done = last(&event);
            events.push(event);
            if done {
                return events;
            }
        }
    }
}
