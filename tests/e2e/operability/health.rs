//! `/healthz` and `/readyz` on the edge.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;

use crate::support::api::Api;
use crate::support::{Stack, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_200_and_names_every_dependency_when_all_serve() {
    let stack = Stack::separate_processes(1).await;
    let (status, body) = Api::new(stack.edge(0)).get("/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    for dependency in ["auth", "conversation", "runtimeProxy"] {
        assert_eq!(body["dependencies"][dependency], "serving", "{body}");
    }
    assert_eq!(body["dependencies"]["redis"], "ok", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_naming_what_is_unreachable_while_healthz_stays_200() {
    let port = free_port();
    let nowhere = |port: u16| format!("http://127.0.0.1:{port}");
    let mut edge = tokio::process::Command::new(env!("CARGO_BIN_EXE_crawbl"))
        .arg("edge")
        .env_clear()
        .env("EDGE_LISTEN", format!("127.0.0.1:{port}"))
        .env("AUTH_URL", nowhere(free_port()))
        .env("CONVERSATION_URL", nowhere(free_port()))
        .env("RUNTIME_PROXY_URL", nowhere(free_port()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the edge");
    let api = Api::new(&nowhere(port));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = crawbl_loadtest::rest::http_client()
            .get(format!("{}/healthz", api.base))
            .send()
            .await
        {
            assert_eq!(response.status(), StatusCode::OK);
            break;
        }
        assert!(
            edge.try_wait().expect("status").is_none(),
            "the edge exited"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edge never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, body) = api.get("/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not_ready");
    for dependency in ["auth", "conversation", "runtimeProxy"] {
        assert_eq!(body["dependencies"][dependency], "unreachable", "{body}");
    }
    let _ = edge.kill().await;
}
