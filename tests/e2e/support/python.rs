//! The Python client checks in `tests/python`, run with python-socketio's client (a second,
//! independent Engine.IO / Socket.IO client). `scripts/test.sh` installs it; a test installs it
//! itself when it is missing.

use std::path::PathBuf;

use serde_json::Value;
use tokio::process::Command;
use tokio::sync::OnceCell;

/// The python-socketio release the checks were written against.
const PYTHON_SOCKETIO: &str = "python-socketio[client]==5.18.1";

fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// `pip install` once per test run, unless `socketio` already imports.
async fn install() {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let present = Command::new("python3")
                .args(["-c", "import socketio"])
                .output()
                .await
                .unwrap_or_else(|error| {
                    panic!("python3 is needed for the Python client tests: {error}")
                });
            if present.status.success() {
                return;
            }
            let output = Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .arg(PYTHON_SOCKETIO)
                .output()
                .await
                .expect("run pip");
            assert!(
                output.status.success(),
                "pip install {PYTHON_SOCKETIO} failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        })
        .await;
}

/// Runs `tests/python/contract.py` against one edge; its JSON report.
pub async fn run_contract(
    edge: &str,
    token: &str,
    workspace_id: &str,
    conversation_id: &str,
) -> Value {
    install().await;
    super::run_client_script(
        "python3",
        &python_dir(),
        "contract.py",
        &[edge, token, workspace_id, conversation_id],
    )
    .await
}
