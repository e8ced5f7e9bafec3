//! Server-side gRPC metrics: a tower layer next to [`crate::trace::GrpcServerSpans`] that counts
//! every call by service, method and status code and times it.
//!
//! The code of a gRPC call is known only at its end: in the response headers for a call refused
//! at once ("trailers-only"), otherwise in the trailers after the last message. So the response
//! body is wrapped and the call is recorded when the trailers go out; a call whose body is
//! dropped first (the client went away) is recorded as `CANCELLED`. A streaming call's latency is
//! therefore the whole stream's.

use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};

use super::registry::{CounterVec, HistogramVec, LATENCY_BUCKETS};

static HANDLED: LazyLock<CounterVec> = LazyLock::new(|| {
    super::registry().counter_vec(
        "crawbl_grpc_server_handled_total",
        "gRPC calls served, by service, method and status code.",
        &["grpc_service", "grpc_method", "grpc_code"],
    )
});

static HANDLING_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    super::registry().histogram_vec(
        "crawbl_grpc_server_handling_seconds",
        "Time from a gRPC call's arrival to its status (the whole stream for streaming calls).",
        &["grpc_service", "grpc_method", "grpc_code"],
        LATENCY_BUCKETS,
    )
});

/// Registers the families (they appear at the first call otherwise).
pub(super) fn register() {
    LazyLock::force(&HANDLED);
    LazyLock::force(&HANDLING_SECONDS);
}

/// Tower layer for gRPC servers recording `crawbl_grpc_server_handled_total` and
/// `crawbl_grpc_server_handling_seconds`.
#[derive(Clone, Copy, Default)]
pub struct GrpcServerMetrics;

impl<S> tower::Layer<S> for GrpcServerMetrics {
    type Service = GrpcServerMetric<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerMetric { inner }
    }
}

#[derive(Clone)]
pub struct GrpcServerMetric<S> {
    inner: S,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for GrpcServerMetric<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = Call::start(request.uri().path());
        // The ready service is the one to call; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            let (parts, body) = response.into_parts();
            let pending = match grpc_status(&parts.headers) {
                Some(code) => {
                    call.finish(code);
                    None
                }
                None => Some(call),
            };
            Ok(http::Response::from_parts(
                parts,
                MeteredBody {
                    inner: body,
                    pending,
                },
            ))
        })
    }
}

/// A call being served: what it is and when it arrived.
struct Call {
    service: String,
    method: String,
    started: Instant,
}

impl Call {
    fn start(path: &str) -> Self {
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("", ""));
        Self {
            service: service.to_owned(),
            method: method.to_owned(),
            started: Instant::now(),
        }
    }

    fn finish(self, code: tonic::Code) {
        // A path no service knows is named by the caller: keep it out of the labels.
        let (service, method) = if code == tonic::Code::Unimplemented {
            ("_unknown", "_unknown")
        } else {
            (self.service.as_str(), self.method.as_str())
        };
        let code = code_name(code);
        let labels = [service, method, code];
        HANDLED.with(&labels).inc();
        HANDLING_SECONDS
            .with(&labels)
            .observe_duration(self.started.elapsed());
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?;
    let code = value.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(code))
}

/// The code's canonical name, as grpcurl and other tools print it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A response body that records its call when the trailers (with the status) go out.
pub struct MeteredBody<B> {
    inner: B,
    /// Still to be recorded.
    pending: Option<Call>,
}

impl<B> MeteredBody<B> {
    fn finish(&mut self, code: tonic::Code) {
        if let Some(call) = self.pending.take() {
            call.finish(code);
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(tonic::Code::Internal),
            // Ended without a status: not a well-formed gRPC response.
            Poll::Ready(None) => self.finish(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        // The connection went away (or the server gave up on it) before the status was sent.
        self.finish(tonic::Code::Cancelled);
    }
}
