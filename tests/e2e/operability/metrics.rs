//! `/metrics`: the counters move when the stack works.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;

use crate::support::api::Api;
use crate::support::scrape::Scrape;
use crate::support::{Stack, free_port, sio, wait_for_grpc_health};

const SEND_ROUTE: &str =
    r#"route="/v1/workspaces/{workspace_id}/conversations/{conversation_id}/messages""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_move_when_a_message_is_answered() {
    let stack = Stack::embedded().await;
    let edge = stack.edge(0);
    let api = Api::new(edge);
    let user = api.sign_up().await;
    let conversation = api.create_conversation(&user).await;
    let before = Scrape::of(edge).await;

    let mut socket = sio::connect(edge, &[("x-token", &user.token)], None)
        .await
        .expect("connect")
        .expect_connected();
    let (status, body) = api.send(&user, &conversation, "m1", "count me").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    socket
        .events_until(Duration::from_secs(30), |event| {
            event.name == "message.updated" && event.payload()["role"] == "agent"
        })
        .await;
    let after = Scrape::of(edge).await;

    let moved = |name: &str, labels: &[&str]| after.sum(name, labels) - before.sum(name, labels);
    assert_eq!(
        moved(
            "crawbl_http_requests_total",
            &[r#"method="POST""#, SEND_ROUTE, r#"status="201""#]
        ),
        1.0,
        "REST requests by route and status"
    );
    assert!(moved("crawbl_http_request_duration_seconds_count", &[SEND_ROUTE]) >= 1.0);
    for method in ["SendMessage", "ForwardTurn"] {
        assert!(
            moved(
                "crawbl_grpc_server_handled_total",
                &[&format!(r#"grpc_method="{method}""#), r#"grpc_code="OK""#]
            ) >= 1.0,
            "gRPC calls of {method}"
        );
    }
    assert!(
        moved(
            "crawbl_grpc_server_handling_seconds_count",
            &[r#"grpc_method="ForwardTurn""#]
        ) >= 1.0
    );
    assert_eq!(after.value("crawbl_socket_connections"), 1.0);
    assert_eq!(after.value("crawbl_socket_workspace_rooms"), 1.0);
    for event in ["message.new", "message.delta", "message.updated"] {
        assert!(
            moved(
                "crawbl_events_delivered_total",
                &[&format!(r#"event="{event}""#)]
            ) >= 1.0,
            "events delivered: {event}"
        );
    }
    assert!(moved("crawbl_events_published_total", &[]) >= 3.0);
    assert_eq!(after.value(r#"crawbl_runtimes{state="ready"}"#), 1.0);
    assert!(after.value(r#"crawbl_db_pool_connections{service="conversation"}"#) >= 1.0);
    assert!(after.value(r#"crawbl_db_pool_max_connections{service="auth"}"#) >= 1.0);
    // Exposed from the start, so dashboards and alerts find them.
    for family in [
        "crawbl_events_dropped_total",
        "crawbl_events_replayed_total",
        "crawbl_redis_reconnects_total",
    ] {
        let text = crawbl_loadtest::rest::http_client()
            .get(format!("{edge}/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("body");
        assert!(
            text.contains(&format!("# TYPE {family} counter")),
            "{family} missing"
        );
    }

    drop(socket);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while Scrape::of(edge).await.value("crawbl_socket_connections") != 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the socket gauge never went down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_run_alone_serves_its_metrics_on_metrics_listen() {
    let (grpc_port, metrics_port) = (free_port(), free_port());
    let mut runtime = tokio::process::Command::new(env!("CARGO_BIN_EXE_crawbl"))
        .arg("runtime-stub")
        .env_clear()
        .env("RUNTIME_STUB_LISTEN", format!("127.0.0.1:{grpc_port}"))
        .env("METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start runtime-stub");
    wait_for_grpc_health(&format!("http://127.0.0.1:{grpc_port}")).await;

    let scrape = Scrape::of(&format!("http://127.0.0.1:{metrics_port}")).await;
    assert!(
        scrape.value(
            r#"crawbl_grpc_server_handled_total{grpc_service="grpc.health.v1.Health",grpc_method="Check",grpc_code="OK"}"#
        ) >= 1.0,
        "the health checks are counted"
    );
    assert!(runtime.try_wait().expect("status").is_none());
    let _ = runtime.kill().await;
}
