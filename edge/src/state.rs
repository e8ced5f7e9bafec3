use crawbl_proto::auth::v1::auth_service_client::AuthServiceClient;
use crawbl_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use crawbl_proto::runtimeproxy::v1::runtime_proxy_client::RuntimeProxyClient;
use std::sync::Arc;

use crawbl_infra::grpc::Channel;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::access::Access;
use crate::cluster::Sockets;
use crate::health::Readiness;

/// What every handler shares: clients of the services (cheap to clone), who may do what
/// ([`Access`]), the sockets of every edge node ([`Sockets`]) and what `/readyz` asks.
#[derive(Clone)]
pub struct AppState {
    pub auth: AuthServiceClient<Channel>,
    pub conversations: ConversationServiceClient<Channel>,
    pub runtimes: RuntimeProxyClient<Channel>,
    pub access: Arc<Access>,
    pub sockets: Sockets,
    pub readiness: Arc<Readiness>,
}

impl AppState {
    /// Clients connect lazily, so the edge starts even when a service is not up yet.
    /// `shutdown` makes the node report itself not ready while it drains.
    pub fn connect(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let auth = AuthServiceClient::new(crawbl_infra::grpc::channel(&config.auth_url)?);
        Ok(Self {
            access: Arc::new(Access::new(auth.clone())),
            sockets: Sockets::default(),
            readiness: Arc::new(Readiness::new(config, shutdown)?),
            auth,
            conversations: ConversationServiceClient::new(crawbl_infra::grpc::channel(
                &config.conversation_url,
            )?),
            runtimes: RuntimeProxyClient::new(crawbl_infra::grpc::channel(
                &config.runtime_proxy_url,
            )?),
        })
    }
}
