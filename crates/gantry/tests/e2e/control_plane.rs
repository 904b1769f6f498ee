//! The control plane as one: a real `gantry server` (API server, scheduler and
//! controller manager, no node agent) with fake nodes written by the test, driven
//! by the real kubectl. Placement, rollout, rollback, node loss and deletion are
//! checked end to end, the way an operator would see them.

use crate::common;
use crate::common::fake_kubelet;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fake_kubelet::{FakeCluster, NodeSpec};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::{Api, Client};

use common::Server;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Nodes `n1`..`n5` and `n7` can hold one replica each; `small` lacks the CPU,
/// `hdd` fails the nodeSelector and `gpu` has an untolerated taint.
const FITTING: &[&str] = &["n1", "n2", "n3", "n4", "n5", "n7"];

fn web_deployment(image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 5
  selector:
    matchLabels: {{app: web}}
  strategy:
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      nodeSelector: {{disk: ssd}}
      tolerations:
      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 1}}
      - {{key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 1}}
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector:
              matchLabels: {{app: web}}
            topologyKey: kubernetes.io/hostname
      containers:
      - name: web
        image: {image}
        resources:
          requests: {{cpu: 500m}}
"#
    )
}

async fn add_nodes(cluster: &FakeCluster) {
    for name in FITTING {
        cluster
            .add_node(NodeSpec {
                name,
                cpu: "2",
                labels: &[("disk", "ssd")],
                taints: &[],
            })
            .await;
    }
    let misfits = [
        NodeSpec {
            name: "small",
            cpu: "200m",
            labels: &[("disk", "ssd")],
            taints: &[],
        },
        NodeSpec {
            name: "hdd",
            cpu: "2",
            labels: &[("disk", "hdd")],
            taints: &[],
        },
        NodeSpec {
            name: "gpu",
            cpu: "2",
            labels: &[("disk", "ssd")],
            taints: &["dedicated=gpu:NoSchedule"],
        },
    ];
    for node in misfits {
        cluster.add_node(node).await;
    }
}

/// The deployment's pods that are not being deleted, as (name, node, image, ready).
async fn live_pods(pods: &Api<Pod>) -> Vec<(String, String, String, bool)> {
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods list");
    list.items
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .map(|pod| {
            let spec = pod.spec.unwrap_or_default();
            let ready = pod
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (
                pod.metadata.name.unwrap_or_default(),
                spec.node_name.unwrap_or_default(),
                spec.containers
                    .first()
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default(),
                ready,
            )
        })
        .collect()
}

/// Waits until every one of 5 replicas runs `image`, Ready, on distinct fitting nodes.
async fn wait_placed(pods: &Api<Pod>, image: &str, excluded: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let live = live_pods(pods).await;
        let nodes: HashSet<&str> = live.iter().map(|(_, node, _, _)| node.as_str()).collect();
        let settled = live.len() == 5
            && nodes.len() == 5
            && live.iter().all(|(_, node, img, ready)| {
                *ready && img == image && FITTING.contains(&node.as_str())
            })
            && excluded.iter().all(|node| !nodes.contains(node));
        if settled {
            return live.into_iter().map(|(_, node, _, _)| node).collect();
        }
        assert!(
            Instant::now() < deadline,
            "5 ready replicas of {image} on distinct fitting nodes (not on {excluded:?}); pods: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the deployment's pods through a rollout to `image`, asserting at every
/// observation that at most `maxUnavailable` (1) of the 5 replicas is unavailable.
async fn watch_rollout(pods: &Api<Pod>, image: &str) {
    let deadline = Instant::now() + TIMEOUT;
    let mut observations = 0;
    loop {
        let live = live_pods(pods).await;
        let ready = live.iter().filter(|(_, _, _, ready)| *ready).count();
        assert!(
            ready >= 4,
            "more than maxUnavailable replicas down: {live:?}"
        );
        observations += 1;
        let done = live.len() == 5 && live.iter().all(|(_, _, img, ready)| *ready && img == image);
        if done {
            assert!(
                observations > 1,
                "the rollout was observed while it happened"
            );
            return;
        }
        assert!(Instant::now() < deadline, "rollout to {image}: {live:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut condition: F) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn describe_pod(server: &Server, name: &str) -> String {
    server.ok(&["describe", "pod", name])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_are_placed_rolled_out_rolled_back_and_survive_node_loss() {
    let server = Server::start_with(&["--disable-agent", "--node-monitor-grace-period", "3s"]);
    let client: Client = gantry_client::connect(&server.kubeconfig())
        .await
        .expect("admin client");
    let cluster = FakeCluster::start(client.clone());
    add_nodes(&cluster).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // Placement: requests, nodeSelector, taints and required anti-affinity.
    server.apply(&web_deployment("busybox:1"));
    wait_placed(&pods, "busybox:1", &[]).await;
    let scheduled = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods");
    for pod in &scheduled.items {
        let conditions = pod.status.as_ref().and_then(|s| s.conditions.clone());
        assert!(
            conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "PodScheduled" && c.status == "True"),
            "binding marks {:?} scheduled",
            pod.metadata.name
        );
    }

    // Rolling update within maxUnavailable, then back with `kubectl rollout undo`.
    server.ok(&["set", "image", "deployment/web", "web=busybox:2"]);
    watch_rollout(&pods, "busybox:2").await;
    server.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    server.ok(&["rollout", "undo", "deployment/web"]);
    watch_rollout(&pods, "busybox:1").await;
    wait_placed(&pods, "busybox:1", &[]).await;

    // Node loss: the lost node's replica is recreated on the spare fitting node.
    let before = live_pods(&pods).await;
    let (_, lost, _, _) = before.first().cloned().expect("a replica");
    cluster.lose_node(&lost);
    let nodes: Api<Node> = Api::all(client.clone());
    wait_until("the lost node to be tainted unreachable", async || {
        let node = nodes.get(&lost).await.expect("node");
        node.spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable")
    })
    .await;
    wait_placed(&pods, "busybox:1", &[lost.as_str()]).await;

    // An impossible pod says why in `kubectl describe`.
    server.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: huge\nspec:\n  containers:\n  - name: c\n    image: busybox:1\n    resources:\n      requests: {cpu: \"100\"}\n",
    );
    let mut described = String::new();
    wait_until("FailedScheduling in kubectl describe", async || {
        described = describe_pod(&server, "huge");
        described.contains("FailedScheduling")
    })
    .await;
    assert!(
        described.contains("nodes are available") && described.contains("Insufficient cpu"),
        "kube-scheduler's wording: {described}"
    );

    // Deleting the lost Node lets its orphaned pod go; deleting the Deployment
    // removes its ReplicaSets and pods.
    server.ok(&["delete", "node", &lost]);
    server.ok(&["delete", "deployment", "web"]);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    wait_until("the ReplicaSets and pods to be gone", async || {
        let sets = replica_sets.list(&ListParams::default()).await.expect("rs");
        let left = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .expect("pods");
        sets.items.is_empty() && left.items.is_empty()
    })
    .await;
    drop(cluster);
}
