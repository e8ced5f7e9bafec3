//! The edge: Crawbl's only public listener. REST under `/v1` and Socket.IO on namespace `/v1`,
//! both authenticated by `X-Token` or `Authorization: Bearer`. It calls the services over gRPC,
//! never touches a database, and delivers the events services publish to the sockets of each
//! workspace's room that are connected to this node.

mod console;
mod realtime;
mod rest;
mod shared;
mod state;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use crawbl_infra::bus::EventBus;
use crawbl_infra::config;
use crawbl_infra::notify::Notifier;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use shared::{access, cluster, cors, limits, metrics, peer};
pub use state::AppState;

/// How long sockets get to close at shutdown before the edge stops waiting for them.
const SOCKET_CLOSE_BOUND: Duration = Duration::from_secs(5);

pub struct Config {
    pub listen: SocketAddr,
    pub auth_url: String,
    pub conversation_url: String,
    pub runtime_proxy_url: String,
    /// Redis for events, auth's change announcements and the Socket.IO adapter between edge
    /// nodes; `None`: the in-process bus, and this node alone.
    pub redis_url: Option<String>,
    /// How long an agent may show as typing without any sign of its turn before the edge says
    /// `isTyping: false` itself.
    pub typing_ttl: Duration,
    /// Sends per user and failed handshakes per client address, on this node.
    pub send_limit: limits::RateLimit,
    pub failed_handshake_limit: limits::RateLimit,
    /// Proxies whose `X-Forwarded-For` names the client (for the limits).
    pub trusted_proxies: peer::TrustedProxies,
    /// The most bytes waiting to go out to one socket (see [`realtime::emit`]).
    pub socket_buffer_bytes: usize,
    /// How long this node's presence marks live without a refresh (`PRESENCE_TTL_MS`).
    pub presence: crawbl_infra::presence::Settings,
    /// Web origins besides the edge's own that browsers may call it from (`ALLOWED_ORIGINS`).
    pub allowed_origins: cors::AllowedOrigins,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            listen: config::parse_or("EDGE_LISTEN", ([127, 0, 0, 1], 8080).into())?,
            auth_url: config::optional("AUTH_URL")
                .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned()),
            conversation_url: config::optional("CONVERSATION_URL")
                .unwrap_or_else(|| "http://127.0.0.1:50052".to_owned()),
            runtime_proxy_url: config::optional("RUNTIME_PROXY_URL")
                .unwrap_or_else(|| "http://127.0.0.1:50053".to_owned()),
            redis_url: config::optional("REDIS_URL"),
            typing_ttl: Duration::from_millis(config::parse_or("AGENT_TYPING_TTL_MS", 60_000)?),
            send_limit: limits::RateLimit::from_env("SEND_LIMIT", limits::DEFAULT_SENDS)?,
            failed_handshake_limit: limits::RateLimit::from_env(
                "FAILED_HANDSHAKE_LIMIT",
                limits::DEFAULT_FAILED_HANDSHAKES,
            )?,
            trusted_proxies: config::parse_or("TRUSTED_PROXIES", peer::TrustedProxies::default())?,
            socket_buffer_bytes: config::parse_or(
                "SOCKET_BUFFER_BYTES",
                realtime::DEFAULT_SOCKET_BUFFER_BYTES,
            )?,
            presence: crawbl_infra::presence::Settings::from_env()?,
            allowed_origins: config::parse_or("ALLOWED_ORIGINS", cors::AllowedOrigins::None)?,
        })
    }
}

/// The channel auth announces revocations and membership changes on (see `crawbl.auth.v1.AuthChange`).
pub const AUTH_CHANGES_CHANNEL: &str = "crawbl:auth";

/// The notifier to hear auth's changes on: Redis when `redis_url` is given, in-process otherwise.
pub async fn auth_changes(redis_url: Option<&str>) -> anyhow::Result<Notifier> {
    Notifier::from_url(redis_url, AUTH_CHANGES_CHANNEL).await
}

/// Serves REST and Socket.IO on `listener` until `shutdown`, delivering events from `bus` and
/// applying auth's changes heard on `auth_changes`. With `config.redis_url`, socket changes
/// (logout, revocations, membership) reach every edge node through the Socket.IO Redis adapter.
///
/// At shutdown the node stops accepting, reports itself not ready, closes every socket's
/// connection (clients reconnect, through the load balancer, to another node) and gives the
/// REST requests in flight [`crawbl_infra::shutdown::DRAIN_BOUND`] to finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    bus: EventBus,
    auth_changes: Notifier,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (follows, deliveries) = bus.subscriber();
    let mut state = AppState::connect(&config, shutdown.clone())?;
    // Who is connected here, for the push senders (which push only to users offline everywhere).
    state.online = Some(crawbl_infra::presence::Node::start(
        crawbl_infra::presence::Presence::from_url(config.redis_url.as_deref()).await?,
        config.presence,
        shutdown.clone(),
    ));
    let fanout = realtime::Fanout::new(
        state.sockets.clone(),
        state.conversations.clone(),
        follows,
        config.typing_ttl,
    );
    let adapter = cluster::adapter(config.redis_url.as_deref()).await?;
    let typists = realtime::Typists::new(bus.clone());
    let (socket_layer, io) =
        realtime::layer(state.clone(), fanout.clone(), typists, adapter, &config).await?;
    state
        .sockets
        .set(io.clone(), std::sync::Arc::new(realtime::Moves));
    metrics::register(state.sockets.clone());
    let sockets = state.sockets.clone();
    let keys = tokio::spawn(state.access.keys().maintain(shutdown.clone()));
    let follower = tokio::spawn(access::follow(
        state.access.clone(),
        state.sockets.clone(),
        auth_changes.subscribe(),
        shutdown.clone(),
    ));
    let mut app = rest::router(state)?
        .layer(socket_layer)
        .layer(axum::middleware::map_request(own_request_parts));
    // Outermost: long-polling requests get it too, and preflights keep the headers that
    // `own_request_parts` drops.
    if let Some(cors) = cors::layer(&config.allowed_origins) {
        app = app.layer(cors);
    }
    let app = app.into_make_service_with_connect_info::<SocketAddr>();

    let delivery = tokio::spawn(realtime::deliver_events(
        io,
        fanout,
        deliveries,
        shutdown.clone(),
    ));

    let address = listener.local_addr().ok();
    tracing::info!(?address, bus = bus.kind(), "edge listening");
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let closing = tokio::spawn(close_sockets_at_shutdown(sockets, shutdown.clone()));
    let bound = crawbl_infra::shutdown::DRAIN_BOUND;
    let served = crawbl_infra::shutdown::drain_within(server, &shutdown, bound).await;
    shutdown.cancel();
    if let Err(error) = closing.await {
        tracing::warn!(%error, "closing sockets ended abnormally");
    }
    match served {
        Some(served) => served.context("serving the edge")?,
        None => tracing::warn!(
            bound_ms = bound.as_millis(),
            "requests still in flight at the end of the drain were cut off"
        ),
    }
    if let Err(error) = delivery.await {
        tracing::warn!(%error, "event delivery task ended abnormally");
    }
    for task in [keys, follower] {
        if let Err(error) = task.await {
            tracing::warn!(%error, "a background task ended abnormally");
        }
    }
    Ok(())
}

/// Once shutdown starts, closes every socket of this node (see
/// [`cluster::Sockets::close_for_shutdown`]).
async fn close_sockets_at_shutdown(sockets: cluster::Sockets, shutdown: CancellationToken) {
    shutdown.cancelled().await;
    let count = sockets.local().len();
    if tokio::time::timeout(SOCKET_CLOSE_BOUND, sockets.close_for_shutdown())
        .await
        .is_err()
    {
        tracing::warn!("sockets still open after the close bound");
    }
    tracing::info!(
        count,
        "closed sockets for shutdown; clients reconnect elsewhere"
    );
}

/// Runs the edge alone, configured by environment variables.
pub async fn main_from_env() -> anyhow::Result<()> {
    crawbl_infra::telemetry::with_telemetry("crawbl-edge", main_with_telemetry()).await
}

async fn main_with_telemetry() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    crawbl_infra::grpc::check_service_token_env()?;
    let bus = EventBus::for_standalone(
        config.redis_url.as_deref(),
        crawbl_infra::bus::Channels::from_env()?,
        "edge",
    )
    .await?;
    let changes = auth_changes(config.redis_url.as_deref()).await?;
    let listener = crawbl_infra::net::bind(config.listen, "EDGE_LISTEN").await?;
    run(
        config,
        listener,
        bus,
        changes,
        crawbl_infra::shutdown::on_signal(),
    )
    .await
}

/// The request headers a socket keeps: what Engine.IO's handshake and upgrade read, and what
/// the edge reads at the namespace's connect (the credential, the client's address, the origin).
const SOCKET_HEADERS: [http::HeaderName; 9] = [
    http::header::CONNECTION,
    http::header::UPGRADE,
    http::header::SEC_WEBSOCKET_KEY,
    http::header::SEC_WEBSOCKET_VERSION,
    http::header::CONTENT_TYPE,
    http::header::ORIGIN,
    http::header::AUTHORIZATION,
    http::HeaderName::from_static("x-token"),
    http::HeaderName::from_static("x-forwarded-for"),
];

/// socketioxide keeps a socket's request headers and URI for the socket's life, and as parsed
/// they point into hyper's 16 KiB read buffer, which then stays alive too. Owned copies of them
/// for Socket.IO requests let that buffer go (about 7.5 KB per idle socket, measured), and only
/// the headers a socket needs are kept (a browser sends a dozen more).
async fn own_request_parts(mut request: axum::extract::Request) -> axum::extract::Request {
    if !request.uri().path().starts_with("/socket.io") {
        return request;
    }
    let headers: http::HeaderMap = request
        .headers()
        .iter()
        .filter(|(name, _)| SOCKET_HEADERS.contains(name))
        .filter_map(|(name, value)| {
            let name = http::HeaderName::from_bytes(name.as_str().as_bytes()).ok()?;
            let value = http::HeaderValue::from_bytes(value.as_bytes()).ok()?;
            Some((name, value))
        })
        .collect();
    *request.headers_mut() = headers;
    if let Ok(uri) = request.uri().to_string().parse::<http::Uri>() {
        if request
            .extensions()
            .get::<axum::extract::OriginalUri>()
            .is_some()
        {
            request
                .extensions_mut()
                .insert(axum::extract::OriginalUri(uri.clone()));
        }
        *request.uri_mut() = uri;
    }
    request
}

/// Entry points for the fuzz targets in `fuzz/`: the parsers of what comes from outside that
/// live in private modules. Not an API (hidden, no stability promise).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::rest::router;
    pub use crate::shared::auth::token_from_headers;
    pub use crate::shared::json::SocketEvent;
    pub use crate::shared::peer::TrustedProxies;

    /// Parsers of Socket.IO client payloads; their methods are defined beside the code they call,
    /// in `realtime/since.rs`, `realtime/subscriptions.rs` and `realtime/cancel.rs` (modules
    /// private to `realtime`).
    pub struct Parsers;
}
