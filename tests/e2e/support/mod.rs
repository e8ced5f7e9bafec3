//! Starting stacks of real processes and talking to them.

pub mod api;
pub mod js;
pub mod postgres_server;
pub mod python;
pub mod redis_server;
pub mod scrape;

pub use crawbl_loadtest::sio;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use sqlx::Connection;
use tokio::process::{Child, Command};

/// The all-in-one binary, whose subcommands run each component alone.
const CRAWBL: &str = env!("CARGO_BIN_EXE_crawbl");

/// Runs each `async fn(Backend)` test once on SQLite and once on Postgres (the calling module
/// must have `Backend` in scope).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                super::$name(super::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                super::$name(super::Backend::Postgres).await
            }
        }
    )*};
}

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Ports handed to test processes: below Linux's default ephemeral range (32768–60999), so
/// that no outgoing connection (nor a listener on port 0) takes one between the check here and
/// the bind in the process that gets it; above the well-known services and far from 5432.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A loopback port in [`TEST_PORTS`] that nothing listens on right now, never one this test
/// process handed out before (a stopped private server keeps its port for its restart).
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    let span = u128::from(TEST_PORTS.end - TEST_PORTS.start);
    loop {
        let offset = u16::try_from(uuid::Uuid::new_v4().as_u128() % span).expect("in range");
        let port = TEST_PORTS.start + offset;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut handed_out = HANDED_OUT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// Runs `program script args…` in `dir` (a client check in another language) within two
/// minutes; the JSON report it prints on its last line. Panics with its output if it fails.
pub async fn run_client_script(program: &str, dir: &Path, script: &str, args: &[&str]) -> Value {
    const RUN_LIMIT: Duration = Duration::from_secs(120);
    let mut command = Command::new(program);
    command
        .arg(script)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {RUN_LIMIT:?}"))
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    let report = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(report)
        .unwrap_or_else(|error| panic!("{script} printed {stdout:?}: {error}"))
}

/// Resident memory of a running process, in KiB.
pub fn resident_kib(pid: u32) -> u64 {
    crawbl_loadtest::process::resident_kib(pid).expect("the process runs")
}

/// A fresh Postgres database for one test; returns its URL.
pub async fn fresh_postgres_database() -> String {
    let admin_url = postgres_admin_url();
    let name = format!("crawbl_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::postgres::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|error| panic!("cannot reach Postgres at {admin_url}: {error}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("CREATE DATABASE");
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("admin URL has a database");
    format!("{base}/{name}")
}

/// A temporary folder for one test's data and logs, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("crawbl-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// How to start a stack; the defaults are the embedded default's.
pub struct Options {
    /// `None`: SQLite files in the stack's folder.
    pub database_url: Option<String>,
    /// `None`: the in-process bus.
    pub redis_url: Option<String>,
    pub token_delay_ms: u64,
    /// More environment for the stack's process(es), e.g. runtime timeouts.
    pub env: Vec<(&'static str, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            database_url: None,
            redis_url: None,
            token_delay_ms: 5,
            env: Vec::new(),
        }
    }
}

/// Which database a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Stack options on this backend (a fresh Postgres database per call).
    pub async fn options(self) -> Options {
        let database_url = match self {
            Self::Sqlite => None,
            Self::Postgres => Some(fresh_postgres_database().await),
        };
        Options {
            database_url,
            ..Options::default()
        }
    }
}

/// A running stack; every process is killed when it is dropped.
pub struct Stack {
    /// Base URLs (`http://127.0.0.1:port`) of the edge nodes.
    pub edges: Vec<String>,
    /// Separate processes only: the gRPC services, the shared service credential and the
    /// Postgres database.
    pub internals: Option<Internals>,
    /// Each process with its name (`auth`, `edge-0`, …).
    processes: Vec<(String, Child)>,
    /// How each process was started, to start it again.
    specs: Vec<ProcessSpec>,
    dir: TempDir,
}

/// A process of the stack: its name, the `crawbl` arguments and the environment it started with.
#[derive(Clone)]
struct ProcessSpec {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// What only components (never clients) reach in a stack of separate processes.
#[derive(Clone, Debug)]
pub struct Internals {
    pub auth_url: String,
    pub conversation_url: String,
    pub runtime_proxy_url: String,
    /// `CRAWBL_SERVICE_TOKEN` of every component.
    pub service_token: String,
    pub database_url: String,
}

// Drop order: processes are killed (kill_on_drop) before the folder is removed.
impl Stack {
    /// Every component as its own process (`crawbl <component>`, as compose runs them) on a
    /// fresh Postgres database and the shared Redis, with `edge_count` edge nodes.
    pub async fn separate_processes(edge_count: usize) -> Self {
        Self::separate_processes_with(edge_count, &[]).await
    }

    /// [`Stack::separate_processes`] with extra environment variables for every component.
    pub async fn separate_processes_with(edge_count: usize, extra_env: &[(&str, &str)]) -> Self {
        let database_url = fresh_postgres_database().await;
        Self::separate_processes_on(database_url, edge_count, extra_env).await
    }

    /// [`Stack::separate_processes_with`] on the database at `database_url` (e.g. a private
    /// server's) instead of a fresh one on the shared Postgres.
    pub async fn separate_processes_on(
        database_url: String,
        edge_count: usize,
        extra_env: &[(&str, &str)],
    ) -> Self {
        Self::replicated_on(database_url, 1, edge_count, extra_env).await
    }

    /// `instances` processes of each service (`auth-0`, `auth-1`, …, `conversation-0`, …,
    /// `runtime-proxy-0`, …) and `edge_count` edges on a fresh Postgres database and the shared
    /// Redis, as a deployment behind load balancers runs them: edge `i` and conversation
    /// instance `i` talk to auth and conversation instance `i % instances`, and every component
    /// knows every runtime-proxy (each owns a share of the workspaces).
    pub async fn replicated(
        instances: usize,
        edge_count: usize,
        extra_env: &[(&str, &str)],
    ) -> Self {
        let database_url = fresh_postgres_database().await;
        Self::replicated_on(database_url, instances, edge_count, extra_env).await
    }

    async fn replicated_on(
        database_url: String,
        instances: usize,
        edge_count: usize,
        extra_env: &[(&str, &str)],
    ) -> Self {
        let service_token = format!("test-service-token-{}", uuid::Uuid::new_v4().simple());
        let dir = TempDir::new();
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        let ports = |_| (0..instances).map(|_| free_port()).collect::<Vec<u16>>();
        let [auth, conversation, runtime_proxy]: [Vec<u16>; 3] = [0, 1, 2].map(ports);
        let runtime_proxies = runtime_proxy
            .iter()
            .map(|port| url(*port))
            .collect::<Vec<_>>();
        let mut common = vec![
            ("DATABASE_URL", database_url.clone()),
            ("REDIS_URL", redis_url()),
            ("RUNTIME_PROXY_URL", runtime_proxies.join(",")),
            ("RUNTIME_COMMAND", format!("{CRAWBL} runtime-stub")),
            ("RUNTIME_STUB_TOKEN_DELAY_MS", "5".to_owned()),
            ("CRAWBL_SERVICE_TOKEN", service_token.clone()),
        ];
        common.extend(
            extra_env
                .iter()
                .map(|(key, value)| (*key, (*value).to_owned())),
        );
        // What a component of index `i` talks to.
        let peers = |i: usize| {
            let mut env = common.clone();
            env.push(("AUTH_URL", url(auth[i % instances])));
            env.push(("CONVERSATION_URL", url(conversation[i % instances])));
            env
        };
        let mut stack = Self {
            edges: Vec::new(),
            internals: Some(Internals {
                auth_url: url(auth[0]),
                conversation_url: url(conversation[0]),
                runtime_proxy_url: runtime_proxies[0].clone(),
                service_token,
                database_url: database_url.clone(),
            }),
            processes: Vec::new(),
            specs: Vec::new(),
            dir,
        };
        let name = |component: &str, i: usize| {
            if instances == 1 {
                component.to_owned()
            } else {
                format!("{component}-{i}")
            }
        };
        for i in 0..instances {
            for (component, listen, port) in [
                ("auth", "AUTH_LISTEN", auth[i]),
                ("runtime-proxy", "RUNTIME_PROXY_LISTEN", runtime_proxy[i]),
                ("conversation", "CONVERSATION_LISTEN", conversation[i]),
            ] {
                let mut env = peers(i);
                env.push((listen, format!("127.0.0.1:{port}")));
                stack.spawn(&name(component, i), &[component], &env);
            }
        }
        for index in 0..edge_count {
            let port = free_port();
            let mut env = peers(index);
            env.push(("EDGE_LISTEN", format!("127.0.0.1:{port}")));
            stack.spawn(&format!("edge-{index}"), &["edge"], &env);
            stack.edges.push(url(port));
        }
        for port in auth.iter().chain(&conversation).chain(&runtime_proxy) {
            wait_for_grpc_health(&url(*port)).await;
        }
        stack.wait_for_edges().await;
        stack
    }

    /// The all-in-one embedded default: `crawbl` with no subcommand, SQLite in a temp folder,
    /// the in-process bus, runtimes spawned by re-executing the binary.
    pub async fn embedded() -> Self {
        Self::embedded_with(Options::default()).await
    }

    /// The all-in-one process with `options`.
    pub async fn embedded_with(options: Options) -> Self {
        Self::embedded_in(TempDir::new(), options).await
    }

    /// The all-in-one process keeping its SQLite files in `dir` (to restart on the same data).
    pub async fn embedded_in(dir: TempDir, options: Options) -> Self {
        let port = free_port();
        let mut env = vec![
            (
                "CRAWBL_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            ("EDGE_LISTEN", format!("127.0.0.1:{port}")),
            ("AUTH_LISTEN", "127.0.0.1:0".to_owned()),
            ("CONVERSATION_LISTEN", "127.0.0.1:0".to_owned()),
            ("RUNTIME_PROXY_LISTEN", "127.0.0.1:0".to_owned()),
            (
                "RUNTIME_STUB_TOKEN_DELAY_MS",
                options.token_delay_ms.to_string(),
            ),
        ];
        if let Some(url) = options.database_url {
            env.push(("DATABASE_URL", url));
        }
        if let Some(url) = options.redis_url {
            env.push(("REDIS_URL", url));
        }
        env.extend(options.env);
        let mut stack = Self {
            edges: vec![format!("http://127.0.0.1:{port}")],
            internals: None,
            processes: Vec::new(),
            specs: Vec::new(),
            dir,
        };
        stack.spawn("crawbl", &[], &env);
        stack.wait_for_edges().await;
        stack
    }

    /// Kills every process at once (SIGKILL, no graceful shutdown) and hands back the folder
    /// with the data, to start again on it.
    pub async fn kill(mut self) -> TempDir {
        for (_, child) in &mut self.processes {
            let _ = child.kill().await;
        }
        self.dir
    }

    /// Kills edge node `index` of a stack of separate processes at once (SIGKILL: no graceful
    /// shutdown, its sockets just drop).
    pub async fn kill_edge(&mut self, index: usize) {
        self.kill_process(&format!("edge-{index}")).await;
    }

    /// Kills process `name` at once (SIGKILL: no graceful shutdown).
    pub async fn kill_process(&mut self, name: &str) {
        let (_, child) = self
            .processes
            .iter_mut()
            .find(|(process, _)| *process == name)
            .unwrap_or_else(|| panic!("no process {name}"));
        child.kill().await.expect("kill the process");
    }

    /// Stops process `name` as an orchestrator does (SIGTERM, then waits up to 30 s for it to
    /// exit), then starts it again with the same settings; returns once it answers its gRPC
    /// health check (`grpc_url`).
    pub async fn restart_process(&mut self, name: &str, grpc_url: &str) {
        let index = self
            .processes
            .iter()
            .position(|(process, _)| process == name)
            .unwrap_or_else(|| panic!("no process {name}"));
        let (_, mut child) = self.processes.remove(index);
        let pid = child.id().expect("a running process has a pid");
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap_or_else(|_| panic!("{name} still running 30 s after SIGTERM"))
            .expect("wait for the process");
        self.respawn(name);
        wait_for_grpc_health(grpc_url).await;
    }

    /// Starts process `name` again (after [`Stack::kill_process`]) with the same settings.
    pub fn respawn(&mut self, name: &str) {
        self.processes.retain(|(process, _)| process != name);
        let spec = self
            .specs
            .iter()
            .find(|spec| spec.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no process {name}"));
        let args: Vec<&str> = spec.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, String)> = spec
            .env
            .iter()
            .map(|(key, value)| (key.as_str(), value.clone()))
            .collect();
        self.start_process(name, &args, &env);
    }

    /// The pid of process `name` (`crawbl` for the embedded stack, `edge-0`, …).
    pub fn pid(&self, name: &str) -> u32 {
        self.processes
            .iter()
            .find(|(process, _)| process == name)
            .and_then(|(_, child)| child.id())
            .unwrap_or_else(|| panic!("no running process {name}"))
    }

    /// Where the stack's logs are, for failure messages.
    pub fn logs(&self) -> std::path::Display<'_> {
        self.dir.path().display()
    }

    /// Sends SIGTERM to every process (as an orchestrator stopping the stack does) and waits up
    /// to `bound` for each to exit; panics if one is still running then. Hands back how each
    /// exited and the folder with the data, to start again on it.
    pub async fn terminate(mut self, bound: Duration) -> (Vec<std::process::ExitStatus>, TempDir) {
        for (_, child) in &self.processes {
            let pid = child.id().expect("a running process has a pid");
            let sent = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await
                .expect("run kill");
            assert!(sent.success(), "kill -TERM {pid} failed");
        }
        let mut statuses = Vec::new();
        for (_, child) in &mut self.processes {
            let status = tokio::time::timeout(bound, child.wait())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "still running {bound:?} after SIGTERM; logs in {}",
                        self.dir.path().display()
                    )
                })
                .expect("wait for the process");
            statuses.push(status);
        }
        (statuses, self.dir)
    }

    /// The folder with the stack's data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn edge(&self, index: usize) -> &str {
        &self.edges[index]
    }

    fn spawn(&mut self, name: &str, args: &[&str], env: &[(&str, String)]) {
        self.specs.push(ProcessSpec {
            name: name.to_owned(),
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            env: env
                .iter()
                .map(|(key, value)| ((*key).to_owned(), value.clone()))
                .collect(),
        });
        self.start_process(name, args, env);
    }

    fn start_process(&mut self, name: &str, args: &[&str], env: &[(&str, String)]) {
        // Appended to, so a restarted process keeps its earlier log.
        let log_path = self.dir.path().join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open log file");
        let mut command = Command::new(CRAWBL);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            // Tests send and fail handshakes faster than people do; the ones about limits
            // set them again (`Options::env` comes after these).
            .env("SEND_LIMIT_PER_SECOND", "0")
            .env("FAILED_HANDSHAKE_LIMIT_PER_SECOND", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        self.processes.push((name.to_owned(), child));
    }

    async fn wait_for_edges(&mut self) {
        let client = crawbl_loadtest::rest::http_client();
        for edge in self.edges.clone() {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(response) = client.get(format!("{edge}/healthz")).send().await
                    && response.status().is_success()
                {
                    break;
                }
                self.assert_all_running();
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "edge {edge} not healthy within 30s; logs in {}",
                    self.dir.path().display()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    fn assert_all_running(&mut self) {
        for (_, child) in &mut self.processes {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "a stack process exited early ({status}); logs in {}",
                    self.dir.path().display()
                );
            }
        }
    }
}

/// Waits until the gRPC server at `url` reports SERVING on `grpc.health.v1`.
pub async fn wait_for_grpc_health(url: &str) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(url.to_owned())
            .expect("valid url")
            .connect()
            .await
            && let Ok(response) = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
            && response.into_inner().status == 1
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} not serving within 30s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An external CLI a test drives: `$VARIABLE`, else `name` on `PATH` or in `~/.cargo/bin`.
/// `None` (the test should skip, saying so) when it is missing, unless `required_by` is set in
/// the environment, as `scripts/test.sh` does after installing it: then missing is a failure.
pub fn external_tool(
    variable: &str,
    name: &str,
    required_by: &str,
    install: &str,
) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Some(PathBuf::from(path));
    }
    let home_bin = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin"));
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(home_bin)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os(required_by).is_none(),
            "no {name} found (set {variable}, or `{install}`)"
        );
        eprintln!("skipping: no {name} on PATH (scripts/test.sh installs it)");
    }
    found
}
