//! Bringing up one workspace's runtime with a [`Driver`] and waiting until it is ready.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use crawbl_infra::grpc::Channel;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::Driver;

/// The line prefix a runtime process prints on stdout once it listens (see runtime-stub).
pub const LISTENING_PREFIX: &str = "CRAWBL_RUNTIME_LISTENING";

/// Pause between health checks while a runtime starts.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Upper bound of one health check, so a hung runtime cannot eat the whole ready budget in one go.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a runtime could not be made ready. Cloneable: every caller waiting on the same
/// provisioning attempt gets the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ProvisionError(pub String);

/// A ready runtime: where it is, a channel to it, and its process if the driver started one.
#[derive(Debug)]
pub struct Runtime {
    pub address: String,
    pub channel: Channel,
    process: Option<Process>,
}

#[derive(Debug)]
struct Process {
    /// A tokio mutex because stopping waits for the exit while holding the child.
    child: tokio::sync::Mutex<Child>,
    /// Held open for the runtime's life: runtime-stub exits when its stdin closes, so if this
    /// proxy dies without killing its children they still go away.
    _stdin: Option<ChildStdin>,
}

impl Runtime {
    /// `Some` once the runtime's process has exited (or is being stopped); never for a static one.
    pub fn exit_status(&self) -> Option<String> {
        let process = self.process.as_ref()?;
        let Ok(mut child) = process.child.try_lock() else {
            return Some("being stopped".to_owned());
        };
        match child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(status.to_string()),
            Err(error) => Some(format!("unknown ({error})")),
        }
    }

    /// Kills the runtime's process and waits for it to exit; nothing to do for a static runtime.
    pub async fn stop(&self) {
        let Some(process) = &self.process else {
            return;
        };
        let mut child = process.child.lock().await;
        let pid = child.id();
        if let Err(error) = child.kill().await {
            tracing::warn!(?pid, %error, "cannot kill runtime process");
        } else {
            tracing::info!(?pid, "runtime process stopped");
        }
    }
}

impl Driver {
    /// Brings up the runtime of `workspace_id` and waits until its health check says SERVING,
    /// all within `ready_timeout`. A process that does not make it is killed (dropping the child
    /// kills it).
    pub async fn provision(
        &self,
        workspace_id: &str,
        ready_timeout: Duration,
    ) -> Result<Runtime, ProvisionError> {
        let deadline = Instant::now() + ready_timeout;
        match self {
            Self::Static { address } => {
                let channel = connect(address)?;
                wait_until_serving(&channel, deadline, ready_timeout).await?;
                Ok(Runtime {
                    address: address.clone(),
                    channel,
                    process: None,
                })
            }
            Self::Process { program, args } => {
                spawn_process(program, args, workspace_id, deadline, ready_timeout).await
            }
        }
    }
}

async fn spawn_process(
    program: &Path,
    args: &[String],
    workspace_id: &str,
    deadline: Instant,
    ready_timeout: Duration,
) -> Result<Runtime, ProvisionError> {
    let mut child = Command::new(program)
        .args(args)
        .env("RUNTIME_STUB_LISTEN", "127.0.0.1:0")
        .env("RUNTIME_STUB_EXIT_WITH_PARENT", "true")
        .env("RUNTIME_WORKSPACE_ID", workspace_id)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // The runtime's logs join ours.
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| {
            ProvisionError(format!(
                "cannot start runtime {}: {error}",
                program.display()
            ))
        })?;
    let pid = child.id();
    tracing::info!(workspace_id, ?pid, program = %program.display(), "runtime process started");

    let stdin = child.stdin.take();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| ProvisionError("the runtime's stdout was not captured".to_owned()))?;
    let mut lines = BufReader::new(stdout).lines();

    let announced = tokio::time::timeout_at(deadline, read_address(&mut lines)).await;
    let socket = match announced {
        Ok(Ok(socket)) => socket,
        Ok(Err(error)) => return Err(with_exit_status(error, &mut child).await),
        Err(_elapsed) => {
            return Err(ProvisionError(format!(
                "the runtime did not announce its address within {} ms",
                ready_timeout.as_millis()
            )));
        }
    };
    drain(lines, pid);
    let address = format!("http://{socket}");
    tracing::info!(workspace_id, ?pid, %address, "runtime process listening");

    let channel = connect(&address)?;
    tokio::select! {
        ready = wait_until_serving(&channel, deadline, ready_timeout) => ready?,
        exit = child.wait() => {
            return Err(ProvisionError(format!(
                "the runtime exited before it was ready ({})",
                describe_exit(exit)
            )));
        }
    }
    Ok(Runtime {
        address,
        channel,
        process: Some(Process {
            child: tokio::sync::Mutex::new(child),
            _stdin: stdin,
        }),
    })
}

/// Reads stdout up to the line announcing the address; other lines before it are logged.
async fn read_address(
    lines: &mut Lines<BufReader<ChildStdout>>,
) -> Result<SocketAddr, ProvisionError> {
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|error| ProvisionError(format!("cannot read the runtime's stdout: {error}")))?
            .ok_or_else(|| {
                ProvisionError("the runtime exited before announcing its address".to_owned())
            })?;
        let Some(rest) = line.strip_prefix(LISTENING_PREFIX) else {
            tracing::debug!(%line, "runtime stdout");
            continue;
        };
        return rest.trim().parse().map_err(|error| {
            ProvisionError(format!(
                "the runtime announced an invalid address {line:?}: {error}"
            ))
        });
    }
}

/// Keeps reading the runtime's stdout after the address line, so a chatty runtime never blocks
/// on a full pipe. Ends when the process exits.
fn drain(mut lines: Lines<BufReader<ChildStdout>>, pid: Option<u32>) {
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(?pid, %line, "runtime stdout");
        }
    });
}

/// Adds how the process ended to `error`, if it has already ended.
async fn with_exit_status(error: ProvisionError, child: &mut Child) -> ProvisionError {
    // The stdout pipe closes a moment before the exit is observable; a short wait tells the two
    // apart without delaying the error noticeably.
    match tokio::time::timeout(Duration::from_millis(200), child.wait()).await {
        Ok(exit) => ProvisionError(format!("{error} ({})", describe_exit(exit))),
        Err(_) => error,
    }
}

fn describe_exit(exit: std::io::Result<ExitStatus>) -> String {
    match exit {
        Ok(status) => status.to_string(),
        Err(error) => format!("exit status unknown: {error}"),
    }
}

fn connect(address: &str) -> Result<Channel, ProvisionError> {
    crawbl_infra::grpc::channel(address).map_err(|error| ProvisionError(format!("{error:#}")))
}

/// Polls the runtime's overall health (service "") until SERVING or the deadline.
async fn wait_until_serving(
    channel: &Channel,
    deadline: Instant,
    ready_timeout: Duration,
) -> Result<(), ProvisionError> {
    let mut health = HealthClient::new(channel.clone());
    loop {
        let attempt_deadline = deadline.min(Instant::now() + HEALTH_CHECK_TIMEOUT);
        let check = health.check(HealthCheckRequest {
            service: String::new(),
        });
        let last = match tokio::time::timeout_at(attempt_deadline, check).await {
            Ok(Ok(response)) if response.get_ref().status() == ServingStatus::Serving => {
                return Ok(());
            }
            Ok(Ok(response)) => format!("health is {:?}", response.get_ref().status()),
            Ok(Err(status)) => format!("health check failed: {}", status.message()),
            Err(_) => "health check timed out".to_owned(),
        };
        if Instant::now() + HEALTH_POLL_INTERVAL >= deadline {
            return Err(ProvisionError(format!(
                "the runtime was not ready within {} ms ({last})",
                ready_timeout.as_millis()
            )));
        }
        tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
    }
}
