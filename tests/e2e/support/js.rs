//! The JavaScript client checks in `tests/js`, run with Node.js and the npm `socket.io-client`
//! that apps use. `scripts/test.sh` installs the packages (`npm ci`); a test installs them itself
//! when they are missing.

use std::path::PathBuf;

use serde_json::Value;
use tokio::process::Command;
use tokio::sync::OnceCell;

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// `npm ci` once per test run, unless the packages are already there.
async fn install() {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let dir = js_dir();
            let installed = ["socket.io-client", "playwright-core", "axe-core"]
                .iter()
                .all(|package| {
                    dir.join("node_modules")
                        .join(package)
                        .join("package.json")
                        .exists()
                });
            if installed {
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
    run_script(
        "replay.mjs",
        &[edge_a, edge_b, token, workspace_id, conversation_id],
    )
    .await
}

/// Runs `tests/js/contract.mjs` against one edge; its JSON report.
pub async fn run_contract(
    edge: &str,
    token: &str,
    workspace_id: &str,
    conversation_id: &str,
) -> Value {
    run_script(
        "contract.mjs",
        &[edge, token, workspace_id, conversation_id],
    )
    .await
}

/// Runs `tests/js/console.mjs`: the web console of the edge at `edge` in headless Chromium
/// (`/usr/bin/chromium`, or `$CHROMIUM`), keeping its screenshots in `screenshots`; its JSON report.
pub async fn run_console(edge: &str, screenshots: &std::path::Path) -> Value {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "Chromium is needed for the console's browser test ({chromium}; scripts/test.sh installs \
         Debian's chromium package)"
    );
    run_script("console.mjs", &[edge, &screenshots.display().to_string()]).await
}

/// Runs `tests/js/<script>` with `args`; the JSON report it prints last.
async fn run_script(script: &str, args: &[&str]) -> Value {
    if let Err(error) = Command::new("node").arg("--version").output().await {
        panic!(
            "Node.js is needed for the JavaScript client tests (node ≥ 18 and npm on PATH): {error}"
        );
    }
    install().await;
    super::run_client_script("node", &js_dir(), script, args).await
}
