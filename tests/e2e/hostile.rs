//! Input from outside that tries to break the edge. Here: property-based tests of every REST
//! route generated from the edge's own OpenAPI document by schemathesis, with the fixed seed
//! and bounds of `tests/schemathesis/schemathesis.toml` and below: no 5xx, every response
//! within its documented schema, status and headers, schema-valid input accepted and invalid
//! input refused.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::Stack;
use crate::support::api::Api;

/// Cases per operation and phase; `SCHEMATHESIS_MAX_EXAMPLES` for a longer run.
const MAX_EXAMPLES: &str = "20";
const SEED: &str = "1";
const RUN_BOUND: Duration = Duration::from_secs(300);

fn schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SCHEMATHESIS") {
        return Some(path.into());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("schemathesis"))
            .find(|candidate| candidate.is_file())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_route_holds_its_openapi_contract_under_generated_input() {
    let Some(schemathesis) = schemathesis() else {
        // scripts/test.sh installs schemathesis and sets CRAWBL_REQUIRE_SCHEMATHESIS, so the
        // test command always runs it; a bare `cargo test` without the tool says so.
        assert!(
            std::env::var_os("CRAWBL_REQUIRE_SCHEMATHESIS").is_none(),
            "no schemathesis found (set SCHEMATHESIS, or `pip install schemathesis`)"
        );
        eprintln!("skipping the API property tests: no schemathesis on PATH");
        return;
    };
    let stack = Stack::embedded().await;
    let api = Api::new(stack.edge(0));
    let user = api.sign_up().await;
    // An API key, not a session: the runner calls logout too, which would end a session.
    let (status, key) = api
        .post(
            "/v1/api-keys",
            Some(&user.token),
            json!({"name": "schemathesis"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let key = key["data"]["key"].as_str().expect("the key").to_owned();
    let conversation = api.create_conversation(&user).await;

    let config_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let examples =
        std::env::var("SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| MAX_EXAMPLES.to_owned());
    let run = tokio::process::Command::new(&schemathesis)
        .current_dir(&config_dir)
        .args(["--config-file", "schemathesis.toml", "run"])
        .arg(format!("{}/v1/openapi.json", api.base))
        .args(["--header", &format!("X-Token: {key}")])
        .args(["--max-examples", &examples, "--seed", SEED])
        .args(["--phases", "examples,coverage,fuzzing", "--no-color"])
        .env("CRAWBL_WORKSPACE_ID", &user.workspace_id)
        .env("CRAWBL_CONVERSATION_ID", &conversation)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_BOUND, run)
        .await
        .expect("schemathesis finished within its bound")
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout);
    let summary = report
        .lines()
        .find(|line| line.contains(" generated, "))
        .unwrap_or("no summary line");
    eprintln!("schemathesis: {}", summary.trim());
    assert!(
        output.status.success(),
        "schemathesis found failures (logs in {}):\n{report}\n{}",
        stack.dir().display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let (status, _) = api.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "the edge is still up");
}
