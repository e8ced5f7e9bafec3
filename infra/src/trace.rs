//! W3C trace context across process boundaries: gRPC metadata and HTTP headers (through the
//! global propagator) and the event envelope's `trace_context` map. With tracing off, all of
//! this is cheap no-ops: the propagated context is empty.

use std::collections::HashMap;
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The context of the current span as `traceparent`/`tracestate` entries.
pub fn current_context() -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut carrier);
    });
    carrier
}

/// Makes the trace context in `carrier` (an event envelope's map) the parent of `span`.
pub fn continue_from_map(span: &tracing::Span, carrier: &HashMap<String, String>) {
    let context =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(carrier));
    let _ = span.set_parent(context);
}

/// Makes the trace context of incoming `headers` the parent of `span`, and records the trace
/// id on its `trace_id` field so every log line inside carries it.
pub fn continue_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let context = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
    record_trace_id(span);
}

/// Writes the span's trace id into its `trace_id` field (declared `Empty` by the caller).
pub fn record_trace_id(span: &tracing::Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
    }
}

/// Adds the current span's trace context to outgoing gRPC metadata.
pub fn inject_into_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(metadata));
    });
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Tower layer for gRPC servers: each call runs in a `grpc.server` span that continues the
/// caller's trace.
#[derive(Clone, Copy, Default)]
pub struct GrpcServerSpans;

impl<S> tower::Layer<S> for GrpcServerSpans {
    type Service = GrpcServerSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerSpan { inner }
    }
}

#[derive(Clone)]
pub struct GrpcServerSpan<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for GrpcServerSpan<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        // Health checks and reflection are noise in traces.
        let quiet = path.starts_with("/grpc.health") || path.starts_with("/grpc.reflection");
        let span = if quiet {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "grpc.server",
                otel.name = %path.trim_start_matches('/'),
                otel.kind = "server",
                rpc.system = "grpc",
                trace_id = tracing::field::Empty,
            )
        };
        if !quiet {
            continue_from_headers(&span, request.headers());
        }
        // The ready service is the one to call; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(request).instrument(span))
    }
}
