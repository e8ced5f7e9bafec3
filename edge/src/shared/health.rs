//! Readiness: whether this edge node can serve, asked by load balancers and orchestrators on
//! `GET /readyz`. The node is ready when every service it calls answers its gRPC health check
//! with SERVING and Redis (when configured) answers a ping; it is not ready once it is shutting
//! down, so a load balancer stops sending it new clients while it drains.

use std::collections::BTreeMap;
use std::time::Duration;

use crawbl_infra::grpc::channel_without_credential;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use utoipa::ToSchema;

use crate::Config;

/// How long one dependency may take to answer before it counts as unreachable: a probe must
/// answer well within a load balancer's own timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What this node depends on, and the token that says it is shutting down.
pub struct Readiness {
    services: Vec<(&'static str, HealthClient<tonic::transport::Channel>)>,
    redis: Option<redis::Client>,
    shutdown: CancellationToken,
}

/// The answer of `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessReport {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// Each dependency's state: `serving`, `not_serving` or `unreachable` for the gRPC services
    /// (`auth`, `conversation`, `runtimeProxy`), `ok` or `unreachable` for `redis` (only when
    /// configured).
    pub dependencies: BTreeMap<&'static str, &'static str>,
    /// Present while the node drains after SIGTERM.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shutting_down: bool,
}

impl ReadinessReport {
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

impl Readiness {
    /// Health clients connect lazily, so the edge starts before the services do.
    pub fn new(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let client = |url: &str| channel_without_credential(url).map(HealthClient::new);
        let redis = config
            .redis_url
            .as_deref()
            .map(redis::Client::open)
            .transpose()?;
        let mut services = vec![
            ("auth", client(&config.auth_url)?),
            ("conversation", client(&config.conversation_url)?),
        ];
        // Every runtime-proxy instance: each owns a share of the workspaces.
        for url in crawbl_infra::grpc::Shards::addresses(&config.runtime_proxy_url) {
            services.push(("runtimeProxy", client(url)?));
        }
        Ok(Self {
            services,
            redis,
            shutdown,
        })
    }

    /// Asks every dependency at once.
    pub async fn check(&self) -> ReadinessReport {
        let services = futures::future::join_all(
            self.services
                .iter()
                .map(|(name, client)| async move { (*name, service_state(client.clone()).await) }),
        );
        let (services, redis) = tokio::join!(services, self.redis_state());
        // A dependency of several instances reads as its first instance that is not serving.
        let mut dependencies: BTreeMap<&'static str, &'static str> = BTreeMap::new();
        for (name, state) in services {
            let known = dependencies.entry(name).or_insert(state);
            if *known == "serving" {
                *known = state;
            }
        }
        if let Some(redis) = redis {
            dependencies.insert("redis", redis);
        }
        let shutting_down = self.shutdown.is_cancelled();
        let healthy = dependencies
            .values()
            .all(|state| *state == "serving" || *state == "ok");
        ReadinessReport {
            status: if healthy && !shutting_down {
                "ready"
            } else {
                "not_ready"
            },
            dependencies,
            shutting_down,
        }
    }

    async fn redis_state(&self) -> Option<&'static str> {
        let client = self.redis.as_ref()?;
        let ping = async {
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        };
        Some(match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
            Ok(Ok(_)) => "ok",
            _ => "unreachable",
        })
    }
}

async fn service_state(mut client: HealthClient<tonic::transport::Channel>) -> &'static str {
    let check = client.check(HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(response)) if response.get_ref().status() == ServingStatus::Serving => "serving",
        Ok(Ok(_)) => "not_serving",
        _ => "unreachable",
    }
}
