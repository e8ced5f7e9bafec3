use crawbl_proto::auth::v1::auth_service_client::AuthServiceClient;
use crawbl_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use std::sync::Arc;

use crawbl_infra::grpc::{Channel, Shards};
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::shared::access::Access;
use crate::shared::cluster::Sockets;
use crate::shared::health::Readiness;
use crate::shared::limits::{Limiter, Limits};

/// What every handler, REST or socket, shares: clients of the services (cheap to clone), who
/// may do what ([`Access`]), the sockets of every edge node ([`Sockets`]), what `/readyz` asks
/// ([`Readiness`]) and the rate limits ([`Limits`]).
#[derive(Clone)]
pub struct AppState {
    pub auth: AuthServiceClient<Channel>,
    pub conversations: ConversationServiceClient<Channel>,
    /// runtime-proxy instances, each owning its share of the workspaces' runtimes.
    pub runtimes: Shards,
    pub access: Arc<Access>,
    pub sockets: Sockets,
    pub readiness: Arc<Readiness>,
    pub limits: Arc<Limits>,
    /// This node's sockets per user, marked in the cluster's presence (set by `run`).
    pub online: Option<Arc<crawbl_infra::presence::Node>>,
}

impl AppState {
    /// Clients connect lazily, so the edge starts even when a service is not up yet. `shutdown`
    /// makes the node report itself not ready while it drains.
    pub fn connect(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let auth = AuthServiceClient::new(crawbl_infra::grpc::channel(&config.auth_url)?);
        let conversations =
            ConversationServiceClient::new(crawbl_infra::grpc::channel(&config.conversation_url)?);
        let sockets = Sockets::default();
        Ok(Self {
            access: Arc::new(Access::new(auth.clone())),
            sockets,
            readiness: Arc::new(Readiness::new(config, shutdown)?),
            limits: Arc::new(Limits {
                sends: Limiter::new(config.send_limit),
                failed_handshakes: Limiter::new(config.failed_handshake_limit),
                trusted_proxies: config.trusted_proxies.clone(),
            }),
            auth,
            conversations,
            runtimes: Shards::new(&config.runtime_proxy_url)?,
            online: None,
        })
    }
}
