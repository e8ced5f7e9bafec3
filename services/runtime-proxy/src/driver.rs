//! Bringing up one workspace's runtime with a [`Driver`], waiting until it is ready, watching
//! whether it is still alive, and stopping it. The contract every driver meets is in
//! `docs/runtime-drivers.md`; the `kubernetes` driver's own part is in `src/kubernetes.rs`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::Driver;
use crate::kubernetes::{Cluster, PodHandle};

/// The line prefix a runtime process prints on stdout once it listens (see runtime-stub).
pub const LISTENING_PREFIX: &str = "CRAWBL_RUNTIME_LISTENING";

/// Pause between health checks while a runtime starts.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Upper bound of one health check, so a hung runtime cannot eat the whole ready budget in one go.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound of the health check that decides whether a runtime that broke a turn is still
/// alive: short, since a caller is waiting for the turn's last event.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `stop` waits for a killed process to be reaped before giving up on it.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The runtime's own settings, which every runtime inherits from runtime-proxy (a pod as values
/// in its spec). Names ending in `_` are prefixes.
const POD_ENV: &[&str] = &[
    "LANG",
    "LC_ALL",
    "TZ",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "LOG_FORMAT",
    "OTEL_",
    "RUNTIME_STUB_",
    "RUNTIME_PROVIDER",
];

/// What a runtime *process* inherits besides [`POD_ENV`]: paths of this machine and provider
/// keys. A pod gets neither (its keys come from `RUNTIME_K8S_SECRET`, never pod-spec text).
/// Everything else is withheld, so secrets of the platform (the service credential, database and
/// Redis URLs) never reach code an agent runs.
const PROCESS_ONLY_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "OPENAI_",
    // A private CA for https to model providers and MCP servers (added to the platform's roots).
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// The variables of this process a runtime pod gets (see [`POD_ENV`]).
pub fn runtime_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars().filter(|(name, _)| allowed(POD_ENV, name))
}

/// Why a runtime could not be made ready. Cloneable: every caller waiting on the same
/// provisioning attempt gets the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ProvisionError(pub String);

/// A ready runtime: where it is, a channel to it, and its process if the driver started one.
/// Dropping the last handle to a runtime kills its process.
#[derive(Debug)]
pub struct Runtime {
    pub address: String,
    pub channel: Channel,
    process: Option<Process>,
    /// The runtime's pod (kubernetes driver). Dropping it does not delete the pod: pods outlive
    /// the proxy and are adopted by the next one (`src/kubernetes.rs`).
    pod: Option<PodHandle>,
}

/// A runtime process, owned by a watcher task that reaps it and reports how it ended.
#[derive(Debug)]
struct Process {
    pid: Option<u32>,
    /// Cancelling it (explicitly, or by dropping the runtime) makes the watcher kill the process.
    kill: CancellationToken,
    _kill_on_drop: DropGuard,
    /// `None` while the process runs; how it ended, once it has.
    exit: watch::Receiver<Option<String>>,
    /// Held open for the runtime's life: runtime-stub exits when its stdin closes, so if this
    /// proxy dies without killing its children they still go away.
    _stdin: Option<ChildStdin>,
}

impl Runtime {
    /// `Some` (how it ended) once the runtime's process has exited or its pod died; never for
    /// a static runtime.
    pub fn exit_status(&self) -> Option<String> {
        self.exit()?.borrow().clone()
    }

    fn exit(&self) -> Option<&watch::Receiver<Option<String>>> {
        match (&self.process, &self.pod) {
            (Some(process), _) => Some(&process.exit),
            (None, Some(pod)) => Some(&pod.exit),
            (None, None) => None,
        }
    }

    /// Resolves with how the process ended, once it has; `None` for a runtime whose death the
    /// driver cannot observe (static), which is then noticed only by [`Runtime::probe`].
    pub fn exited(&self) -> Option<BoxFuture<'static, String>> {
        let mut exit = self.exit()?.clone();
        Some(
            async move {
                match exit.wait_for(Option::is_some).await {
                    Ok(status) => status.clone().unwrap_or_default(),
                    Err(_) => "its watcher stopped".to_owned(),
                }
            }
            .boxed(),
        )
    }

    /// `Ok` when the runtime still answers its health check (and its process runs); otherwise
    /// why it is considered dead. Used when a turn breaks, to tell a dead runtime from a failed
    /// turn.
    pub async fn probe(&self) -> Result<(), String> {
        if let Some(status) = self.exit_status() {
            return Err(format!("its process exited ({status})"));
        }
        let deadline = Instant::now() + PROBE_TIMEOUT;
        check_serving(&self.channel, deadline).await?;
        match self.exit_status() {
            Some(status) => Err(format!("its process exited ({status})")),
            None => Ok(()),
        }
    }

    /// At shutdown: stops a process (it would not outlive us anyway); leaves a pod running for
    /// the next proxy to adopt.
    pub async fn stop_at_shutdown(&self) {
        if self.pod.is_none() {
            self.stop().await;
        }
    }

    /// Kills the runtime's process (or deletes its pod) and waits until it is gone; nothing to
    /// do for a static runtime. Idempotent.
    pub async fn stop(&self) {
        if let Some(pod) = &self.pod {
            return pod.stop().await;
        }
        let Some(process) = &self.process else {
            return;
        };
        process.kill.cancel();
        let mut exit = process.exit.clone();
        let reaped = tokio::time::timeout(STOP_TIMEOUT, exit.wait_for(Option::is_some)).await;
        if reaped.is_err() {
            tracing::warn!(pid = ?process.pid, "runtime process not reaped in time after kill");
        }
    }
}

/// A [`Driver`] ready to provision: for `kubernetes`, connected to the cluster and watching.
#[derive(Debug)]
pub enum Provisioner {
    Local(Driver),
    Kubernetes(Arc<Cluster>),
}

impl Provisioner {
    /// Connects the kubernetes driver (the others need nothing).
    pub async fn start(driver: Driver) -> anyhow::Result<Self> {
        match driver {
            Driver::Kubernetes(settings) => {
                Ok(Self::Kubernetes(Cluster::connect(*settings).await?))
            }
            local => Ok(Self::Local(local)),
        }
    }

    /// Cleans up what an earlier proxy left and returns the workspaces whose runtimes live on
    /// (kubernetes: their pods); nothing for the other drivers, whose runtimes die with us.
    pub async fn reconcile(&self) -> anyhow::Result<Vec<String>> {
        match self {
            Self::Local(_) => Ok(Vec::new()),
            Self::Kubernetes(cluster) => cluster.reconcile().await,
        }
    }

    /// Brings up the runtime of `workspace_id` and waits until its health check says SERVING,
    /// all within `timeout`. A process that does not make it is killed (dropping the child kills
    /// it); a pod that does not make it is deleted.
    pub async fn provision(
        &self,
        workspace_id: &str,
        timeout: Duration,
    ) -> Result<Runtime, ProvisionError> {
        match self {
            Self::Local(driver) => driver.provision(workspace_id, timeout).await,
            Self::Kubernetes(cluster) => {
                let result = provision_pod(cluster, workspace_id, timeout).await;
                if result.is_err() {
                    PodHandle::abandon(cluster, workspace_id);
                }
                result
            }
        }
    }
}

/// The pod's part is in `src/kubernetes.rs`; readiness is the same health wait as a process's,
/// ended early if the pod dies meanwhile.
async fn provision_pod(
    cluster: &Arc<Cluster>,
    workspace_id: &str,
    timeout: Duration,
) -> Result<Runtime, ProvisionError> {
    let deadline = Instant::now() + timeout;
    let pod = cluster.start(workspace_id, deadline).await?;
    let channel = connect(&pod.address)?;
    let mut exit = pod.exit.clone();
    tokio::select! {
        ready = wait_until_serving(&channel, deadline, timeout) => ready?,
        death = exit.wait_for(Option::is_some) => {
            let death = death.map(|death| death.clone().unwrap_or_default()).unwrap_or_default();
            return Err(ProvisionError(format!(
                "the runtime pod {} died before it was ready: {death}",
                pod.name
            )));
        }
    }
    Ok(Runtime {
        address: pod.address.clone(),
        channel,
        process: None,
        pod: Some(pod),
    })
}

impl Driver {
    /// Brings up a local runtime (process or static): see [`Provisioner::provision`].
    async fn provision(
        &self,
        workspace_id: &str,
        timeout: Duration,
    ) -> Result<Runtime, ProvisionError> {
        let deadline = Instant::now() + timeout;
        match self {
            Self::Static { address } => {
                let channel = connect(address)?;
                wait_until_serving(&channel, deadline, timeout).await?;
                Ok(Runtime {
                    address: address.clone(),
                    channel,
                    process: None,
                    pod: None,
                })
            }
            Self::Process { program, args } => {
                spawn_process(program, args, workspace_id, deadline, timeout).await
            }
            Self::Kubernetes(_) => Err(ProvisionError(
                "the kubernetes driver provisions through its cluster connection".to_owned(),
            )),
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
        .env_clear()
        .envs(std::env::vars().filter(|(name, _)| inherited(name)))
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
    let kill = CancellationToken::new();
    let exit = watch_process(child, pid, workspace_id, kill.clone());
    Ok(Runtime {
        address,
        channel,
        process: Some(Process {
            pid,
            _kill_on_drop: kill.clone().drop_guard(),
            kill,
            exit,
            _stdin: stdin,
        }),
        pod: None,
    })
}

fn inherited(name: &str) -> bool {
    allowed(POD_ENV, name) || allowed(PROCESS_ONLY_ENV, name)
}

/// `name` is in `list`, where entries ending in `_` are prefixes.
fn allowed(list: &[&str], name: &str) -> bool {
    list.iter().any(|allowed| match allowed.strip_suffix('_') {
        Some(_) => name.starts_with(allowed),
        None => name == *allowed,
    })
}

/// Hands `child` to a task that waits for it to exit (or kills it when `kill` is cancelled) and
/// publishes how it ended. Waiting in a task is what lets a death be noticed while no turn runs.
fn watch_process(
    mut child: Child,
    pid: Option<u32>,
    workspace_id: &str,
    kill: CancellationToken,
) -> watch::Receiver<Option<String>> {
    let (sender, receiver) = watch::channel(None);
    let workspace_id = workspace_id.to_owned();
    tokio::spawn(async move {
        let status = tokio::select! {
            exit = child.wait() => {
                let status = describe_exit(exit);
                tracing::warn!(%workspace_id, ?pid, %status, "runtime process exited");
                status
            }
            () = kill.cancelled() => {
                if let Err(error) = child.kill().await {
                    tracing::warn!(%workspace_id, ?pid, %error, "cannot kill runtime process");
                }
                let status = describe_exit(child.wait().await);
                tracing::info!(%workspace_id, ?pid, %status, "runtime process stopped");
                status
            }
        };
        sender.send_replace(Some(status));
    });
    receiver
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
    // Runtimes run agent code: they never get the service credential.
    crawbl_infra::grpc::channel_without_credential(address)
        .map_err(|error| ProvisionError(format!("{error:#}")))
}

/// Polls the runtime's overall health (service "") until SERVING or the deadline.
async fn wait_until_serving(
    channel: &Channel,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), ProvisionError> {
    loop {
        let attempt_deadline = deadline.min(Instant::now() + HEALTH_CHECK_TIMEOUT);
        let Err(last) = check_serving(channel, attempt_deadline).await else {
            return Ok(());
        };
        if Instant::now() + HEALTH_POLL_INTERVAL >= deadline {
            return Err(ProvisionError(format!(
                "the runtime was not ready within {} ms ({last})",
                timeout.as_millis()
            )));
        }
        tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
    }
}

/// One health check of the runtime as a whole (service ""): `Ok` only for SERVING.
async fn check_serving(channel: &Channel, deadline: Instant) -> Result<(), String> {
    let mut health = HealthClient::new(channel.clone());
    let check = health.check(HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout_at(deadline, check).await {
        Ok(Ok(response)) if response.get_ref().status() == ServingStatus::Serving => Ok(()),
        Ok(Ok(response)) => Err(format!("health is {:?}", response.get_ref().status())),
        Ok(Err(status)) => Err(format!("health check failed: {}", status.message())),
        Err(_) => Err("health check timed out".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_inherit_their_own_settings_but_no_platform_secret() {
        for name in [
            "PATH",
            "RUST_LOG",
            "RUNTIME_STUB_TOKEN_DELAY_MS",
            "RUNTIME_PROVIDER",
            "OPENAI_API_KEY",
            "RUNTIME_STUB_MAX_TOOL_ROUNDS",
            "RUNTIME_STUB_TOOL_TIMEOUT_MS",
            "RUNTIME_STUB_PROVIDER_RETRIES",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
        ] {
            assert!(inherited(name), "{name}");
        }
        for name in [
            "CRAWBL_SERVICE_TOKEN",
            "DATABASE_URL",
            "REDIS_URL",
            "PATHX",
            "RUNTIME_DRIVER",
            "SSL_CERT_FILE_EXTRA",
        ] {
            assert!(!inherited(name), "{name}");
        }
    }

    #[test]
    fn runtime_pods_get_the_runtime_settings_but_no_secret_nor_local_path() {
        for name in [
            "RUST_LOG",
            "RUNTIME_STUB_TOKEN_DELAY_MS",
            "RUNTIME_PROVIDER",
            "OTEL_SERVICE_NAME",
        ] {
            assert!(allowed(POD_ENV, name), "{name}");
        }
        for name in [
            "CRAWBL_SERVICE_TOKEN",
            "DATABASE_URL",
            "REDIS_URL",
            "OPENAI_API_KEY",
            "PATH",
            "HOME",
            "SSL_CERT_FILE",
            "RUNTIME_K8S_IMAGE",
        ] {
            assert!(!allowed(POD_ENV, name), "{name}");
        }
    }
}
