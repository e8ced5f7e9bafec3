use crawbl_infra::grpc::Channel;
use crawbl_proto::auth::v1::auth_service_client::AuthServiceClient;
use crawbl_proto::conversation::v1::conversation_service_client::ConversationServiceClient;
use crawbl_proto::runtimeproxy::v1::runtime_proxy_client::RuntimeProxyClient;

use crate::Config;

/// What every handler shares: clients of the services (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    pub auth: AuthServiceClient<Channel>,
    pub conversations: ConversationServiceClient<Channel>,
    pub runtimes: RuntimeProxyClient<Channel>,
}

impl AppState {
    /// Clients connect lazily, so the edge starts even when a service is not up yet.
    pub fn connect(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            auth: AuthServiceClient::new(crawbl_infra::grpc::channel(&config.auth_url)?),
            conversations: ConversationServiceClient::new(crawbl_infra::grpc::channel(
                &config.conversation_url,
            )?),
            runtimes: RuntimeProxyClient::new(crawbl_infra::grpc::channel(
                &config.runtime_proxy_url,
            )?),
        })
    }
}
