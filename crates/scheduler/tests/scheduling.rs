//! The scheduler against a real API server: fake nodes written by the test, pods
//! created through the API, decisions observed through the API.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use gantry_apiserver::testing::TestServer;
use gantry_scheduler::filters::volume_binding::SELECTED_NODE;
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A running scheduler and the server it schedules on; stops the scheduler when dropped.
struct Cluster {
    client: kube::Client,
    stop: CancellationToken,
    scheduler: Option<tokio::task::JoinHandle<Result<(), gantry_scheduler::SchedulerError>>>,
    _server: TestServer,
}

impl Cluster {
    async fn start() -> Cluster {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let server = TestServer::start();
        let client = server.client().await;
        let stop = CancellationToken::new();
        let scheduler = tokio::spawn(gantry_scheduler::run(client.clone(), stop.clone()));
        Cluster {
            client,
            stop,
            scheduler: Some(scheduler),
            _server: server,
        }
    }

    /// Stops the scheduler and checks it stopped cleanly.
    async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(scheduler) = self.scheduler.take() {
            let stopped = tokio::time::timeout(TIMEOUT, scheduler).await;
            stopped
                .expect("the scheduler stops")
                .expect("no panic")
                .expect("no error");
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates a Ready node with `cpu`/`memory` allocatable and `labels`, tainted with `taints`.
    async fn add_node(
        &self,
        name: &str,
        cpu: &str,
        labels: &[(&str, &str)],
        taints: serde_json::Value,
    ) {
        let mut all_labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        all_labels.insert("kubernetes.io/hostname", name);
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": all_labels},
            "spec": {"taints": taints},
        }))
        .expect("node");
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
        let status = json!({"status": {
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        }});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .expect("node status");
    }

    async fn add_pod(&self, name: &str, cpu: &str, extra_spec: serde_json::Value) {
        let mut pod = json!({
            "metadata": {"name": name, "labels": {"app": name.trim_end_matches(char::is_numeric)}},
            "spec": {"containers": [{
                "name": "main", "image": "busybox:test",
                "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}},
            }]},
        });
        if let (Some(spec), Some(extra)) = (pod["spec"].as_object_mut(), extra_spec.as_object()) {
            spec.extend(extra.clone());
        }
        let pod: Pod = serde_json::from_value(pod).expect("pod");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }

    /// Waits until `name` is bound and returns its node.
    async fn node_of(&self, name: &str) -> String {
        self.wait_for(name, |pod| {
            pod.spec
                .as_ref()
                .and_then(|spec| spec.node_name.clone())
                .filter(|node| !node.is_empty())
        })
        .await
    }

    /// Waits until `name` has PodScheduled=False/Unschedulable and returns its message.
    async fn unschedulable_message(&self, name: &str) -> String {
        self.wait_for(name, |pod| {
            let conditions = pod.status.as_ref()?.conditions.as_ref()?;
            let scheduled = conditions.iter().find(|c| c.type_ == "PodScheduled")?;
            (scheduled.status == "False" && scheduled.reason.as_deref() == Some("Unschedulable"))
                .then(|| scheduled.message.clone().unwrap_or_default())
        })
        .await
    }

    async fn wait_for<T>(&self, name: &str, probe: impl Fn(&Pod) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(pod) = self.pods().get_opt(name).await.expect("get pod")
                && let Some(found) = probe(&pod)
            {
                return found;
            }
            if tokio::time::Instant::now() >= deadline {
                let pod = self.pods().get_opt(name).await.expect("get pod");
                panic!(
                    "timed out waiting for pod {name}: {:?}",
                    pod.and_then(|pod| pod.status)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The message of the `reason` Event about pod `name`, once there is one.
    async fn event(&self, name: &str, reason: &str) -> String {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let list = events
                .list(&ListParams::default())
                .await
                .expect("list events");
            let found = list.items.into_iter().find(|event| {
                event.involved_object.name.as_deref() == Some(name)
                    && event.reason.as_deref() == Some(reason)
            });
            if let Some(event) = found {
                let source = event.source.and_then(|source| source.component);
                assert_eq!(source.as_deref(), Some("default-scheduler"));
                return event.message.unwrap_or_default();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for a {reason} event on {name}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn pods_spread_within_requests_and_wait_for_room() {
    let cluster = Cluster::start().await;
    for node in ["node-1", "node-2", "node-3"] {
        cluster.add_node(node, "2", &[], json!([])).await;
    }
    for i in 0..6 {
        cluster.add_pod(&format!("web{i}"), "1", json!({})).await;
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..6 {
        *per_node
            .entry(cluster.node_of(&format!("web{i}")).await)
            .or_default() += 1;
    }
    assert_eq!(
        per_node,
        BTreeMap::from([
            ("node-1".into(), 2),
            ("node-2".into(), 2),
            ("node-3".into(), 2)
        ])
    );
    assert_eq!(
        cluster.event("web0", "Scheduled").await,
        format!(
            "Successfully assigned default/web0 to {}",
            cluster.node_of("web0").await
        )
    );

    cluster.add_pod("extra", "1", json!({})).await;
    let expected = "0/3 nodes are available: 3 Insufficient cpu. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod..";
    assert_eq!(cluster.unschedulable_message("extra").await, expected);
    assert_eq!(cluster.event("extra", "FailedScheduling").await, expected);

    cluster.add_node("node-4", "2", &[], json!([])).await;
    assert_eq!(cluster.node_of("extra").await, "node-4");
    cluster.shutdown().await;
}

#[tokio::test]
async fn node_selectors_and_taints_steer_pods() {
    let cluster = Cluster::start().await;
    cluster.add_node("plain", "4", &[], json!([])).await;
    cluster
        .add_node("ssd", "4", &[("disk", "ssd")], json!([]))
        .await;
    let gpu_taint = json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]);
    cluster.add_node("tainted", "4", &[], gpu_taint).await;

    cluster
        .add_pod("fast", "100m", json!({"nodeSelector": {"disk": "ssd"}}))
        .await;
    assert_eq!(cluster.node_of("fast").await, "ssd");
    for i in 0..4 {
        cluster
            .add_pod(&format!("plain{i}"), "100m", json!({}))
            .await;
        assert_ne!(cluster.node_of(&format!("plain{i}")).await, "tainted");
    }
    let toleration =
        json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]);
    let pinned = json!({"tolerations": toleration, "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["tainted"]}]}]
    }}}});
    cluster.add_pod("trainer", "100m", pinned).await;
    assert_eq!(cluster.node_of("trainer").await, "tainted");

    cluster
        .add_pod(
            "impossible",
            "100m",
            json!({"nodeSelector": {"disk": "nvme"}}),
        )
        .await;
    let expected = "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, \
         2 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling..";
    assert_eq!(cluster.unschedulable_message("impossible").await, expected);
    assert_eq!(
        cluster.event("impossible", "FailedScheduling").await,
        expected
    );

    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let label = json!({"metadata": {"labels": {"disk": "nvme"}}});
    nodes
        .patch("plain", &PatchParams::default(), &Patch::Merge(label))
        .await
        .expect("label node");
    assert_eq!(cluster.node_of("impossible").await, "plain");
    cluster.shutdown().await;
}

#[tokio::test]
async fn required_anti_affinity_puts_replicas_on_different_nodes() {
    let cluster = Cluster::start().await;
    for i in 1..=5 {
        cluster
            .add_node(&format!("node-{i}"), "8", &[], json!([]))
            .await;
    }
    let anti_affinity = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {"app": "db"}},
        "topologyKey": "kubernetes.io/hostname",
    }]}}});
    for i in 0..5 {
        cluster
            .add_pod(&format!("db{i}"), "100m", anti_affinity.clone())
            .await;
    }
    let mut nodes = HashSet::new();
    for i in 0..5 {
        nodes.insert(cluster.node_of(&format!("db{i}")).await);
    }
    assert_eq!(nodes.len(), 5, "one replica per node: {nodes:?}");

    cluster.add_pod("db5", "100m", anti_affinity).await;
    assert_eq!(
        cluster.unschedulable_message("db5").await,
        "0/5 nodes are available: 5 node(s) didn't satisfy existing pods anti-affinity rules. \
         preemption: 0/5 nodes are available: 5 No preemption victims found for incoming pod.."
    );
    cluster.shutdown().await;
}

/// A pod using claim `claim` as its only volume.
fn claim_volume(claim: &str) -> serde_json::Value {
    json!({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]})
}

impl Cluster {
    async fn add_claim(&self, name: &str, class: &str) {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": class,
            },
        }))
        .expect("claim");
        Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), "default")
            .create(&PostParams::default(), &claim)
            .await
            .expect("create claim");
    }
}

#[tokio::test]
async fn claims_decide_where_pods_go() {
    let cluster = Cluster::start().await;
    for node in ["node-1", "node-2"] {
        cluster.add_node(node, "2", &[], json!([])).await;
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), "default");

    // The bootstrapped local-path class waits for the first consumer: the pod is
    // scheduled and its claim annotated with the chosen node.
    cluster.add_claim("delayed", "local-path").await;
    cluster
        .add_pod("first", "100m", claim_volume("delayed"))
        .await;
    let node = cluster.node_of("first").await;
    let claim = claims.get("delayed").await.expect("claim");
    let selected = claim
        .metadata
        .annotations
        .and_then(|annotations| annotations.get(SELECTED_NODE).cloned());
    assert_eq!(selected.as_deref(), Some(node.as_str()));
    // A second consumer follows the claim to that node.
    cluster
        .add_pod("second", "100m", claim_volume("delayed"))
        .await;
    assert_eq!(cluster.node_of("second").await, node);

    // No class means immediate binding: unschedulable until the binder binds it.
    cluster.add_claim("static", "").await;
    cluster
        .add_pod("waiting", "100m", claim_volume("static"))
        .await;
    assert_eq!(
        cluster.unschedulable_message("waiting").await,
        "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. \
         preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.."
    );

    // A claim bound to a local volume on node-2 keeps its pods there.
    let volume: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": "local-on-2"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/tmp/unused"},
            "claimRef": {"namespace": "default", "name": "pinned"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-2"]}
            ]}]}},
        },
    }))
    .expect("volume");
    Api::<PersistentVolume>::all(cluster.client.clone())
        .create(&PostParams::default(), &volume)
        .await
        .expect("create volume");
    let pinned: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "pinned"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": "",
            "volumeName": "local-on-2",
        },
    }))
    .expect("claim");
    claims
        .create(&PostParams::default(), &pinned)
        .await
        .expect("create claim");
    for i in 0..3 {
        let name = format!("pinned{i}");
        cluster.add_pod(&name, "100m", claim_volume("pinned")).await;
        assert_eq!(cluster.node_of(&name).await, "node-2");
    }
    cluster.shutdown().await;
}
