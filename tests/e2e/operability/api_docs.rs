//! The API documents: the OpenAPI document the edge serves, and the README's grpcurl examples
//! run against a live stack.

use std::path::PathBuf;

use reqwest::StatusCode;

use crate::support::api::Api;
use crate::support::{Options, Stack, external_tool, free_port};

/// Every REST route of SPEC §4, and account deletion of §9 (path parameters as the router names
/// them).
const SPEC_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/auth/sign-up"),
    ("post", "/v1/auth/sign-in"),
    ("post", "/v1/auth/refresh"),
    ("post", "/v1/auth/logout"),
    ("get", "/v1/users/me"),
    ("patch", "/v1/users/me"),
    ("delete", "/v1/users/me"),
    ("get", "/v1/api-keys"),
    ("post", "/v1/api-keys"),
    ("delete", "/v1/api-keys/{api_key_id}"),
    ("get", "/v1/workspaces"),
    ("post", "/v1/workspaces"),
    ("get", "/v1/workspaces/{workspace_id}"),
    ("get", "/v1/workspaces/{workspace_id}/members"),
    ("post", "/v1/workspaces/{workspace_id}/members"),
    ("delete", "/v1/workspaces/{workspace_id}/members/{user_id}"),
    ("get", "/v1/workspaces/{workspace_id}/agents"),
    ("get", "/v1/workspaces/{workspace_id}/conversations"),
    ("post", "/v1/workspaces/{workspace_id}/conversations"),
    (
        "get",
        "/v1/workspaces/{workspace_id}/conversations/{conversation_id}",
    ),
    (
        "delete",
        "/v1/workspaces/{workspace_id}/conversations/{conversation_id}",
    ),
    (
        "get",
        "/v1/workspaces/{workspace_id}/conversations/{conversation_id}/messages",
    ),
    (
        "post",
        "/v1/workspaces/{workspace_id}/conversations/{conversation_id}/messages",
    ),
    ("get", "/v1/workspaces/{workspace_id}/events"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route_the_edge_serves() {
    let stack = Stack::embedded().await;
    let api = Api::new(stack.edge(0));
    let (status, document) = api.get("/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK, "{document}");
    let version = document["openapi"].as_str().expect("an `openapi` version");
    assert!(version.starts_with("3."), "{version}");

    let paths = document["paths"].as_object().expect("paths");
    for (method, path) in SPEC_ROUTES {
        assert!(
            paths
                .get(*path)
                .and_then(|item| item.get(*method))
                .is_some(),
            "{method} {path} is not documented"
        );
    }
    // Nothing is documented that the edge does not serve: every operation reaches its handler
    // (which refuses a request without credentials or body), never the router's 404 or 405.
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            let url = format!("{}{}", api.base, path.replace(['{', '}'], ""));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
                .expect("an HTTP method");
            let response = crawbl_loadtest::rest::http_client()
                .request(method.clone(), &url)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .expect("request");
            let status = response.status();
            let body = response.text().await.expect("body");
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED && !body.contains("ROUTE_NOT_FOUND"),
                "{method} {path}: {status} {body}"
            );
        }
    }

    // The JSON types come from the code: a message has every field of SPEC §4.
    let message = &document["components"]["schemas"]["Message"]["properties"];
    for field in [
        "id",
        "workspaceId",
        "conversationId",
        "role",
        "content",
        "status",
        "createdAt",
    ] {
        assert!(
            message.get(field).is_some(),
            "Message.{field} missing: {message:#}"
        );
    }
    let error = &document["components"]["schemas"]["ErrorBody"];
    assert!(error.is_object(), "the error body is described");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_grpcurl_examples_run_against_every_grpc_server() {
    // A grpcurl-compatible CLI; scripts/test.sh installs grpcurl-rs and requires it.
    let Some(grpcurl) = external_tool(
        "GRPCURL",
        "grpcurl",
        "CRAWBL_REQUIRE_GRPCURL",
        "cargo install grpcurl-rs --locked",
    ) else {
        return;
    };
    let token = format!("examples-token-{}", uuid::Uuid::new_v4().simple());
    let [auth, conversation, runtime_proxy] =
        [free_port(), free_port(), free_port()].map(|port| format!("127.0.0.1:{port}"));
    let stack = Stack::embedded_with(Options {
        env: vec![
            ("CRAWBL_SERVICE_TOKEN", token.clone()),
            ("AUTH_LISTEN", auth.clone()),
            ("CONVERSATION_LISTEN", conversation.clone()),
            ("RUNTIME_PROXY_LISTEN", runtime_proxy.clone()),
        ],
        ..Options::default()
    })
    .await;

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/grpc-examples.sh");
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .env("GRPCURL", &grpcurl)
        .env("CRAWBL_SERVICE_TOKEN", &token)
        .env("AUTH_ADDR", &auth)
        .env("CONVERSATION_ADDR", &conversation)
        .env("RUNTIME_PROXY_ADDR", &runtime_proxy)
        .output()
        .await
        .expect("run scripts/grpc-examples.sh");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}\n{}\nlogs in {}",
        String::from_utf8_lossy(&output.stderr),
        stack.dir().display()
    );
    assert!(printed.contains("grpc examples: all passed"), "{printed}");
    assert!(!printed.contains(&token), "the examples print the secret");
}
