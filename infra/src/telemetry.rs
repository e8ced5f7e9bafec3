//! Logs and traces.
//!
//! Logs: JSON lines when `LOG_FORMAT=json`, human-readable otherwise, filtered by `RUST_LOG`
//! (default `info`), on stderr so a process's stdout stays free for what it reports to its
//! parent (runtime-stub prints its address there). Lines inside a request carry its `trace_id`.
//!
//! Traces: OpenTelemetry, off by default, on when the standard `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; exported over OTLP/gRPC. `OTEL_SERVICE_NAME`
//! overrides the component's name; `OTEL_SDK_DISABLED=true` turns tracing off. W3C trace context
//! is propagated in gRPC metadata, HTTP headers and event envelopes (see [`crate::trace`]).

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::config;

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] flushes what is buffered.
#[must_use = "dropping it without shutdown may lose the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered; call once at the end of `main`.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {error}");
        }
    }
}

/// Installs logging (and tracing when configured) for the process, as `service` unless
/// `OTEL_SERVICE_NAME` says otherwise. Later calls in the same process (tests, the launcher)
/// keep the first installation.
pub fn init(service: &str) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = tracer_provider(service);

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = config::optional("LOG_FORMAT").is_some_and(|format| format == "json");
    let logs = if json {
        fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    } else {
        fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed()
    };
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("crawbl"))
            .boxed()
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok();
    if installed && let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracing::info!(service, "exporting traces over OTLP");
    }
    Telemetry {
        provider: provider.filter(|_| installed),
    }
}

fn tracer_provider(service: &str) -> Option<SdkTracerProvider> {
    let disabled = config::optional("OTEL_SDK_DISABLED").is_some_and(|v| v == "true");
    let configured = config::optional("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || config::optional("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    if disabled || !configured {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
    {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("traces are off: cannot build the OTLP exporter: {error}");
            return None;
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if config::optional("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    )
}

/// Runs a component's `main` with telemetry installed as `service`, flushing traces at the end.
pub async fn with_telemetry(
    service: &str,
    main: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let telemetry = init(service);
    let result = main.await;
    telemetry.shutdown();
    result
}
