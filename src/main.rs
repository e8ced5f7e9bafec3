//! `crawbl`: the whole stack in one process (the embedded default), or one component.
//!
//! ```text
//! crawbl                  # every component, SQLite + in-process events unless configured
//! crawbl auth             # one component alone, configured by its env vars
//! crawbl conversation | runtime-proxy | runtime-stub | edge
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use crawbl_infra::bus::EventBus;
use crawbl_infra::config;
use crawbl_infra::net::bind;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// jemalloc, built to give freed memory back to the system within about a second, with small
/// thread caches (its options are in `.cargo/config.toml`): with the system allocator a process
/// kept what sockets and turns had held long after they were gone (BENCHMARKS.md, "Memory per
/// idle socket").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const USAGE: &str = "usage: crawbl [auth | conversation | runtime-proxy | runtime-stub | edge]
  with no argument, runs every component in this process (see README.md for settings)";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let component = std::env::args().nth(1);
    match component.as_deref() {
        None => run_all().await,
        Some("auth") => crawbl_auth::main_from_env().await,
        Some("conversation") => crawbl_conversation::main_from_env().await,
        Some("runtime-proxy") => crawbl_runtime_proxy::main_from_env().await,
        Some("runtime-stub") => crawbl_runtime_stub::main_from_env().await,
        Some("edge") => crawbl_edge::main_from_env().await,
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => anyhow::bail!("unknown component {other:?}\n{USAGE}"),
    }
}

/// Every component in one process, each service on its own loopback gRPC port.
async fn run_all() -> anyhow::Result<()> {
    crawbl_infra::telemetry::with_telemetry("crawbl", run_all_components()).await
}

async fn run_all_components() -> anyhow::Result<()> {
    let data_dir =
        PathBuf::from(config::optional("CRAWBL_DATA_DIR").unwrap_or_else(|| "data".into()));
    let shared_database = config::optional("DATABASE_URL");
    let database_url = |service: &str| {
        shared_database.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                data_dir.join(format!("{service}.db")).display()
            )
        })
    };
    let bus = EventBus::from_url(
        config::optional("REDIS_URL").as_deref(),
        crawbl_infra::bus::Channels::from_env()?,
    )
    .await?;
    // Every component in this process shares one service credential: CRAWBL_SERVICE_TOKEN, or a
    // random one (nothing outside this process needs to call the internal APIs).
    crawbl_infra::grpc::check_service_token_env()?;
    if config::optional(crawbl_infra::grpc::SERVICE_TOKEN_VAR).is_none() {
        crawbl_infra::grpc::install_service_token(crawbl_infra::grpc::ServiceToken::generate())?;
    }
    // Auth announces revocations and membership changes to the edge on this.
    let auth_changes = crawbl_auth::notifier(config::optional("REDIS_URL").as_deref()).await?;
    let shutdown = crawbl_infra::shutdown::on_signal();

    let mut auth = crawbl_auth::Config::from_env()?;
    auth.database_url = database_url("auth");
    let auth_listener = bind(&auth.listen, "AUTH_LISTEN").await?;

    let mut runtime_proxy = crawbl_runtime_proxy::Config::from_env()?;
    if config::optional("RUNTIME_DRIVER").is_none() && config::optional("RUNTIME_COMMAND").is_none()
    {
        // `cargo run` builds only this binary, so runtimes are this binary's runtime-stub.
        runtime_proxy.driver = crawbl_runtime_proxy::Driver::Process {
            program: std::env::current_exe().context("locating the crawbl executable")?,
            args: vec!["runtime-stub".to_owned()],
        };
    }
    let runtime_proxy_listener = bind(runtime_proxy.listen, "RUNTIME_PROXY_LISTEN").await?;

    let mut conversation = crawbl_conversation::Config::from_env()?;
    conversation.database_url = database_url("conversation");
    conversation.runtime_proxy_url = url_of(&runtime_proxy_listener)?;
    // Its push worker asks auth which devices a reply goes to.
    conversation.auth_url = url_of(&auth_listener)?;
    let conversation_listener = bind(conversation.listen, "CONVERSATION_LISTEN").await?;

    let mut edge = crawbl_edge::Config::from_env()?;
    edge.auth_url = url_of(&auth_listener)?;
    edge.conversation_url = url_of(&conversation_listener)?;
    edge.runtime_proxy_url = url_of(&runtime_proxy_listener)?;
    let edge_listener = bind(edge.listen, "EDGE_LISTEN").await?;
    let edge_address = edge_listener.local_addr()?;

    let mut components = JoinSet::new();
    components.spawn(named(
        "auth",
        crawbl_auth::run(auth, auth_listener, auth_changes.clone(), shutdown.clone()),
    ));
    components.spawn(named(
        "runtime-proxy",
        crawbl_runtime_proxy::run(
            runtime_proxy,
            runtime_proxy_listener,
            bus.clone(),
            shutdown.clone(),
        ),
    ));
    components.spawn(named(
        "conversation",
        crawbl_conversation::run(
            conversation,
            conversation_listener,
            bus.clone(),
            shutdown.clone(),
        ),
    ));
    components.spawn(named(
        "edge",
        crawbl_edge::run(
            edge,
            edge_listener,
            bus.clone(),
            auth_changes,
            shutdown.clone(),
        ),
    ));
    print_welcome(edge_address, &bus, shared_database.is_some(), &data_dir);

    wait_for_components(components, shutdown).await
}

/// Runs until every component stops; the first to fail stops the others.
async fn wait_for_components(
    mut components: JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut first_error = None;
    while let Some(result) = components.join_next().await {
        let outcome = result
            .context("a component panicked")
            .and_then(|inner| inner);
        if let Err(error) = outcome {
            tracing::error!(
                error = format!("{error:#}"),
                "a component failed; stopping the stack"
            );
            first_error.get_or_insert(error);
            shutdown.cancel();
        } else if !shutdown.is_cancelled() {
            tracing::error!("a component stopped unexpectedly; stopping the stack");
            shutdown.cancel();
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn named(
    name: &'static str,
    component: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    component.await.with_context(|| format!("{name} failed"))
}

fn url_of(listener: &TcpListener) -> anyhow::Result<String> {
    let address: SocketAddr = listener.local_addr()?;
    Ok(format!("http://{address}"))
}

fn print_welcome(edge: SocketAddr, bus: &EventBus, postgres: bool, data_dir: &std::path::Path) {
    let storage = if postgres {
        "DATABASE_URL".to_owned()
    } else {
        format!("SQLite files in {}", data_dir.display())
    };
    println!(
        "\nCrawbl is running: http://{edge}  web console: http://{edge}/console  \
         (data: {storage}; events: {})\n\n\
         Sign up and get a token:\n  \
         curl -s -X POST http://{edge}/v1/auth/sign-up -H 'content-type: application/json' \\\n    \
         -d '{{\"email\":\"me@example.com\",\"password\":\"correct horse battery\",\"displayName\":\"Me\"}}'\n\n\
         Socket.IO: http://{edge} namespace /v1 with header X-Token: <accessToken>\n\
         Stop with Ctrl-C.\n",
        bus.kind()
    );
}
