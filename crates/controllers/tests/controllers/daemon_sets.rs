//! The DaemonSet controller against a real API server with fake nodes (Node objects
//! written by the test): which nodes get a pod as nodes come, go and are tainted.

use crate::common::test_kubelet;
use crate::common::workloads;

use std::collections::{BTreeMap, BTreeSet};

use gantry_controllers::daemon_set;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use test_kubelet::{ReadyPolicy, TestKubelet};
use workloads::{Cluster, eventually};

async fn start() -> Cluster {
    Cluster::start(daemon_set::run).await
}

async fn add_node(cluster: &Cluster, name: &str, labels: Value, taints: Value) {
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
    }))
    .expect("valid node");
    Api::<Node>::all(cluster.client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
}

async fn create_daemon_set(cluster: &Cluster, name: &str, pod_spec: Value) {
    let mut spec = json!({"containers": [{"name": "agent", "image": "busybox:test"}]});
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), pod_spec) {
        spec.extend(extra);
    }
    let ds: DaemonSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }))
    .expect("valid daemon set");
    cluster
        .api::<DaemonSet>()
        .create(&PostParams::default(), &ds)
        .await
        .expect("create daemon set");
}

/// The node each live pod of `app` is pinned to, sorted, as the scheduler would read
/// it from the pod's required node affinity.
async fn pinned_nodes(pods: &Api<Pod>, app: &str) -> Vec<String> {
    let params = ListParams::default().labels(&format!("app={app}"));
    let listed = pods.list(&params).await.expect("list pods").items;
    let mut nodes: Vec<String> = listed
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            let affinity = serde_json::to_value(&pod.spec.as_ref()?.affinity).ok()?;
            let term =
                "/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0";
            let field = affinity.pointer(&format!("{term}/matchFields/0"))?;
            assert_eq!(field["key"], "metadata.name");
            assert_eq!(field["operator"], "In");
            field["values"][0].as_str().map(str::to_string)
        })
        .collect();
    nodes.sort();
    nodes
}

/// Waits until the pods of `app` are pinned to exactly `expected`.
async fn wait_for_nodes(cluster: &Cluster, app: &str, expected: &[&str]) {
    let pods = cluster.api::<Pod>();
    eventually(&format!("{app} pods on {expected:?}"), async || {
        (pinned_nodes(&pods, app).await == expected).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pod_per_eligible_node_as_nodes_come_and_go() {
    let cluster = start().await;
    add_node(&cluster, "n1", json!({}), json!([])).await;
    add_node(&cluster, "n2", json!({}), json!([])).await;
    let dedicated = json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]);
    add_node(&cluster, "n3", json!({}), dedicated).await;

    create_daemon_set(&cluster, "plain", json!({})).await;
    let tolerant = json!({"tolerations": [{"key": "dedicated", "operator": "Exists"}]});
    create_daemon_set(&cluster, "tolerant", tolerant).await;
    wait_for_nodes(&cluster, "plain", &["n1", "n2"]).await;
    wait_for_nodes(&cluster, "tolerant", &["n1", "n2", "n3"]).await;

    let pods = cluster.api::<Pod>();
    let params = ListParams::default().labels("app=plain");
    let pod = pods.list(&params).await.expect("list").items.remove(0);
    let tolerations = pod.spec.and_then(|s| s.tolerations).unwrap_or_default();
    let tolerated_keys: Vec<_> = tolerations.iter().filter_map(|t| t.key.clone()).collect();
    assert!(tolerated_keys.contains(&"node.kubernetes.io/unreachable".to_string()));
    assert!(tolerated_keys.contains(&"node.kubernetes.io/unschedulable".to_string()));

    add_node(&cluster, "n4", json!({}), json!([])).await;
    wait_for_nodes(&cluster, "plain", &["n1", "n2", "n4"]).await;
    Api::<Node>::all(cluster.client.clone())
        .delete("n1", &DeleteParams::default())
        .await
        .expect("delete node");
    wait_for_nodes(&cluster, "plain", &["n2", "n4"]).await;
    wait_for_nodes(&cluster, "tolerant", &["n2", "n3", "n4"]).await;

    let sets = cluster.api::<DaemonSet>();
    eventually("the plain daemon set's status", async || {
        let status = sets.get("plain").await.ok()?.status?;
        let counted = status.desired_number_scheduled == 2
            && status.current_number_scheduled == 2
            && status.number_misscheduled == 0;
        counted.then_some(())
    })
    .await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selector_is_honoured_and_relabelled_nodes_follow() {
    let cluster = start().await;
    add_node(&cluster, "ssd-1", json!({"disk": "ssd"}), json!([])).await;
    add_node(&cluster, "hdd-1", json!({"disk": "hdd"}), json!([])).await;
    create_daemon_set(&cluster, "cache", json!({"nodeSelector": {"disk": "ssd"}})).await;
    wait_for_nodes(&cluster, "cache", &["ssd-1"]).await;

    let relabel = Patch::Merge(json!({"metadata": {"labels": {"disk": "ssd"}}}));
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    nodes
        .patch("hdd-1", &PatchParams::default(), &relabel)
        .await
        .expect("relabel node");
    wait_for_nodes(&cluster, "cache", &["hdd-1", "ssd-1"]).await;
    let unlabel = Patch::Merge(json!({"metadata": {"labels": {"disk": null}}}));
    nodes
        .patch("ssd-1", &PatchParams::default(), &unlabel)
        .await
        .expect("unlabel node");
    wait_for_nodes(&cluster, "cache", &["hdd-1"]).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_keeps_at_most_one_node_without_an_available_pod() {
    let mut cluster = start().await;
    for node in ["n1", "n2", "n3"] {
        add_node(&cluster, node, json!({}), json!([])).await;
    }
    let _kubelet = TestKubelet::start(
        cluster.client.clone(),
        workloads::NAMESPACE,
        ReadyPolicy::default(),
    );
    create_daemon_set(&cluster, "agent", json!({})).await;
    let sets = cluster.api::<DaemonSet>();
    let settled = async |sets: &Api<DaemonSet>| {
        let ds = sets.get("agent").await.ok()?;
        let status = ds.status?;
        let done = status.observed_generation == ds.metadata.generation
            && status.desired_number_scheduled == 3
            && status.updated_number_scheduled == Some(3)
            && status.number_available == Some(3);
        done.then_some(())
    };
    eventually("the daemon set to settle", async || settled(&sets).await).await;
    let log = cluster.pod_log().await;

    let patch = Patch::Strategic(json!({"spec": {"template": {"spec": {
        "containers": [{"name": "agent", "image": "busybox:v2"}],
    }}}}));
    sets.patch("agent", &PatchParams::default(), &patch)
        .await
        .expect("change the template");
    eventually("the rollout to finish", async || settled(&sets).await).await;

    // Replay the watch: every deleted old pod leaves its node unavailable until the
    // new pod that replaces it is Ready (the stand-in kubelet makes it so at once).
    let pods = cluster.api::<Pod>();
    let new_pods: BTreeSet<String> = pods
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|pod| pod.name_any())
        .collect();
    let sightings = log.sightings();
    let deleted: Vec<_> = sightings.iter().filter(|s| s.deleted).collect();
    assert_eq!(
        deleted.len(),
        3,
        "every old pod replaced once: {sightings:?}"
    );
    let mut ready: BTreeMap<String, bool> = BTreeMap::new();
    let mut replaced_nodes = 0;
    for sighting in &sightings {
        if sighting.deleted {
            replaced_nodes += 1;
        } else if new_pods.contains(&sighting.name) {
            ready.insert(sighting.name.clone(), sighting.ready);
        }
        let new_ready = ready.values().filter(|r| **r).count();
        let unavailable = replaced_nodes - new_ready;
        assert!(
            unavailable <= 1,
            "two nodes unavailable at once: {sightings:?}"
        );
    }
    cluster.stop().await;
}

/// Waits until every one of `nodes` nodes runs an available pod of the `agent` set's
/// current template.
async fn wait_settled(sets: &Api<DaemonSet>, nodes: i32) {
    eventually("the daemon set to settle", async || {
        let ds = sets.get("agent").await.ok()?;
        let status = ds.status?;
        let done = status.observed_generation == ds.metadata.generation
            && status.desired_number_scheduled == nodes
            && status.updated_number_scheduled == Some(nodes)
            && status.number_available == Some(nodes);
        done.then_some(())
    })
    .await;
}

/// The `agent` set's ControllerRevisions as `(revision number, hash label)`, lowest
/// number first.
async fn revisions_of(cluster: &Cluster) -> Vec<(i64, String)> {
    let listed = cluster
        .api::<ControllerRevision>()
        .list(&ListParams::default().labels("app=agent"))
        .await
        .expect("list controller revisions");
    let mut revisions: Vec<(i64, String)> = listed
        .items
        .iter()
        .map(|revision| {
            let hash = revision.labels().get("controller-revision-hash").cloned();
            assert_eq!(
                revision.name_any(),
                format!("agent-{}", hash.clone().unwrap_or_default()),
                "a revision is named after its set and hash"
            );
            (revision.revision, hash.unwrap_or_default())
        })
        .collect();
    revisions.sort();
    revisions
}

/// The revision hashes of the live `agent` pods.
async fn pod_hashes(pods: &Api<Pod>) -> BTreeSet<String> {
    let params = ListParams::default().labels("app=agent");
    let listed = pods.list(&params).await.expect("list pods").items;
    listed
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| pod.labels().get("controller-revision-hash").cloned())
        .collect()
}

async fn set_agent_image(sets: &Api<DaemonSet>, image: &str) {
    let patch = Patch::Strategic(json!({"spec": {"template": {"spec": {
        "containers": [{"name": "agent", "image": image}],
    }}}}));
    sets.patch("agent", &PatchParams::default(), &patch)
        .await
        .expect("change the template");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_follow_the_template_and_a_rollback_reuses_one() {
    let cluster = start().await;
    for node in ["n1", "n2"] {
        add_node(&cluster, node, json!({}), json!([])).await;
    }
    let _kubelet = TestKubelet::start(
        cluster.client.clone(),
        workloads::NAMESPACE,
        ReadyPolicy::default(),
    );
    create_daemon_set(&cluster, "agent", json!({})).await;
    let sets = cluster.api::<DaemonSet>();
    let limit = Patch::Merge(json!({"spec": {"revisionHistoryLimit": 1}}));
    sets.patch("agent", &PatchParams::default(), &limit)
        .await
        .expect("set the history limit");
    let pods = cluster.api::<Pod>();
    wait_settled(&sets, 2).await;
    let revisions = revisions_of(&cluster).await;
    let [(1, first)] = revisions.as_slice() else {
        panic!("one revision expected: {revisions:?}");
    };
    let first = first.clone();
    assert_eq!(pod_hashes(&pods).await, BTreeSet::from([first.clone()]));

    set_agent_image(&sets, "busybox:v2").await;
    wait_settled(&sets, 2).await;
    let revisions = revisions_of(&cluster).await;
    let second = revisions.last().expect("a revision").1.clone();
    assert_eq!(revisions, [(1, first.clone()), (2, second.clone())]);
    assert_eq!(pod_hashes(&pods).await, BTreeSet::from([second.clone()]));

    let revision = cluster
        .api::<ControllerRevision>()
        .get(&format!("agent-{first}"))
        .await
        .expect("first revision");
    let undo = Patch::Strategic(revision.data.expect("revision data").0);
    sets.patch("agent", &PatchParams::default(), &undo)
        .await
        .expect("roll back");
    wait_settled(&sets, 2).await;
    assert_eq!(
        revisions_of(&cluster).await,
        [(2, second.clone()), (3, first.clone())],
        "the first revision is reused with the next number"
    );
    assert_eq!(pod_hashes(&pods).await, BTreeSet::from([first.clone()]));

    set_agent_image(&sets, "busybox:v3").await;
    wait_settled(&sets, 2).await;
    eventually("the oldest unused revision to be trimmed", async || {
        let revisions = revisions_of(&cluster).await;
        let kept: Vec<i64> = revisions.iter().map(|(number, _)| *number).collect();
        (kept == [3, 4] && revisions[0].1 == first).then_some(())
    })
    .await;
    cluster.stop().await;
}
