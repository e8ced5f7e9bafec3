//! Serving one gRPC service with the standard health and reflection services beside it.

use std::convert::Infallible;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;

/// Serves `service` on `listener` until `shutdown` is cancelled. `grpc.health.v1` reports the
/// service (and the server as a whole, name "") as serving, and not serving once shutdown starts;
/// reflection v1 and v1alpha describe every Crawbl proto so `grpcurl` works without proto files.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
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

    let stop = async move {
        shutdown.cancelled().await;
        health_reporter
            .set_service_status(S::NAME, ServingStatus::NotServing)
            .await;
        health_reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    };
    Server::builder()
        .layer(crate::trace::GrpcServerSpans)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
        .await
        .with_context(|| format!("serving {}", S::NAME))
}

/// A lazily connecting channel to `address` (`http://host:port`): the peer may start later.
pub fn channel(address: &str) -> anyhow::Result<Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(address.to_owned())
        .with_context(|| format!("invalid gRPC address {address:?}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true);
    Ok(tonic::service::interceptor::InterceptedService::new(
        endpoint.connect_lazy(),
        PropagateTrace,
    ))
}

/// A client channel whose calls carry the caller's trace context.
pub type Channel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, PropagateTrace>;

#[derive(Clone, Copy, Debug, Default)]
pub struct PropagateTrace;

impl tonic::service::Interceptor for PropagateTrace {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        crate::trace::inject_into_metadata(request.metadata_mut());
        Ok(request)
    }
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

/// The stable error code a `Status` carries, if any.
pub fn stable_code(status: &tonic::Status) -> Option<&str> {
    status
        .metadata()
        .get(ERROR_CODE_KEY)
        .and_then(|value| value.to_str().ok())
}
