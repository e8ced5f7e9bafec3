//! A stand-in Kubernetes API server for the `kubernetes` driver's tests: plain HTTP on an
//! ephemeral port, one namespace, answering exactly the calls the driver makes — create, get,
//! list and delete of pods and services, and `?watch=1` on pods (JSON lines of watch events from
//! a resource version) — with 409 on a duplicate create and 404 on a missing object. It records
//! every request for the tests to assert on.
//!
//! Pods are made real: creating one runs a process (given by the test) listening on the pod's
//! own loopback address 127.x.y.z, which is then reported `Running` with that `podIP`. When the
//! process exits the pod turns `Failed` (a MODIFIED event); deleting the pod kills it (DELETED).
//! No real cluster runs in these tests: this is what stands in for one.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Builds the process that plays a pod, from the pod as created and its address.
pub type Spawn = Arc<dyn Fn(&Value, Ipv4Addr) -> Command + Send + Sync>;

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub body: Option<Value>,
}

#[derive(Default)]
struct Objects {
    version: u64,
    pods: BTreeMap<String, Value>,
    services: BTreeMap<String, Value>,
    /// Every pod event, for watches that start from an older version.
    history: Vec<(u64, Value)>,
    watchers: Vec<mpsc::UnboundedSender<Value>>,
    /// Cancelling one kills the pod's process.
    processes: HashMap<String, CancellationToken>,
    requests: Vec<Recorded>,
}

impl Objects {
    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    /// Stamps the pod with a new version, stores it (or removes it) and tells every watcher.
    fn pod_event(&mut self, kind: &str, mut pod: Value) {
        let version = self.next_version();
        pod["metadata"]["resourceVersion"] = json!(version);
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if kind == "DELETED" {
            self.pods.remove(&name);
        } else {
            self.pods.insert(name, pod.clone());
        }
        let event = json!({ "type": kind, "object": pod });
        self.history.push((self.version, event.clone()));
        self.watchers
            .retain(|watcher| watcher.send(event.clone()).is_ok());
    }
}

struct Shared {
    namespace: String,
    objects: Mutex<Objects>,
    spawn: Spawn,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The stand-in server; stops (and kills every pod's process) when dropped.
pub struct StandIn {
    pub url: String,
    shared: Arc<Shared>,
    _server: DropGuard,
}

impl StandIn {
    pub async fn start(namespace: &str, spawn: Spawn) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stand-in");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("stand-in address")
        );
        let shared = Arc::new(Shared {
            namespace: namespace.to_owned(),
            objects: Mutex::new(Objects::default()),
            spawn,
        });
        let app = Router::new()
            .route(
                "/api/v1/namespaces/{namespace}/{resource}",
                get(list).post(create),
            )
            .route(
                "/api/v1/namespaces/{namespace}/{resource}/{name}",
                get(read).delete(delete),
            )
            .with_state(Arc::clone(&shared));
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await;
        });
        Self {
            url,
            shared,
            _server: stop.drop_guard(),
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    pub fn pods(&self) -> BTreeMap<String, Value> {
        self.shared.lock().pods.clone()
    }

    pub fn services(&self) -> BTreeMap<String, Value> {
        self.shared.lock().services.clone()
    }

    /// Puts a pod in place as if an earlier proxy had made it (running its process), or with
    /// `phase` and no process.
    pub fn seed_pod(&self, pod: Value, phase: Option<&str>) {
        let mut objects = self.shared.lock();
        let pod = with_identity(pod);
        match phase {
            Some(phase) => {
                let mut pod = pod;
                pod["status"] = json!({ "phase": phase });
                objects.pod_event("ADDED", pod);
            }
            None => run_pod(&self.shared, &mut objects, pod),
        }
    }

    pub fn seed_service(&self, service: Value) {
        let mut objects = self.shared.lock();
        let name = service["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        objects.services.insert(name, with_identity(service));
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        for process in self.shared.lock().processes.values() {
            process.cancel();
        }
    }
}

fn with_identity(mut object: Value) -> Value {
    static NEXT_UID: AtomicU32 = AtomicU32::new(1);
    let uid = format!("uid-{}", NEXT_UID.fetch_add(1, Ordering::SeqCst));
    object["metadata"]["uid"] = json!(uid);
    object["metadata"]["creationTimestamp"] = json!("2026-12-01T00:00:00Z");
    object
}

/// A loopback address of its own for every pod of this test process (127.0.0.0/8 is all
/// loopback on Linux), so pods can share the runtime port as they do in a cluster.
fn pod_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let process = u8::try_from(std::process::id() % 200).unwrap_or(0) + 20;
    let [_, _, high, low] = n.to_be_bytes();
    Ipv4Addr::new(127, process, high, low.saturating_add(2).max(2))
}

/// Starts the pod's process and reports it Running; a task marks it Failed when the process
/// exits, or kills the process when the pod is deleted.
fn run_pod(shared: &Arc<Shared>, objects: &mut Objects, mut pod: Value) {
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let ip = pod_ip();
    pod["status"] = json!({ "phase": "Pending" });
    objects.pod_event("ADDED", pod.clone());
    let mut command = (shared.spawn)(&pod, ip);
    command.kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            pod["status"] = json!({ "phase": "Failed", "reason": format!("spawn: {error}") });
            objects.pod_event("MODIFIED", pod);
            return;
        }
    };
    pod["status"] = json!({
        "phase": "Running",
        "podIP": ip.to_string(),
        "containerStatuses": [{
            "name": "runtime", "ready": false, "restartCount": 0, "image": "", "imageID": "",
            "state": { "running": { "startedAt": "2026-12-01T00:00:00Z" } },
        }],
    });
    objects.pod_event("MODIFIED", pod);
    let deleted = CancellationToken::new();
    objects.processes.insert(name.clone(), deleted.clone());
    let shared = Arc::clone(shared);
    let uid = objects.pods[&name]["metadata"]["uid"].clone();
    tokio::spawn(async move {
        tokio::select! {
            exit = child.wait() => {
                let code = exit.ok().and_then(|status| status.code()).unwrap_or(137);
                let mut objects = shared.lock();
                let Some(mut pod) = objects.pods.get(&name).cloned() else { return };
                if pod["metadata"]["uid"] != uid {
                    return;
                }
                pod["status"]["phase"] = json!("Failed");
                pod["status"]["containerStatuses"][0]["state"] =
                    json!({ "terminated": { "exitCode": code, "reason": "Error" } });
                objects.pod_event("MODIFIED", pod);
            }
            () = deleted.cancelled() => {
                let _ = child.kill().await;
            }
        }
    });
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

fn matches_selector(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    selector
        .split(',')
        .filter(|term| !term.is_empty())
        .all(|term| {
            let (key, value) = term.split_once('=').unwrap_or((term, ""));
            object["metadata"]["labels"][key].as_str() == Some(value)
        })
}

fn record(
    objects: &mut Objects,
    method: Method,
    path: String,
    query: &HashMap<String, String>,
    body: Option<Value>,
) {
    objects.requests.push(Recorded {
        method,
        path,
        query: query.clone(),
        body,
    });
}

/// The refusal of a request outside the namespace or for another resource, if it is one.
fn refused(shared: &Shared, namespace: &str, resource: &str) -> Option<Response> {
    if namespace != shared.namespace {
        return Some(status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("namespace {namespace}"),
        ));
    }
    if resource != "pods" && resource != "services" {
        return Some(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("resource {resource}"),
        ));
    }
    None
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Path((namespace, resource)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut objects = shared.lock();
    record(
        &mut objects,
        Method::GET,
        format!("/{namespace}/{resource}"),
        &query,
        None,
    );
    if let Some(response) = refused(&shared, &namespace, &resource) {
        return response;
    }
    let selector = query.get("labelSelector");
    let watching = matches!(query.get("watch").map(String::as_str), Some("1" | "true"));
    if watching {
        if resource != "pods" {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "watch".into(),
            );
        }
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|version| version.parse().ok())
            .unwrap_or(0);
        let (sender, receiver) = mpsc::unbounded_channel();
        for (version, event) in &objects.history {
            if *version > from {
                let _ = sender.send(event.clone());
            }
        }
        objects.watchers.push(sender);
        let selector = selector.cloned();
        let lines = futures::stream::unfold(receiver, move |mut receiver| {
            let selector = selector.clone();
            async move {
                loop {
                    let event = receiver.recv().await?;
                    if matches_selector(&event["object"], selector.as_ref()) {
                        let mut line = serde_json::to_vec(&event).unwrap_or_default();
                        line.push(b'\n');
                        return Some((Ok::<_, std::io::Error>(Bytes::from(line)), receiver));
                    }
                }
            }
        });
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(lines))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    let (kind, store) = match resource.as_str() {
        "pods" => ("PodList", &objects.pods),
        _ => ("ServiceList", &objects.services),
    };
    let items: Vec<Value> = store
        .values()
        .filter(|object| matches_selector(object, selector))
        .cloned()
        .collect();
    axum::Json(json!({
        "kind": kind, "apiVersion": "v1",
        "metadata": { "resourceVersion": objects.version.to_string() },
        "items": items,
    }))
    .into_response()
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Path((namespace, resource)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let mut objects = shared.lock();
    let object: Option<Value> = serde_json::from_slice(&body).ok();
    record(
        &mut objects,
        Method::POST,
        format!("/{namespace}/{resource}"),
        &query,
        object.clone(),
    );
    if let Some(response) = refused(&shared, &namespace, &resource) {
        return response;
    }
    let Some(object) = object else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON".into());
    };
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "no name".into(),
        );
    };
    let exists = match resource.as_str() {
        "pods" => objects.pods.contains_key(&name),
        _ => objects.services.contains_key(&name),
    };
    if exists {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        );
    }
    let mut object = with_identity(object);
    if resource == "pods" {
        run_pod(&shared, &mut objects, object);
        let created = objects.pods[&name].clone();
        return (StatusCode::CREATED, axum::Json(created)).into_response();
    }
    object["metadata"]["resourceVersion"] = json!(objects.next_version());
    objects.services.insert(name, object.clone());
    (StatusCode::CREATED, axum::Json(object)).into_response()
}

/// Records a call on one object and locks the store, or refuses the call.
fn one_object<'a>(
    shared: &'a Shared,
    method: Method,
    namespace: &str,
    resource: &str,
    name: &str,
) -> Result<MutexGuard<'a, Objects>, Box<Response>> {
    let mut objects = shared.lock();
    let path = format!("/{namespace}/{resource}/{name}");
    record(&mut objects, method, path, &HashMap::new(), None);
    match refused(shared, namespace, resource) {
        Some(response) => Err(Box::new(response)),
        None => Ok(objects),
    }
}

async fn read(
    State(shared): State<Arc<Shared>>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
) -> Response {
    let objects = match one_object(&shared, Method::GET, &namespace, &resource, &name) {
        Ok(objects) => objects,
        Err(response) => return *response,
    };
    let found = match resource.as_str() {
        "pods" => objects.pods.get(&name),
        _ => objects.services.get(&name),
    };
    match found {
        Some(object) => axum::Json(object.clone()).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{resource} \"{name}\" not found"),
        ),
    }
}

async fn delete(
    State(shared): State<Arc<Shared>>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
) -> Response {
    let mut objects = match one_object(&shared, Method::DELETE, &namespace, &resource, &name) {
        Ok(objects) => objects,
        Err(response) => return *response,
    };
    let removed = match resource.as_str() {
        "pods" => {
            let pod = objects.pods.get(&name).cloned();
            if let Some(pod) = &pod {
                if let Some(process) = objects.processes.remove(&name) {
                    process.cancel();
                }
                objects.pod_event("DELETED", pod.clone());
            }
            pod
        }
        _ => objects.services.remove(&name),
    };
    match removed {
        Some(object) => axum::Json(object).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{resource} \"{name}\" not found"),
        ),
    }
}
