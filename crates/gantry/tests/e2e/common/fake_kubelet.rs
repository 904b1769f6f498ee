//! Stand-in kubelets for control-plane tests: Node objects and Leases written by
//! the test, pods reported Running and Ready without containers. A node can be
//! "lost" (its kubelet stops: no more Lease renewals, pod updates or deletions),
//! which is what the node lifecycle controller must notice.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// What a fake node offers.
pub struct NodeSpec<'a> {
    pub name: &'a str,
    pub cpu: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
    /// `key=value:Effect`
    pub taints: &'a [&'a str],
}

/// Fake nodes whose kubelets run until they are lost or the cluster is dropped.
pub struct FakeCluster {
    client: Client,
    alive: Arc<Mutex<HashSet<String>>>,
    shutdown: CancellationToken,
}

impl FakeCluster {
    /// Starts the pod-reporting half of every fake kubelet.
    pub fn start(client: Client) -> FakeCluster {
        let cluster = FakeCluster {
            client,
            alive: Arc::default(),
            shutdown: CancellationToken::new(),
        };
        tokio::spawn(report_pods(
            cluster.client.clone(),
            cluster.alive.clone(),
            cluster.shutdown.child_token(),
        ));
        cluster
    }

    /// Registers a Ready node with its Lease and keeps renewing it.
    pub async fn add_node(&self, spec: NodeSpec<'_>) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let labels: BTreeMap<&str, &str> = spec
            .labels
            .iter()
            .copied()
            .chain([("kubernetes.io/hostname", spec.name)])
            .collect();
        let taints: Vec<Value> = spec.taints.iter().map(|t| taint(t)).collect();
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": spec.name, "labels": labels},
            "spec": {"taints": taints},
        });
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(node).expect("node"),
            )
            .await
            .expect("node created");
        let now = Timestamp::now();
        let status = json!({"status": {
            "capacity": {"cpu": spec.cpu, "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": spec.cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": now, "lastTransitionTime": now}],
        }});
        nodes
            .patch_status(spec.name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .expect("node status");
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": spec.name},
            "spec": {"holderIdentity": spec.name, "leaseDurationSeconds": 40,
                     "renewTime": MicroTime(now)},
        });
        leases
            .create(
                &PostParams::default(),
                &serde_json::from_value(lease).expect("lease"),
            )
            .await
            .expect("lease created");
        self.alive
            .lock()
            .expect("alive set")
            .insert(spec.name.to_string());
        tokio::spawn(renew_lease(
            leases,
            spec.name.to_string(),
            self.alive.clone(),
            self.shutdown.child_token(),
        ));
    }

    /// Stops the node's kubelet, as if the machine went away.
    pub fn lose_node(&self, name: &str) {
        self.alive.lock().expect("alive set").remove(name);
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn taint(text: &str) -> Value {
    let (key_value, effect) = text.split_once(':').expect("key=value:Effect");
    let (key, value) = key_value.split_once('=').unwrap_or((key_value, ""));
    json!({"key": key, "value": value, "effect": effect})
}

async fn renew_lease(
    leases: Api<Lease>,
    node: String,
    alive: Arc<Mutex<HashSet<String>>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !alive.lock().expect("alive set").contains(&node) {
            return;
        }
        let renew = json!({"spec": {"renewTime": MicroTime(Timestamp::now())}});
        let _ = leases
            .patch(&node, &PatchParams::default(), &Patch::Merge(renew))
            .await;
    }
}

/// Reports pods on live nodes Running and Ready, and finishes their graceful
/// deletion, as their kubelets would.
async fn report_pods(
    client: Client,
    alive: Arc<Mutex<HashSet<String>>>,
    shutdown: CancellationToken,
) {
    let all: Api<Pod> = Api::all(client.clone());
    let events = watcher(all, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut events = std::pin::pin!(events);
    loop {
        let pod = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => match event {
                Some(Ok(pod)) => pod,
                Some(Err(_)) => continue,
                None => return,
            },
        };
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        if !alive.lock().expect("alive set").contains(&node) {
            continue;
        }
        let namespaced: Api<Pod> =
            Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        if pod.metadata.deletion_timestamp.is_some() {
            let _ = namespaced
                .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
                .await;
        } else if phase(&pod) != Some("Running") {
            let now = Timestamp::now();
            let status = json!({"status": {
                "phase": "Running", "startTime": now,
                "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                ],
            }});
            let _ = namespaced
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(status),
                )
                .await;
        }
    }
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}
