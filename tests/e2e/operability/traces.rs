//! One trace follows a message across every hop (issue 7).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use reqwest::StatusCode;

use crate::support::Stack;
use crate::support::api::Api;
use crate::support::sio;

/// A span as the collector received it.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace_id: Vec<u8>,
}

/// A minimal OTLP/gRPC trace receiver that keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| attribute.value.as_ref()?.value.clone())
                .map(|value| match value {
                    AnyValue::StringValue(name) => name,
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name,
                        trace_id: span.trace_id,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_message_from_rest_through_every_service_to_the_socket() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let endpoint = format!("http://{address}");
    let stack = Stack::separate_processes_with(
        1,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let mut socket = sio::connect(stack.edge(0), &[("x-token", &user.token)], None)
        .await
        .expect("connect")
        .expect_connected();
    let (status, body) = api.send(&user, &conversation, "traced", "follow me").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    socket
        .events_until(Duration::from_secs(30), |event| {
            event.name == "message.updated" && event.payload()["role"] == "agent"
        })
        .await;

    let wanted_services = BTreeSet::from([
        "crawbl-edge",
        "crawbl-conversation",
        "crawbl-runtime-proxy",
        "crawbl-runtime-stub",
    ]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let spans = collector.spans();
        let send = spans.iter().find(|span| {
            span.service == "crawbl-edge"
                && span.name.starts_with("POST ")
                && span.name.ends_with("/messages")
        });
        if let Some(send) = send {
            let trace: Vec<&ReceivedSpan> = spans
                .iter()
                .filter(|span| span.trace_id == send.trace_id)
                .collect();
            let services: BTreeSet<&str> = trace.iter().map(|span| span.service.as_str()).collect();
            let names: BTreeSet<&str> = trace.iter().map(|span| span.name.as_str()).collect();
            let emitted_by_edge = trace
                .iter()
                .any(|span| span.service == "crawbl-edge" && span.name == "socket.emit");
            if wanted_services.is_subset(&services)
                && emitted_by_edge
                && names.contains("bus.publish")
                && names.contains("agent.turn")
            {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("the trace has services {services:?} and spans {names:?}");
            }
        } else if tokio::time::Instant::now() >= deadline {
            panic!("no span of the send arrived; got {spans:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
