//! The ReplicaSet and Deployment controllers against a real API server, with a
//! stand-in kubelet marking pods Ready and the real kubectl driving `rollout`.

use crate::common::test_kubelet;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use gantry_apiserver::testing::TestServer;
use gantry_controllers::{deployment, replicaset};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use test_kubelet::{ReadyPolicy, TestKubelet};

const NAMESPACE: &str = "default";
const TIMEOUT: Duration = Duration::from_secs(90);

/// An API server with the two controllers running in-process.
struct Cluster {
    shutdown: CancellationToken,
    controllers: JoinSet<()>,
    client: Client,
    server: TestServer,
}

impl Cluster {
    async fn start() -> Cluster {
        let server = TestServer::start();
        let client = server.client().await;
        let shutdown = CancellationToken::new();
        let mut controllers = JoinSet::new();
        controllers.spawn(replicaset::run(client.clone(), shutdown.clone()));
        controllers.spawn(deployment::run(client.clone(), shutdown.clone()));
        Cluster {
            shutdown,
            controllers,
            client,
            server,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    fn kubelet(&self, policy: ReadyPolicy) -> TestKubelet {
        TestKubelet::start(self.client.clone(), NAMESPACE, policy)
    }

    /// Runs the real kubectl against this server.
    async fn kubectl(&self, args: &[&str]) -> Output {
        let kubeconfig = self.server.kubeconfig();
        tokio::process::Command::new("/usr/bin/kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .await
            .expect("kubectl runs")
    }

    /// Runs kubectl, asserts it succeeded and returns its standard output.
    async fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args).await;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// Stops the controllers and waits until they have.
    async fn stop(mut self) {
        self.shutdown.cancel();
        while let Some(finished) = self.controllers.join_next().await {
            finished.expect("controller task ends cleanly");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `probe` until it yields a value, failing the test after [`TIMEOUT`].
async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn replica_set(name: &str, app: &str, replicas: i32) -> ReplicaSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "app", "image": "busybox:test"}]},
            },
        },
    }))
    .expect("valid replica set")
}

fn deployment(name: &str, replicas: i32, image: &str, strategy: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "strategy": strategy,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }))
    .expect("valid deployment")
}

fn image_patch(image: &str) -> Patch<serde_json::Value> {
    Patch::Strategic(json!({"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": image}],
    }}}}))
}

/// The live (not terminating) pods the object with this uid controls.
async fn pods_of(pods: &Api<Pod>, owner_uid: &str) -> Vec<Pod> {
    pods.list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| controller_uid(pod).as_deref() == Some(owner_uid))
        .collect()
}

fn controller_uid<K: kube::Resource>(object: &K) -> Option<String> {
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

fn image_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

async fn has_event(events: &Api<Event>, reason: &str, message: &str) -> bool {
    events
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .iter()
        .any(|e| e.reason.as_deref() == Some(reason) && e.message.as_deref() == Some(message))
}

/// Waits until the Deployment's current generation is fully rolled out and available.
async fn wait_rolled_out(deployments: &Api<Deployment>, name: &str, replicas: i32) -> Deployment {
    wait_for(&format!("deployment {name} rolled out"), async || {
        let d = deployments.get(name).await.ok()?;
        let status = d.status.clone()?;
        let complete = status.observed_generation == d.metadata.generation
            && status.updated_replicas == Some(replicas)
            && status.replicas == Some(replicas)
            && status.available_replicas == Some(replicas);
        complete.then_some(d)
    })
    .await
}

fn condition<'a>(
    d: &'a Deployment,
    type_: &str,
) -> Option<&'a k8s_openapi::api::apps::v1::DeploymentCondition> {
    d.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

async fn owned_replica_sets(replica_sets: &Api<ReplicaSet>, owner: &Deployment) -> Vec<ReplicaSet> {
    let uid = owner.uid();
    replica_sets
        .list(&ListParams::default())
        .await
        .expect("list replica sets")
        .items
        .into_iter()
        .filter(|rs| controller_uid(rs) == uid)
        .collect()
}

fn revision(object: &impl kube::Resource) -> Option<String> {
    object
        .meta()
        .annotations
        .as_ref()?
        .get("deployment.kubernetes.io/revision")
        .cloned()
}

/// One moment of the namespace's pods, as a watch saw it.
#[derive(Debug, Clone)]
struct Snapshot {
    /// Pods not terminating and Ready.
    available: usize,
    /// Every pod that exists.
    total: usize,
    /// Images of the pods that exist.
    images: BTreeSet<String>,
}

/// Records every state of the namespace's pods a watch goes through.
struct PodCensus {
    snapshots: Arc<Mutex<Vec<Snapshot>>>,
    stop: CancellationToken,
}

impl PodCensus {
    /// Starts watching; returns once the initial list is in.
    async fn start(pods: Api<Pod>) -> PodCensus {
        let snapshots = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(census(pods, snapshots.clone(), stop.clone(), ready_tx));
        ready_rx.await.expect("the census starts");
        PodCensus { snapshots, stop }
    }

    fn finish(self) -> Vec<Snapshot> {
        self.stop.cancel();
        self.snapshots.lock().expect("census lock").clone()
    }
}

async fn census(
    pods: Api<Pod>,
    snapshots: Arc<Mutex<Vec<Snapshot>>>,
    stop: CancellationToken,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut seen: HashMap<String, Pod> = HashMap::new();
    let mut initial: HashMap<String, Pod> = HashMap::new();
    let mut events = std::pin::pin!(watcher(pods, watcher::Config::default()));
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.next() => event,
        };
        let Some(Ok(event)) = event else {
            return;
        };
        match event {
            watcher::Event::Init => initial.clear(),
            watcher::Event::InitApply(pod) => {
                initial.insert(pod.uid().unwrap_or_default(), pod);
            }
            watcher::Event::InitDone => {
                seen = std::mem::take(&mut initial);
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            watcher::Event::Apply(pod) => {
                seen.insert(pod.uid().unwrap_or_default(), pod);
            }
            watcher::Event::Delete(pod) => {
                seen.remove(&pod.uid().unwrap_or_default());
            }
        }
        if ready.is_none() {
            let snapshot = Snapshot {
                available: seen
                    .values()
                    .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
                    .count(),
                total: seen.len(),
                images: seen.values().map(image_of).collect(),
            };
            snapshots.lock().expect("census lock").push(snapshot);
        }
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_set_creates_replaces_releases_scales_and_adopts() {
    let cluster = Cluster::start().await;
    let _kubelet = cluster.kubelet(ReadyPolicy::default());
    let replica_sets: Api<ReplicaSet> = cluster.api();
    let pods: Api<Pod> = cluster.api();
    let events: Api<Event> = cluster.api();

    let rs = replica_sets
        .create(&PostParams::default(), &replica_set("web", "web", 3))
        .await
        .expect("create replica set");
    let uid = rs.uid().expect("uid");
    let created = wait_for("3 pods", async || {
        let owned = pods_of(&pods, &uid).await;
        (owned.len() == 3).then_some(owned)
    })
    .await;
    for pod in &created {
        assert!(pod.name_any().starts_with("web-"), "{}", pod.name_any());
        assert_eq!(pod.labels(), &labels(&[("app", "web")]));
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("ReplicaSet", "web")
        );
        assert_eq!(owner.block_owner_deletion, Some(true));
    }
    wait_for("status counting 3 ready pods", async || {
        let status = replica_sets.get("web").await.ok()?.status?;
        (status.replicas == 3
            && status.ready_replicas == Some(3)
            && status.available_replicas == Some(3)
            && status.fully_labeled_replicas == Some(3)
            && status.observed_generation == Some(1))
        .then_some(())
    })
    .await;

    // A deleted pod is replaced.
    let victim = created[0].name_any();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .expect("delete pod");
    wait_for("a replacement pod", async || {
        let owned = pods_of(&pods, &uid).await;
        (owned.len() == 3 && owned.iter().all(|p| p.name_any() != victim)).then_some(())
    })
    .await;

    // A pod relabelled out of the selector is released and replaced.
    let stray = created[1].name_any();
    pods.patch(
        &stray,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "elsewhere"}}})),
    )
    .await
    .expect("relabel pod");
    wait_for("the relabelled pod released and replaced", async || {
        let released = pods.get(&stray).await.ok()?;
        let owned = pods_of(&pods, &uid).await;
        (controller_uid(&released).is_none()
            && owned.len() == 3
            && owned.iter().all(|p| p.name_any() != stray))
        .then_some(())
    })
    .await;

    // Scaling down deletes the surplus.
    replica_sets
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scale down");
    let remaining = wait_for("1 pod", async || {
        let owned = pods_of(&pods, &uid).await;
        (owned.len() == 1).then_some(owned)
    })
    .await;
    let kept = remaining[0].name_any();
    let deleted = created
        .iter()
        .map(|p| p.name_any())
        .find(|n| *n != victim && *n != stray && *n != kept);
    if let Some(deleted) = deleted {
        let message = format!("Deleted pod: {deleted}");
        wait_for("a SuccessfulDelete event", async || {
            has_event(&events, "SuccessfulDelete", &message)
                .await
                .then_some(())
        })
        .await;
    }
    let message = format!("Created pod: {}", created[2].name_any());
    wait_for("a SuccessfulCreate event", async || {
        has_event(&events, "SuccessfulCreate", &message)
            .await
            .then_some(())
    })
    .await;

    // An orphan matching a new ReplicaSet's selector is adopted instead of a new pod.
    let orphan: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orphan", "labels": {"app": "cache"}},
        "spec": {"containers": [{"name": "app", "image": "busybox:test"}]},
    }))
    .expect("valid pod");
    pods.create(&PostParams::default(), &orphan)
        .await
        .expect("create orphan");
    let cache = replica_sets
        .create(&PostParams::default(), &replica_set("cache", "cache", 1))
        .await
        .expect("create replica set");
    let cache_uid = cache.uid().expect("uid");
    wait_for("the cache replica set to settle", async || {
        let status = replica_sets.get("cache").await.ok()?.status?;
        (status.observed_generation == Some(1) && status.replicas == 1).then_some(())
    })
    .await;
    let owned: Vec<String> = pods_of(&pods, &cache_uid)
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(owned, ["orphan"]);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_respects_max_surge_and_max_unavailable_at_every_step() {
    let cluster = Cluster::start().await;
    let _kubelet = cluster.kubelet(ReadyPolicy {
        startup: Duration::from_millis(200),
        only_image: None,
    });
    let deployments: Api<Deployment> = cluster.api();
    let replica_sets: Api<ReplicaSet> = cluster.api();
    let pods: Api<Pod> = cluster.api();
    let events: Api<Event> = cluster.api();
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", 5, "busybox:v1", strategy),
        )
        .await
        .expect("create deployment");
    let first = wait_rolled_out(&deployments, "web", 5).await;
    let [old] = owned_replica_sets(&replica_sets, &first)
        .await
        .try_into()
        .expect("one replica set");
    let hash = old.labels()["pod-template-hash"].clone();
    assert_eq!(old.name_any(), format!("web-{hash}"));
    let selector = &old.spec.as_ref().expect("spec").selector;
    assert_eq!(
        selector.match_labels.as_ref().expect("match labels")["pod-template-hash"],
        hash
    );
    assert_eq!(revision(&old).as_deref(), Some("1"));
    assert_eq!(revision(&first).as_deref(), Some("1"));

    let census = PodCensus::start(pods.clone()).await;
    deployments
        .patch("web", &PatchParams::default(), &image_patch("busybox:v2"))
        .await
        .expect("change image");
    let done = wait_rolled_out(&deployments, "web", 5).await;
    wait_for("only new pods", async || {
        let all = pods.list(&ListParams::default()).await.ok()?.items;
        (all.len() == 5 && all.iter().all(|p| image_of(p) == "busybox:v2")).then_some(())
    })
    .await;
    let snapshots = census.finish();

    let min_available = snapshots.iter().map(|s| s.available).min();
    let max_total = snapshots.iter().map(|s| s.total).max();
    assert!(min_available >= Some(4), "{snapshots:#?}");
    assert!(max_total <= Some(6), "{snapshots:#?}");
    assert!(
        snapshots.iter().any(|s| s.images.len() == 2),
        "the census saw the rollout's intermediate steps: {snapshots:#?}"
    );

    let available = condition(&done, "Available").expect("Available condition");
    assert_eq!(available.status, "True");
    let progressing = condition(&done, "Progressing").expect("Progressing condition");
    assert_eq!(
        progressing.reason.as_deref(),
        Some("NewReplicaSetAvailable")
    );
    let status = done.status.as_ref().expect("status");
    assert_eq!(status.unavailable_replicas, Some(0));
    assert_eq!(revision(&done).as_deref(), Some("2"));

    let all = owned_replica_sets(&replica_sets, &done).await;
    assert_eq!(all.len(), 2);
    let new = all
        .iter()
        .find(|rs| rs.uid() != old.uid())
        .expect("new replica set");
    assert_eq!(revision(new).as_deref(), Some("2"));
    let old_now = all
        .iter()
        .find(|rs| rs.uid() == old.uid())
        .expect("old replica set kept as history");
    assert_eq!(old_now.spec.as_ref().and_then(|s| s.replicas), Some(0));
    for message in [
        format!("Scaled up replica set {} from 0 to 1", new.name_any()),
        format!("Scaled down replica set {} from 5 to 4", old.name_any()),
    ] {
        wait_for(&message, async || {
            has_event(&events, "ScalingReplicaSet", &message)
                .await
                .then_some(())
        })
        .await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_status_history_undo_and_restart() {
    let cluster = Cluster::start().await;
    let _kubelet = cluster.kubelet(ReadyPolicy::default());
    let deployments: Api<Deployment> = cluster.api();
    let replica_sets: Api<ReplicaSet> = cluster.api();
    let pods: Api<Pod> = cluster.api();
    deployments
        .create(
            &PostParams::default(),
            &deployment("app", 2, "busybox:v1", json!({"type": "RollingUpdate"})),
        )
        .await
        .expect("create deployment");
    let rollout_status = ["rollout", "status", "deployment/app", "--timeout=90s"];
    let out = cluster.kubectl_ok(&rollout_status).await;
    assert!(out.contains("successfully rolled out"), "{out}");

    deployments
        .patch("app", &PatchParams::default(), &image_patch("busybox:v2"))
        .await
        .expect("change image");
    let out = cluster.kubectl_ok(&rollout_status).await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let history = cluster
        .kubectl_ok(&["rollout", "history", "deployment/app"])
        .await;
    assert_eq!(listed_revisions(&history), ["1", "2"], "{history}");

    let out = cluster
        .kubectl_ok(&["rollout", "undo", "deployment/app"])
        .await;
    assert!(out.contains("rolled back"), "{out}");
    let out = cluster.kubectl_ok(&rollout_status).await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let undone = wait_rolled_out(&deployments, "app", 2).await;
    let template_image = undone
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone());
    assert_eq!(template_image.as_deref(), Some("busybox:v1"));
    assert_eq!(revision(&undone).as_deref(), Some("3"));
    let history = cluster
        .kubectl_ok(&["rollout", "history", "deployment/app"])
        .await;
    assert_eq!(listed_revisions(&history), ["2", "3"], "{history}");
    let reused = owned_replica_sets(&replica_sets, &undone)
        .await
        .into_iter()
        .find(|rs| revision(rs).as_deref() == Some("3"))
        .expect("the first replica set carries revision 3");
    assert_eq!(
        reused.annotations()["deployment.kubernetes.io/revision-history"],
        "1"
    );
    wait_for("only v1 pods", async || {
        let all = pods.list(&ListParams::default()).await.ok()?.items;
        (all.len() == 2 && all.iter().all(|p| image_of(p) == "busybox:v1")).then_some(())
    })
    .await;

    cluster
        .kubectl_ok(&["rollout", "restart", "deployment/app"])
        .await;
    let out = cluster.kubectl_ok(&rollout_status).await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let restarted = wait_rolled_out(&deployments, "app", 2).await;
    assert_eq!(revision(&restarted).as_deref(), Some("4"));
    wait_for("restarted pods", async || {
        let all = pods.list(&ListParams::default()).await.ok()?.items;
        let restarted = |p: &Pod| {
            p.annotations()
                .contains_key("kubectl.kubernetes.io/restartedAt")
        };
        (all.len() == 2 && all.iter().all(restarted)).then_some(())
    })
    .await;
    cluster.stop().await;
}

/// The revision numbers `kubectl rollout history` lists.
fn listed_revisions(history: &str) -> Vec<String> {
    history
        .lines()
        .skip_while(|line| !line.starts_with("REVISION"))
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_removes_every_old_pod_before_creating_new_ones() {
    let cluster = Cluster::start().await;
    let _kubelet = cluster.kubelet(ReadyPolicy::default());
    let deployments: Api<Deployment> = cluster.api();
    let pods: Api<Pod> = cluster.api();
    deployments
        .create(
            &PostParams::default(),
            &deployment("batch", 3, "busybox:v1", json!({"type": "Recreate"})),
        )
        .await
        .expect("create deployment");
    wait_rolled_out(&deployments, "batch", 3).await;

    let census = PodCensus::start(pods.clone()).await;
    deployments
        .patch("batch", &PatchParams::default(), &image_patch("busybox:v2"))
        .await
        .expect("change image");
    wait_rolled_out(&deployments, "batch", 3).await;
    wait_for("only new pods", async || {
        let all = pods.list(&ListParams::default()).await.ok()?.items;
        (all.len() == 3 && all.iter().all(|p| image_of(p) == "busybox:v2")).then_some(())
    })
    .await;
    let snapshots = census.finish();
    assert!(
        snapshots.iter().all(|s| s.images.len() <= 1),
        "old and new pods existed together: {snapshots:#?}"
    );
    let emptied = snapshots
        .iter()
        .position(|s| s.total == 0)
        .expect("all pods were gone at one point");
    assert!(
        snapshots[..emptied]
            .iter()
            .all(|s| !s.images.contains("busybox:v2"))
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_deployment_waits_to_roll_out_until_resumed() {
    let cluster = Cluster::start().await;
    let _kubelet = cluster.kubelet(ReadyPolicy::default());
    let deployments: Api<Deployment> = cluster.api();
    let replica_sets: Api<ReplicaSet> = cluster.api();
    deployments
        .create(
            &PostParams::default(),
            &deployment("held", 2, "busybox:v1", json!({"type": "RollingUpdate"})),
        )
        .await
        .expect("create deployment");
    wait_rolled_out(&deployments, "held", 2).await;

    let patch = json!({"spec": {"paused": true, "template": {"spec": {
        "containers": [{"name": "app", "image": "busybox:v2"}],
    }}}});
    deployments
        .patch("held", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .expect("pause and change image");
    let paused = wait_for("the paused change observed", async || {
        let d = deployments.get("held").await.ok()?;
        let reason = condition(&d, "Progressing")?.reason.clone();
        let observed = d.status.as_ref()?.observed_generation == d.metadata.generation;
        (observed && reason.as_deref() == Some("DeploymentPaused")).then_some(d)
    })
    .await;
    assert_eq!(owned_replica_sets(&replica_sets, &paused).await.len(), 1);

    // Paused, it still follows spec.replicas, with the old template.
    deployments
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scale while paused");
    let scaled = wait_for("3 available old pods", async || {
        let d = deployments.get("held").await.ok()?;
        let status = d.status.clone()?;
        (status.observed_generation == d.metadata.generation
            && status.available_replicas == Some(3))
        .then_some(d)
    })
    .await;
    let [only] = owned_replica_sets(&replica_sets, &scaled)
        .await
        .try_into()
        .expect("still one replica set");
    assert_eq!(only.spec.as_ref().and_then(|s| s.replicas), Some(3));

    deployments
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .expect("resume");
    let resumed = wait_rolled_out(&deployments, "held", 3).await;
    assert_eq!(owned_replica_sets(&replica_sets, &resumed).await.len(), 2);
    assert_eq!(revision(&resumed).as_deref(), Some("2"));
    cluster.stop().await;
}
