//! Settings of runtime-proxy, read from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use crawbl_infra::config::{optional, parse_or, required};

/// The binary the process driver spawns by default, looked up next to the running executable.
pub const DEFAULT_RUNTIME_BINARY: &str = "crawbl-runtime-stub";

/// Where a workspace's runtime comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    /// One child process per workspace. The program must behave like runtime-stub: listen where
    /// `RUNTIME_STUB_LISTEN` says, print `CRAWBL_RUNTIME_LISTENING <ip:port>` on stdout, and
    /// serve `grpc.health.v1` and `crawbl.runtime.v1.AgentRuntime`.
    Process { program: PathBuf, args: Vec<String> },
    /// Every workspace uses the runtime at this fixed address (`http://host:port`), as in compose.
    Static { address: String },
    /// One pod and Service per workspace in a Kubernetes namespace (`src/kubernetes.rs`).
    Kubernetes(Box<KubernetesSettings>),
}

/// How runtime-proxy reaches a runtime pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    /// The pod's IP (`status.podIP`): no DNS or kube-proxy hop; the default.
    Pod,
    /// The workspace's Service (`<name>.<namespace>.svc`).
    Service,
}

/// The template of the `kubernetes` driver's runtime pods, from `RUNTIME_K8S_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// `RUNTIME_K8S_API_URL`: an API server reached without credentials (`kubectl proxy`, the
    /// tests' stand-in); unset: in-cluster service account, then kubeconfig.
    pub api_url: Option<String>,
    /// `RUNTIME_K8S_NAMESPACE`, default `default`: where pods and Services go (the proxy's
    /// Role must be there).
    pub namespace: String,
    /// `RUNTIME_K8S_IMAGE` (required): the runtime image.
    pub image: String,
    /// `RUNTIME_K8S_ARGS`, default `runtime-stub`: the container's arguments (whitespace-separated).
    pub args: Vec<String>,
    /// `RUNTIME_K8S_PORT`, default 50060: the runtime's gRPC port in the pod.
    pub port: u16,
    /// `RUNTIME_K8S_CPU`, `RUNTIME_K8S_MEMORY`: requests; `…_LIMIT`: limits (quantities).
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
    /// `RUNTIME_K8S_NODE_SELECTOR`: `key=value,key=value`.
    pub node_selector: std::collections::BTreeMap<String, String>,
    /// `RUNTIME_K8S_SECRET`: a Secret whose keys become the runtime's environment (model
    /// provider keys); never the platform's own Secret.
    pub provider_secret: Option<String>,
    /// `RUNTIME_K8S_RUN_AS_USER`, default 10001 (the image's user): never 0.
    pub run_as_user: i64,
    /// `RUNTIME_K8S_CONNECT`: `pod` (default) or `service`.
    pub connect: Connect,
}

impl KubernetesSettings {
    pub const DEFAULT_PORT: u16 = 50060;
    pub const DEFAULT_USER: i64 = 10001;

    /// The defaults with `image` in `namespace`.
    pub fn new(image: &str, namespace: &str) -> Self {
        Self {
            api_url: None,
            namespace: namespace.to_owned(),
            image: image.to_owned(),
            args: vec!["runtime-stub".to_owned()],
            port: Self::DEFAULT_PORT,
            cpu: None,
            memory: None,
            cpu_limit: None,
            memory_limit: None,
            node_selector: std::collections::BTreeMap::new(),
            provider_secret: None,
            run_as_user: Self::DEFAULT_USER,
            connect: Connect::Pod,
        }
    }

    fn from_env() -> anyhow::Result<Self> {
        let namespace = optional("RUNTIME_K8S_NAMESPACE").unwrap_or_else(|| "default".to_owned());
        let mut settings = Self::new(&required("RUNTIME_K8S_IMAGE")?, &namespace);
        settings.api_url = optional("RUNTIME_K8S_API_URL");
        if let Some(args) = optional("RUNTIME_K8S_ARGS") {
            settings.args = args.split_whitespace().map(str::to_owned).collect();
        }
        settings.port = parse_or("RUNTIME_K8S_PORT", Self::DEFAULT_PORT)?;
        settings.cpu = optional("RUNTIME_K8S_CPU");
        settings.memory = optional("RUNTIME_K8S_MEMORY");
        settings.cpu_limit = optional("RUNTIME_K8S_CPU_LIMIT");
        settings.memory_limit = optional("RUNTIME_K8S_MEMORY_LIMIT");
        if let Some(selector) = optional("RUNTIME_K8S_NODE_SELECTOR") {
            settings.node_selector =
                parse_node_selector(&selector).context("RUNTIME_K8S_NODE_SELECTOR is not valid")?;
        }
        settings.provider_secret = optional("RUNTIME_K8S_SECRET");
        settings.run_as_user = parse_or("RUNTIME_K8S_RUN_AS_USER", Self::DEFAULT_USER)?;
        if settings.run_as_user <= 0 {
            bail!("RUNTIME_K8S_RUN_AS_USER must be a non-root uid (> 0)");
        }
        settings.connect = match optional("RUNTIME_K8S_CONNECT").as_deref().map(str::trim) {
            None | Some("pod") => Connect::Pod,
            Some("service") => Connect::Service,
            Some(other) => {
                bail!("RUNTIME_K8S_CONNECT={other:?} is not valid: expected pod or service")
            }
        };
        Ok(settings)
    }
}

/// `key=value,key=value` (spaces around items ignored).
fn parse_node_selector(text: &str) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (key, value) = item
                .split_once('=')
                .with_context(|| format!("{item:?} is not key=value"))?;
            if key.trim().is_empty() {
                bail!("{item:?} has an empty key");
            }
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

impl Driver {
    /// The process driver running `crawbl-runtime-stub` from the directory of the current
    /// executable (where cargo and installers put sibling binaries).
    pub fn sibling_runtime_stub() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the current executable")?;
        let dir = exe
            .parent()
            .with_context(|| format!("{} has no parent directory", exe.display()))?;
        let program = dir.join(format!(
            "{DEFAULT_RUNTIME_BINARY}{}",
            std::env::consts::EXE_SUFFIX
        ));
        Ok(Self::Process {
            program,
            args: Vec::new(),
        })
    }

    /// The driver described by `RUNTIME_DRIVER`, `RUNTIME_STATIC_ADDRESS` and `RUNTIME_COMMAND`.
    fn from_env() -> anyhow::Result<Self> {
        let kind = optional("RUNTIME_DRIVER").unwrap_or_else(|| "process".to_owned());
        match kind.trim() {
            "process" => match optional("RUNTIME_COMMAND") {
                Some(command) => parse_command(&command).context("RUNTIME_COMMAND is not valid"),
                None => Self::sibling_runtime_stub(),
            },
            "static" => Ok(Self::Static {
                address: required("RUNTIME_STATIC_ADDRESS")?,
            }),
            "kubernetes" => Ok(Self::Kubernetes(Box::new(KubernetesSettings::from_env()?))),
            other => bail!(
                "RUNTIME_DRIVER={other:?} is not valid: expected process, static or kubernetes"
            ),
        }
    }
}

/// A whitespace-separated command line (no quoting): the program, then its arguments.
fn parse_command(command: &str) -> anyhow::Result<Driver> {
    let mut words = command.split_whitespace();
    let program = words.next().context("the command is empty")?;
    Ok(Driver::Process {
        program: PathBuf::from(program),
        args: words.map(str::to_owned).collect(),
    })
}

/// Everything runtime-proxy needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// `RUNTIME_PROXY_LISTEN`, default `127.0.0.1:50053`.
    pub listen: SocketAddr,
    /// `RUNTIME_DRIVER` (`process`, the default, or `static`) and its settings.
    pub driver: Driver,
    /// `RUNTIME_READY_TIMEOUT_MS`, default 15000: how long a call waits for its workspace's
    /// runtime before `RUNTIME_NOT_READY` (provisioning goes on; a later call finds it ready).
    pub ready_timeout: Duration,
    /// `RUNTIME_PROVISION_TIMEOUT_MS`, default 60000: how long one provisioning attempt may take
    /// before the runtime is `failed` (and its process killed).
    pub provision_timeout: Duration,
    /// `RUNTIME_TURN_TIMEOUT_MS`, default 120000: the deadline of one forwarded turn.
    pub turn_timeout: Duration,
    /// `RUNTIME_IDLE_TIMEOUT_MS`, default 600000 (10 minutes): a ready runtime without turns for
    /// that long is stopped. `0` (here `None`) keeps runtimes until shutdown.
    pub idle_timeout: Option<Duration>,
    /// `REDIS_URL`: where `agent.status` events go when runtime-proxy runs alone; unset means
    /// the in-process bus. The launcher passes its own bus to [`crate::run`] instead.
    pub redis_url: Option<String>,
}

impl Config {
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50053);
    pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_millis(15_000);
    pub const DEFAULT_PROVISION_TIMEOUT: Duration = Duration::from_millis(60_000);
    pub const DEFAULT_TURN_TIMEOUT: Duration = Duration::from_millis(120_000);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_millis(600_000);

    /// The defaults, with `driver`.
    pub fn with_driver(driver: Driver) -> Self {
        Self {
            listen: Self::DEFAULT_LISTEN,
            driver,
            ready_timeout: Self::DEFAULT_READY_TIMEOUT,
            provision_timeout: Self::DEFAULT_PROVISION_TIMEOUT,
            turn_timeout: Self::DEFAULT_TURN_TIMEOUT,
            idle_timeout: Some(Self::DEFAULT_IDLE_TIMEOUT),
            redis_url: None,
        }
    }

    pub fn from_env() -> anyhow::Result<Self> {
        let idle_ms = parse_or(
            "RUNTIME_IDLE_TIMEOUT_MS",
            as_millis(Self::DEFAULT_IDLE_TIMEOUT),
        )?;
        Ok(Self {
            listen: parse_or("RUNTIME_PROXY_LISTEN", Self::DEFAULT_LISTEN)?,
            driver: Driver::from_env()?,
            ready_timeout: millis("RUNTIME_READY_TIMEOUT_MS", Self::DEFAULT_READY_TIMEOUT)?,
            provision_timeout: millis(
                "RUNTIME_PROVISION_TIMEOUT_MS",
                Self::DEFAULT_PROVISION_TIMEOUT,
            )?,
            turn_timeout: millis("RUNTIME_TURN_TIMEOUT_MS", Self::DEFAULT_TURN_TIMEOUT)?,
            idle_timeout: (idle_ms > 0).then(|| Duration::from_millis(idle_ms)),
            redis_url: optional("REDIS_URL"),
        })
    }
}

fn as_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn millis(name: &str, default: Duration) -> anyhow::Result<Duration> {
    let value = parse_or(name, as_millis(default))?;
    if value == 0 {
        bail!("{name} must be greater than 0");
    }
    Ok(Duration::from_millis(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_split_on_whitespace_into_program_and_arguments() {
        let driver = parse_command("  /usr/bin/crawbl  runtime-stub\t--quiet ").expect("valid");
        assert_eq!(
            driver,
            Driver::Process {
                program: PathBuf::from("/usr/bin/crawbl"),
                args: vec!["runtime-stub".to_owned(), "--quiet".to_owned()],
            }
        );
    }

    #[test]
    fn a_node_selector_is_key_value_pairs_separated_by_commas() {
        let selector = parse_node_selector(" pool=runtimes , zone = a ,").expect("valid");
        assert_eq!(selector.get("pool").map(String::as_str), Some("runtimes"));
        assert_eq!(selector.get("zone").map(String::as_str), Some("a"));
        assert!(parse_node_selector("pool").is_err());
        assert!(parse_node_selector("=x").is_err());
    }

    #[test]
    fn an_empty_command_is_refused() {
        assert!(parse_command(" \t").is_err());
    }

    #[test]
    fn the_default_runtime_is_the_sibling_runtime_stub_binary() {
        let Ok(Driver::Process { program, args }) = Driver::sibling_runtime_stub() else {
            panic!("expected the process driver");
        };
        assert!(args.is_empty());
        let exe = std::env::current_exe().expect("current exe");
        assert_eq!(program.parent(), exe.parent());
        assert!(
            program
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(DEFAULT_RUNTIME_BINARY))
        );
    }
}
