use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use engineioxide_core::{ProtocolVersion, Sid, TransportType};
use http::request::Parts;

use crate::{
    config::EngineIoConfig,
    handler::EngineIoHandler,
    heartbeat::{self, Verdict},
    socket::{DisconnectReason, Socket},
};

type SocketMap<T> = RwLock<HashMap<Sid, Arc<T>>>;

/// The [`EngineIo`] struct holds the state of the engine.io server as well as utility methods to manage the state
pub struct EngineIo<H: EngineIoHandler> {
    /// A map of all the sockets connected to the server
    sockets: SocketMap<Socket<H::Data>>,

    /// The handler for the engine.io server that will be called when events are received
    pub handler: Arc<H>,

    /// The config for the engine.io server
    pub config: EngineIoConfig,

    /// (Crawbl patch.) What heartbeat times count from.
    epoch: tokio::time::Instant,
    /// (Crawbl patch.) Whether the heartbeat task runs (it starts with the first heartbeat).
    heartbeats: AtomicBool,
}

impl<H: EngineIoHandler> EngineIo<H> {
    /// Create a new Engine.IO server with a [`EngineIoHandler`] and a [`EngineIoConfig`]
    pub fn new(handler: Arc<H>, config: EngineIoConfig) -> Self {
        Self {
            sockets: RwLock::new(HashMap::new()),
            config,
            handler,
            epoch: tokio::time::Instant::now(),
            heartbeats: AtomicBool::new(false),
        }
    }

    /// Milliseconds since the engine's epoch, never 0.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
    }

    /// (Crawbl patch.) Starts the heartbeat of `socket` (after its handshake), and the engine's
    /// heartbeat task if it is not running yet.
    pub(crate) fn start_heartbeat(self: &Arc<Self>, socket: &Socket<H::Data>) {
        let interval = millis(self.config.ping_interval);
        let first = match socket.protocol {
            ProtocolVersion::V3 => interval + millis(self.config.ping_timeout),
            ProtocolVersion::V4 => interval,
        };
        socket.heartbeat.start(self.now(), first);
        if !self.heartbeats.swap(true, Ordering::AcqRel) {
            tokio::spawn(Self::heartbeats(Arc::downgrade(self)));
        }
    }

    /// Checks every socket's heartbeat a few times per ping interval, until the engine is gone.
    async fn heartbeats(engine: Weak<Self>) {
        let period = match engine.upgrade() {
            Some(engine) => (engine.config.ping_interval.min(engine.config.ping_timeout) / 4)
                .clamp(Duration::from_millis(10), Duration::from_secs(1)),
            None => return,
        };
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(engine) = engine.upgrade() else {
                return;
            };
            let (interval, timeout) = (
                millis(engine.config.ping_interval),
                millis(engine.config.ping_timeout),
            );
            let now = engine.now();
            let dead: Vec<Arc<Socket<H::Data>>> = engine
                .sockets
                .read()
                .unwrap()
                .values()
                .filter(|socket| heartbeat::check(socket, now, interval, timeout) == Verdict::Dead)
                .cloned()
                .collect();
            // Outside the map's lock: closing takes it.
            for socket in dead {
                #[cfg(feature = "tracing")]
                tracing::debug!(sid = ?socket.id, "heartbeat timeout");
                socket.close(DisconnectReason::HeartbeatTimeout);
            }
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl<H: EngineIoHandler> EngineIo<H> {
    /// Create a new engine.io session and a new socket and add it to the socket map
    pub(crate) fn create_session(
        self: &Arc<Self>,
        protocol: ProtocolVersion,
        transport: TransportType,
        req: Parts,
        supports_binary: bool,
    ) -> Arc<Socket<H::Data>> {
        let engine = self.clone();
        let close_fn = Box::new(move |sid, reason| engine.close_session(sid, reason));

        let socket = Socket::new(
            protocol,
            transport,
            &self.config,
            req,
            close_fn,
            supports_binary,
        );
        let socket = Arc::new(socket);
        self.sockets
            .write()
            .unwrap()
            .insert(socket.id, socket.clone());
        self.handler.clone().on_connect(socket.clone());
        socket
    }

    /// Get a socket by its sid
    /// Clones the socket ref to avoid holding the lock
    pub fn get_socket(&self, sid: Sid) -> Option<Arc<Socket<H::Data>>> {
        self.sockets.read().unwrap().get(&sid).cloned()
    }

    /// Close an engine.io session by removing the socket from the socket map and closing the socket.
    ///
    /// It should be the only way to close a session and to remove a socket from the socket map.
    #[cfg_attr(feature = "tracing", tracing::instrument(skip(self)))]
    pub fn close_session(&self, sid: Sid, reason: DisconnectReason) {
        let socket = { self.sockets.write().unwrap().remove(&sid) };
        let Some(socket) = socket else {
            #[cfg(feature = "tracing")]
            tracing::debug!(
                ?sid,
                socket_len = self.sockets.read().unwrap().len(),
                "socket not found"
            );
            return;
        };

        // Notify every transport task listening on this token to stop. Cancellation-aware
        // transports (the ws `forward_to_socket` task and pending polling requests) will release
        // the `internal_rx` lock as soon as they observe the cancellation.
        socket.cancellation_token.cancel();
        // No more packets can be buffered, and `Socket::closed` resolves; the transport may
        // still write what was buffered (within `close_timeout`).
        socket.queue.close();

        let handler = self.handler.clone();
        tokio::spawn(async move {
            // Wait for the cancelled transport task to yield the `internal_rx` lock. When no
            // transport holds it (e.g. polling between requests) this resolves immediately.
            drop(socket.internal_rx.lock().await);
            // What the client never took is freed now, not when the last reference to the
            // socket goes (handlers may keep one for a while).
            socket.queue.clear();

            #[cfg(feature = "tracing")]
            tracing::debug!(sid = %socket.id, "session closed, notifying handler");
            handler.on_disconnect(socket, reason);
        });

        #[cfg(feature = "tracing")]
        tracing::debug!(
            rem_sockets = self.sockets.read().unwrap().len(),
            "remaining sockets",
        );
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use engineioxide_core::Str;
    use http::Request;

    use super::*;

    #[derive(Debug, Clone)]
    struct MockHandler;

    impl EngineIoHandler for MockHandler {
        type Data = ();

        fn on_connect(self: Arc<Self>, socket: Arc<Socket<Self::Data>>) {
            println!("socket connect {}", socket.id);
        }

        fn on_disconnect(&self, socket: Arc<Socket<Self::Data>>, reason: DisconnectReason) {
            println!("socket disconnect {} {:?}", socket.id, reason);
        }

        fn on_message(self: &Arc<Self>, msg: Str, socket: Arc<Socket<Self::Data>>) {
            println!("Ping pong message {msg:?}");
            socket.emit(msg).ok();
        }

        fn on_binary(self: &Arc<Self>, data: Bytes, socket: Arc<Socket<Self::Data>>) {
            println!("Ping pong binary message {data:?}");
            socket.emit_binary(data).ok();
        }
    }

    fn create_engine() -> Arc<EngineIo<MockHandler>> {
        let config = EngineIoConfig::default();
        Arc::new(EngineIo::new(Arc::new(MockHandler), config))
    }

    #[tokio::test]
    async fn create_session() {
        let engine = create_engine();
        let socket = engine.create_session(
            ProtocolVersion::V4,
            TransportType::Polling,
            Request::<()>::default().into_parts().0,
            true,
        );
        assert_eq!(engine.sockets.read().unwrap().len(), 1);
        assert_eq!(socket.protocol, ProtocolVersion::V4);
        assert!(socket.is_http());
    }

    #[tokio::test]
    async fn close_session() {
        let engine = create_engine();
        let socket = engine.create_session(
            ProtocolVersion::V4,
            TransportType::Polling,
            Request::<()>::default().into_parts().0,
            true,
        );
        assert_eq!(engine.sockets.read().unwrap().len(), 1);
        engine.close_session(socket.id, DisconnectReason::TransportClose);
        assert_eq!(engine.sockets.read().unwrap().len(), 0);
    }

    #[tokio::test]
    async fn get_socket() {
        let engine = create_engine();
        let socket = engine.create_session(
            ProtocolVersion::V4,
            TransportType::Polling,
            Request::<()>::default().into_parts().0,
            true,
        );
        assert_eq!(engine.sockets.read().unwrap().len(), 1);
        let socket = engine.get_socket(socket.id).unwrap();
        assert_eq!(socket.protocol, ProtocolVersion::V4);
        assert!(socket.is_http());
    }

    /// (Crawbl patch.) The engine's heartbeat task pings every socket each interval and closes
    /// those whose pong does not come within the timeout.
    #[tokio::test]
    async fn heartbeats_ping_each_interval_and_close_the_silent_sockets() {
        let config = EngineIoConfig::builder()
            .ping_interval(std::time::Duration::from_millis(40))
            .ping_timeout(std::time::Duration::from_millis(40))
            .build();
        let engine = Arc::new(EngineIo::new(Arc::new(MockHandler), config));
        let open = || {
            engine.create_session(
                ProtocolVersion::V4,
                TransportType::Polling,
                Request::<()>::default().into_parts().0,
                true,
            )
        };
        let (alive, silent) = (open(), open());
        engine.start_heartbeat(&alive);
        engine.start_heartbeat(&silent);
        let mut pings = 0;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(400);
        while tokio::time::Instant::now() < deadline {
            while let Some(packets) = alive.queue.try_recv() {
                assert!(matches!(
                    packets.as_slice(),
                    [engineioxide_core::Packet::Ping]
                ));
                pings += 1;
                alive.heartbeat_received();
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(pings >= 4, "{pings} pings in 400 ms at a 40 ms interval");
        assert!(
            engine.get_socket(alive.id).is_some(),
            "a socket that answers stays"
        );
        assert!(
            engine.get_socket(silent.id).is_none(),
            "a silent socket is closed"
        );
        assert!(silent.is_closed());
    }
}
