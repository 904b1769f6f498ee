//! The local-path provisioner with the PV binder against a real API server: a
//! class-less claim gets the bootstrapped default class and waits for its first
//! consumer; once the scheduler's annotation names a node, a hostPath volume
//! pinned to that node is created pre-bound and the claim binds to it. An
//! Immediate class provisions at once on a Ready node; a claim whose selected
//! node is gone is handed back to the scheduler.

use std::path::{Path, PathBuf};

use gantry_controllers::{local_path, volume_binder};
use gantry_scheduler::filters::volume_binding::SELECTED_NODE;
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::common::workloads::{Cluster, eventually};

/// The storage root the provisioner is configured with (nothing is written there:
/// the agent creates the directories).
const STORAGE_DIR: &str = "/var/lib/gantry-test/storage";

async fn start() -> Cluster {
    Cluster::start(|client, shutdown| async move {
        let config = local_path::LocalPathConfig {
            storage_dir: PathBuf::from(STORAGE_DIR),
        };
        tokio::join!(
            local_path::run_with(client.clone(), config, shutdown.clone()),
            volume_binder::run(client, shutdown),
        );
    })
    .await
}

async fn create_claim(cluster: &Cluster, name: &str, class: Option<&str>) -> PersistentVolumeClaim {
    let mut claim = json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    });
    if let Some(class) = class {
        claim["spec"]["storageClassName"] = json!(class);
    }
    let claim: PersistentVolumeClaim = serde_json::from_value(claim).expect("claim");
    cluster
        .api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &claim)
        .await
        .expect("create claim")
}

async fn create_ready_node(cluster: &Cluster, name: &str) {
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
    }))
    .expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("node ready");
}

async fn annotate(cluster: &Cluster, claim: &str, node: Option<&str>) {
    let patch = json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
    cluster
        .api::<PersistentVolumeClaim>()
        .patch(claim, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("annotate claim");
}

async fn bound_claim(cluster: &Cluster, name: &str) -> PersistentVolumeClaim {
    let claims = cluster.api::<PersistentVolumeClaim>();
    eventually(&format!("claim {name} to be Bound"), async || {
        let claim = claims.get(name).await.expect("get claim");
        let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
        (phase == Some("Bound")).then_some(claim)
    })
    .await
}

fn hostname_affinity(volume: &PersistentVolume) -> Vec<String> {
    volume
        .spec
        .as_ref()
        .and_then(|spec| spec.node_affinity.as_ref())
        .and_then(|affinity| affinity.required.as_ref())
        .into_iter()
        .flat_map(|selector| &selector.node_selector_terms)
        .flat_map(|term| term.match_expressions.iter().flatten())
        .filter(|requirement| requirement.key == "kubernetes.io/hostname")
        .flat_map(|requirement| requirement.values.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn a_default_class_claim_is_provisioned_on_the_selected_node() {
    let cluster = start().await;
    create_ready_node(&cluster, "node-a").await;
    let claim = create_claim(&cluster, "data", None).await;
    let class = claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone());
    assert_eq!(
        class.as_deref(),
        Some("local-path"),
        "DefaultStorageClass admission"
    );

    // WaitForFirstConsumer: the provisioner and the binder leave it alone for
    // now, which the resync of the claims (every claim is reconciled at start)
    // lets us observe once an unrelated claim of an Immediate class was served.
    let volumes: Api<PersistentVolume> = Api::all(cluster.client.clone());
    let immediate: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "now"},
        "provisioner": local_path::PROVISIONER,
        "volumeBindingMode": "Immediate",
    }))
    .expect("class");
    Api::<StorageClass>::all(cluster.client.clone())
        .create(&PostParams::default(), &immediate)
        .await
        .expect("create class");
    create_claim(&cluster, "marker", Some("now")).await;
    bound_claim(&cluster, "marker").await;
    let pending = cluster
        .api::<PersistentVolumeClaim>()
        .get("data")
        .await
        .expect("get claim");
    assert!(
        pending
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_ref())
            .is_none()
    );
    assert_eq!(
        volumes
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );

    annotate(&cluster, "data", Some("node-a")).await;
    let bound = bound_claim(&cluster, "data").await;
    let uid = claim.uid().expect("uid");
    let volume_name = format!("pvc-{uid}");
    assert_eq!(
        bound.spec.as_ref().and_then(|s| s.volume_name.as_deref()),
        Some(volume_name.as_str())
    );
    assert_eq!(
        bound
            .annotations()
            .get(local_path::STORAGE_PROVISIONER)
            .map(String::as_str),
        Some(local_path::PROVISIONER)
    );
    let volume = volumes.get(&volume_name).await.expect("provisioned volume");
    assert_eq!(
        volume
            .annotations()
            .get(local_path::PROVISIONED_BY)
            .map(String::as_str),
        Some(local_path::PROVISIONER)
    );
    assert_eq!(hostname_affinity(&volume), ["node-a"]);
    let spec = volume.spec.clone().expect("spec");
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    assert_eq!(spec.storage_class_name.as_deref(), Some("local-path"));
    let path = spec.host_path.expect("hostPath").path;
    let expected = local_path::volume_path(Path::new(STORAGE_DIR), &volume_name, "default", "data");
    assert_eq!(Path::new(&path), expected);
    assert_eq!(
        volume.status.and_then(|s| s.phase).as_deref(),
        Some("Bound")
    );

    let events: Api<Event> = cluster.api();
    let reasons: Vec<String> = eventually("the provisioning events", async || {
        let events = events.list(&ListParams::default()).await.expect("events");
        let reasons: Vec<String> = events
            .items
            .into_iter()
            .filter(|event| event.involved_object.name.as_deref() == Some("data"))
            .filter_map(|event| event.reason)
            .collect();
        reasons
            .contains(&"ProvisioningSucceeded".to_owned())
            .then_some(reasons)
    })
    .await;
    assert!(reasons.contains(&"Provisioning".to_owned()), "{reasons:?}");
    cluster.stop().await;
}

#[tokio::test]
async fn a_claim_whose_selected_node_is_gone_goes_back_to_the_scheduler() {
    let cluster = start().await;
    create_claim(&cluster, "orphan", None).await;
    annotate(&cluster, "orphan", Some("no-such-node")).await;
    let claims = cluster.api::<PersistentVolumeClaim>();
    eventually("the selected-node annotation to be dropped", async || {
        let claim = claims.get("orphan").await.expect("get claim");
        (!claim.annotations().contains_key(SELECTED_NODE)).then_some(())
    })
    .await;
    let volumes: Api<PersistentVolume> = Api::all(cluster.client.clone());
    assert!(
        volumes
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    cluster.stop().await;
}

#[tokio::test]
async fn an_immediate_class_provisions_at_once_with_its_reclaim_policy() {
    let cluster = start().await;
    create_ready_node(&cluster, "node-b").await;
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "keep"},
        "provisioner": local_path::PROVISIONER,
        "reclaimPolicy": "Retain",
        "volumeBindingMode": "Immediate",
    }))
    .expect("class");
    Api::<StorageClass>::all(cluster.client.clone())
        .create(&PostParams::default(), &class)
        .await
        .expect("create class");
    create_claim(&cluster, "kept", Some("keep")).await;
    let bound = bound_claim(&cluster, "kept").await;
    let volume_name = bound
        .spec
        .and_then(|s| s.volume_name)
        .expect("bound to a volume");
    let volume = Api::<PersistentVolume>::all(cluster.client.clone())
        .get(&volume_name)
        .await
        .expect("volume");
    assert_eq!(hostname_affinity(&volume), ["node-b"]);
    let policy = volume.spec.and_then(|s| s.persistent_volume_reclaim_policy);
    assert_eq!(policy.as_deref(), Some("Retain"));
    cluster.stop().await;
}
