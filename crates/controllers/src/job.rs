//! The Job controller: runs pods to completion, as kube-controller-manager's does.
//!
//! A Job wants `completions` successful pods (or, without `completions`, one success
//! of a work queue), running at most `parallelism` at a time, and fails once more
//! than `backoffLimit` pods failed or it ran longer than `activeDeadlineSeconds`.
//!
//! Counting must survive pods disappearing and the controller restarting, so like
//! upstream every pod carries the `batch.kubernetes.io/job-tracking` finalizer until
//! it is counted: a finished pod is first recorded — its uid in
//! `status.uncountedTerminatedPods` and its success or failure in the counters, in
//! one optimistic-concurrency status write — and only then is its finalizer removed;
//! a uid leaves `uncountedTerminatedPods` once its pod lost the finalizer. A pod is
//! therefore counted exactly once even if the controller stops between the steps.
//! (Upstream moves the count after removing the finalizer; the outcome is the same.)
//!
//! Each reconcile reads the Job and its pods from the API server, not from a cache,
//! so a pod created a moment ago is always seen and never created twice.
//!
//! Not implemented: pod failure policies, `backoffLimitPerIndex`, `successPolicy`,
//! the exponential delay between re-creations of failed pods, and counting container
//! restarts of `restartPolicy: OnFailure` pods towards the backoff limit.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use gantry_client::{EventRecorder, EventType, object_reference};

use crate::workload::{self, Error};

/// The component name on this controller's Events.
const COMPONENT: &str = "job-controller";

/// Held by every pod of a Job until the controller has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";

/// Label and annotation giving an Indexed Job's pod its completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// Pods created per reconcile at most; the rest follow on the next one.
const MAX_BURST: usize = 500;

/// Runs the Job controller until `shutdown`; API errors are logged and the Job
/// retried, never returned.
pub async fn run(client: Client, shutdown: CancellationToken) {
    let context = Arc::new(Context {
        client: client.clone(),
        recorder: EventRecorder::new(client.clone(), COMPONENT, None),
    });
    let controller = Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, "job controller");
            }
        });
    tokio::join!(controller, release_orphans(client, shutdown));
}

/// What every reconcile needs.
struct Context {
    client: Client,
    recorder: EventRecorder,
}

fn error_policy(job: Arc<Job>, err: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(job = %job.name_any(), %err, "syncing job");
    Action::requeue(workload::RETRY_AFTER_ERROR)
}

async fn reconcile(cached: Arc<Job>, context: Arc<Context>) -> Result<Action, Error> {
    let (name, namespace) = workload::name_and_namespace(cached.as_ref())?;
    let jobs: Api<Job> = Api::namespaced(context.client.clone(), &namespace);
    let Some(job) = jobs.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    Sync::new(&context, job, &namespace)?.run().await
}

/// A Job's terminal outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    Complete,
    Failed {
        reason: &'static str,
        message: &'static str,
    },
}

const BACKOFF_LIMIT_EXCEEDED: Finish = Finish::Failed {
    reason: "BackoffLimitExceeded",
    message: "Job has reached the specified backoff limit",
};
const DEADLINE_EXCEEDED: Finish = Finish::Failed {
    reason: "DeadlineExceeded",
    message: "Job was active longer than specified deadline",
};

/// One reconcile of one Job.
struct Sync<'a> {
    context: &'a Context,
    job: Job,
    spec: JobSpec,
    uid: String,
    pods: Api<Pod>,
    jobs: Api<Job>,
}

impl<'a> Sync<'a> {
    fn new(context: &'a Context, job: Job, namespace: &str) -> Result<Self, Error> {
        let name = job.name_any();
        let uid = job
            .metadata
            .uid
            .clone()
            .ok_or_else(|| Error::MissingMetadata(name, "uid"))?;
        Ok(Sync {
            pods: Api::namespaced(context.client.clone(), namespace),
            jobs: Api::namespaced(context.client.clone(), namespace),
            spec: job.spec.clone().unwrap_or_default(),
            context,
            job,
            uid,
        })
    }

    async fn run(mut self) -> Result<Action, Error> {
        let pods = self.owned_pods().await?;
        let now = Timestamp::now();
        let mut status = self.job.status.clone().unwrap_or_default();
        let finished_before = finish_of(&status).is_some();
        record_finished_pods(&mut status, &pods, self.is_indexed());
        if finished_before || workload::is_terminating(&self.job.metadata) {
            // Nothing more to run: release every pod so none is stuck on the finalizer.
            self.write_status_if_changed(status).await?;
            self.release_pods(pods.iter().filter(|pod| has_finalizer(pod)))
                .await?;
            return self.expire_after_ttl(now).await;
        }
        let active: Vec<&Pod> = pods.iter().filter(|pod| is_running(pod)).collect();
        let suspended = self.spec.suspend == Some(true);
        if status.start_time.is_none() && !suspended {
            status.start_time = Some(Time(now));
        }
        let finish = self.finish(&status, &active, now);
        let mut created = Vec::new();
        let to_delete: Vec<&Pod> = match finish {
            Some(_) => active.clone(),
            None if suspended => active.clone(),
            None => {
                let want = self.want_active(&status, active.len());
                if active.len() > want {
                    surplus(&active, want)
                } else {
                    created = self.create_pods(&status, &active, want).await?;
                    Vec::new()
                }
            }
        };
        let deleted = self.delete_pods(&to_delete).await;
        let still_active: Vec<&Pod> = active
            .iter()
            .copied()
            .filter(|pod| !deleted.contains(&pod.name_any()))
            .chain(created.iter())
            .collect();
        status.active = Some(count(still_active.len()));
        status.ready = Some(count(
            still_active
                .iter()
                .filter(|pod| workload::is_ready(pod))
                .count(),
        ));
        set_suspended_condition(&mut status, suspended, now);
        if let Some(finish) = finish {
            self.mark_finished(&mut status, finish, now).await;
        }
        self.write_status_if_changed(status).await?;
        // Recorded pods, and pods this controller stopped (which are not failures),
        // no longer need the finalizer.
        let recorded = pods.iter().filter(|pod| {
            has_finalizer(pod) && (is_finished(pod) || workload::is_terminating(&pod.metadata))
        });
        let stopped = to_delete
            .iter()
            .copied()
            .filter(|pod| deleted.contains(&pod.name_any()) && has_finalizer(pod));
        self.release_pods(recorded.chain(stopped)).await?;
        if finish.is_some() {
            return self.expire_after_ttl(now).await;
        }
        Ok(workload::recheck_after(self.until_deadline(now)))
    }

    /// The pods this Job controls, found by its selector.
    async fn owned_pods(&self) -> Result<Vec<Pod>, Error> {
        let selector = workload::selector_of(&self.job.name_any(), self.spec.selector.as_ref())?;
        let params = ListParams::default().labels_from(&selector);
        let pods = self.pods.list(&params).await?.items;
        Ok(pods
            .into_iter()
            .filter(|pod| workload::is_controlled_by(&pod.metadata, &self.uid))
            .collect())
    }

    fn is_indexed(&self) -> bool {
        self.spec.completion_mode.as_deref() == Some("Indexed")
    }

    /// The outcome the counts, pods and clock justify, if the Job is done.
    fn finish(&self, status: &JobStatus, active: &[&Pod], now: Timestamp) -> Option<Finish> {
        let failed = status.failed.unwrap_or(0);
        if failed > self.spec.backoff_limit.unwrap_or(6) {
            return Some(BACKOFF_LIMIT_EXCEEDED);
        }
        if self.until_deadline(now) == Some(Duration::ZERO) {
            return Some(DEADLINE_EXCEEDED);
        }
        let succeeded = status.succeeded.unwrap_or(0);
        let complete = match self.spec.completions {
            Some(completions) if self.is_indexed() => {
                completed_indexes(status).len() >= usize::try_from(completions).unwrap_or(0)
            }
            Some(completions) => succeeded >= completions,
            // A work queue is done once one pod succeeded and the rest stopped.
            None => succeeded > 0 && active.is_empty(),
        };
        complete.then_some(Finish::Complete)
    }

    /// How long until `activeDeadlineSeconds` runs out: `Some(ZERO)` once it has.
    fn until_deadline(&self, now: Timestamp) -> Option<Duration> {
        let deadline = self.spec.active_deadline_seconds?;
        let start = self.job.status.as_ref()?.start_time.as_ref()?.0;
        let end = start
            .checked_add(SignedDuration::from_secs(deadline))
            .ok()?;
        Some(end.duration_since(now).try_into().unwrap_or(Duration::ZERO))
    }

    /// How many pods should run now (upstream's `manageJob`).
    fn want_active(&self, status: &JobStatus, active: usize) -> usize {
        let parallelism = usize::try_from(self.spec.parallelism.unwrap_or(1)).unwrap_or(0);
        let succeeded = usize::try_from(status.succeeded.unwrap_or(0)).unwrap_or(0);
        match self.spec.completions {
            Some(completions) => {
                let completions = usize::try_from(completions).unwrap_or(0);
                let done = if self.is_indexed() {
                    completed_indexes(status).len()
                } else {
                    succeeded
                };
                completions.saturating_sub(done).min(parallelism)
            }
            // After the first success of a work queue no new pod starts.
            None if succeeded > 0 => active.min(parallelism),
            None => parallelism,
        }
    }

    /// Creates pods until `want` run; Indexed Jobs fill the lowest missing indexes.
    async fn create_pods(
        &self,
        status: &JobStatus,
        active: &[&Pod],
        want: usize,
    ) -> Result<Vec<Pod>, Error> {
        let missing = want.saturating_sub(active.len()).min(MAX_BURST);
        let indexes: Vec<Option<i32>> = if self.is_indexed() {
            let taken: BTreeSet<i32> = active
                .iter()
                .filter_map(|pod| completion_index(pod))
                .collect();
            let done = completed_indexes(status);
            (0..self.spec.completions.unwrap_or(0))
                .filter(|index| !taken.contains(index) && !done.contains(index))
                .take(missing)
                .map(Some)
                .collect()
        } else {
            vec![None; missing]
        };
        let results = join_all(indexes.into_iter().map(|index| self.create_pod(index))).await;
        let mut created = Vec::new();
        let mut first_error = None;
        for result in results {
            match result {
                Ok(pod) => created.push(pod),
                Err(err) => first_error = first_error.or(Some(err)),
            }
        }
        match first_error {
            Some(err) if created.is_empty() => Err(err),
            _ => Ok(created),
        }
    }

    async fn create_pod(&self, index: Option<i32>) -> Result<Pod, Error> {
        let pod = self.pod_from_template(index);
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(created) => {
                let message = format!("Created pod: {}", created.name_any());
                self.record(EventType::Normal, "SuccessfulCreate", &message)
                    .await;
                Ok(created)
            }
            Err(err) => {
                let message = format!("Error creating: {err}");
                self.record(EventType::Warning, "FailedCreate", &message)
                    .await;
                Err(err.into())
            }
        }
    }

    /// A new pod from the template, controlled by this Job and held by the tracking
    /// finalizer; an Indexed Job's pod carries its index and a stable hostname.
    fn pod_from_template(&self, index: Option<i32>) -> Pod {
        let template = self.spec.template.clone();
        let template_meta = template.metadata.unwrap_or_default();
        let mut labels = template_meta.labels.unwrap_or_default();
        let mut annotations = template_meta.annotations.unwrap_or_default();
        let mut finalizers = template_meta.finalizers.unwrap_or_default();
        finalizers.push(TRACKING_FINALIZER.to_string());
        let mut spec = template.spec;
        let job_name = self.job.name_any();
        let generate_name = match index {
            Some(index) => {
                labels.insert(COMPLETION_INDEX.into(), index.to_string());
                annotations.insert(COMPLETION_INDEX.into(), index.to_string());
                if let Some(spec) = spec.as_mut() {
                    spec.hostname = Some(format!("{job_name}-{index}"));
                }
                format!("{job_name}-{index}-")
            }
            None => format!("{job_name}-"),
        };
        Pod {
            metadata: ObjectMeta {
                generate_name: Some(generate_name),
                namespace: self.job.namespace(),
                labels: Some(labels),
                annotations: (!annotations.is_empty()).then_some(annotations),
                finalizers: Some(finalizers),
                owner_references: workload::controller_reference(&self.job).map(|r| vec![r]),
                ..Default::default()
            },
            spec,
            status: None,
        }
    }

    /// Deletes the pods concurrently; returns the names that are gone or going.
    async fn delete_pods(&self, pods: &[&Pod]) -> BTreeSet<String> {
        let deletions = pods.iter().map(|pod| async move {
            let name = pod.name_any();
            let params = DeleteParams {
                preconditions: workload::uid_precondition(&pod.metadata),
                ..Default::default()
            };
            match self.pods.delete(&name, &params).await {
                Ok(_) => {
                    let message = format!("Deleted pod: {name}");
                    self.record(EventType::Normal, "SuccessfulDelete", &message)
                        .await;
                    Some(name)
                }
                Err(kube::Error::Api(status)) if status.code == 404 => Some(name),
                Err(err) => {
                    tracing::warn!(pod = %name, %err, "deleting job pod");
                    None
                }
            }
        });
        join_all(deletions).await.into_iter().flatten().collect()
    }

    /// Removes the tracking finalizer from pods whose outcome is recorded.
    async fn release_pods(&self, pods: impl Iterator<Item = &Pod>) -> Result<(), Error> {
        let releases = pods.map(|pod| release(&self.pods, pod));
        join_all(releases).await.into_iter().collect()
    }

    /// Sets the terminal conditions and records the Event for `finish`.
    async fn mark_finished(&self, status: &mut JobStatus, finish: Finish, now: Timestamp) {
        match finish {
            Finish::Complete => {
                set_condition(
                    status,
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                );
                set_condition(
                    status,
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                );
                status.completion_time = Some(Time(now));
                self.record(EventType::Normal, "Completed", "Job completed")
                    .await;
            }
            Finish::Failed { reason, message } => {
                set_condition(status, "FailureTarget", reason, message, now);
                set_condition(status, "Failed", reason, message, now);
                self.record(EventType::Warning, reason, message).await;
            }
        }
    }

    /// Writes `status` if it differs from the stored one, guarded by the Job's
    /// resourceVersion so that counts are never applied twice.
    async fn write_status_if_changed(&mut self, status: JobStatus) -> Result<(), Error> {
        if self.job.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let mut job = self.job.clone();
        job.status = Some(status);
        self.job = self
            .jobs
            .replace_status(&job.name_any(), &PostParams::default(), &job)
            .await?;
        Ok(())
    }

    /// Deletes a finished Job once `ttlSecondsAfterFinished` has passed, its pods
    /// with it (background propagation); otherwise asks to be woken then.
    async fn expire_after_ttl(&self, now: Timestamp) -> Result<Action, Error> {
        let Some(ttl) = self.spec.ttl_seconds_after_finished else {
            return Ok(Action::await_change());
        };
        let Some(finished_at) = self.job.status.as_ref().and_then(finish_time) else {
            return Ok(Action::await_change());
        };
        let expires = finished_at
            .checked_add(SignedDuration::from_secs(i64::from(ttl)))
            .unwrap_or(finished_at);
        if expires > now {
            let wait: Duration = expires.duration_since(now).try_into().unwrap_or_default();
            return Ok(workload::recheck_after(Some(wait)));
        }
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: Some(kube::api::Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.jobs.delete(&self.job.name_any(), &params).await {
            Ok(_) => Ok(Action::await_change()),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
                Ok(Action::await_change())
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn record(&self, event_type: EventType, reason: &str, message: &str) {
        self.context
            .recorder
            .record(&object_reference(&self.job), event_type, reason, message)
            .await;
    }
}

/// Removes the tracking finalizer from one pod. A JSON patch that tests the entry
/// first removes exactly that finalizer, whatever else changed on the pod meanwhile.
async fn release(pods: &Api<Pod>, pod: &Pod) -> Result<(), Error> {
    let Some(position) = pod
        .metadata
        .finalizers
        .iter()
        .flatten()
        .position(|f| f == TRACKING_FINALIZER)
    else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{position}");
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": path, "value": TRACKING_FINALIZER},
        {"op": "remove", "path": path},
    ]))
    .map_err(kube::Error::SerdeError)?;
    let params = PatchParams::default();
    match pods
        .patch(&pod.name_any(), &params, &Patch::<()>::Json(patch))
        .await
    {
        Ok(_) => Ok(()),
        // Gone, or changed meanwhile: the next look finds it again.
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409 | 422) => Ok(()),
        Err(err) => Err(Error::from(err)),
    }
}

/// Releases pods whose Job is gone or going: the Job's reconcile no longer runs for
/// them, and without this a deleted Job's pods would wait on the finalizer forever
/// (upstream's orphan pod handling).
async fn release_orphans(client: Client, shutdown: CancellationToken) {
    let pods = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut pods = std::pin::pin!(pods);
    loop {
        let pod = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = pods.next() => match next {
                Some(Ok(pod)) => pod,
                Some(Err(err)) => {
                    tracing::warn!(%err, "watching job pods; retrying");
                    continue;
                }
                None => return,
            },
        };
        if !has_finalizer(&pod) || !workload::is_terminating(&pod.metadata) {
            continue;
        }
        if let Err(err) = release_if_orphaned(&client, &pod).await {
            tracing::warn!(pod = %pod.name_any(), %err, "releasing orphaned job pod");
        }
    }
}

async fn release_if_orphaned(client: &Client, pod: &Pod) -> Result<(), Error> {
    let namespace = pod.namespace().unwrap_or_default();
    let owner = workload::controller_of(&pod.metadata).filter(|o| o.kind == "Job");
    let job = match owner {
        Some(owner) => Api::<Job>::namespaced(client.clone(), &namespace)
            .get_opt(&owner.name)
            .await?
            .filter(|job| job.metadata.uid.as_deref() == Some(owner.uid.as_str())),
        None => None,
    };
    if job.is_none_or(|job| workload::is_terminating(&job.metadata)) {
        release(&Api::namespaced(client.clone(), &namespace), pod).await?;
    }
    Ok(())
}

/// Records each finished (or deleted) pod that still holds the tracking finalizer
/// and is not recorded yet, and forgets recorded uids whose pods were released.
fn record_finished_pods(status: &mut JobStatus, pods: &[Pod], indexed: bool) {
    let mut uncounted = status.uncounted_terminated_pods.take().unwrap_or_default();
    let held: BTreeSet<&str> = pods
        .iter()
        .filter(|pod| has_finalizer(pod))
        .filter_map(|pod| pod.metadata.uid.as_deref())
        .collect();
    for list in [&mut uncounted.succeeded, &mut uncounted.failed] {
        if let Some(uids) = list.as_mut() {
            uids.retain(|uid| held.contains(uid.as_str()));
        }
    }
    let recorded: BTreeSet<String> = uncounted
        .succeeded
        .iter()
        .chain(uncounted.failed.iter())
        .flatten()
        .cloned()
        .collect();
    let mut indexes = completed_indexes(status);
    for pod in pods.iter().filter(|pod| has_finalizer(pod)) {
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        if recorded.contains(&uid) {
            continue;
        }
        match phase(pod) {
            Some("Succeeded") => {
                status.succeeded = Some(status.succeeded.unwrap_or(0) + 1);
                uncounted.succeeded.get_or_insert_default().push(uid);
                if indexed && let Some(index) = completion_index(pod) {
                    indexes.insert(index);
                }
            }
            // A pod deleted before it finished failed too, as upstream counts it.
            Some("Failed") => {
                status.failed = Some(status.failed.unwrap_or(0) + 1);
                uncounted.failed.get_or_insert_default().push(uid);
            }
            _ if workload::is_terminating(&pod.metadata) => {
                status.failed = Some(status.failed.unwrap_or(0) + 1);
                uncounted.failed.get_or_insert_default().push(uid);
            }
            _ => {}
        }
    }
    if indexed && !indexes.is_empty() {
        status.completed_indexes = Some(format_indexes(&indexes));
    }
    let empty = uncounted.succeeded.as_ref().is_none_or(Vec::is_empty)
        && uncounted.failed.as_ref().is_none_or(Vec::is_empty);
    status.uncounted_terminated_pods = (!empty).then_some(UncountedTerminatedPods {
        succeeded: uncounted.succeeded.filter(|v| !v.is_empty()),
        failed: uncounted.failed.filter(|v| !v.is_empty()),
    });
}

/// Adds or updates the condition `kind` with status True; its transition time
/// only moves when its status changes.
fn set_condition(status: &mut JobStatus, kind: &str, reason: &str, message: &str, now: Timestamp) {
    set_condition_status(status, kind, "True", reason, message, now);
}

fn set_condition_status(
    status: &mut JobStatus,
    kind: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let conditions = status.conditions.get_or_insert_default();
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == kind) {
        if existing.status != value {
            existing.status = value.to_string();
            existing.last_transition_time = Some(Time(now));
        }
        existing.reason = Some(reason.to_string());
        existing.message = Some(message.to_string());
        return;
    }
    conditions.push(JobCondition {
        type_: kind.to_string(),
        status: value.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

/// `Suspended` is True while the Job is suspended, False once resumed.
fn set_suspended_condition(status: &mut JobStatus, suspended: bool, now: Timestamp) {
    let present = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Suspended");
    if suspended {
        set_condition(status, "Suspended", "JobSuspended", "Job suspended", now);
    } else if present {
        set_condition_status(
            status,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            now,
        );
    }
}

/// The terminal outcome already recorded in the status, if any.
fn finish_of(status: &JobStatus) -> Option<&JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

/// When the Job finished, for `ttlSecondsAfterFinished`.
fn finish_time(status: &JobStatus) -> Option<Timestamp> {
    let condition = finish_of(status)?;
    status
        .completion_time
        .as_ref()
        .or(condition.last_transition_time.as_ref())
        .map(|time| time.0)
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn is_finished(pod: &Pod) -> bool {
    matches!(phase(pod), Some("Succeeded" | "Failed"))
}

/// Counts towards `status.active`: not finished and not being deleted.
fn is_running(pod: &Pod) -> bool {
    workload::is_active(pod)
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

fn completion_index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse()
        .ok()
}

/// The active pods to delete to get down to `want`: the newest first, so the
/// ones with the most progress keep running.
fn surplus<'p>(active: &[&'p Pod], want: usize) -> Vec<&'p Pod> {
    let mut by_age: Vec<&Pod> = active.to_vec();
    by_age.sort_by_key(|pod| std::cmp::Reverse(pod.metadata.creation_timestamp.clone()));
    by_age.truncate(active.len().saturating_sub(want));
    by_age
}

/// Parses `status.completedIndexes` (`1,3-5,7`).
fn completed_indexes(status: &JobStatus) -> BTreeSet<i32> {
    let mut indexes = BTreeSet::new();
    for part in status.completed_indexes.as_deref().unwrap_or("").split(',') {
        let part = part.trim();
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(first), Ok(last)) = (first.parse::<i32>(), last.parse::<i32>()) {
            indexes.extend(first..=last);
        }
    }
    indexes
}

/// Formats indexes as ranges, the way upstream writes `completedIndexes`.
fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut ranges: Vec<(i32, i32)> = Vec::new();
    for &index in indexes {
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == index => *last = index,
            _ => ranges.push((index, index)),
        }
    }
    ranges
        .iter()
        .map(|(first, last)| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodStatus;

    use super::*;

    fn pod(uid: &str, phase: &str, finalizer: bool, index: Option<i32>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(uid.into()),
                uid: Some(uid.into()),
                finalizers: finalizer.then(|| vec![TRACKING_FINALIZER.to_string()]),
                annotations: index.map(|i| [(COMPLETION_INDEX.to_string(), i.to_string())].into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn finished_pods_are_counted_once() {
        let mut status = JobStatus::default();
        let pods = vec![
            pod("a", "Succeeded", true, None),
            pod("b", "Failed", true, None),
            pod("c", "Running", true, None),
        ];
        record_finished_pods(&mut status, &pods, false);
        assert_eq!((status.succeeded, status.failed), (Some(1), Some(1)));
        // The same pods seen again before their finalizers were removed.
        record_finished_pods(&mut status, &pods, false);
        assert_eq!((status.succeeded, status.failed), (Some(1), Some(1)));
        // Released pods leave the uncounted list and are not counted again.
        let released = vec![
            pod("a", "Succeeded", false, None),
            pod("b", "Failed", false, None),
        ];
        record_finished_pods(&mut status, &released, false);
        assert_eq!((status.succeeded, status.failed), (Some(1), Some(1)));
        assert_eq!(status.uncounted_terminated_pods, None);
    }

    #[test]
    fn indexed_successes_fill_completed_indexes() {
        let mut status = JobStatus::default();
        let pods = vec![
            pod("a", "Succeeded", true, Some(0)),
            pod("b", "Succeeded", true, Some(2)),
            pod("c", "Succeeded", true, Some(3)),
        ];
        record_finished_pods(&mut status, &pods, true);
        assert_eq!(status.completed_indexes.as_deref(), Some("0,2-3"));
        assert_eq!(completed_indexes(&status), BTreeSet::from([0, 2, 3]));
    }
}
