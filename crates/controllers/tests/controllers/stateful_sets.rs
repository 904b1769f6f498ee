//! The StatefulSet controller against a real API server, with a stand-in kubelet
//! marking pods Running and Ready; a watch records every pod change so ordering is
//! asserted on what the server actually saw.

use crate::common::test_kubelet;
use crate::common::workloads;

use std::time::Duration;

use gantry_controllers::stateful_set;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use test_kubelet::{ReadyPolicy, TestKubelet};
use workloads::{Cluster, eventually};

async fn start() -> Cluster {
    Cluster::start(stateful_set::run).await
}

fn kubelet(cluster: &Cluster) -> TestKubelet {
    let policy = ReadyPolicy {
        startup: Duration::from_millis(200),
        only_image: None,
    };
    TestKubelet::start(cluster.client.clone(), workloads::NAMESPACE, policy)
}

fn web(replicas: i32, policy: &str) -> StatefulSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "serviceName": "web",
            "podManagementPolicy": policy,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "busybox:test"}]},
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }],
        },
    }))
    .expect("valid stateful set")
}

async fn create(cluster: &Cluster, set: &StatefulSet) -> StatefulSet {
    cluster
        .api::<StatefulSet>()
        .create(&PostParams::default(), set)
        .await
        .expect("create stateful set")
}

/// The names of the live pods, sorted.
async fn live_pods(pods: &Api<Pod>) -> Vec<String> {
    let listed = pods.list(&ListParams::default()).await.expect("list pods");
    let mut names: Vec<String> = listed
        .items
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .map(|pod| pod.name_any())
        .collect();
    names.sort();
    names
}

/// Waits until the set reports `replicas` Ready pods all at its update revision, for
/// its current generation; returns that status.
async fn wait_rolled_out(cluster: &Cluster, replicas: i32) -> StatefulSet {
    let sets = cluster.api::<StatefulSet>();
    eventually("the stateful set to roll out", async || {
        let set = sets.get("web").await.ok()?;
        let status = set.status.as_ref()?;
        let done = status.observed_generation == set.metadata.generation
            && status.replicas == replicas
            && status.ready_replicas == Some(replicas)
            && status.updated_replicas == Some(replicas)
            && status.current_revision == status.update_revision;
        done.then_some(set)
    })
    .await
}

async fn scale(cluster: &Cluster, replicas: i32) {
    let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
    cluster
        .api::<StatefulSet>()
        .patch("web", &PatchParams::default(), &patch)
        .await
        .expect("scale stateful set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_ready_creates_pods_in_order_with_stable_identity_and_claims() {
    let mut cluster = start().await;
    let log = cluster.pod_log().await;
    let _kubelet = kubelet(&cluster);
    create(&cluster, &web(3, "OrderedReady")).await;
    let set = wait_rolled_out(&cluster, 3).await;

    for (later, earlier) in [("web-1", "web-0"), ("web-2", "web-1")] {
        let earlier_ready = log.position(|s| s.name == earlier && s.ready);
        let later_seen = log.position(|s| s.name == later);
        assert!(
            earlier_ready.is_some() && earlier_ready < later_seen,
            "{later} appeared before {earlier} was Ready: {:?}",
            log.sightings()
        );
    }

    let pod = cluster.api::<Pod>().get("web-1").await.expect("web-1");
    let spec = pod.spec.as_ref().expect("pod spec");
    assert_eq!(spec.hostname.as_deref(), Some("web-1"));
    assert_eq!(spec.subdomain.as_deref(), Some("web"));
    let labels = pod.labels();
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-1");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "1");
    let status = set.status.as_ref().expect("status");
    assert_eq!(
        labels.get("controller-revision-hash"),
        status.update_revision.as_ref()
    );
    assert!(
        status
            .update_revision
            .as_deref()
            .is_some_and(|r| r.starts_with("web-"))
    );
    let claim = spec
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.name == "data")
        .and_then(|volume| volume.persistent_volume_claim.as_ref())
        .map(|claim| claim.claim_name.as_str());
    assert_eq!(claim, Some("data-web-1"));
    let claims = cluster.api::<PersistentVolumeClaim>();
    for name in ["data-web-0", "data-web-1", "data-web-2"] {
        let claim = claims.get(name).await.expect("claim created from template");
        assert_eq!(claim.labels().get("app").map(String::as_str), Some("web"));
    }
    let events = cluster.api::<Event>();
    let listed = events.list(&ListParams::default()).await.expect("events");
    let created = listed.items.iter().any(|event| {
        event.reason.as_deref() == Some("SuccessfulCreate")
            && event.message.as_deref() == Some("create Pod web-0 in StatefulSet web successful")
    });
    assert!(created, "the SuccessfulCreate event is recorded");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_removes_the_highest_ordinals_first_and_keeps_claims() {
    let mut cluster = start().await;
    let _kubelet = kubelet(&cluster);
    create(&cluster, &web(3, "OrderedReady")).await;
    wait_rolled_out(&cluster, 3).await;
    let log = cluster.pod_log().await;

    scale(&cluster, 1).await;
    wait_rolled_out(&cluster, 1).await;
    let pods = cluster.api::<Pod>();
    eventually("web-1 and web-2 to go", async || {
        (live_pods(&pods).await == ["web-0"]).then_some(())
    })
    .await;
    assert_eq!(log.deletions(), ["web-2", "web-1"]);
    let claims = cluster.api::<PersistentVolumeClaim>();
    for name in ["data-web-0", "data-web-1", "data-web-2"] {
        assert!(
            claims.get_opt(name).await.expect("get claim").is_some(),
            "{name} is retained"
        );
    }

    scale(&cluster, 2).await;
    wait_rolled_out(&cluster, 2).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_replaces_the_highest_ordinal_first_one_ready_pod_at_a_time() {
    let mut cluster = start().await;
    let _kubelet = kubelet(&cluster);
    create(&cluster, &web(3, "Parallel")).await;
    let before = wait_rolled_out(&cluster, 3).await;
    let old_revision = before.status.and_then(|s| s.update_revision);
    let log = cluster.pod_log().await;

    let patch = Patch::Strategic(json!({"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "busybox:v2"}],
    }}}}));
    let sets = cluster.api::<StatefulSet>();
    sets.patch("web", &PatchParams::default(), &patch)
        .await
        .expect("change the template");
    let after = wait_rolled_out(&cluster, 3).await;
    let status = after.status.expect("status");
    let new_revision = status.update_revision.expect("update revision");
    assert_ne!(Some(&new_revision), old_revision.as_ref());
    assert_eq!(status.current_revision.as_ref(), Some(&new_revision));

    assert_eq!(
        log.first_seen_at_revision(&new_revision),
        ["web-2", "web-1", "web-0"]
    );
    for (later, earlier) in [("web-1", "web-2"), ("web-0", "web-1")] {
        let at_new = |name: &str, ready: bool| {
            let revision = new_revision.clone();
            let name = name.to_string();
            move |s: &workloads::Sighting| {
                s.name == name && s.revision.as_ref() == Some(&revision) && (s.ready || !ready)
            }
        };
        let earlier_ready = log.position(at_new(earlier, true));
        let later_deleted = log.position(|s| s.name == later && s.deleted);
        assert!(
            earlier_ready.is_some() && earlier_ready < later_deleted,
            "{later} was replaced before the new {earlier} was Ready: {:?}",
            log.sightings()
        );
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_is_recreated_with_the_same_name() {
    let cluster = start().await;
    let _kubelet = kubelet(&cluster);
    create(&cluster, &web(2, "OrderedReady")).await;
    wait_rolled_out(&cluster, 2).await;
    let pods = cluster.api::<Pod>();
    let old_uid = pods.get("web-0").await.expect("web-0").uid();

    pods.delete("web-0", &DeleteParams::default())
        .await
        .expect("delete web-0");
    eventually("web-0 to come back", async || {
        let pod = pods.get_opt("web-0").await.ok()??;
        (pod.uid() != old_uid && pod.metadata.deletion_timestamp.is_none()).then_some(())
    })
    .await;
    wait_rolled_out(&cluster, 2).await;
    assert_eq!(live_pods(&pods).await, ["web-0", "web-1"]);
    cluster.stop().await;
}

/// The set's ControllerRevisions as `(revision number, name)`, lowest number first.
async fn revisions_of(cluster: &Cluster) -> Vec<(i64, String)> {
    let listed = cluster
        .api::<ControllerRevision>()
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list controller revisions");
    let mut revisions: Vec<(i64, String)> = listed
        .items
        .iter()
        .map(|revision| (revision.revision, revision.name_any()))
        .collect();
    revisions.sort();
    revisions
}

async fn set_image(cluster: &Cluster, image: &str) {
    let patch = Patch::Strategic(json!({"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": image}],
    }}}}));
    cluster
        .api::<StatefulSet>()
        .patch("web", &PatchParams::default(), &patch)
        .await
        .expect("change the template");
}

fn update_revision_of(set: &StatefulSet) -> String {
    let status = set.status.as_ref().expect("status");
    status.update_revision.clone().expect("update revision")
}

/// What `kubectl rollout undo --to-revision` sends: the revision's data as a
/// strategic merge patch of the set.
async fn roll_back_to(cluster: &Cluster, revision_name: &str) {
    let revision = cluster
        .api::<ControllerRevision>()
        .get(revision_name)
        .await
        .expect("get revision");
    let data = revision.data.expect("revision data").0;
    cluster
        .api::<StatefulSet>()
        .patch("web", &PatchParams::default(), &Patch::Strategic(data))
        .await
        .expect("roll back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_are_recorded_reused_on_rollback_and_trimmed_to_the_history_limit() {
    let cluster = start().await;
    let _kubelet = kubelet(&cluster);
    let mut set = web(2, "Parallel");
    set.spec.as_mut().expect("spec").revision_history_limit = Some(1);
    create(&cluster, &set).await;
    let first = update_revision_of(&wait_rolled_out(&cluster, 2).await);
    assert_eq!(revisions_of(&cluster).await, [(1, first.clone())]);
    let revision = cluster
        .api::<ControllerRevision>()
        .get(&first)
        .await
        .expect("first revision");
    let owner = revision
        .owner_references()
        .first()
        .expect("owner reference");
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("StatefulSet", "web")
    );
    assert_eq!(owner.controller, Some(true));
    let data = revision.data.expect("data").0;
    assert_eq!(
        data.pointer("/spec/template/$patch"),
        Some(&json!("replace"))
    );
    assert_eq!(
        data.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("busybox:test"))
    );

    set_image(&cluster, "busybox:v2").await;
    let second = update_revision_of(&wait_rolled_out(&cluster, 2).await);
    assert_ne!(second, first);
    assert_eq!(
        revisions_of(&cluster).await,
        [(1, first.clone()), (2, second.clone())]
    );

    roll_back_to(&cluster, &first).await;
    let rolled_back = wait_rolled_out(&cluster, 2).await;
    assert_eq!(
        update_revision_of(&rolled_back),
        first,
        "the old revision is reused"
    );
    let image = |set: &StatefulSet| {
        let spec = set.spec.as_ref()?.template.spec.as_ref()?;
        spec.containers[0].image.clone()
    };
    assert_eq!(image(&rolled_back).as_deref(), Some("busybox:test"));
    assert_eq!(
        revisions_of(&cluster).await,
        [(2, second.clone()), (3, first.clone())]
    );

    set_image(&cluster, "busybox:v3").await;
    let third = update_revision_of(&wait_rolled_out(&cluster, 2).await);
    eventually("the oldest unused revision to be trimmed", async || {
        let revisions = revisions_of(&cluster).await;
        (revisions == [(3, first.clone()), (4, third.clone())]).then_some(())
    })
    .await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_below_the_partition_are_recreated_at_the_current_revision() {
    let cluster = start().await;
    let _kubelet = kubelet(&cluster);
    let mut set = web(3, "Parallel");
    let spec = set.spec.as_mut().expect("spec");
    spec.update_strategy = serde_json::from_value(json!({
        "type": "RollingUpdate", "rollingUpdate": {"partition": 2},
    }))
    .expect("valid strategy");
    create(&cluster, &set).await;
    let old = update_revision_of(&wait_rolled_out(&cluster, 3).await);

    set_image(&cluster, "busybox:v2").await;
    let sets = cluster.api::<StatefulSet>();
    let pods = cluster.api::<Pod>();
    let revision_and_image = async |name: &str| {
        let pod = pods.get_opt(name).await.ok()??;
        if pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let revision = pod.labels().get("controller-revision-hash")?.clone();
        let image = pod.spec?.containers.first()?.image.clone()?;
        Some((revision, image))
    };
    let new = eventually("web-2 to be updated above the partition", async || {
        let status = sets.get("web").await.ok()?.status?;
        let new = status.update_revision.filter(|r| *r != old)?;
        let updated = status.updated_replicas == Some(1) && status.ready_replicas == Some(3);
        let web_2 = revision_and_image("web-2").await?;
        (updated && web_2 == (new.clone(), "busybox:v2".into())).then_some(new)
    })
    .await;
    let status = sets.get("web").await.expect("set").status.expect("status");
    assert_eq!(status.current_revision.as_ref(), Some(&old));
    assert_eq!(status.current_replicas, Some(2));

    let old_uid = pods.get("web-0").await.expect("web-0").uid();
    pods.delete("web-0", &DeleteParams::default())
        .await
        .expect("delete web-0");
    let recreated = eventually("web-0 to be recreated", async || {
        let pod = pods.get_opt("web-0").await.ok()??;
        (pod.uid() != old_uid).then_some(())?;
        revision_and_image("web-0").await
    })
    .await;
    assert_eq!(recreated, (old, "busybox:test".into()));
    assert_eq!(
        revision_and_image("web-2").await,
        Some((new, "busybox:v2".into()))
    );
    cluster.stop().await;
}
