//! The public keys access tokens are signed with, fetched from the auth service so the edge
//! verifies tokens locally: at start (retrying until auth answers), every minute, and at once when
//! a token names a key id this node does not know (auth rotated), at most once a second.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crawbl_infra::grpc::Channel;
use crawbl_infra::jws::PublicKey;
use crawbl_proto::auth::v1::GetSigningKeysRequest;
use crawbl_proto::auth::v1::auth_service_client::AuthServiceClient;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the keys are fetched again without being asked to.
const REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// An unknown key id fetches the keys at most this often, so tokens with made-up key ids cannot
/// turn into a flood of calls to auth.
const ON_DEMAND_INTERVAL: Duration = Duration::from_secs(1);

type Keys = Arc<HashMap<String, PublicKey>>;

pub struct KeyStore {
    auth: AuthServiceClient<Channel>,
    keys: RwLock<Keys>,
    /// Held while fetching; remembers when the last fetch on demand happened.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl KeyStore {
    pub fn new(auth: AuthServiceClient<Channel>) -> Self {
        Self {
            auth,
            keys: RwLock::new(Arc::default()),
            fetching: tokio::sync::Mutex::new(None),
        }
    }

    /// The key with id `kid`, fetching the keys once more if it is unknown.
    pub async fn get(&self, kid: &str) -> Option<PublicKey> {
        if let Some(key) = self.known(kid) {
            return Some(key);
        }
        let mut last_on_demand = self.fetching.lock().await;
        // Someone else may have fetched while this call waited.
        if let Some(key) = self.known(kid) {
            return Some(key);
        }
        if last_on_demand.is_some_and(|last| last.elapsed() < ON_DEMAND_INTERVAL) {
            return None;
        }
        *last_on_demand = Some(Instant::now());
        if let Err(error) = self.fetch().await {
            tracing::warn!(error = format!("{error:#}"), "cannot fetch signing keys");
        }
        self.known(kid)
    }

    /// Whether any key is known (the edge cannot verify tokens before the first fetch).
    pub fn is_ready(&self) -> bool {
        !self.snapshot().is_empty()
    }

    /// Whether `kid` is among the keys auth publishes now (without fetching).
    pub fn knows(&self, kid: &str) -> bool {
        self.snapshot().contains_key(kid)
    }

    fn known(&self, kid: &str) -> Option<PublicKey> {
        self.snapshot().get(kid).cloned()
    }

    fn snapshot(&self) -> Keys {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Fetches the published keys and replaces the known ones.
    async fn fetch(&self) -> anyhow::Result<()> {
        let response = self
            .auth
            .clone()
            .get_signing_keys(GetSigningKeysRequest {})
            .await?
            .into_inner();
        let mut keys = HashMap::new();
        for key in response.keys {
            if key.algorithm != "EdDSA" {
                tracing::warn!(kid = %key.kid, algorithm = %key.algorithm, "ignoring a signing key of an unknown algorithm");
                continue;
            }
            match PublicKey::from_bytes(key.kid.clone(), &key.public_key) {
                Ok(public) => {
                    keys.insert(key.kid, public);
                }
                Err(error) => {
                    tracing::warn!(kid = %key.kid, %error, "ignoring an invalid signing key")
                }
            }
        }
        anyhow::ensure!(!keys.is_empty(), "auth published no usable signing key");
        self.replace(keys);
        Ok(())
    }

    /// Makes `keys` the known ones.
    fn replace(&self, keys: HashMap<String, PublicKey>) {
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut slot) => *slot = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    /// Makes these the known keys, as if auth had published them.
    #[cfg(test)]
    pub fn publish_for_test(&self, keys: &[&crawbl_infra::jws::SigningKey]) {
        self.replace(
            keys.iter()
                .map(|key| (key.kid().to_owned(), key.public_key()))
                .collect(),
        );
    }

    /// Fetches the keys until it works, then every minute, until `shutdown`.
    pub async fn maintain(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let wait = match self.fetch().await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    REFRESH_INTERVAL
                }
                Err(error) => {
                    let log = if self.is_ready() {
                        "cannot refresh signing keys; keeping the known ones"
                    } else {
                        "cannot fetch signing keys yet; retrying"
                    };
                    tracing::warn!(error = format!("{error:#}"), "{log}");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
