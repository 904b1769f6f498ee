//! The Job controller against a real API server. There is no kubelet: the test plays
//! it, marking pods Succeeded or Failed through `pods/status`, and checks what the
//! controller does after each step.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use gantry_apiserver::testing::TestServer;
use gantry_controllers::{garbage_collector, job};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "default";
const TIMEOUT: Duration = Duration::from_secs(60);

/// An API server with the Job controller and the garbage collector running.
struct Cluster {
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    client: Client,
    _server: TestServer,
}

impl Cluster {
    async fn start() -> Cluster {
        let server = TestServer::start();
        let client = server.client().await;
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(job::run(client.clone(), shutdown.clone()));
        tasks.spawn(garbage_collector::run(client.clone(), shutdown.clone()));
        Cluster {
            shutdown,
            tasks,
            client,
            _server: server,
        }
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    async fn create(&self, spec: serde_json::Value, name: &str) -> Job {
        let job: Job = serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("valid job");
        self.jobs()
            .create(&PostParams::default(), &job)
            .await
            .expect("create job")
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

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

fn template() -> serde_json::Value {
    json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "work", "image": "busybox:test"}]}})
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Running in the Job's sense: neither finished nor being deleted.
fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase(pod), "Succeeded" | "Failed")
}

async fn pods_of(pods: &Api<Pod>, job: &Job) -> Vec<Pod> {
    let uid = job.uid().expect("job uid");
    pods.list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|pod| {
            pod.owner_references()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .collect()
}

/// Plays kubelet: the pod's containers ran and exited.
async fn finish(pods: &Api<Pod>, pod: &Pod, phase: &str) {
    let patch = json!({"status": {"phase": phase}});
    pods.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .expect("mark pod finished");
}

fn condition(job: &Job, kind: &str) -> Option<(String, String)> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == kind && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

async fn has_event(client: &Client, reason: &str) -> bool {
    let events: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    events
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .iter()
        .any(|e| e.reason.as_deref() == Some(reason))
}

/// Watches the namespace's pods and records the most that were ever active at once.
fn track_peak_active(pods: Api<Pod>, shutdown: CancellationToken) -> Arc<Mutex<usize>> {
    let peak = Arc::new(Mutex::new(0));
    let recorded = peak.clone();
    tokio::spawn(async move {
        let mut active = BTreeSet::new();
        let events = watcher(pods, watcher::Config::default()).touched_objects();
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
            if is_active(&pod) {
                active.insert(pod.name_any());
            } else {
                active.remove(&pod.name_any());
            }
            let mut peak = recorded.lock().expect("lock");
            *peak = (*peak).max(active.len());
        }
    });
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_parallelism_are_respected_at_every_step() {
    let cluster = Cluster::start().await;
    let pods = cluster.pods();
    let peak = track_peak_active(pods.clone(), cluster.shutdown.clone());
    let created = cluster
        .create(
            json!({"completions": 5, "parallelism": 2, "template": template()}),
            "batch",
        )
        .await;
    let mut finished = BTreeSet::new();
    while finished.len() < 5 {
        // Wait for the controller to top the active pods up, then finish one of them.
        let remaining = 5 - finished.len();
        let expected_active = remaining.min(2);
        let active = wait_for("active pods", async || {
            let active: Vec<Pod> = pods_of(&pods, &created)
                .await
                .into_iter()
                .filter(is_active)
                .collect();
            (active.len() == expected_active).then_some(active)
        })
        .await;
        let job = cluster.jobs().get("batch").await.expect("get job");
        let status = job.status.clone().unwrap_or_default();
        assert!(condition(&job, "Complete").is_none(), "complete too early");
        assert!(status.succeeded.unwrap_or(0) as usize <= finished.len());
        finish(&pods, &active[0], "Succeeded").await;
        finished.insert(active[0].name_any());
    }
    let job = wait_for("job complete", async || {
        let job = cluster.jobs().get("batch").await.ok()?;
        condition(&job, "Complete").map(|_| job)
    })
    .await;
    let status = job.status.clone().expect("status");
    assert_eq!(status.succeeded, Some(5));
    assert_eq!(status.active, Some(0));
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    assert!(condition(&job, "SuccessCriteriaMet").is_some());
    let all = pods_of(&pods, &created).await;
    assert_eq!(all.len(), 5, "exactly one pod per completion");
    assert!(*peak.lock().expect("lock") <= 2, "parallelism exceeded");
    // Every pod was counted, so every pod lost the tracking finalizer.
    wait_for("finalizers removed", async || {
        pods_of(&pods, &created)
            .await
            .iter()
            .all(|pod| pod.finalizers().is_empty())
            .then_some(())
    })
    .await;
    assert!(has_event(&cluster.client, "SuccessfulCreate").await);
    assert!(has_event(&cluster.client, "Completed").await);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_limit_fails_the_job() {
    let cluster = Cluster::start().await;
    let pods = cluster.pods();
    let created = cluster
        .create(
            json!({"completions": 3, "backoffLimit": 1, "template": template()}),
            "flaky",
        )
        .await;
    for failures in 1..=2 {
        let pod = wait_for("an active pod", async || {
            pods_of(&pods, &created).await.into_iter().find(is_active)
        })
        .await;
        finish(&pods, &pod, "Failed").await;
        wait_for("failure counted", async || {
            let job = cluster.jobs().get("flaky").await.ok()?;
            (job.status?.failed == Some(failures)).then_some(())
        })
        .await;
    }
    let job = wait_for("job failed", async || {
        let job = cluster.jobs().get("flaky").await.ok()?;
        condition(&job, "Failed").map(|_| job)
    })
    .await;
    let (reason, message) = condition(&job, "Failed").expect("failed");
    assert_eq!(reason, "BackoffLimitExceeded");
    assert_eq!(message, "Job has reached the specified backoff limit");
    let status = job.status.clone().expect("status");
    assert_eq!(status.failed, Some(2), "each failed pod counts once");
    assert_eq!(status.succeeded.unwrap_or(0), 0);
    // No replacement after the limit: the two failed pods are all there is.
    let all = pods_of(&pods, &created).await;
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|pod| !is_active(pod)));
    assert!(has_event(&cluster.client, "BackoffLimitExceeded").await);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_jobs_give_each_pod_an_index() {
    let cluster = Cluster::start().await;
    let pods = cluster.pods();
    let created = cluster
        .create(
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed", "template": template()}),
            "shards",
        )
        .await;
    let running = wait_for("three indexed pods", async || {
        let running = pods_of(&pods, &created).await;
        (running.len() == 3).then_some(running)
    })
    .await;
    let mut indexes: Vec<String> = running
        .iter()
        .map(|pod| pod.annotations()[job::COMPLETION_INDEX].clone())
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
    for pod in &running {
        let index = &pod.annotations()[job::COMPLETION_INDEX];
        assert_eq!(pod.labels()[job::COMPLETION_INDEX], *index);
        let hostname = pod.spec.as_ref().and_then(|s| s.hostname.clone());
        assert_eq!(hostname, Some(format!("shards-{index}")));
        finish(&pods, pod, "Succeeded").await;
    }
    let job = wait_for("indexed job complete", async || {
        let job = cluster.jobs().get("shards").await.ok()?;
        condition(&job, "Complete").map(|_| job)
    })
    .await;
    assert_eq!(
        job.status.and_then(|s| s.completed_indexes).as_deref(),
        Some("0-2")
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_fails_and_ttl_deletes_the_job() {
    let cluster = Cluster::start().await;
    let pods = cluster.pods();
    let created = cluster
        .create(
            json!({"activeDeadlineSeconds": 1, "ttlSecondsAfterFinished": 0, "template": template()}),
            "slow",
        )
        .await;
    wait_for("a pod", async || {
        pods_of(&pods, &created).await.into_iter().find(is_active)
    })
    .await;
    // The pod never finishes: after a second the deadline fails the Job, then the
    // zero TTL deletes it and the garbage collector its pod.
    wait_for("job deleted after the deadline", async || {
        cluster
            .jobs()
            .get_opt("slow")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(has_event(&cluster.client, "DeadlineExceeded").await);
    wait_for("pods collected", async || {
        pods_of(&pods, &created).await.is_empty().then_some(())
    })
    .await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_job_releases_and_removes_its_pods() {
    let cluster = Cluster::start().await;
    let pods = cluster.pods();
    let created = cluster
        .create(
            json!({"parallelism": 2, "completions": 4, "template": template()}),
            "doomed",
        )
        .await;
    wait_for("two running pods", async || {
        let running = pods_of(&pods, &created).await;
        (running.iter().filter(|pod| is_active(pod)).count() == 2).then_some(())
    })
    .await;
    cluster
        .jobs()
        .delete("doomed", &kube::api::DeleteParams::background())
        .await
        .expect("delete job");
    // The garbage collector deletes the pods; the tracking finalizer must not hold them.
    wait_for("pods gone", async || {
        pods_of(&pods, &created).await.is_empty().then_some(())
    })
    .await;
    cluster.stop().await;
}
