//! Serving one gRPC service with the standard health and reflection services beside it, and
//! the service credential that internal calls carry.
//!
//! Internal APIs (auth, conversation, runtime-proxy) refuse calls without the shared secret
//! `CRAWBL_SERVICE_TOKEN`, sent as `authorization: Bearer <token>` (or `x-service-token`);
//! health and reflection stay open so probes and `grpcurl list` work without it. Clients made by
//! [`channel`] add it to every call. Agent runtimes are outside that trust boundary: they are
//! served with [`serve_without_credential`] and called through [`channel_without_credential`],
//! so the secret never reaches code an agent runs.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::server::NamedService;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;

/// The variable holding the shared service credential.
pub const SERVICE_TOKEN_VAR: &str = "CRAWBL_SERVICE_TOKEN";
/// Metadata key accepted beside `authorization: Bearer …` for the service credential.
pub const SERVICE_TOKEN_KEY: &str = "x-service-token";

/// The process's service credential: set once, by [`install_service_token`] or from
/// `CRAWBL_SERVICE_TOKEN` on first use.
static SERVICE_TOKEN: OnceLock<ServiceToken> = OnceLock::new();

/// The shared secret internal gRPC calls carry. Its `Debug` never shows it.
#[derive(Clone)]
pub struct ServiceToken(AsciiMetadataValue);

impl ServiceToken {
    /// A token from its text; fails unless it is visible ASCII of at least 16 characters.
    pub fn new(token: &str) -> anyhow::Result<Self> {
        let token = token.trim();
        anyhow::ensure!(
            token.len() >= 16 && token.bytes().all(|byte| byte.is_ascii_graphic()),
            "{SERVICE_TOKEN_VAR} must be at least 16 visible ASCII characters"
        );
        let mut value = AsciiMetadataValue::try_from(format!("Bearer {token}"))
            .context("the service token is not a valid header value")?;
        value.set_sensitive(true);
        Ok(Self(value))
    }

    /// A fresh random token (32 random bytes, hex).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes[..]);
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        match Self::new(&hex) {
            Ok(token) => token,
            // 64 hex digits are always a valid token.
            Err(_) => unreachable!("a hex token is valid"),
        }
    }

    /// The secret itself, e.g. to pass it to a child process or print a grpcurl example.
    pub fn expose(&self) -> &str {
        let header = self.0.to_str().unwrap_or_default();
        header.strip_prefix("Bearer ").unwrap_or(header)
    }

    /// Whether `metadata` carries this token (`authorization: Bearer …` or `x-service-token`).
    /// Compares in constant time, so the answer's timing does not reveal the secret.
    pub fn is_carried_by(&self, metadata: &MetadataMap) -> bool {
        self.is_carried_by_headers(metadata.as_ref())
    }

    fn is_carried_by_headers(&self, headers: &http::HeaderMap) -> bool {
        let expected = self.expose().as_bytes();
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        let direct = headers
            .get(SERVICE_TOKEN_KEY)
            .and_then(|value| value.to_str().ok())
            .map(str::trim);
        [bearer, direct]
            .into_iter()
            .flatten()
            .any(|candidate| constant_time_eq(candidate.as_bytes(), expected))
    }
}

impl std::fmt::Debug for ServiceToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ServiceToken(***)")
    }
}

fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

/// Makes `token` this process's service credential. Call it before any server or client is made
/// (the launcher does, with a random token, when `CRAWBL_SERVICE_TOKEN` is unset); fails when the
/// credential is already fixed.
pub fn install_service_token(token: ServiceToken) -> anyhow::Result<()> {
    SERVICE_TOKEN
        .set(token)
        .map_err(|_| anyhow::anyhow!("the service token is already set"))
}

/// This process's service credential: the installed one, else `CRAWBL_SERVICE_TOKEN`, else a
/// random one (said once in the log: no other process can then call this one's internal APIs,
/// nor can it call theirs).
pub fn service_token() -> &'static ServiceToken {
    SERVICE_TOKEN.get_or_init(|| {
        match crate::config::optional(SERVICE_TOKEN_VAR).map(|raw| ServiceToken::new(&raw)) {
            Some(Ok(token)) => token,
            Some(Err(error)) => {
                // Configuration is validated at start by `service_token_from_env`; a component
                // that skipped it still must not run with a weak secret.
                tracing::error!(%error, "ignoring an invalid {SERVICE_TOKEN_VAR}; using a random one");
                ServiceToken::generate()
            }
            None => {
                tracing::warn!(
                    "{SERVICE_TOKEN_VAR} is not set: using a random service credential, so only \
                     this process can call its internal gRPC APIs (set the same value in every \
                     component to run them as separate processes)"
                );
                ServiceToken::generate()
            }
        }
    })
}

/// Validates `CRAWBL_SERVICE_TOKEN` when it is set, so a bad value fails at start.
pub fn check_service_token_env() -> anyhow::Result<()> {
    match crate::config::optional(SERVICE_TOKEN_VAR) {
        Some(raw) => ServiceToken::new(&raw).map(|_| ()),
        None => Ok(()),
    }
}

/// Server side: refuses calls that do not carry the service credential.
#[derive(Clone, Debug)]
pub struct RequireServiceToken(ServiceToken);

impl Interceptor for RequireServiceToken {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if self.0.is_carried_by(request.metadata()) {
            Ok(request)
        } else {
            Err(credential_required())
        }
    }
}

/// What a call without the service credential gets.
fn credential_required() -> tonic::Status {
    status_with_code(
        tonic::Code::Unauthenticated,
        "SERVICE_CREDENTIAL_REQUIRED",
        "internal API: send the service credential as `authorization: Bearer <CRAWBL_SERVICE_TOKEN>`",
    )
}

/// Client side: adds the service credential and the caller's trace context to every call.
#[derive(Clone, Debug)]
pub struct WithServiceToken(ServiceToken);

impl Interceptor for WithServiceToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert(http::header::AUTHORIZATION.as_str(), (self.0).0.clone());
        crate::trace::inject_into_metadata(request.metadata_mut());
        Ok(request)
    }
}

/// A channel to an internal service whose calls carry the service credential.
pub type Channel = InterceptedService<tonic::transport::Channel, WithServiceToken>;

/// A tonic service the functions below can host (what `Server::add_service` asks of one).
pub trait GrpcService:
    tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> GrpcService for S where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Serves `service` on `listener` until `shutdown` is cancelled, refusing calls without the
/// process's service credential ([`service_token`]) with `UNAUTHENTICATED`. `grpc.health.v1`
/// reports the service (and the server as a whole, name "") as serving, and not serving once
/// shutdown starts; reflection v1 and v1alpha describe every Crawbl proto so `grpcurl` works
/// without proto files. Health and reflection need no credential.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: GrpcService,
    S::Future: Send + 'static,
{
    serve_with_token(listener, service, service_token().clone(), shutdown).await
}

/// [`serve`] with an explicit credential instead of the process's.
pub async fn serve_with_token<S>(
    listener: TcpListener,
    service: S,
    token: ServiceToken,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: GrpcService,
    S::Future: Send + 'static,
{
    let guarded = Guarded {
        inner: service,
        token: RequireServiceToken(token),
    };
    serve_without_credential(listener, guarded, shutdown).await
}

/// `S` behind [`RequireServiceToken`]: calls without the credential are answered
/// `UNAUTHENTICATED` without reaching `S`. (tonic's `InterceptedService` changes the response
/// body type, which `Server::add_service` does not accept.)
#[derive(Clone)]
struct Guarded<S> {
    inner: S,
    token: RequireServiceToken,
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Guarded<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future =
        futures::future::Either<S::Future, std::future::Ready<Result<Self::Response, Infallible>>>;

    fn poll_ready(
        &mut self,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if self.token.0.is_carried_by_headers(request.headers()) {
            futures::future::Either::Left(self.inner.call(request))
        } else {
            let refused = credential_required().into_http();
            futures::future::Either::Right(std::future::ready(Ok(refused)))
        }
    }
}

/// Serves like [`serve`] but lets any caller in: for agent runtimes, which must never hold the
/// service credential (they run agent code), and are reachable only by runtime-proxy.
pub async fn serve_without_credential<S>(
    listener: TcpListener,
    service: S,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: GrpcService,
    S::Future: Send + 'static,
{
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status(S::NAME, ServingStatus::Serving)
        .await;
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crawbl_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crawbl_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("building the reflection service")?;

    let address = listener.local_addr().ok();
    tracing::info!(service = S::NAME, ?address, "grpc server listening");

    let stop = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            health_reporter
                .set_service_status(S::NAME, ServingStatus::NotServing)
                .await;
            health_reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
        }
    };
    let server = Server::builder()
        .layer(crate::trace::GrpcServerSpans)
        .layer(crate::metrics::GrpcServerMetrics)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop);
    match crate::shutdown::drain_within(server, &shutdown, crate::shutdown::DRAIN_BOUND).await {
        Some(served) => served.with_context(|| format!("serving {}", S::NAME)),
        None => {
            tracing::warn!(
                service = S::NAME,
                bound_ms = crate::shutdown::DRAIN_BOUND.as_millis(),
                "grpc calls still in flight at the end of the drain were cut off"
            );
            Ok(())
        }
    }
}

/// A lazily connecting channel to the internal service at `address` (`http://host:port`) whose
/// calls carry the process's service credential; the peer may start later.
pub fn channel(address: &str) -> anyhow::Result<Channel> {
    channel_with_token(address, service_token().clone())
}

/// [`channel`] with an explicit credential instead of the process's.
pub fn channel_with_token(address: &str, token: ServiceToken) -> anyhow::Result<Channel> {
    Ok(InterceptedService::new(
        channel_without_credential(address)?,
        WithServiceToken(token),
    ))
}

/// A lazily connecting channel that carries no credential: for agent runtimes, which must never
/// see the service credential, and for health checks.
pub fn channel_without_credential(address: &str) -> anyhow::Result<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(address.to_owned())
        .with_context(|| format!("invalid gRPC address {address:?}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

/// Channels to every instance of a service that owns part of a keyspace: each key always goes to
/// the same instance, chosen by rendezvous (highest random weight) hashing of the key with each
/// instance's address. Every caller given the same addresses, in any order, picks the same
/// instance, with no coordination: this is how every conversation instance and edge agree which
/// runtime-proxy owns a workspace's runtime. Adding or removing an instance moves only the keys
/// that go to (or went to) it.
#[derive(Clone)]
pub struct Shards {
    instances: Arc<[Shard]>,
}

struct Shard {
    address: String,
    hash: u64,
    channel: Channel,
}

impl Shards {
    /// `addresses`: comma-separated `http://host:port`, at least one; duplicates are ignored.
    pub fn new(addresses: &str) -> anyhow::Result<Self> {
        let mut instances = Vec::new();
        for address in Self::addresses(addresses) {
            instances.push(Shard {
                hash: stable_hash(address.as_bytes()),
                channel: channel(address)?,
                address: address.to_owned(),
            });
        }
        anyhow::ensure!(
            !instances.is_empty(),
            "no address in {addresses:?}: expected http://host:port[,http://host:port…]"
        );
        Ok(Self {
            instances: instances.into(),
        })
    }

    /// The distinct addresses of a comma-separated list, in order.
    pub fn addresses(list: &str) -> Vec<&str> {
        let mut seen = std::collections::BTreeSet::new();
        list.split(',')
            .map(str::trim)
            .filter(|address| !address.is_empty() && seen.insert(*address))
            .collect()
    }

    /// The channel to the instance that owns `key`.
    pub fn pick(&self, key: &str) -> Channel {
        self.owner(key).channel.clone()
    }

    /// The address of the instance that owns `key`.
    pub fn address_of(&self, key: &str) -> &str {
        &self.owner(key).address
    }

    fn owner(&self, key: &str) -> &Shard {
        let key = stable_hash(key.as_bytes());
        self.instances
            .iter()
            .max_by_key(|shard| mix(shard.hash ^ key))
            .unwrap_or_else(|| unreachable!("Shards::new refuses an empty list"))
    }

    /// How many instances share the keyspace.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }
}

/// FNV-1a: stable across processes, versions and platforms (std's hasher is not).
fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64's finalizer, so weights of similar addresses and keys are unrelated.
fn mix(mut value: u64) -> u64 {
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// gRPC metadata key carrying the stable, machine-readable error code (e.g. `EMAIL_TAKEN`) that
/// the edge turns into the `error.code` of its JSON error body.
pub const ERROR_CODE_KEY: &str = "crawbl-error-code";

/// A `Status` carrying a stable error code beside its human-readable message.
pub fn status_with_code(
    code: tonic::Code,
    stable_code: &'static str,
    message: impl Into<String>,
) -> tonic::Status {
    let mut status = tonic::Status::new(code, message);
    status.metadata_mut().insert(
        ERROR_CODE_KEY,
        tonic::metadata::MetadataValue::from_static(stable_code),
    );
    status
}

/// gRPC metadata key carrying how many seconds a client should wait before retrying (a rate limit
/// or an outage); the edge turns it into the `Retry-After` header.
pub const RETRY_AFTER_KEY: &str = "crawbl-retry-after";

/// `status` telling the client to retry after `seconds`.
pub fn with_retry_after(mut status: tonic::Status, seconds: u64) -> tonic::Status {
    status
        .metadata_mut()
        .insert(RETRY_AFTER_KEY, AsciiMetadataValue::from(seconds));
    status
}

/// The seconds to wait before retrying that a `Status` carries, if any.
pub fn retry_after(status: &tonic::Status) -> Option<u64> {
    status
        .metadata()
        .get(RETRY_AFTER_KEY)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

/// The stable error code a `Status` carries, if any.
pub fn stable_code(status: &tonic::Status) -> Option<&str> {
    status
        .metadata()
        .get(ERROR_CODE_KEY)
        .and_then(|value| value.to_str().ok())
}

#[cfg(test)]
mod tests {

    #[tokio::test]
    async fn every_caller_picks_the_same_instance_for_a_key_in_any_order() {
        let forward = ["http://a:1", "http://b:2", "http://c:3"];
        let one = Shards::new(&forward.join(",")).expect("shards");
        let other = Shards::new(" http://c:3,http://a:1 , http://b:2,http://a:1").expect("shards");
        assert_eq!(one.len(), 3);
        assert_eq!(other.len(), 3, "duplicates are ignored");
        let mut per_instance = [0usize; 3];
        for n in 0..3000 {
            let key = format!("workspace-{n}");
            let owner = one.address_of(&key);
            assert_eq!(owner, other.address_of(&key), "{key}");
            let index = forward.iter().position(|a| *a == owner).expect("known");
            per_instance[index] += 1;
        }
        // Spread over every instance, roughly evenly.
        assert!(
            per_instance.iter().all(|count| *count > 800),
            "{per_instance:?}"
        );
        assert!(Shards::new(" , ").is_err());
    }

    #[test]
    fn the_hash_is_stable_across_builds() {
        // Changing it would move every workspace to another runtime-proxy at upgrade.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[tokio::test]
    async fn removing_an_instance_moves_only_its_keys() {
        let three = ["http://a:1", "http://b:2", "http://c:3"];
        let two = ["http://a:1", "http://b:2"];
        let with_three = Shards::new(&three.join(",")).expect("shards");
        let with_two = Shards::new(&two.join(",")).expect("shards");
        for n in 0..500 {
            let key = format!("w{n}");
            let before = with_three.address_of(&key);
            if before != "http://c:3" {
                assert_eq!(with_two.address_of(&key), before, "{key} moved");
            }
        }
    }
    use super::*;

    fn metadata(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for (key, value) in pairs {
            map.insert(*key, value.parse().expect("ascii"));
        }
        map
    }

    fn token() -> ServiceToken {
        ServiceToken::new("0123456789abcdef-secret").expect("valid token")
    }

    #[test]
    fn the_token_is_accepted_as_a_bearer_or_in_x_service_token() {
        let token = token();
        for map in [
            metadata(&[("authorization", "Bearer 0123456789abcdef-secret")]),
            metadata(&[("authorization", "bearer  0123456789abcdef-secret ")]),
            metadata(&[("x-service-token", "0123456789abcdef-secret")]),
        ] {
            assert!(token.is_carried_by(&map), "{map:?}");
        }
    }

    #[test]
    fn missing_wrong_or_truncated_tokens_are_refused() {
        let token = token();
        for map in [
            MetadataMap::new(),
            metadata(&[("authorization", "Bearer 0123456789abcdef-secreT")]),
            metadata(&[("authorization", "Bearer 0123456789abcdef-secre")]),
            metadata(&[("authorization", "Basic 0123456789abcdef-secret")]),
            metadata(&[("x-service-token", "")]),
        ] {
            assert!(!token.is_carried_by(&map), "{map:?}");
        }
        let refused = RequireServiceToken(token).call(tonic::Request::new(()));
        match refused {
            Ok(_) => panic!("a call without the credential was let in"),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unauthenticated);
                assert_eq!(stable_code(&status), Some("SERVICE_CREDENTIAL_REQUIRED"));
            }
        }
    }

    #[test]
    fn what_the_client_adds_is_what_the_server_accepts() {
        let token = ServiceToken::generate();
        let request = WithServiceToken(token.clone())
            .call(tonic::Request::new(()))
            .expect("the client interceptor never fails");
        assert!(RequireServiceToken(token).call(request).is_ok());
    }

    #[test]
    fn short_or_non_ascii_tokens_are_rejected_and_debug_hides_the_secret() {
        assert!(ServiceToken::new("short").is_err());
        assert!(ServiceToken::new("ééééééééééééééééé").is_err());
        assert!(ServiceToken::new("has a space in it!!").is_err());
        let token = token();
        assert_eq!(format!("{token:?}"), "ServiceToken(***)");
        assert_eq!(token.expose(), "0123456789abcdef-secret");
    }

    /// A runtime that answers every turn with one event, for serving tests.
    struct OneEventRuntime;

    #[tonic::async_trait]
    impl crawbl_proto::runtime::v1::agent_runtime_server::AgentRuntime for OneEventRuntime {
        type TurnStream = futures::stream::BoxStream<
            'static,
            Result<crawbl_proto::runtime::v1::TurnEvent, tonic::Status>,
        >;

        async fn turn(
            &self,
            _request: tonic::Request<crawbl_proto::runtime::v1::TurnRequest>,
        ) -> Result<tonic::Response<Self::TurnStream>, tonic::Status> {
            use futures::StreamExt as _;
            let event = crawbl_proto::runtime::v1::TurnEvent::default();
            Ok(tonic::Response::new(
                futures::stream::once(async { Ok(event) }).boxed(),
            ))
        }
    }

    fn handled(service: &str, method: &str, code: &str) -> u64 {
        let wanted = format!(
            "crawbl_grpc_server_handled_total{{grpc_service=\"{service}\",grpc_method=\"{method}\",grpc_code=\"{code}\"}} "
        );
        crate::metrics::registry()
            .render()
            .lines()
            .find_map(|line| line.strip_prefix(&wanted))
            .map_or(0, |value| value.parse().expect("a count"))
    }

    #[tokio::test]
    async fn health_turns_not_serving_at_shutdown_and_calls_are_counted_by_code() {
        use crawbl_proto::runtime::v1::TurnRequest;
        use crawbl_proto::runtime::v1::agent_runtime_client::AgentRuntimeClient;
        use crawbl_proto::runtime::v1::agent_runtime_server::AgentRuntimeServer;
        use futures::StreamExt as _;
        use tonic_health::pb::health_check_response::ServingStatus as Status;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("address"));
        let token = ServiceToken::generate();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_with_token(
            listener,
            AgentRuntimeServer::new(OneEventRuntime),
            token.clone(),
            shutdown.clone(),
        ));

        let service = "crawbl.runtime.v1.AgentRuntime";
        let (ok_before, refused_before) = (
            handled(service, "Turn", "OK"),
            handled(service, "Turn", "UNAUTHENTICATED"),
        );
        let mut runtime =
            AgentRuntimeClient::new(channel_with_token(&address, token).expect("channel"));
        let mut events = runtime
            .turn(TurnRequest::default())
            .await
            .expect("turn")
            .into_inner();
        while events.message().await.expect("stream").is_some() {}
        let mut stranger =
            AgentRuntimeClient::new(channel_without_credential(&address).expect("channel"));
        let refused = stranger.turn(TurnRequest::default()).await;
        assert_eq!(
            refused.err().map(|status| status.code()),
            Some(tonic::Code::Unauthenticated)
        );
        assert_eq!(handled(service, "Turn", "OK"), ok_before + 1);
        assert_eq!(
            handled(service, "Turn", "UNAUTHENTICATED"),
            refused_before + 1
        );

        // A watcher connected before shutdown hears the flip on its open stream.
        let mut health = HealthClient::new(channel_without_credential(&address).expect("channel"));
        let mut watch = health
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("watch")
            .into_inner();
        let first = watch.next().await.expect("an update").expect("ok");
        assert_eq!(first.status(), Status::Serving);
        shutdown.cancel();
        let flipped = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
            .await
            .expect("the flip within 5 s")
            .expect("an update")
            .expect("ok");
        assert_eq!(flipped.status(), Status::NotServing);
        // The open watch is a call in flight: the server ends once it is gone.
        drop(watch);
        let served = tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .expect("the server stops once its calls are done")
            .expect("no panic");
        assert!(served.is_ok(), "{served:?}");
    }

    #[test]
    fn retry_after_round_trips_through_metadata() {
        let status = with_retry_after(tonic::Status::resource_exhausted("slow down"), 42);
        assert_eq!(retry_after(&status), Some(42));
        assert_eq!(retry_after(&tonic::Status::internal("x")), None);
    }
}
