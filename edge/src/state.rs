use crawbl_proto::auth::v1::auth_service_client::AuthServiceClient;
use crawbl_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use crawbl_proto::runtimeproxy::v1::runtime_proxy_client::RuntimeProxyClient;
use std::sync::Arc;

use crawbl_infra::bus::Follows;
use crawbl_infra::grpc::Channel;

use crate::Config;
use crate::access::Access;
use crate::cluster::Sockets;
use crate::realtime::Fanout;

/// What every handler shares: clients of the services (cheap to clone), who may do what
/// ([`Access`]), the sockets of every edge node ([`Sockets`]), and the delivery of events to
/// this node's sockets ([`Fanout`]).
#[derive(Clone)]
pub struct AppState {
    pub auth: AuthServiceClient<Channel>,
    pub conversations: ConversationServiceClient<Channel>,
    pub runtimes: RuntimeProxyClient<Channel>,
    pub access: Arc<Access>,
    pub sockets: Sockets,
    pub realtime: Arc<Fanout>,
}

impl AppState {
    /// Clients connect lazily, so the edge starts even when a service is not up yet. `follows`
    /// picks the workspaces whose bus events this node receives.
    pub fn connect(config: &Config, follows: Follows) -> anyhow::Result<Self> {
        let auth = AuthServiceClient::new(crawbl_infra::grpc::channel(&config.auth_url)?);
        let conversations =
            ConversationServiceClient::new(crawbl_infra::grpc::channel(&config.conversation_url)?);
        let sockets = Sockets::default();
        Ok(Self {
            access: Arc::new(Access::new(auth.clone())),
            realtime: Fanout::new(
                sockets.clone(),
                conversations.clone(),
                follows,
                config.typing_ttl,
            ),
            sockets,
            auth,
            conversations,
            runtimes: RuntimeProxyClient::new(crawbl_infra::grpc::channel(
                &config.runtime_proxy_url,
            )?),
        })
    }
}
