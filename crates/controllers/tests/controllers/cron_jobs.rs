//! The CronJob controller against a real API server, on a fake clock: the test moves
//! time from one scheduled minute to the next instead of waiting for it, and plays
//! the Job controller by marking Jobs complete.

use std::sync::Arc;
use std::time::Duration;

use gantry_apiserver::testing::TestServer;
use gantry_controllers::cron_job::{self, FakeClock};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "default";
const TIMEOUT: Duration = Duration::from_secs(60);

/// An API server with the CronJob controller running on a fake clock.
struct Cluster {
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    client: Client,
    clock: Arc<FakeClock>,
    _server: TestServer,
}

impl Cluster {
    async fn start() -> Cluster {
        let server = TestServer::start();
        let client = server.client().await;
        let shutdown = CancellationToken::new();
        let clock = FakeClock::new(Timestamp::now());
        let mut tasks = JoinSet::new();
        tasks.spawn(cron_job::run_with_clock(
            client.clone(),
            clock.clone(),
            shutdown.clone(),
        ));
        Cluster {
            shutdown,
            tasks,
            client,
            clock,
            _server: server,
        }
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    fn cron_jobs(&self) -> Api<CronJob> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// Creates an every-minute CronJob; returns the first minute it may fire at
    /// (the minute after its creation).
    async fn create(&self, name: &str, extra: serde_json::Value) -> Timestamp {
        let mut spec = json!({
            "schedule": "* * * * *",
            "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure",
                "containers": [{"name": "tick", "image": "busybox:test"}],
            }}}},
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        let cron_job: CronJob = serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("valid cron job");
        let created = self
            .cron_jobs()
            .create(&PostParams::default(), &cron_job)
            .await
            .expect("create cron job");
        let created_at = created.metadata.creation_timestamp.expect("created").0;
        minute_after(created_at)
    }

    /// Moves the fake clock a second past `minute`.
    fn set_clock_to(&self, minute: Timestamp) {
        self.clock.set(plus(minute, 1));
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

fn plus(time: Timestamp, seconds: i64) -> Timestamp {
    time.checked_add(SignedDuration::from_secs(seconds))
        .expect("in range")
}

/// The first whole minute after `time`.
fn minute_after(time: Timestamp) -> Timestamp {
    let minute = time.as_second().div_euclid(60) + 1;
    Timestamp::from_second(minute * 60).expect("in range")
}

fn job_name(cron_job: &str, minute: Timestamp) -> String {
    format!("{cron_job}-{}", minute.as_second() / 60)
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

/// The names of the Jobs `cron_job` controls, sorted.
async fn job_names(jobs: &Api<Job>, cron_job: &str) -> Vec<String> {
    let mut names: Vec<String> = jobs
        .list(&ListParams::default())
        .await
        .expect("list jobs")
        .items
        .into_iter()
        .filter(|job| job.metadata.deletion_timestamp.is_none())
        .filter(|job| {
            job.owner_references()
                .iter()
                .any(|r| r.kind == "CronJob" && r.name == cron_job && r.controller == Some(true))
        })
        .map(|job| job.name_any())
        .collect();
    names.sort();
    names
}

async fn wait_for_jobs(jobs: &Api<Job>, cron_job: &str, expected: &[String]) {
    wait_for(&format!("jobs {expected:?}"), async || {
        (job_names(jobs, cron_job).await == expected).then_some(())
    })
    .await;
}

/// Plays the Job controller: the Job succeeded.
async fn complete(jobs: &Api<Job>, name: &str) {
    let now = Timestamp::now().to_string();
    let status = json!({"status": {
        "startTime": now,
        "completionTime": now,
        "succeeded": 1,
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True"},
            {"type": "Complete", "status": "True"},
        ],
    }});
    jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("complete job");
}

async fn event_reasons(client: &Client) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    events
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_created_on_schedule() {
    let cluster = Cluster::start().await;
    let jobs = cluster.jobs();
    let first = cluster.create("tick", json!({})).await;
    // Before the first scheduled minute nothing runs.
    assert!(job_names(&jobs, "tick").await.is_empty());
    cluster.set_clock_to(first);
    wait_for_jobs(&jobs, "tick", &[job_name("tick", first)]).await;
    let second = plus(first, 60);
    cluster.set_clock_to(second);
    let expected = [job_name("tick", first), job_name("tick", second)];
    wait_for_jobs(&jobs, "tick", &expected).await;
    let job = jobs.get(&expected[0]).await.expect("first job");
    assert_eq!(
        job.annotations()[cron_job::SCHEDULED_TIMESTAMP],
        first.to_string()
    );
    let template = job.spec.expect("spec").template.spec.expect("pod spec");
    assert_eq!(
        template.containers[0].image.as_deref(),
        Some("busybox:test")
    );
    let status = wait_for("status of both runs", async || {
        let status = cluster.cron_jobs().get("tick").await.ok()?.status?;
        (status.active.as_ref()?.len() == 2).then_some(status)
    })
    .await;
    assert_eq!(status.last_schedule_time.map(|t| t.0), Some(second));
    // A finished run leaves `active` and sets lastSuccessfulTime.
    complete(&jobs, &expected[0]).await;
    wait_for("completion noticed", async || {
        let status = cluster.cron_jobs().get("tick").await.ok()?.status?;
        (status.active.as_ref()?.len() == 1 && status.last_successful_time.is_some()).then_some(())
    })
    .await;
    assert!(
        event_reasons(&cluster.client)
            .await
            .contains(&"SuccessfulCreate".to_string())
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_skips_while_a_job_is_active() {
    let cluster = Cluster::start().await;
    let jobs = cluster.jobs();
    let first = cluster
        .create("guarded", json!({"concurrencyPolicy": "Forbid"}))
        .await;
    cluster.set_clock_to(first);
    let first_job = job_name("guarded", first);
    wait_for_jobs(&jobs, "guarded", std::slice::from_ref(&first_job)).await;
    let second = plus(first, 60);
    cluster.set_clock_to(second);
    wait_for("the skip to be reported", async || {
        event_reasons(&cluster.client)
            .await
            .contains(&"JobAlreadyActive".to_string())
            .then_some(())
    })
    .await;
    assert_eq!(
        job_names(&jobs, "guarded").await,
        std::slice::from_ref(&first_job)
    );
    // Once the running Job finishes, the missed run starts.
    complete(&jobs, &first_job).await;
    wait_for_jobs(&jobs, "guarded", &[first_job, job_name("guarded", second)]).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limits_prune_finished_jobs() {
    let cluster = Cluster::start().await;
    let jobs = cluster.jobs();
    let first = cluster
        .create("pruned", json!({"successfulJobsHistoryLimit": 2}))
        .await;
    let mut kept = Vec::new();
    for run in 0..4 {
        let minute = plus(first, 60 * run);
        cluster.set_clock_to(minute);
        let name = job_name("pruned", minute);
        wait_for(&format!("job {name}"), async || {
            job_names(&jobs, "pruned")
                .await
                .contains(&name)
                .then_some(())
        })
        .await;
        complete(&jobs, &name).await;
        kept.push(name);
        // Only the two newest successful runs remain.
        let expected: Vec<String> = kept.iter().rev().take(2).rev().cloned().collect();
        wait_for_jobs(&jobs, "pruned", &expected).await;
    }
    assert!(
        event_reasons(&cluster.client)
            .await
            .contains(&"SuccessfulDelete".to_string())
    );
    cluster.stop().await;
}
