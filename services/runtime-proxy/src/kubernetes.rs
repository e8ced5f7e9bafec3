//! The `kubernetes` driver: each workspace's runtime is a pod (and a Service in front of it) in
//! one namespace, made from the template in [`KubernetesSettings`].
//!
//! Names are derived from the workspace id ([`pod_name`]), so every runtime-proxy replica asks
//! for the same pod: a create that finds it already there (409) adopts it, and one workspace
//! never gets two pods. One watch on the driver's pods (list, then watch from that version,
//! again after any break) keeps a snapshot of them; a runtime dies the moment its pod leaves it,
//! fails, or has a container that ended. Pods outlive the proxy on purpose: at shutdown they are
//! left running, and the next proxy (or another replica) adopts them; at start
//! [`Cluster::reconcile`] deletes what is broken or not ours and names the workspaces to adopt.
//! Idle stop and death delete the pod and its Service.
//!
//! The API calls, all in the configured namespace (the Role in deploy/kubernetes grants exactly
//! these): pods create/get/list/watch/delete, services create/get/list/delete.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::{Connect, KubernetesSettings};
use crate::driver::ProvisionError;

/// Every object the driver makes carries this label; the watch, the reconcile and the
/// NetworkPolicy (`app.kubernetes.io/component=runtime`) select on these.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "crawbl-runtime-proxy");
const COMPONENT: (&str, &str) = ("app.kubernetes.io/component", "runtime");
/// The workspace, as a label value when the id is one (else its hash), for `kubectl -l`.
const WORKSPACE_LABEL: &str = "crawbl.dev/workspace";
/// The exact workspace id (annotations take any string): what reconcile reads.
const WORKSPACE_ANNOTATION: &str = "crawbl.dev/workspace-id";
/// Selects one runtime's pod from its Service.
const POD_LABEL: &str = "crawbl.dev/runtime";
/// The container's name in the pod.
const CONTAINER: &str = "runtime";
/// Server-side bound of one watch request; the loop then lists and watches again.
const WATCH_TIMEOUT_SECONDS: u32 = 290;
/// Pause before listing again after the API server failed or cut the watch.
const WATCH_RETRY: Duration = Duration::from_secs(1);
/// How many deleted pods the snapshot remembers, so a death is noticed even when the pod went
/// before the handle looked.
const TOMBSTONES: usize = 4096;
/// How long `stop` waits for a deleted pod to be gone.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between attempts while a pod of the same name is still being deleted.
const RECREATE_POLL: Duration = Duration::from_millis(200);

/// The DNS-1123 label (≤ 63 characters, lowercase alphanumerics and `-`, starting with a
/// letter so it is also a valid Service name) of a workspace's pod and Service: a readable
/// prefix of the id and a hash of all of it, so distinct ids never collide.
pub fn pod_name(workspace_id: &str) -> String {
    let mut readable = String::new();
    for character in workspace_id.chars() {
        let character = character.to_ascii_lowercase();
        if character.is_ascii_lowercase() || character.is_ascii_digit() {
            readable.push(character);
        } else if !readable.ends_with('-') && !readable.is_empty() {
            readable.push('-');
        }
        if readable.len() >= 40 {
            break;
        }
    }
    let readable = readable.trim_end_matches('-');
    let hash = hex_prefix(workspace_id, 12);
    if readable.is_empty() {
        format!("rt-{hash}")
    } else {
        format!("rt-{readable}-{hash}")
    }
}

fn hex_prefix(text: &str, length: usize) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    hex.truncate(length);
    hex
}

/// A label value (≤ 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends): the id itself when it
/// is one, else `h-` and its hash.
fn workspace_label(workspace_id: &str) -> String {
    let valid = !workspace_id.is_empty()
        && workspace_id.len() <= 63
        && workspace_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && workspace_id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && workspace_id.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        workspace_id.to_owned()
    } else {
        format!("h-{}", hex_prefix(workspace_id, 40))
    }
}

fn selector() -> String {
    format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)
}

/// What the watch knows of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodState {
    uid: String,
    ip: Option<String>,
    running: bool,
    /// Why the pod is dead or going: failed or succeeded, a container that ended, deletion.
    dead: Option<String>,
}

impl PodState {
    fn of(pod: &Pod) -> Option<(String, Self)> {
        let name = pod.metadata.name.clone()?;
        let uid = pod.metadata.uid.clone()?;
        let status = pod.status.as_ref();
        let phase = status
            .and_then(|status| status.phase.as_deref())
            .unwrap_or("Pending");
        let ended = status
            .and_then(|status| status.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .find_map(|container| {
                let terminated = container.state.as_ref()?.terminated.as_ref()?;
                Some(format!(
                    "its container ended (exit code {}{})",
                    terminated.exit_code,
                    terminated
                        .reason
                        .as_deref()
                        .map(|reason| format!(", {reason}"))
                        .unwrap_or_default()
                ))
            });
        let dead = match phase {
            "Failed" | "Succeeded" => Some(format!(
                "the pod is {phase}{}",
                status
                    .and_then(|status| status.reason.as_deref())
                    .map(|reason| format!(" ({reason})"))
                    .unwrap_or_default()
            )),
            _ if pod.metadata.deletion_timestamp.is_some() => {
                Some("the pod is being deleted".to_owned())
            }
            _ => ended,
        };
        let state = Self {
            uid,
            ip: status.and_then(|status| status.pod_ip.clone()),
            running: phase == "Running",
            dead,
        };
        Some((name, state))
    }
}

/// The driver's pods as the watch last saw them.
#[derive(Debug, Default, Clone)]
struct Snapshot {
    /// False until the first list: until then absence means nothing.
    synced: bool,
    pods: HashMap<String, PodState>,
    /// Uids of pods that were deleted (bounded, oldest forgotten first).
    deleted: HashSet<String>,
    deleted_order: VecDeque<String>,
}

impl Snapshot {
    fn bury(&mut self, uid: String) {
        if self.deleted.insert(uid.clone()) {
            self.deleted_order.push_back(uid);
        }
        while self.deleted_order.len() > TOMBSTONES {
            if let Some(old) = self.deleted_order.pop_front() {
                self.deleted.remove(&old);
            }
        }
    }

    /// `Some(reason)` once the pod `name` with `uid` is dead: failed, ended, deleted or replaced.
    fn death(&self, name: &str, uid: &str) -> Option<String> {
        if self.deleted.contains(uid) {
            return Some("the pod was deleted".to_owned());
        }
        match self.pods.get(name) {
            Some(pod) if pod.uid != uid => Some("the pod was replaced".to_owned()),
            Some(pod) => pod.dead.clone(),
            // Not seen yet (created a moment ago): the watch will tell.
            None => None,
        }
    }
}

/// A connection to the cluster: the API client and the watch of the driver's pods.
pub struct Cluster {
    settings: KubernetesSettings,
    pods: Api<Pod>,
    services: Api<Service>,
    snapshot: watch::Receiver<Snapshot>,
    _watch: DropGuard,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Cluster")
            .field("namespace", &self.settings.namespace)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects (the configured API URL without credentials, else kube's inference: in-cluster
    /// service account, then kubeconfig) and starts watching the driver's pods.
    pub async fn connect(settings: KubernetesSettings) -> anyhow::Result<Arc<Self>> {
        let config = match &settings.api_url {
            Some(url) => kube::Config::new(url.parse()?),
            None => kube::Config::infer().await?,
        };
        let client = kube::Client::try_from(config)?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &settings.namespace);
        let services: Api<Service> = Api::namespaced(client, &settings.namespace);
        let (sender, snapshot) = watch::channel(Snapshot::default());
        let stop = CancellationToken::new();
        tokio::spawn(watch_pods(pods.clone(), sender, stop.clone()));
        tracing::info!(namespace = %settings.namespace, image = %settings.image, "kubernetes driver connected");
        Ok(Arc::new(Self {
            settings,
            pods,
            services,
            snapshot,
            _watch: stop.drop_guard(),
        }))
    }

    /// Deletes the driver's pods that are broken or not a workspace's (failed, ended, being
    /// deleted, no workspace annotation, or a name that is not the workspace's) and Services
    /// without a pod; returns the workspaces whose pods are kept, for the registry to adopt.
    pub async fn reconcile(&self) -> anyhow::Result<Vec<String>> {
        let list = ListParams::default().labels(&selector());
        let mut adopt = Vec::new();
        let mut kept = HashSet::new();
        for pod in self.pods.list(&list).await? {
            let Some((name, state)) = PodState::of(&pod) else {
                continue;
            };
            let workspace = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(WORKSPACE_ANNOTATION))
                .filter(|workspace_id| pod_name(workspace_id) == name);
            match (workspace, &state.dead) {
                (Some(workspace_id), None) => {
                    tracing::info!(%name, %workspace_id, "adopting a runtime pod");
                    kept.insert(name);
                    adopt.push(workspace_id.clone());
                }
                (workspace_id, dead) => {
                    tracing::info!(%name, ?workspace_id, ?dead, "deleting an orphaned runtime pod");
                    self.delete_pod(&name).await;
                }
            }
        }
        for service in self.services.list(&list).await? {
            let Some(name) = service.metadata.name else {
                continue;
            };
            if !kept.contains(&name) {
                tracing::info!(%name, "deleting a runtime service without its pod");
                self.delete_service(&name).await;
            }
        }
        Ok(adopt)
    }

    /// Creates (or adopts) the workspace's pod and Service and waits until the pod runs, all
    /// before `deadline`; returns the pod's name, uid and the runtime's gRPC address.
    pub async fn start(
        self: &Arc<Self>,
        workspace_id: &str,
        deadline: Instant,
    ) -> Result<PodHandle, ProvisionError> {
        let name = pod_name(workspace_id);
        let uid = self.create_or_adopt(workspace_id, &name, deadline).await?;
        self.create_service(workspace_id, &name).await?;
        let mut snapshot = self.snapshot.clone();
        let waited = tokio::time::timeout_at(
            deadline,
            snapshot.wait_for(|snapshot| {
                snapshot.death(&name, &uid).is_some()
                    || snapshot
                        .pods
                        .get(&name)
                        .is_some_and(|pod| pod.uid == uid && pod.running && pod.ip.is_some())
            }),
        )
        .await;
        let ip = match waited {
            Err(_) => {
                return Err(ProvisionError(format!(
                    "the runtime pod {name} was not running in time"
                )));
            }
            Ok(Err(_)) => return Err(ProvisionError("the pod watch stopped".to_owned())),
            Ok(Ok(snapshot)) => {
                if let Some(death) = snapshot.death(&name, &uid) {
                    return Err(ProvisionError(format!(
                        "the runtime pod {name} died before it was ready: {death}"
                    )));
                }
                snapshot
                    .pods
                    .get(&name)
                    .and_then(|pod| pod.ip.clone())
                    .unwrap_or_default()
            }
        };
        let port = self.settings.port;
        let address = match self.settings.connect {
            Connect::Pod if ip.contains(':') => format!("http://[{ip}]:{port}"),
            Connect::Pod => format!("http://{ip}:{port}"),
            Connect::Service => {
                format!("http://{name}.{}.svc:{port}", self.settings.namespace)
            }
        };
        tracing::info!(workspace_id, pod = %name, %address, "runtime pod running");
        Ok(PodHandle::watch(Arc::clone(self), name, uid, address))
    }

    /// Creates the pod; one that already exists is adopted if it is alive, or replaced once it
    /// is gone if it is dead. Returns the uid of the pod that is the workspace's now.
    async fn create_or_adopt(
        &self,
        workspace_id: &str,
        name: &str,
        deadline: Instant,
    ) -> Result<String, ProvisionError> {
        let pod = self.pod(workspace_id, name)?;
        loop {
            match self.pods.create(&PostParams::default(), &pod).await {
                Ok(created) => {
                    tracing::info!(workspace_id, pod = name, "runtime pod created");
                    return created.metadata.uid.ok_or_else(|| {
                        ProvisionError(format!("the created pod {name} has no uid"))
                    });
                }
                Err(kube::Error::Api(status)) if status.is_already_exists() => {}
                Err(error) => {
                    return Err(ProvisionError(format!("cannot create pod {name}: {error}")));
                }
            }
            let existing = self
                .pods
                .get_opt(name)
                .await
                .map_err(|error| ProvisionError(format!("cannot read pod {name}: {error}")))?;
            if let Some((_, state)) = existing.as_ref().and_then(PodState::of) {
                match state.dead {
                    None => {
                        tracing::info!(
                            workspace_id,
                            pod = name,
                            "adopting the existing runtime pod"
                        );
                        return Ok(state.uid);
                    }
                    Some(dead) => {
                        tracing::info!(workspace_id, pod = name, %dead, "replacing a dead runtime pod");
                        self.delete_pod(name).await;
                    }
                }
            }
            if Instant::now() + RECREATE_POLL >= deadline {
                return Err(ProvisionError(format!(
                    "the previous pod {name} was not gone in time"
                )));
            }
            tokio::time::sleep(RECREATE_POLL).await;
        }
    }

    async fn create_service(&self, workspace_id: &str, name: &str) -> Result<(), ProvisionError> {
        let service = self.service(workspace_id, name)?;
        match self.services.create(&PostParams::default(), &service).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
            Err(error) => Err(ProvisionError(format!(
                "cannot create service {name}: {error}"
            ))),
        }
    }

    /// Deletes the pod; a pod already gone is fine. Failures are logged: reconcile and the next
    /// provisioning clean up what is left.
    async fn delete_pod(&self, name: &str) {
        match self.pods.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(error) => tracing::warn!(pod = name, %error, "cannot delete runtime pod"),
        }
    }

    async fn delete_service(&self, name: &str) {
        match self.services.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(error) => tracing::warn!(service = name, %error, "cannot delete runtime service"),
        }
    }

    fn labels(&self, workspace_id: &str, name: &str) -> serde_json::Value {
        serde_json::json!({
            "app.kubernetes.io/name": "crawbl-runtime",
            COMPONENT.0: COMPONENT.1,
            MANAGED_BY.0: MANAGED_BY.1,
            WORKSPACE_LABEL: workspace_label(workspace_id),
            POD_LABEL: name,
        })
    }

    /// The workspace's pod, from the template. Runtimes run agent code: non-root, read-only
    /// root filesystem (a small writable /tmp), no capabilities, no privilege escalation, no
    /// service-account token, no service links; only the runtime's own settings in its
    /// environment, provider keys from their own Secret.
    fn pod(&self, workspace_id: &str, name: &str) -> Result<Pod, ProvisionError> {
        let settings = &self.settings;
        let mut env: Vec<serde_json::Value> = crate::driver::runtime_env()
            .map(|(name, value)| serde_json::json!({ "name": name, "value": value }))
            .collect();
        env.push(serde_json::json!({
            "name": "RUNTIME_STUB_LISTEN",
            "value": format!("0.0.0.0:{}", settings.port),
        }));
        env.push(serde_json::json!({ "name": "RUNTIME_WORKSPACE_ID", "value": workspace_id }));
        env.push(serde_json::json!({ "name": "TMPDIR", "value": "/tmp" }));
        let env_from: Vec<serde_json::Value> = settings
            .provider_secret
            .iter()
            .map(|secret| serde_json::json!({ "secretRef": { "name": secret } }))
            .collect();
        let quantities = |pairs: [(&'static str, &Option<String>); 2]| -> BTreeMap<&str, String> {
            pairs
                .into_iter()
                .filter_map(|(key, value)| Some((key, value.clone()?)))
                .collect()
        };
        let requests = quantities([("cpu", &settings.cpu), ("memory", &settings.memory)]);
        let limits = quantities([
            ("cpu", &settings.cpu_limit),
            ("memory", &settings.memory_limit),
        ]);
        let pod = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": settings.namespace,
                "labels": self.labels(workspace_id, name),
                "annotations": { WORKSPACE_ANNOTATION: workspace_id },
            },
            "spec": {
                // A runtime that dies is noticed and provisioned again by the registry.
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "terminationGracePeriodSeconds": 10,
                "nodeSelector": settings.node_selector,
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": settings.run_as_user,
                    "runAsGroup": settings.run_as_user,
                    "seccompProfile": { "type": "RuntimeDefault" },
                },
                "containers": [{
                    "name": CONTAINER,
                    "image": settings.image,
                    "args": settings.args,
                    "ports": [{ "name": "grpc", "containerPort": settings.port }],
                    "env": env,
                    "envFrom": env_from,
                    "resources": { "requests": requests, "limits": limits },
                    "readinessProbe": { "grpc": { "port": settings.port }, "periodSeconds": 5 },
                    "securityContext": {
                        "runAsNonRoot": true,
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "capabilities": { "drop": ["ALL"] },
                    },
                    "volumeMounts": [{ "name": "tmp", "mountPath": "/tmp" }],
                }],
                "volumes": [{ "name": "tmp", "emptyDir": { "sizeLimit": "64Mi" } }],
            },
        });
        serde_json::from_value(pod).map_err(|error| {
            ProvisionError(format!("the runtime pod template is invalid: {error}"))
        })
    }

    fn service(&self, workspace_id: &str, name: &str) -> Result<Service, ProvisionError> {
        let service = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": self.settings.namespace,
                "labels": self.labels(workspace_id, name),
                "annotations": { WORKSPACE_ANNOTATION: workspace_id },
            },
            "spec": {
                "selector": { POD_LABEL: name },
                "ports": [{
                    "name": "grpc",
                    "port": self.settings.port,
                    "targetPort": "grpc",
                    "appProtocol": "kubernetes.io/h2c",
                }],
            },
        });
        serde_json::from_value(service)
            .map_err(|error| ProvisionError(format!("the runtime service is invalid: {error}")))
    }
}

/// One workspace's pod, as a [`crate::driver::Runtime`] holds it.
#[derive(Debug)]
pub struct PodHandle {
    cluster: Arc<Cluster>,
    pub name: String,
    pub address: String,
    /// `None` while the pod lives; why it died, once it has.
    pub exit: watch::Receiver<Option<String>>,
    _watch: DropGuard,
}

impl PodHandle {
    /// Starts following the pod in the snapshot: `exit` turns `Some` as soon as it dies.
    fn watch(cluster: Arc<Cluster>, name: String, uid: String, address: String) -> Self {
        let (sender, exit) = watch::channel(None);
        let stop = CancellationToken::new();
        let mut snapshot = cluster.snapshot.clone();
        let pod = name.clone();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let death = tokio::select! {
                () = stopped.cancelled() => return,
                death = snapshot.wait_for(|snapshot| snapshot.death(&pod, &uid).is_some()) => {
                    match death {
                        Ok(snapshot) => snapshot.death(&pod, &uid).unwrap_or_default(),
                        Err(_) => "the pod watch stopped".to_owned(),
                    }
                }
            };
            tracing::warn!(%pod, %death, "runtime pod died");
            sender.send_replace(Some(death));
        });
        Self {
            cluster,
            name,
            address,
            exit,
            _watch: stop.drop_guard(),
        }
    }

    /// Deletes the pod and its Service and waits (bounded) until the watch sees the pod gone.
    pub async fn stop(&self) {
        self.cluster.delete_pod(&self.name).await;
        self.cluster.delete_service(&self.name).await;
        let mut exit = self.exit.clone();
        if tokio::time::timeout(STOP_TIMEOUT, exit.wait_for(Option::is_some))
            .await
            .is_err()
        {
            tracing::warn!(pod = %self.name, "runtime pod not gone in time after delete");
        }
    }

    /// Deletes what a provisioning attempt that did not make it left behind, without waiting.
    pub fn abandon(cluster: &Arc<Cluster>, workspace_id: &str) {
        let cluster = Arc::clone(cluster);
        let name = pod_name(workspace_id);
        tokio::spawn(async move {
            cluster.delete_pod(&name).await;
            cluster.delete_service(&name).await;
        });
    }
}

/// Lists the driver's pods, then watches them from that version; on any break (an error, the
/// server's timeout, 410 Gone) lists again. Publishes every change to the snapshot.
async fn watch_pods(pods: Api<Pod>, sender: watch::Sender<Snapshot>, stop: CancellationToken) {
    let selector = selector();
    loop {
        let watched = async {
            let list = pods.list(&ListParams::default().labels(&selector)).await?;
            let version = list.metadata.resource_version.clone().unwrap_or_default();
            let listed: HashMap<String, PodState> =
                list.items.iter().filter_map(PodState::of).collect();
            sender.send_modify(|snapshot| {
                let gone: Vec<String> = snapshot
                    .pods
                    .iter()
                    .filter(|(name, pod)| listed.get(*name).is_none_or(|now| now.uid != pod.uid))
                    .map(|(_, pod)| pod.uid.clone())
                    .collect();
                for uid in gone {
                    snapshot.bury(uid);
                }
                snapshot.pods = listed;
                snapshot.synced = true;
            });
            let params = WatchParams::default()
                .labels(&selector)
                .timeout(WATCH_TIMEOUT_SECONDS);
            let mut events = pods.watch(&params, &version).await?.boxed();
            while let Some(event) = events.try_next().await? {
                match event {
                    WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                        if let Some((name, state)) = PodState::of(&pod) {
                            sender.send_modify(|snapshot| {
                                if let Some(old) = snapshot.pods.insert(name, state.clone())
                                    && old.uid != state.uid
                                {
                                    snapshot.bury(old.uid);
                                }
                            });
                        }
                    }
                    WatchEvent::Deleted(pod) => {
                        if let Some((name, state)) = PodState::of(&pod) {
                            sender.send_modify(|snapshot| {
                                if snapshot
                                    .pods
                                    .get(&name)
                                    .is_some_and(|old| old.uid == state.uid)
                                {
                                    snapshot.pods.remove(&name);
                                }
                                snapshot.bury(state.uid);
                            });
                        }
                    }
                    WatchEvent::Bookmark(_) => {}
                    WatchEvent::Error(status) => {
                        tracing::debug!(code = status.code, message = %status.message, "pod watch ended");
                        break;
                    }
                }
            }
            Ok::<(), kube::Error>(())
        };
        tokio::select! {
            () = stop.cancelled() => return,
            result = watched => {
                if let Err(error) = result {
                    tracing::warn!(%error, "pod watch failed; listing again");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(WATCH_RETRY) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns_label(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    }

    #[test]
    fn pod_names_are_dns_labels_readable_and_distinct_for_any_workspace_id() {
        let ids = [
            "0190f4c2-7b1e-7c3a-9d2e-4f5a6b7c8d9e",
            "Workspace_With.UPPER/and spaces",
            "",
            "---",
            "ünïcødé",
            &"x".repeat(500),
            "ws-1",
            "WS-1",
        ];
        let mut seen = HashSet::new();
        for id in ids {
            let name = pod_name(id);
            assert!(is_dns_label(&name), "{id:?} -> {name:?}");
            assert!(seen.insert(name.clone()), "{id:?} collides: {name}");
        }
        assert!(pod_name("ws-1").starts_with("rt-ws-1-"));
        assert_eq!(pod_name("ws-1"), pod_name("ws-1"), "deterministic");
    }

    #[test]
    fn workspace_labels_are_the_id_when_valid_and_a_hash_otherwise() {
        assert_eq!(workspace_label("ws-1"), "ws-1");
        let hashed = workspace_label("has space");
        assert!(hashed.starts_with("h-") && hashed.len() <= 63, "{hashed}");
        assert!(workspace_label(&"a".repeat(64)).starts_with("h-"));
        assert!(workspace_label("-leading").starts_with("h-"));
    }

    #[test]
    fn a_pod_is_dead_once_deleted_replaced_or_failed_but_not_before_it_is_seen() {
        let mut snapshot = Snapshot {
            synced: true,
            ..Snapshot::default()
        };
        assert_eq!(snapshot.death("rt-a", "uid-1"), None, "not seen yet");
        let alive = PodState {
            uid: "uid-1".into(),
            ip: Some("10.0.0.1".into()),
            running: true,
            dead: None,
        };
        snapshot.pods.insert("rt-a".into(), alive.clone());
        assert_eq!(snapshot.death("rt-a", "uid-1"), None);
        snapshot.pods.insert(
            "rt-a".into(),
            PodState {
                uid: "uid-2".into(),
                ..alive
            },
        );
        assert!(snapshot.death("rt-a", "uid-1").is_some(), "replaced");
        snapshot.bury("uid-2".into());
        assert!(snapshot.death("rt-a", "uid-2").is_some(), "deleted");
    }
}
