//! The JavaScript client checks in `tests/js`, run with Node.js and the npm `socket.io-client`
//! that apps use. `scripts/test.sh` installs the packages (`npm ci`); a test installs them itself
//! when they are missing.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;
use tokio::sync::OnceCell;

const RUN_LIMIT: Duration = Duration::from_secs(120);

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// `npm ci` once per test run, unless the packages are already there.
async fn install() {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let dir = js_dir();
            if dir
                .join("node_modules/socket.io-client/package.json")
                .exists()
            {
                return;
            }
            let output = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .output()
                .await
                .unwrap_or_else(|error| {
                    panic!("npm is needed for the JavaScript client tests (with Node.js): {error}")
                });
            assert!(
                output.status.success(),
                "npm ci in {} failed:\n{}",
                dir.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        })
        .await;
}

/// Runs `tests/js/replay.mjs` against two edges; its JSON report.
pub async fn run_replay(
    edge_a: &str,
    edge_b: &str,
    token: &str,
    workspace_id: &str,
    conversation_id: &str,
) -> Value {
    if let Err(error) = Command::new("node").arg("--version").output().await {
        panic!(
            "Node.js is needed for the JavaScript client tests (node ≥ 18 and npm on PATH): {error}"
        );
    }
    install().await;
    let mut command = Command::new("node");
    command
        .arg("replay.mjs")
        .args([edge_a, edge_b, token, workspace_id, conversation_id])
        .current_dir(js_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_LIMIT, command.output())
        .await
        .expect("replay.mjs did not finish within 2 minutes")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "replay.mjs failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    let report = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(report)
        .unwrap_or_else(|error| panic!("replay.mjs printed {stdout:?}: {error}"))
}
