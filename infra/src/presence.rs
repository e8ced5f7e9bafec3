//! Who has a live connection on any edge node, for the senders of push notifications: a user
//! with no connected socket anywhere is offline (SPEC §9).
//!
//! Each edge node is a [`Node`]: it counts its own sockets per user, marks a user present when
//! their first socket connects and absent when their last one goes, and refreshes every present
//! user's mark every [`Settings::refresh`]. A mark expires [`Settings::ttl`] after its last
//! refresh, so the users of a node that dies (no clean disconnects) turn offline within the
//! TTL. Readers ask [`Presence::is_online`].
//!
//! With Redis, a user's marks are the sorted set `crawbl:presence:{userId}`: one member per node,
//! scored with the Unix ms it expires at (the key itself expires with its last mark). Without
//! Redis (the embedded default), the marks live in this process, shared by every component in
//! it; separate processes without Redis then see only their own (like the in-process bus).
//!
//! Each node also reports itself (its id, socket count and start) under the same expiry, so the
//! operations view lists the live nodes: `crawbl:node:{id}` holds the report, and the sorted set
//! `crawbl:nodes` names the nodes, scored with when their report expires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use crate::config;

const KEY_PREFIX: &str = "crawbl:presence:";
const NODES_KEY: &str = "crawbl:nodes";
const NODE_KEY_PREFIX: &str = "crawbl:node:";

/// What a node says of itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeReport {
    pub id: String,
    /// Connected sockets (of every user).
    pub sockets: u64,
    pub started_at_ms: i64,
}

/// How long a mark lives and how often nodes refresh theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub ttl: Duration,
    pub refresh: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            refresh: Duration::from_secs(10),
        }
    }
}

impl Settings {
    /// `PRESENCE_TTL_MS` (default 30 000); nodes refresh every third of it.
    pub fn from_env() -> anyhow::Result<Self> {
        let ttl_ms: u64 = config::parse_or("PRESENCE_TTL_MS", 30_000)?;
        anyhow::ensure!(ttl_ms >= 300, "PRESENCE_TTL_MS must be at least 300");
        Ok(Self {
            ttl: Duration::from_millis(ttl_ms),
            refresh: Duration::from_millis(ttl_ms / 3),
        })
    }
}

/// Where the marks are.
#[derive(Clone)]
pub enum Presence {
    InProcess(Arc<Marks>),
    Redis(ConnectionManager),
}

/// In-process marks: user id → node id → expiry (Unix ms); and the nodes' reports with theirs.
#[derive(Default)]
pub struct Marks {
    users: Mutex<HashMap<String, HashMap<String, u64>>>,
    nodes: Mutex<HashMap<String, (NodeReport, u64)>>,
}

impl Marks {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, u64>>> {
        lock(&self.users)
    }

    fn nodes(&self) -> MutexGuard<'_, HashMap<String, (NodeReport, u64)>> {
        lock(&self.nodes)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Presence {
    /// Redis at `url`, or this process's marks.
    pub async fn from_url(url: Option<&str>) -> anyhow::Result<Self> {
        match url {
            Some(url) => {
                let client = crate::redis_client::client(url)?;
                Ok(Self::Redis(
                    crate::redis_client::connection_manager(&client, url).await?,
                ))
            }
            None => Ok(Self::in_process()),
        }
    }

    /// The marks every component of this process shares.
    pub fn in_process() -> Self {
        static MARKS: OnceLock<Arc<Marks>> = OnceLock::new();
        Self::InProcess(MARKS.get_or_init(Arc::default).clone())
    }

    /// Whether `user_id` has a live mark on any node. A Redis failure answers an error: the
    /// caller decides (a push sender treats the user as offline rather than drop the push).
    pub async fn is_online(&self, user_id: &str) -> anyhow::Result<bool> {
        let now = unix_ms();
        match self {
            Self::InProcess(marks) => Ok(marks
                .lock()
                .get(user_id)
                .is_some_and(|nodes| nodes.values().any(|expires| *expires > now))),
            Self::Redis(connection) => {
                let live: u64 = redis::cmd("ZCOUNT")
                    .arg(key(user_id))
                    .arg(format!("({now}"))
                    .arg("+inf")
                    .query_async(&mut connection.clone())
                    .await?;
                Ok(live > 0)
            }
        }
    }

    /// The live nodes' reports (expired ones left out), in no particular order.
    pub async fn nodes(&self) -> anyhow::Result<Vec<NodeReport>> {
        let now = unix_ms();
        match self {
            Self::InProcess(marks) => Ok(marks
                .nodes()
                .values()
                .filter(|(_, expires)| *expires > now)
                .map(|(report, _)| report.clone())
                .collect()),
            Self::Redis(connection) => {
                let mut connection = connection.clone();
                let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                    .arg(NODES_KEY)
                    .arg(format!("({now}"))
                    .arg("+inf")
                    .query_async(&mut connection)
                    .await?;
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let keys: Vec<String> = ids.iter().map(|id| node_key(id)).collect();
                let reports: Vec<Option<String>> = redis::cmd("MGET")
                    .arg(keys)
                    .query_async(&mut connection)
                    .await?;
                Ok(reports
                    .into_iter()
                    .flatten()
                    .filter_map(|json| serde_json::from_str(&json).ok())
                    .collect())
            }
        }
    }

    async fn report(&self, report: &NodeReport, ttl: Duration) -> anyhow::Result<()> {
        let now = unix_ms();
        let expires = now + millis(ttl);
        match self {
            Self::InProcess(marks) => {
                let mut nodes = marks.nodes();
                nodes.insert(report.id.clone(), (report.clone(), expires));
                nodes.retain(|_, (_, expires)| *expires > now);
                Ok(())
            }
            Self::Redis(connection) => {
                redis::pipe()
                    .cmd("SET")
                    .arg(node_key(&report.id))
                    .arg(serde_json::to_string(report)?)
                    .arg("PX")
                    .arg(millis(ttl))
                    .ignore()
                    .cmd("ZADD")
                    .arg(NODES_KEY)
                    .arg(expires)
                    .arg(&report.id)
                    .ignore()
                    .cmd("ZREMRANGEBYSCORE")
                    .arg(NODES_KEY)
                    .arg("-inf")
                    .arg(now)
                    .ignore()
                    .query_async::<()>(&mut connection.clone())
                    .await?;
                Ok(())
            }
        }
    }

    async fn forget_node(&self, node: &str) -> anyhow::Result<()> {
        match self {
            Self::InProcess(marks) => {
                marks.nodes().remove(node);
                Ok(())
            }
            Self::Redis(connection) => {
                redis::pipe()
                    .cmd("DEL")
                    .arg(node_key(node))
                    .ignore()
                    .cmd("ZREM")
                    .arg(NODES_KEY)
                    .arg(node)
                    .ignore()
                    .query_async::<()>(&mut connection.clone())
                    .await?;
                Ok(())
            }
        }
    }

    async fn mark(&self, node: &str, user_ids: &[String], ttl: Duration) -> anyhow::Result<()> {
        let expires = unix_ms() + millis(ttl);
        match self {
            Self::InProcess(marks) => {
                let mut marks = marks.lock();
                for user_id in user_ids {
                    marks
                        .entry(user_id.clone())
                        .or_default()
                        .insert(node.to_owned(), expires);
                }
                // Forget what expired, so the map stays the size of who is online.
                let now = unix_ms();
                marks.retain(|_, nodes| {
                    nodes.retain(|_, expires| *expires > now);
                    !nodes.is_empty()
                });
                Ok(())
            }
            Self::Redis(connection) => {
                let mut pipeline = redis::pipe();
                for user_id in user_ids {
                    let key = key(user_id);
                    pipeline
                        .cmd("ZADD")
                        .arg(&key)
                        .arg(expires)
                        .arg(node)
                        .ignore()
                        .cmd("ZREMRANGEBYSCORE")
                        .arg(&key)
                        .arg("-inf")
                        .arg(unix_ms())
                        .ignore()
                        .cmd("PEXPIRE")
                        .arg(&key)
                        .arg(millis(ttl))
                        .ignore();
                }
                pipeline.query_async::<()>(&mut connection.clone()).await?;
                Ok(())
            }
        }
    }

    async fn unmark(&self, node: &str, user_id: &str) -> anyhow::Result<()> {
        match self {
            Self::InProcess(marks) => {
                let mut marks = marks.lock();
                if let Some(nodes) = marks.get_mut(user_id) {
                    nodes.remove(node);
                    if nodes.is_empty() {
                        marks.remove(user_id);
                    }
                }
                Ok(())
            }
            Self::Redis(connection) => {
                redis::cmd("ZREM")
                    .arg(key(user_id))
                    .arg(node)
                    .query_async::<()>(&mut connection.clone())
                    .await?;
                Ok(())
            }
        }
    }
}

/// One edge node's view: its sockets per user, kept marked while it runs.
pub struct Node {
    presence: Presence,
    id: String,
    started_at_ms: i64,
    settings: Settings,
    sockets: Mutex<HashMap<String, usize>>,
}

/// Held while a socket is connected; dropping it is the socket going.
pub struct Connected {
    node: Arc<Node>,
    user_id: String,
}

impl Node {
    /// A node with a random id, refreshing its marks until `shutdown` (then removing them).
    pub fn start(presence: Presence, settings: Settings, shutdown: CancellationToken) -> Arc<Self> {
        let node = Arc::new(Self {
            presence,
            id: uuid::Uuid::new_v4().simple().to_string(),
            started_at_ms: i64::try_from(unix_ms()).unwrap_or(i64::MAX),
            settings,
            sockets: Mutex::default(),
        });
        tokio::spawn(node.clone().refresh(shutdown));
        node
    }

    /// This node's id, as its report names it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What this node says of itself now.
    pub fn report(&self) -> NodeReport {
        NodeReport {
            id: self.id.clone(),
            sockets: self.lock().values().map(|count| *count as u64).sum(),
            started_at_ms: self.started_at_ms,
        }
    }

    /// Every live node's report, this one's as it is now rather than as last refreshed.
    pub async fn cluster(&self) -> anyhow::Result<Vec<NodeReport>> {
        let mut nodes = self.presence.nodes().await?;
        nodes.retain(|node| node.id != self.id);
        nodes.push(self.report());
        nodes.sort_by(|a, b| (a.started_at_ms, &a.id).cmp(&(b.started_at_ms, &b.id)));
        Ok(nodes)
    }

    /// Counts a socket of `user_id` until the answer is dropped; the first one marks the user.
    pub fn connected(self: &Arc<Self>, user_id: &str) -> Connected {
        let first = {
            let mut sockets = self.lock();
            let count = sockets.entry(user_id.to_owned()).or_default();
            *count += 1;
            *count == 1
        };
        if first {
            let node = self.clone();
            let users = vec![user_id.to_owned()];
            tokio::spawn(async move {
                if let Err(error) = node
                    .presence
                    .mark(&node.id, &users, node.settings.ttl)
                    .await
                {
                    tracing::warn!(error = format!("{error:#}"), "cannot mark a user present");
                }
            });
        }
        Connected {
            node: self.clone(),
            user_id: user_id.to_owned(),
        }
    }

    fn gone(self: &Arc<Self>, user_id: &str) {
        let last = {
            let mut sockets = self.lock();
            match sockets.get_mut(user_id) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    sockets.remove(user_id);
                    true
                }
                None => false,
            }
        };
        if !last {
            return;
        }
        let node = self.clone();
        let user_id = user_id.to_owned();
        let unmark = async move {
            // A socket of the user may have connected again meanwhile.
            if node.lock().contains_key(&user_id) {
                return;
            }
            if let Err(error) = node.presence.unmark(&node.id, &user_id).await {
                tracing::warn!(error = format!("{error:#}"), "cannot mark a user absent");
            }
        };
        // Dropped outside a runtime (process exit): the mark expires by itself.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(unmark);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        lock(&self.sockets)
    }

    async fn refresh(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.settings.refresh);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            if let Err(error) = self
                .presence
                .report(&self.report(), self.settings.ttl)
                .await
            {
                tracing::warn!(error = format!("{error:#}"), "cannot report this node");
            }
            let users: Vec<String> = self.lock().keys().cloned().collect();
            if users.is_empty() {
                continue;
            }
            if let Err(error) = self
                .presence
                .mark(&self.id, &users, self.settings.ttl)
                .await
            {
                tracing::warn!(error = format!("{error:#}"), "cannot refresh presence");
            }
        }
        let users: Vec<String> = self.lock().keys().cloned().collect();
        for user_id in users {
            let _ = self.presence.unmark(&self.id, &user_id).await;
        }
        let _ = self.presence.forget_node(&self.id).await;
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.node.gone(&self.user_id);
    }
}

fn key(user_id: &str) -> String {
    format!("{KEY_PREFIX}{user_id}")
}

fn node_key(node: &str) -> String {
    format!("{NODE_KEY_PREFIX}{node}")
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nodes_report_their_sockets_until_they_stop() {
        let presence = Presence::InProcess(Arc::default());
        let settings = Settings {
            ttl: Duration::from_millis(300),
            refresh: Duration::from_millis(100),
        };
        let (first_shutdown, second_shutdown) =
            (CancellationToken::new(), CancellationToken::new());
        let first = Node::start(presence.clone(), settings, first_shutdown.clone());
        let second = Node::start(presence.clone(), settings, second_shutdown.clone());
        let _a = first.connected("u1");
        let _b = first.connected("u2");
        let _c = second.connected("u1");
        // Seen live by the node itself, and by the others once refreshed.
        let seen = first.cluster().await.unwrap_or_default();
        let sockets = |nodes: &[NodeReport], id: &str| {
            nodes
                .iter()
                .find(|node| node.id == id)
                .map(|node| node.sockets)
        };
        assert_eq!(sockets(&seen, first.id()), Some(2));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let seen = second.cluster().await.unwrap_or_default();
        assert_eq!(seen.len(), 2);
        assert_eq!(sockets(&seen, first.id()), Some(2));
        assert_eq!(sockets(&seen, second.id()), Some(1));

        // A node that stops says so; a node that dies expires.
        second_shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = first.cluster().await.unwrap_or_default();
        assert_eq!(
            seen.iter().map(|node| node.id.as_str()).collect::<Vec<_>>(),
            [first.id()]
        );
        presence
            .report(
                &NodeReport {
                    id: "dead".into(),
                    sockets: 9,
                    started_at_ms: 0,
                },
                settings.ttl,
            )
            .await
            .unwrap_or_default();
        assert_eq!(presence.nodes().await.unwrap_or_default().len(), 2);
        tokio::time::sleep(Duration::from_millis(350)).await;
        let ids: Vec<String> = presence
            .nodes()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|node| node.id)
            .collect();
        assert_eq!(
            ids,
            [first.id().to_owned()],
            "the dead node expired, the live one refreshed"
        );
        first_shutdown.cancel();
    }

    #[tokio::test]
    async fn a_user_is_online_while_a_socket_is_connected_and_expires_with_a_dead_node() {
        let presence = Presence::InProcess(Arc::default());
        let settings = Settings {
            ttl: Duration::from_millis(300),
            refresh: Duration::from_millis(100),
        };
        let shutdown = CancellationToken::new();
        let node = Node::start(presence.clone(), settings, shutdown.clone());
        let first = node.connected("u1");
        let second = node.connected("u1");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(presence.is_online("u1").await.unwrap_or(false));
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            presence.is_online("u1").await.unwrap_or(false),
            "one socket is left"
        );
        // Refreshed past its TTL while connected.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(presence.is_online("u1").await.unwrap_or(false));
        drop(second);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!presence.is_online("u1").await.unwrap_or(true));

        // A node that stops refreshing (it died) loses its users after the TTL.
        let _kept = node.connected("u2");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(presence.is_online("u2").await.unwrap_or(false));
        let dead = Presence::InProcess(Arc::default());
        dead.mark("gone-node", &["u3".to_owned()], settings.ttl)
            .await
            .unwrap_or_default();
        assert!(dead.is_online("u3").await.unwrap_or(false));
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(!dead.is_online("u3").await.unwrap_or(true));
        shutdown.cancel();
    }
}
