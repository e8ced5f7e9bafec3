//! runtime-proxy against real gRPC servers on 127.0.0.1:0: in-process runtime-stub servers, real
//! child processes for the process driver (fake runtimes in shell, and real runtime-stubs: this
//! test binary re-executed as one, see `runtime_stub_process`), real gRPC clients and an
//! in-process event bus. No mocks. The behaviour tests with real runtime-stubs run against both
//! the process driver and the kubernetes driver; the latter talks to a stand-in API server
//! (`kube_api`) that runs a real runtime-stub process per pod.

mod kube_api;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crawbl_infra::bus::EventBus;
use crawbl_infra::grpc::stable_code;
use crawbl_proto::conversation::v1::AgentStatus;
use crawbl_proto::events::v1::event::Kind;
use crawbl_proto::runtime::v1::{TurnEvent, TurnRequest, turn_event::Event};
use crawbl_proto::runtimeproxy::v1::runtime_proxy_client::RuntimeProxyClient;
use crawbl_proto::runtimeproxy::v1::{EnsureRuntimeRequest, GetRuntimeRequest, RuntimeState};
use crawbl_runtime_proxy::{Config, Driver, KubernetesSettings, codes};
use crawbl_runtime_stub::{Pace, Provider, StubRuntime, scripted_reply};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::{Code, Status, Streaming};

type Channel = crawbl_infra::grpc::Channel;

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Harness

/// A runtime-stub server running in this process.
struct Stub {
    address: String,
    port: u16,
    runtime: StubRuntime,
    _server: DropGuard,
}

async fn start_stub(token_delay: Duration) -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
    let port = listener.local_addr().expect("stub addr").port();
    let runtime = StubRuntime::new(Provider::Scripted(Pace::per_token(token_delay)));
    let shutdown = CancellationToken::new();
    tokio::spawn(crawbl_infra::grpc::serve_without_credential(
        listener,
        runtime.clone().into_service(),
        shutdown.clone(),
    ));
    Stub {
        address: format!("http://127.0.0.1:{port}"),
        port,
        runtime,
        _server: shutdown.drop_guard(),
    }
}

/// runtime-proxy running in this process, with a client to it and the bus it publishes to.
struct Proxy {
    address: String,
    client: RuntimeProxyClient<Channel>,
    bus: EventBus,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

impl Proxy {
    /// Cancels the shutdown token and waits for `run` to return.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.server)
            .await
            .expect("run returns after shutdown")
            .expect("run task")
            .expect("run ok");
    }

    /// Every event published from now on.
    fn events(&self) -> BoxStream<'static, crawbl_proto::events::v1::Event> {
        self.bus.subscribe()
    }
}

/// A proxy with `driver`, the provisioning wait and bound both `ready_timeout`, and no idle
/// timeout; `configure` adjusts the rest.
async fn start_proxy_with(
    driver: Driver,
    ready_timeout: Duration,
    turn_timeout: Duration,
    configure: impl FnOnce(&mut Config),
) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let address = format!("http://{}", listener.local_addr().expect("proxy addr"));
    let mut config = Config {
        ready_timeout,
        provision_timeout: ready_timeout,
        turn_timeout,
        idle_timeout: None,
        ..Config::with_driver(driver)
    };
    configure(&mut config);
    let bus = EventBus::in_process();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(crawbl_runtime_proxy::run(
        config,
        listener,
        bus.clone(),
        shutdown.clone(),
    ));
    let client = RuntimeProxyClient::new(crawbl_infra::grpc::channel(&address).expect("channel"));
    Proxy {
        address,
        client,
        bus,
        shutdown,
        server,
    }
}

async fn start_proxy(driver: Driver, ready_timeout: Duration, turn_timeout: Duration) -> Proxy {
    start_proxy_with(driver, ready_timeout, turn_timeout, |_| {}).await
}

async fn static_proxy(stub: &Stub, turn_timeout: Duration) -> Proxy {
    let driver = Driver::Static {
        address: stub.address.clone(),
    };
    start_proxy(driver, Duration::from_secs(5), turn_timeout).await
}

fn turn(workspace_id: &str, slug: &str, text: &str) -> TurnRequest {
    TurnRequest {
        workspace_id: workspace_id.into(),
        conversation_id: "conv-1".into(),
        agent_id: "agent-1".into(),
        agent_slug: slug.into(),
        message_id: "msg-1".into(),
        text: text.into(),
        ..TurnRequest::default()
    }
}

async fn ensure(
    client: &mut RuntimeProxyClient<Channel>,
    workspace_id: &str,
) -> Result<RuntimeState, Status> {
    let info = client
        .ensure_runtime(EnsureRuntimeRequest {
            workspace_id: workspace_id.into(),
        })
        .await?
        .into_inner();
    assert_eq!(info.workspace_id, workspace_id);
    Ok(info.state())
}

async fn state(client: &mut RuntimeProxyClient<Channel>, workspace_id: &str) -> RuntimeState {
    client
        .get_runtime(GetRuntimeRequest {
            workspace_id: workspace_id.into(),
        })
        .await
        .expect("get runtime")
        .into_inner()
        .state()
}

/// The next `agent.status` event as `(workspace_id, agent_id, status)`, skipping others.
async fn next_status(
    events: &mut BoxStream<'static, crawbl_proto::events::v1::Event>,
) -> (String, String, AgentStatus) {
    loop {
        let event = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("an agent status in time")
            .expect("the bus stays open");
        if let Some(Kind::AgentStatus(changed)) = event.kind {
            let status = changed.status();
            return (event.workspace_id, changed.agent_id, status);
        }
    }
}

/// Asserts that no event arrives within `window`.
async fn assert_no_event(
    events: &mut BoxStream<'static, crawbl_proto::events::v1::Event>,
    window: Duration,
) {
    if let Ok(event) = tokio::time::timeout(window, events.next()).await {
        panic!("unexpected event {event:?}");
    }
}

fn assert_error_code(events: &[Event], code: &str) {
    assert!(
        matches!(events.last(), Some(Event::Error(error)) if error.code == code),
        "expected a {code} error last, got {:?}",
        events.last()
    );
    assert!(!events.iter().any(|event| matches!(event, Event::Done(_))));
}

async fn next_event(stream: &mut Streaming<TurnEvent>) -> Option<Event> {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("next event in time")
        .expect("the stream itself ends OK")
        .map(|event| event.event.expect("event set"))
}

async fn collect(mut stream: Streaming<TurnEvent>) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(event) = next_event(&mut stream).await {
        events.push(event);
    }
    events
}

fn concatenated_deltas(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Delta(delta) => Some(delta.text.as_str()),
            _ => None,
        })
        .collect()
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < WAIT, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_not_ready(status: &Status) {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(stable_code(status), Some("RUNTIME_NOT_READY"), "{status:?}");
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "crawbl-runtime-proxy-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fake runtime process for the process driver. It records every start (the workspace id it
/// was given) in `<dir>/starts` and its pid in `<dir>/pid-<workspace>`, then, depending on the
/// mode: `ready` announces the in-process stub's port (after a pause, to widen the window in which
/// concurrent callers could race) and stays alive; `slow` does the same 1.5 s later; `silent`
/// never announces anything; `exit` exits at once with status 3. It refuses to start (status 5)
/// if it was handed a platform secret.
const FAKE_RUNTIME: &str = r#"
dir="$1"; port="$2"; mode="$3"
echo "$RUNTIME_WORKSPACE_ID" >> "$dir/starts"
echo $$ > "$dir/pid-$RUNTIME_WORKSPACE_ID"
case "$mode" in
  silent) exec sleep 600 ;;
  exit) exit 3 ;;
esac
[ "$RUNTIME_STUB_LISTEN" = "127.0.0.1:0" ] || exit 4
[ -z "$CRAWBL_SERVICE_TOKEN$DATABASE_URL$REDIS_URL" ] || exit 5
[ "$mode" = slow ] && sleep 1.5
sleep 0.3
echo "some banner line"
echo "CRAWBL_RUNTIME_LISTENING 127.0.0.1:$port"
exec sleep 600
"#;

fn fake_runtime(dir: &Path, port: u16, mode: &str) -> Driver {
    let script = dir.join("fake-runtime.sh");
    std::fs::write(&script, FAKE_RUNTIME).expect("write script");
    Driver::Process {
        program: PathBuf::from("/bin/sh"),
        args: vec![
            script.display().to_string(),
            dir.display().to_string(),
            port.to_string(),
            mode.to_owned(),
        ],
    }
}

fn starts(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("starts"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn pid(dir: &Path, workspace_id: &str) -> u32 {
    std::fs::read_to_string(dir.join(format!("pid-{workspace_id}")))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

/// Gone, or a zombie nobody has reaped yet (it no longer runs either way).
fn process_is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

// ---------------------------------------------------------------------------------------------
// Static driver and turns

#[tokio::test]
async fn a_forwarded_turn_streams_the_scripted_reply_and_ends_with_done() {
    let stub = start_stub(Duration::from_millis(1)).await;
    let mut proxy = static_proxy(&stub, Duration::from_secs(30)).await;

    let stream = proxy
        .client
        .forward_turn(turn("ws-a", "helper", "how are you  today?"))
        .await
        .expect("forward turn")
        .into_inner();
    let events = collect(stream).await;

    assert_eq!(
        concatenated_deltas(&events),
        scripted_reply("helper", "how are you  today?")
    );
    assert!(matches!(events.last(), Some(Event::Done(_))), "{events:?}");
    assert!(events.iter().any(|event| matches!(event, Event::Usage(_))));
    proxy.stop().await;
}

#[tokio::test]
async fn get_runtime_reports_stopped_before_and_ready_after_ensure_without_starting_anything() {
    let stub = start_stub(Duration::from_millis(1)).await;
    let mut proxy = static_proxy(&stub, Duration::from_secs(30)).await;

    assert_eq!(
        state(&mut proxy.client, "ws-b").await,
        RuntimeState::Stopped
    );
    assert_eq!(
        state(&mut proxy.client, "ws-b").await,
        RuntimeState::Stopped
    );
    assert_eq!(
        ensure(&mut proxy.client, "ws-b").await.expect("ensure"),
        RuntimeState::Ready
    );
    assert_eq!(state(&mut proxy.client, "ws-b").await, RuntimeState::Ready);
    assert_eq!(
        state(&mut proxy.client, "ws-other").await,
        RuntimeState::Stopped
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_static_runtime_that_does_not_answer_is_not_ready_within_the_bound() {
    let closed_port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let driver = Driver::Static {
        address: format!("http://127.0.0.1:{closed_port}"),
    };
    let mut proxy = start_proxy(driver, Duration::from_millis(300), Duration::from_secs(30)).await;

    let started = Instant::now();
    let status = ensure(&mut proxy.client, "ws-c")
        .await
        .expect_err("not ready");
    assert_not_ready(&status);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the ready timeout"
    );
    assert_eq!(state(&mut proxy.client, "ws-c").await, RuntimeState::Failed);

    let status = proxy
        .client
        .forward_turn(turn("ws-c", "helper", "hi"))
        .await
        .expect_err("a turn cannot start either");
    assert_not_ready(&status);
    proxy.stop().await;
}

#[tokio::test]
async fn a_caller_that_goes_away_cancels_the_turn_on_the_runtime() {
    // 200 tokens at 50 ms: ten seconds of streaming if cancellation did not reach the runtime.
    let stub = start_stub(Duration::from_millis(50)).await;
    let mut proxy = static_proxy(&stub, Duration::from_secs(60)).await;

    let mut stream = proxy
        .client
        .forward_turn(turn("ws-d", "helper", &"word ".repeat(200)))
        .await
        .expect("forward turn")
        .into_inner();
    assert!(matches!(
        next_event(&mut stream).await,
        Some(Event::Delta(_))
    ));
    assert_eq!(stub.runtime.active_turns(), 1);

    drop(stream);
    let started = Instant::now();
    eventually("the runtime's turn has stopped", || {
        stub.runtime.active_turns() == 0
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    proxy.stop().await;
}

#[tokio::test]
async fn a_turn_past_its_deadline_ends_with_an_error_event_and_stops_on_the_runtime() {
    let stub = start_stub(Duration::from_millis(100)).await;
    let mut proxy = static_proxy(&stub, Duration::from_millis(400)).await;

    let stream = proxy
        .client
        .forward_turn(turn("ws-e", "helper", &"word ".repeat(100)))
        .await
        .expect("forward turn")
        .into_inner();
    let events = collect(stream).await;

    assert!(events.iter().any(|event| matches!(event, Event::Delta(_))));
    assert_error_code(&events, codes::DEADLINE_EXCEEDED);
    assert!(
        matches!(events.last(), Some(Event::Error(error)) if error.message.contains("deadline"))
    );
    eventually("the runtime's turn has stopped", || {
        stub.runtime.active_turns() == 0
    })
    .await;
    proxy.stop().await;
}

/// A TCP relay between the proxy and a runtime, to cut the connection as if the runtime died.
struct Relay {
    address: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    async fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let address = format!("http://{}", listener.local_addr().expect("relay addr"));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let connections = Arc::clone(&tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target_port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections.lock().expect("relay tasks").push(relay);
            }
        });
        Self {
            address,
            tasks,
            accept,
        }
    }

    fn cut(&self) {
        self.accept.abort();
        for task in self.tasks.lock().expect("relay tasks").drain(..) {
            task.abort();
        }
    }
}

#[tokio::test]
async fn a_static_runtime_cut_off_mid_turn_ends_the_stream_with_runtime_died_and_goes_offline() {
    let stub = start_stub(Duration::from_millis(20)).await;
    let relay = Relay::start(stub.port).await;
    let driver = Driver::Static {
        address: relay.address.clone(),
    };
    let mut proxy = start_proxy(driver, Duration::from_secs(5), Duration::from_secs(60)).await;
    let mut bus = proxy.events();

    let mut stream = proxy
        .client
        .forward_turn(turn("ws-f", "helper", &"word ".repeat(200)))
        .await
        .expect("forward turn")
        .into_inner();
    assert!(matches!(
        next_event(&mut stream).await,
        Some(Event::Delta(_))
    ));

    relay.cut();
    let rest = collect(stream).await;
    assert_error_code(&rest, codes::RUNTIME_DIED);
    assert_eq!(
        next_status(&mut bus).await,
        ("ws-f".into(), "agent-1".into(), AgentStatus::Offline)
    );
    assert_ne!(state(&mut proxy.client, "ws-f").await, RuntimeState::Ready);
    proxy.stop().await;
}

#[tokio::test]
async fn health_and_reflection_answer_on_the_proxy_port() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let stub = start_stub(Duration::from_millis(1)).await;
    let proxy = static_proxy(&stub, Duration::from_secs(30)).await;
    let channel = crawbl_infra::grpc::channel(&proxy.address).expect("channel");

    let mut health = HealthClient::new(channel.clone());
    for service in ["", "crawbl.runtimeproxy.v1.RuntimeProxy"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            response.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("reflection stream")
        .expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!(
            "expected a service list, got {:?}",
            response.message_response
        );
    };
    let names: Vec<&str> = list
        .service
        .iter()
        .map(|service| service.name.as_str())
        .collect();
    assert!(
        names.contains(&"crawbl.runtimeproxy.v1.RuntimeProxy"),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Process driver

#[tokio::test]
async fn twenty_concurrent_ensures_for_one_workspace_start_one_process() {
    let dir = TempDir::new();
    let stub = start_stub(Duration::from_millis(1)).await;
    let proxy = start_proxy(
        fake_runtime(&dir.0, stub.port, "ready"),
        Duration::from_secs(10),
        Duration::from_secs(30),
    )
    .await;

    let calls = (0..20).map(|_| {
        let mut client = proxy.client.clone();
        tokio::spawn(async move { ensure(&mut client, "ws-many").await })
    });
    for call in futures::future::join_all(calls).await {
        assert_eq!(call.expect("task").expect("ensure"), RuntimeState::Ready);
    }
    assert_eq!(starts(&dir.0), vec!["ws-many"], "provisioned exactly once");

    // Once ready, further calls reuse it; another workspace gets its own runtime.
    let mut client = proxy.client.clone();
    assert_eq!(
        ensure(&mut client, "ws-many").await.expect("ensure"),
        RuntimeState::Ready
    );
    assert_eq!(
        ensure(&mut client, "ws-two").await.expect("ensure"),
        RuntimeState::Ready
    );
    assert_eq!(starts(&dir.0), vec!["ws-many", "ws-two"]);
    proxy.stop().await;
}

#[tokio::test]
async fn a_runtime_that_never_announces_itself_is_not_ready_is_killed_and_can_be_retried() {
    let dir = TempDir::new();
    let mut proxy = start_proxy(
        fake_runtime(&dir.0, 1, "silent"),
        Duration::from_millis(400),
        Duration::from_secs(30),
    )
    .await;

    let started = Instant::now();
    let status = ensure(&mut proxy.client, "ws-silent")
        .await
        .expect_err("not ready");
    assert_not_ready(&status);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the ready timeout"
    );
    assert_eq!(
        state(&mut proxy.client, "ws-silent").await,
        RuntimeState::Failed
    );
    let first = pid(&dir.0, "ws-silent");
    eventually("the silent runtime is killed", || process_is_gone(first)).await;

    let status = ensure(&mut proxy.client, "ws-silent")
        .await
        .expect_err("still not ready");
    assert_not_ready(&status);
    assert_eq!(
        starts(&dir.0).len(),
        2,
        "a failed provisioning allows a new attempt"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_runtime_that_exits_at_start_fails_without_waiting_for_the_bound() {
    let dir = TempDir::new();
    let mut proxy = start_proxy(
        fake_runtime(&dir.0, 1, "exit"),
        Duration::from_secs(30),
        Duration::from_secs(30),
    )
    .await;

    let started = Instant::now();
    let status = ensure(&mut proxy.client, "ws-exit")
        .await
        .expect_err("not ready");
    assert_not_ready(&status);
    assert!(status.message().contains("exited"), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    proxy.stop().await;
}

fn kill_9(pid: u32) {
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
}

#[tokio::test]
async fn a_runtime_whose_process_is_killed_is_restarted_and_its_agents_go_offline_then_online() {
    let dir = TempDir::new();
    let stub = start_stub(Duration::from_millis(1)).await;
    let mut proxy = start_proxy(
        fake_runtime(&dir.0, stub.port, "ready"),
        Duration::from_secs(10),
        Duration::from_secs(30),
    )
    .await;
    let mut bus = proxy.events();
    // A turn makes the proxy know the workspace's agent.
    let events = collect(
        proxy
            .client
            .forward_turn(turn("ws-dies", "assistant", "hi"))
            .await
            .expect("forward turn")
            .into_inner(),
    )
    .await;
    assert!(matches!(events.last(), Some(Event::Done(_))));
    let first = pid(&dir.0, "ws-dies");

    kill_9(first);

    assert_eq!(
        next_status(&mut bus).await,
        ("ws-dies".into(), "agent-1".into(), AgentStatus::Offline)
    );
    // Restarted without waiting for a call.
    assert_eq!(
        next_status(&mut bus).await,
        ("ws-dies".into(), "agent-1".into(), AgentStatus::Online)
    );
    assert_eq!(
        state(&mut proxy.client, "ws-dies").await,
        RuntimeState::Ready
    );
    assert_eq!(starts(&dir.0).len(), 2);
    assert_ne!(pid(&dir.0, "ws-dies"), first);
    proxy.stop().await;
}

#[tokio::test]
async fn a_runtime_that_dies_again_soon_after_a_restart_waits_for_the_next_call() {
    let dir = TempDir::new();
    let stub = start_stub(Duration::from_millis(1)).await;
    let mut proxy = start_proxy(
        fake_runtime(&dir.0, stub.port, "ready"),
        Duration::from_secs(10),
        Duration::from_secs(30),
    )
    .await;
    let mut bus = proxy.events();
    collect(
        proxy
            .client
            .forward_turn(turn("ws-loop", "assistant", "hi"))
            .await
            .expect("forward turn")
            .into_inner(),
    )
    .await;
    kill_9(pid(&dir.0, "ws-loop"));
    assert_eq!(next_status(&mut bus).await.2, AgentStatus::Offline);
    assert_eq!(next_status(&mut bus).await.2, AgentStatus::Online);

    kill_9(pid(&dir.0, "ws-loop"));
    assert_eq!(next_status(&mut bus).await.2, AgentStatus::Offline);
    eventually_state(&mut proxy.client, "ws-loop", RuntimeState::Failed).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        state(&mut proxy.client, "ws-loop").await,
        RuntimeState::Failed,
        "no restart within the restart interval"
    );
    assert_eq!(starts(&dir.0).len(), 2);

    assert_eq!(
        ensure(&mut proxy.client, "ws-loop").await.expect("ensure"),
        RuntimeState::Ready
    );
    assert_eq!(next_status(&mut bus).await.2, AgentStatus::Online);
    assert_eq!(starts(&dir.0).len(), 3);
    proxy.stop().await;
}

async fn eventually_state(
    client: &mut RuntimeProxyClient<Channel>,
    workspace_id: &str,
    expected: RuntimeState,
) {
    let started = Instant::now();
    while state(client, workspace_id).await != expected {
        assert!(
            started.elapsed() < WAIT,
            "{workspace_id} did not become {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn provisioning_slower_than_the_wait_is_not_ready_and_the_next_call_finds_it_ready() {
    let dir = TempDir::new();
    let stub = start_stub(Duration::from_millis(1)).await;
    let mut proxy = start_proxy_with(
        fake_runtime(&dir.0, stub.port, "slow"),
        Duration::from_millis(300),
        Duration::from_secs(30),
        |config| config.provision_timeout = Duration::from_secs(20),
    )
    .await;

    let started = Instant::now();
    let status = proxy
        .client
        .forward_turn(turn("ws-slow", "assistant", "hi"))
        .await
        .expect_err("not ready yet");
    assert_not_ready(&status);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by the wait"
    );
    assert_eq!(
        state(&mut proxy.client, "ws-slow").await,
        RuntimeState::Provisioning
    );

    eventually_state(&mut proxy.client, "ws-slow", RuntimeState::Ready).await;
    let events = collect(
        proxy
            .client
            .forward_turn(turn("ws-slow", "assistant", "hi"))
            .await
            .expect("the next send succeeds")
            .into_inner(),
    )
    .await;
    assert!(matches!(events.last(), Some(Event::Done(_))));
    assert_eq!(starts(&dir.0), vec!["ws-slow"], "one provisioning");
    proxy.stop().await;
}

#[tokio::test]
async fn a_forwarded_tool_call_directive_yields_the_tool_call_then_its_result() {
    let stub = start_stub(Duration::from_millis(1)).await;
    let mut proxy = static_proxy(&stub, Duration::from_secs(30)).await;

    let events = collect(
        proxy
            .client
            .forward_turn(turn(
                "ws-tool",
                "assistant",
                "/tool weather {\"city\":\"Paris\"}",
            ))
            .await
            .expect("forward turn")
            .into_inner(),
    )
    .await;

    assert!(
        matches!(&events[..2], [Event::ToolCall(call), Event::ToolResult(result)]
            if call.name == "weather" && call.arguments_json == r#"{"city":"Paris"}"#
                && result.call_id == call.call_id && result.result_json.contains("Paris")),
        "{events:?}"
    );
    assert!(matches!(events.last(), Some(Event::Done(_))));
    proxy.stop().await;
}

#[tokio::test]
async fn shutdown_kills_every_runtime_process() {
    let dir = TempDir::new();
    let stub = start_stub(Duration::from_millis(1)).await;
    let mut proxy = start_proxy(
        fake_runtime(&dir.0, stub.port, "ready"),
        Duration::from_secs(10),
        Duration::from_secs(30),
    )
    .await;
    ensure(&mut proxy.client, "ws-1").await.expect("ensure");
    ensure(&mut proxy.client, "ws-2").await.expect("ensure");
    let pids = [pid(&dir.0, "ws-1"), pid(&dir.0, "ws-2")];
    assert!(pids.iter().all(|pid| !process_is_gone(*pid)));

    proxy.stop().await;
    for pid in pids {
        assert!(
            process_is_gone(pid),
            "runtime {pid} still runs after shutdown"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Real runtime-stub processes

/// Set in the environment of this test binary when it runs as a runtime process.
const AS_RUNTIME: &str = "CRAWBL_TEST_AS_RUNTIME";
/// Where such a runtime records its start and pid, like the fake runtime script.
const RUNTIME_DIR: &str = "CRAWBL_TEST_RUNTIME_DIR";

/// Not a test: the body of the real runtime-stub processes the tests below spawn, by running this
/// test binary again with only this test selected (cargo builds no binary of another crate for
/// an integration test). Does nothing in a normal run.
#[test]
#[ignore = "runs only as a runtime process spawned by the process-driver tests"]
fn runtime_stub_process() {
    if std::env::var_os(AS_RUNTIME).is_none() {
        return;
    }
    if let Some(dir) = std::env::var_os(RUNTIME_DIR) {
        let dir = PathBuf::from(dir);
        let workspace_id = std::env::var("RUNTIME_WORKSPACE_ID").unwrap_or_default();
        let mut starts = std::fs::read_to_string(dir.join("starts")).unwrap_or_default();
        starts.push_str(&format!("{workspace_id}\n"));
        std::fs::write(dir.join("starts"), starts).expect("record start");
        std::fs::write(
            dir.join(format!("pid-{workspace_id}")),
            std::process::id().to_string(),
        )
        .expect("record pid");
    }
    // The harness has printed "test runtime_stub_process ... " without a newline; the address
    // line must start a line of its own.
    println!();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(crawbl_runtime_stub::main_from_env());
    // Exit here, without the test harness's report, like the real binary.
    std::process::exit(i32::from(result.is_err()));
}

/// The arguments of `/usr/bin/env` that run this test binary as a real runtime-stub streaming a
/// token every `token_delay_ms`, recording its start in `dir`, with `env` set first.
fn runtime_stub_command(dir: &Path, token_delay_ms: u64, env: Vec<String>) -> Vec<String> {
    let exe = std::env::current_exe().expect("test binary");
    env.into_iter()
        .chain([
            format!("{AS_RUNTIME}=1"),
            format!("{RUNTIME_DIR}={}", dir.display()),
            format!("RUNTIME_STUB_TOKEN_DELAY_MS={token_delay_ms}"),
            "RUST_LOG=error".to_owned(),
            exe.display().to_string(),
            "runtime_stub_process".to_owned(),
            "--exact".to_owned(),
            "--ignored".to_owned(),
            "--nocapture".to_owned(),
            "--test-threads=1".to_owned(),
        ])
        .collect()
}

/// The process driver running real runtime-stubs that stream a token every `token_delay_ms`.
fn real_runtime(dir: &Path, token_delay_ms: u64) -> Driver {
    Driver::Process {
        // `env` because the driver passes a runtime only its own settings.
        program: PathBuf::from("/usr/bin/env"),
        args: runtime_stub_command(dir, token_delay_ms, Vec::new()),
    }
}

/// Where workspaces' runtimes come from in the behaviour tests both drivers pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runtimes {
    Process,
    Kubernetes,
}

/// The namespace of the stand-in API server.
const NAMESPACE: &str = "crawbl-test";

/// The kubernetes driver against a fresh stand-in API server whose pods are real runtime-stubs
/// on their own loopback address, all on one free port (as pods share a port in a cluster).
async fn kubernetes_runtimes(dir: &Path, token_delay_ms: u64) -> (Driver, kube_api::StandIn) {
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("free port")
        .local_addr()
        .expect("port")
        .port();
    let dir = dir.to_owned();
    let stand_in = kube_api::StandIn::start(
        NAMESPACE,
        Arc::new(move |pod, ip| {
            // The pod's environment as the driver wrote it, but listening on the pod's address.
            let env = pod["spec"]["containers"][0]["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|var| match var["name"].as_str() {
                    Some("RUNTIME_STUB_LISTEN") => format!("RUNTIME_STUB_LISTEN={ip}:{port}"),
                    _ => format!(
                        "{}={}",
                        var["name"].as_str().unwrap_or_default(),
                        var["value"].as_str().unwrap_or_default()
                    ),
                })
                .collect();
            let mut command = tokio::process::Command::new("/usr/bin/env");
            command
                .env_clear()
                .args(runtime_stub_command(&dir, token_delay_ms, env))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null());
            command
        }),
    )
    .await;
    let mut settings = KubernetesSettings::new("crawbl:test", NAMESPACE);
    settings.api_url = Some(stand_in.url.clone());
    settings.port = port;
    (Driver::Kubernetes(Box::new(settings)), stand_in)
}

/// Real runtime-stubs from `kind`; keep the stand-in (kubernetes) alive for the test.
async fn real_runtimes(
    kind: Runtimes,
    dir: &Path,
    token_delay_ms: u64,
) -> (Driver, Option<kube_api::StandIn>) {
    match kind {
        Runtimes::Process => (real_runtime(dir, token_delay_ms), None),
        Runtimes::Kubernetes => {
            let (driver, stand_in) = kubernetes_runtimes(dir, token_delay_ms).await;
            (driver, Some(stand_in))
        }
    }
}

#[tokio::test]
async fn a_runtime_dying_mid_turn_ends_the_turn_with_runtime_died_then_comes_back_online() {
    runtime_dying_mid_turn(Runtimes::Process).await;
}

#[tokio::test]
async fn a_runtime_pod_dying_mid_turn_ends_the_turn_with_runtime_died_then_comes_back_online() {
    runtime_dying_mid_turn(Runtimes::Kubernetes).await;
}

async fn runtime_dying_mid_turn(kind: Runtimes) {
    let dir = TempDir::new();
    let (driver, _stand_in) = real_runtimes(kind, &dir.0, 10).await;
    let mut proxy = start_proxy(driver, Duration::from_secs(20), Duration::from_secs(60)).await;
    let mut bus = proxy.events();

    let started = Instant::now();
    let events = collect(
        proxy
            .client
            .forward_turn(turn("ws-die", "assistant", "tell me\n/die"))
            .await
            .expect("forward turn")
            .into_inner(),
    )
    .await;
    let took = started.elapsed();

    assert_eq!(
        concatenated_deltas(&events),
        scripted_reply("assistant", "tell me\n/die"),
        "the text before the death arrives"
    );
    assert_error_code(&events, codes::RUNTIME_DIED);
    assert!(
        took < Duration::from_secs(5),
        "the turn ended after {took:?}"
    );
    // Already published when the turn's error event was sent.
    let offline = tokio::time::timeout(Duration::from_millis(1), bus.next())
        .await
        .expect("the offline event is already on the bus")
        .expect("bus open");
    assert!(
        matches!(&offline.kind, Some(Kind::AgentStatus(changed))
            if changed.agent_id == "agent-1" && changed.status() == AgentStatus::Offline),
        "{offline:?}"
    );
    assert_eq!(
        next_status(&mut bus).await,
        ("ws-die".into(), "agent-1".into(), AgentStatus::Online)
    );
    assert_eq!(
        state(&mut proxy.client, "ws-die").await,
        RuntimeState::Ready
    );

    let events = collect(
        proxy
            .client
            .forward_turn(turn("ws-die", "assistant", "again"))
            .await
            .expect("forward turn")
            .into_inner(),
    )
    .await;
    assert_eq!(
        concatenated_deltas(&events),
        scripted_reply("assistant", "again")
    );
    assert!(matches!(events.last(), Some(Event::Done(_))));
    assert_eq!(starts(&dir.0).len(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn an_idle_runtime_is_stopped_but_never_in_the_middle_of_a_turn() {
    idle_runtime_is_stopped(Runtimes::Process).await;
}

#[tokio::test]
async fn an_idle_runtime_pod_is_deleted_but_never_in_the_middle_of_a_turn() {
    idle_runtime_is_stopped(Runtimes::Kubernetes).await;
}

async fn idle_runtime_is_stopped(kind: Runtimes) {
    let dir = TempDir::new();
    let (driver, stand_in) = real_runtimes(kind, &dir.0, 20).await;
    let mut proxy = start_proxy_with(
        driver,
        Duration::from_secs(20),
        Duration::from_secs(60),
        |config| config.idle_timeout = Some(Duration::from_millis(400)),
    )
    .await;
    let mut bus = proxy.events();

    // About 1.2 s of streaming: three idle periods.
    let text = "word ".repeat(60);
    let events = collect(
        proxy
            .client
            .forward_turn(turn("ws-idle", "assistant", &text))
            .await
            .expect("forward turn")
            .into_inner(),
    )
    .await;
    assert_eq!(
        concatenated_deltas(&events),
        scripted_reply("assistant", &text)
    );
    assert!(matches!(events.last(), Some(Event::Done(_))));
    let first = pid(&dir.0, "ws-idle");
    assert!(!process_is_gone(first));

    eventually_state(&mut proxy.client, "ws-idle", RuntimeState::Stopped).await;
    eventually("the idle runtime's process is gone", || {
        process_is_gone(first)
    })
    .await;
    if let Some(stand_in) = &stand_in {
        // The pod is deleted first (its process goes with it), then its Service.
        eventually("the idle pod and its service are deleted", || {
            stand_in.pods().is_empty() && stand_in.services().is_empty()
        })
        .await;
    }
    assert_no_event(&mut bus, Duration::from_millis(200)).await;

    assert_eq!(
        ensure(&mut proxy.client, "ws-idle").await.expect("ensure"),
        RuntimeState::Ready
    );
    assert_eq!(starts(&dir.0).len(), 2, "started again on demand");
    proxy.stop().await;
}

#[tokio::test]
async fn shutdown_lets_a_turn_in_flight_finish_within_the_drain() {
    shutdown_lets_a_turn_finish(Runtimes::Process).await;
}

/// Unlike processes, pods are left running at shutdown, for the next proxy to adopt.
#[tokio::test]
async fn shutdown_lets_a_turn_on_a_pod_finish_within_the_drain_and_leaves_the_pod() {
    shutdown_lets_a_turn_finish(Runtimes::Kubernetes).await;
}

async fn shutdown_lets_a_turn_finish(kind: Runtimes) {
    let dir = TempDir::new();
    let (driver, stand_in) = real_runtimes(kind, &dir.0, 50).await;
    let mut proxy = start_proxy(driver, Duration::from_secs(20), Duration::from_secs(60)).await;
    let mut stream = proxy
        .client
        .forward_turn(turn("ws-busy", "assistant", &"word ".repeat(20)))
        .await
        .expect("forward turn")
        .into_inner();
    assert!(matches!(
        next_event(&mut stream).await,
        Some(Event::Delta(_))
    ));
    let pid = pid(&dir.0, "ws-busy");

    let started = Instant::now();
    let (events, ()) = tokio::join!(collect(stream), proxy.stop());
    assert!(
        started.elapsed() < crawbl_runtime_proxy::TURN_DRAIN,
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(events.last(), Some(Event::Done(_))), "{events:?}");
    match &stand_in {
        None => assert!(
            process_is_gone(pid),
            "runtime {pid} still runs after shutdown"
        ),
        Some(stand_in) => {
            assert!(!process_is_gone(pid), "the pod's runtime still runs");
            assert_eq!(stand_in.pods().len(), 1, "the pod is left for adoption");
        }
    }
}

#[tokio::test]
async fn shutdown_ends_turns_still_running_after_the_drain_and_kills_every_runtime_process() {
    let dir = TempDir::new();
    let mut proxy = start_proxy(
        real_runtime(&dir.0, 50),
        Duration::from_secs(20),
        Duration::from_secs(60),
    )
    .await;
    ensure(&mut proxy.client, "ws-other").await.expect("ensure");
    // 400 tokens at 50 ms: twenty seconds, far longer than the drain.
    let mut stream = proxy
        .client
        .forward_turn(turn("ws-busy", "assistant", &"word ".repeat(400)))
        .await
        .expect("forward turn")
        .into_inner();
    assert!(matches!(
        next_event(&mut stream).await,
        Some(Event::Delta(_))
    ));
    let pids = [pid(&dir.0, "ws-busy"), pid(&dir.0, "ws-other")];

    let started = Instant::now();
    let (rest, ()) = tokio::join!(collect(stream), proxy.stop());
    let took = started.elapsed();
    let drain = crawbl_runtime_proxy::TURN_DRAIN;
    assert!(
        took >= drain - Duration::from_millis(500) && took < drain + Duration::from_secs(5),
        "the turn was ended after the drain, not held up to its own end: took {took:?}"
    );
    assert_error_code(&rest, codes::SHUTTING_DOWN);
    for pid in pids {
        assert!(
            process_is_gone(pid),
            "runtime {pid} still runs after shutdown"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes driver only (a stand-in API server; see `kube_api`)

/// Forwards one turn of the `assistant` agent and collects its events.
async fn turn_events(proxy: &mut Proxy, workspace_id: &str, text: &str) -> Vec<Event> {
    let stream = proxy
        .client
        .forward_turn(turn(workspace_id, "assistant", text))
        .await
        .expect("forward turn")
        .into_inner();
    collect(stream).await
}

/// A proxy with the kubernetes driver, provisioning bound 20 s.
async fn kubernetes_proxy(driver: Driver) -> Proxy {
    start_proxy(driver, Duration::from_secs(20), Duration::from_secs(30)).await
}

fn posted<'a>(stand_in: &'a [kube_api::Recorded], resource: &str) -> Vec<&'a serde_json::Value> {
    let path = format!("/{NAMESPACE}/{resource}");
    stand_in
        .iter()
        .filter(|request| request.method == axum::http::Method::POST && request.path == path)
        .filter_map(|request| request.body.as_ref())
        .collect()
}

#[tokio::test]
async fn a_workspace_gets_one_locked_down_pod_and_a_service_from_the_template() {
    let dir = TempDir::new();
    let (Driver::Kubernetes(mut settings), stand_in) = kubernetes_runtimes(&dir.0, 1).await else {
        unreachable!()
    };
    settings.node_selector = [("pool".to_owned(), "runtimes".to_owned())].into();
    settings.memory = Some("64Mi".to_owned());
    settings.cpu_limit = Some("500m".to_owned());
    settings.provider_secret = Some("provider-keys".to_owned());
    let mut proxy = kubernetes_proxy(Driver::Kubernetes(settings)).await;

    let events = turn_events(&mut proxy, "ws-template", "hello pod").await;
    assert_eq!(
        concatenated_deltas(&events),
        scripted_reply("assistant", "hello pod")
    );

    let requests = stand_in.requests();
    assert!(
        requests
            .iter()
            .all(|request| request.path.starts_with(&format!("/{NAMESPACE}/"))),
        "every call stays in the namespace"
    );
    let name = crawbl_runtime_proxy::pod_name("ws-template");
    let pods = posted(&requests, "pods");
    let [pod] = pods.as_slice() else {
        panic!("one pod created, got {pods:?}")
    };
    assert_eq!(pod["metadata"]["name"], name.as_str());
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["crawbl.dev/workspace"], "ws-template");
    assert_eq!(labels["app.kubernetes.io/component"], "runtime");
    assert_eq!(
        labels["app.kubernetes.io/managed-by"],
        "crawbl-runtime-proxy"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["crawbl.dev/workspace-id"],
        "ws-template"
    );
    let spec = &pod["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["enableServiceLinks"], false);
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["nodeSelector"]["pool"], "runtimes");
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["securityContext"]["runAsUser"], 10001);
    let container = &spec["containers"][0];
    assert_eq!(container["image"], "crawbl:test");
    assert_eq!(container["args"], serde_json::json!(["runtime-stub"]));
    assert_eq!(container["resources"]["requests"]["memory"], "64Mi");
    assert_eq!(container["resources"]["limits"]["cpu"], "500m");
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"],
        "provider-keys"
    );
    assert!(container["readinessProbe"]["grpc"]["port"].is_number());
    let context = &container["securityContext"];
    assert_eq!(context["readOnlyRootFilesystem"], true);
    assert_eq!(context["allowPrivilegeEscalation"], false);
    assert_eq!(context["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let env: Vec<&str> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|var| var["name"].as_str())
        .collect();
    assert!(env.contains(&"RUNTIME_WORKSPACE_ID") && env.contains(&"RUNTIME_STUB_LISTEN"));
    for secret in [
        "CRAWBL_SERVICE_TOKEN",
        "DATABASE_URL",
        "REDIS_URL",
        "PATH",
        "HOME",
    ] {
        assert!(
            !env.contains(&secret),
            "{secret} must not reach a runtime pod"
        );
    }

    let services = posted(&requests, "services");
    let [service] = services.as_slice() else {
        panic!("one service created, got {services:?}")
    };
    assert_eq!(service["metadata"]["name"], name.as_str());
    assert_eq!(
        service["spec"]["selector"]["crawbl.dev/runtime"],
        name.as_str()
    );
    assert_eq!(
        labels["crawbl.dev/runtime"],
        name.as_str(),
        "the service selects the pod"
    );

    assert!(
        requests
            .iter()
            .any(|request| request.path == format!("/{NAMESPACE}/pods")
                && request
                    .query
                    .get("watch")
                    .is_some_and(|watch| watch == "true" || watch == "1")),
        "pods are watched"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn two_proxies_asking_for_one_workspace_share_one_pod() {
    let dir = TempDir::new();
    let (driver, stand_in) = kubernetes_runtimes(&dir.0, 1).await;
    let mut first = kubernetes_proxy(driver.clone()).await;
    let mut second = kubernetes_proxy(driver).await;

    let (a, b) = tokio::join!(
        ensure(&mut first.client, "ws-shared"),
        ensure(&mut second.client, "ws-shared")
    );
    assert_eq!(a.expect("first"), RuntimeState::Ready);
    assert_eq!(b.expect("second"), RuntimeState::Ready);
    assert_eq!(starts(&dir.0), vec!["ws-shared".to_owned()], "one runtime");
    assert_eq!(stand_in.pods().len(), 1);
    assert_eq!(
        posted(&stand_in.requests(), "pods").len(),
        2,
        "both asked; the second got 409 and adopted the pod"
    );
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn a_restarted_proxy_adopts_live_pods_and_deletes_orphans() {
    let dir = TempDir::new();
    let (driver, stand_in) = kubernetes_runtimes(&dir.0, 1).await;
    let mut first = kubernetes_proxy(driver.clone()).await;
    assert_eq!(
        ensure(&mut first.client, "ws-keep").await.expect("ensure"),
        RuntimeState::Ready
    );
    first.stop().await;
    let kept = crawbl_runtime_proxy::pod_name("ws-keep");
    assert!(
        stand_in.pods().contains_key(&kept),
        "left running at shutdown"
    );

    let ours = serde_json::json!({ "app.kubernetes.io/managed-by": "crawbl-runtime-proxy" });
    let dead = crawbl_runtime_proxy::pod_name("ws-dead");
    stand_in.seed_pod(
        serde_json::json!({ "metadata": { "name": dead, "labels": ours,
            "annotations": { "crawbl.dev/workspace-id": "ws-dead" } } }),
        Some("Failed"),
    );
    stand_in.seed_pod(
        serde_json::json!({ "metadata": { "name": "rt-stray", "labels": ours } }),
        Some("Running"),
    );
    stand_in.seed_pod(
        serde_json::json!({ "metadata": { "name": "not-ours", "labels": { "app": "other" } } }),
        Some("Running"),
    );
    stand_in
        .seed_service(serde_json::json!({ "metadata": { "name": "rt-lonely", "labels": ours } }));

    let mut second = kubernetes_proxy(driver).await;
    eventually_state(&mut second.client, "ws-keep", RuntimeState::Ready).await;
    let pods = stand_in.pods();
    assert_eq!(
        pods.keys().cloned().collect::<Vec<_>>(),
        vec!["not-ours".to_owned(), kept.clone()],
        "orphans deleted, the live pod kept, others' pods untouched"
    );
    assert_eq!(
        stand_in.services().keys().cloned().collect::<Vec<_>>(),
        vec![kept],
        "the service without a pod is deleted"
    );
    assert_eq!(starts(&dir.0).len(), 1, "adopted, not started again");
    let events = turn_events(&mut second, "ws-keep", "still there").await;
    assert_eq!(
        concatenated_deltas(&events),
        scripted_reply("assistant", "still there")
    );
    second.stop().await;
}

#[tokio::test]
async fn a_pod_that_dies_while_idle_is_seen_through_the_watch_and_replaced() {
    let dir = TempDir::new();
    let (driver, stand_in) = kubernetes_runtimes(&dir.0, 1).await;
    let mut proxy = kubernetes_proxy(driver).await;
    let mut bus = proxy.events();
    let events = turn_events(&mut proxy, "ws-pod-dies", "hi").await;
    assert!(matches!(events.last(), Some(Event::Done(_))));
    let name = crawbl_runtime_proxy::pod_name("ws-pod-dies");
    let first_uid = stand_in.pods()[&name]["metadata"]["uid"].clone();

    // The pod's container dies: the stand-in reports the pod Failed.
    kill_9(pid(&dir.0, "ws-pod-dies"));

    assert_eq!(
        next_status(&mut bus).await,
        ("ws-pod-dies".into(), "agent-1".into(), AgentStatus::Offline)
    );
    assert_eq!(
        next_status(&mut bus).await,
        ("ws-pod-dies".into(), "agent-1".into(), AgentStatus::Online)
    );
    assert_eq!(starts(&dir.0).len(), 2);
    let pods = stand_in.pods();
    assert_eq!(
        pods.len(),
        1,
        "the failed pod was replaced, not kept beside the new one"
    );
    assert_ne!(pods[&name]["metadata"]["uid"], first_uid);
    proxy.stop().await;
}
