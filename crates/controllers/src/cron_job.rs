//! The CronJob controller: creates a Job from `spec.jobTemplate` at each time the
//! schedule names, as kube-controller-manager's does.
//!
//! Each reconcile lists the CronJob's Jobs, brings `status.active` and
//! `lastSuccessfulTime` up to date, prunes finished Jobs beyond the history limits,
//! then looks for the most recent scheduled time not yet run (since
//! `lastScheduleTime`, or creation) and, unless `concurrencyPolicy` or
//! `startingDeadlineSeconds` says otherwise, creates the Job for it. Job names are
//! `NAME-<scheduled minutes since the epoch>`, so one scheduled time never runs twice
//! even if a status write is lost.
//!
//! Time comes from a [`Clock`], so tests can move it by hours without waiting: the
//! controller re-examines every CronJob whenever the clock jumps.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use gantry_api::cron::{self, CronSchedule};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job, JobTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use gantry_client::{EventRecorder, EventType, object_reference};

use crate::workload::{self, Error};

/// The component name on this controller's Events.
const COMPONENT: &str = "cronjob-controller";

/// The annotation on each created Job recording the time it was scheduled for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Missed schedules beyond which upstream warns that a CronJob is too far behind.
const TOO_MANY_MISSED: usize = 100;

/// Where the controller reads the time.
pub trait Clock: Send + std::marker::Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
    /// Yields whenever the time jumps (as opposed to flowing), so that schedules
    /// are re-examined at once; a real clock never jumps.
    fn jumps(&self) -> BoxStream<'static, ()>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn jumps(&self) -> BoxStream<'static, ()> {
        futures::stream::pending().boxed()
    }
}

/// A clock that stands still until told to move, for tests and simulations that
/// must not wait minutes for a schedule.
#[derive(Debug)]
pub struct FakeClock {
    now: watch::Sender<Timestamp>,
}

impl FakeClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> Arc<Self> {
        Arc::new(FakeClock {
            now: watch::Sender::new(start),
        })
    }

    /// Moves the clock to `time`.
    pub fn set(&self, time: Timestamp) {
        self.now.send_replace(time);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: SignedDuration) {
        self.now.send_modify(|now| {
            *now = now.checked_add(by).unwrap_or(*now);
        });
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    fn jumps(&self) -> BoxStream<'static, ()> {
        let mut receiver = self.now.subscribe();
        receiver.mark_unchanged();
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.changed().await.ok()?;
            Some(((), receiver))
        })
        .boxed()
    }
}

/// Runs the CronJob controller on the system clock until `shutdown`.
pub async fn run(client: Client, shutdown: CancellationToken) {
    run_with_clock(client, Arc::new(SystemClock), shutdown).await;
}

/// Runs the CronJob controller on `clock` until `shutdown`; API errors are logged
/// and the CronJob retried, never returned.
pub async fn run_with_clock(client: Client, clock: Arc<dyn Clock>, shutdown: CancellationToken) {
    let context = Arc::new(Context {
        client: client.clone(),
        recorder: EventRecorder::new(client.clone(), COMPONENT, None),
        clock: clock.clone(),
    });
    Controller::new(
        Api::<CronJob>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Job>::all(client), watcher::Config::default())
    .reconcile_all_on(clock.jumps())
    .graceful_shutdown_on(shutdown.cancelled_owned())
    .run(reconcile, error_policy, context)
    .for_each(|result| async move {
        if let Err(err) = result {
            tracing::debug!(%err, "cronjob controller");
        }
    })
    .await;
}

/// What every reconcile needs.
struct Context {
    client: Client,
    recorder: EventRecorder,
    clock: Arc<dyn Clock>,
}

fn error_policy(cron_job: Arc<CronJob>, err: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(cronjob = %cron_job.name_any(), %err, "syncing cron job");
    Action::requeue(workload::RETRY_AFTER_ERROR)
}

async fn reconcile(cached: Arc<CronJob>, context: Arc<Context>) -> Result<Action, Error> {
    let (name, namespace) = workload::name_and_namespace(cached.as_ref())?;
    let cron_jobs: Api<CronJob> = Api::namespaced(context.client.clone(), &namespace);
    let Some(cron_job) = cron_jobs.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if workload::is_terminating(&cron_job.metadata) {
        return Ok(Action::await_change());
    }
    Sync::new(&context, cron_job, cron_jobs, &namespace)?
        .run()
        .await
}

/// How a finished Job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
}

/// A Job's terminal outcome, if it has one.
fn outcome(job: &Job) -> Option<Outcome> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some(Outcome::Succeeded),
            "Failed" => Some(Outcome::Failed),
            _ => None,
        })
}

/// One reconcile of one CronJob.
struct Sync<'a> {
    context: &'a Context,
    cron_job: CronJob,
    cron_jobs: Api<CronJob>,
    jobs: Api<Job>,
    uid: String,
}

impl<'a> Sync<'a> {
    fn new(
        context: &'a Context,
        cron_job: CronJob,
        cron_jobs: Api<CronJob>,
        namespace: &str,
    ) -> Result<Self, Error> {
        let uid = cron_job
            .metadata
            .uid
            .clone()
            .ok_or_else(|| Error::MissingMetadata(cron_job.name_any(), "uid"))?;
        Ok(Sync {
            jobs: Api::namespaced(context.client.clone(), namespace),
            context,
            cron_job,
            cron_jobs,
            uid,
        })
    }

    async fn run(self) -> Result<Action, Error> {
        let now = self.context.clock.now();
        let mut jobs = self.owned_jobs().await?;
        let mut status = self.cron_job.status.clone().unwrap_or_default();
        self.track_finished(&mut status, &jobs).await;
        jobs = self.prune_history(jobs).await;
        let wait = self.schedule(&mut status, &jobs, now).await?;
        if Some(&status) != self.cron_job.status.as_ref() {
            self.write_status(&status).await?;
        }
        Ok(workload::recheck_after(wait))
    }

    /// The Jobs this CronJob controls.
    async fn owned_jobs(&self) -> Result<Vec<Job>, Error> {
        let jobs = self.jobs.list(&ListParams::default()).await?.items;
        Ok(jobs
            .into_iter()
            .filter(|job| workload::is_controlled_by(&job.metadata, &self.uid))
            .collect())
    }

    /// Keeps `status.active` to the running Jobs and advances `lastSuccessfulTime`.
    async fn track_finished(&self, status: &mut CronJobStatus, jobs: &[Job]) {
        let previously_active: Vec<String> = status
            .active
            .iter()
            .flatten()
            .filter_map(|r| r.uid.clone())
            .collect();
        let mut active = Vec::new();
        for job in jobs {
            let was_active = job
                .metadata
                .uid
                .as_ref()
                .is_some_and(|uid| previously_active.contains(uid));
            match outcome(job) {
                None => active.push(object_reference(job)),
                Some(outcome) => {
                    if outcome == Outcome::Succeeded
                        && let Some(done) =
                            job.status.as_ref().and_then(|s| s.completion_time.clone())
                        && status
                            .last_successful_time
                            .as_ref()
                            .is_none_or(|t| t.0 < done.0)
                    {
                        status.last_successful_time = Some(done);
                    }
                    if was_active {
                        let result = if outcome == Outcome::Succeeded {
                            "Complete"
                        } else {
                            "Failed"
                        };
                        let message =
                            format!("Saw completed job: {}, status: {result}", job.name_any());
                        self.record(EventType::Normal, "SawCompletedJob", &message)
                            .await;
                    }
                }
            }
        }
        active.sort_by(|a, b| a.name.cmp(&b.name));
        status.active = (!active.is_empty()).then_some(active);
    }

    /// Deletes the oldest finished Jobs beyond `successfulJobsHistoryLimit` and
    /// `failedJobsHistoryLimit`; returns the Jobs that remain.
    async fn prune_history(&self, jobs: Vec<Job>) -> Vec<Job> {
        let spec = self.cron_job.spec.as_ref();
        let limits = [
            (
                Outcome::Succeeded,
                spec.and_then(|s| s.successful_jobs_history_limit)
                    .unwrap_or(3),
            ),
            (
                Outcome::Failed,
                spec.and_then(|s| s.failed_jobs_history_limit).unwrap_or(1),
            ),
        ];
        let mut doomed = Vec::new();
        for (kind, limit) in limits {
            let mut finished: Vec<&Job> = jobs
                .iter()
                .filter(|job| {
                    outcome(job) == Some(kind) && !workload::is_terminating(&job.metadata)
                })
                .collect();
            finished.sort_by_key(|job| Reverse(job_start(job)));
            let keep = usize::try_from(limit).unwrap_or(0);
            doomed.extend(finished.into_iter().skip(keep).map(|job| job.name_any()));
        }
        for name in &doomed {
            self.delete_job(name).await;
        }
        jobs.into_iter()
            .filter(|job| !doomed.contains(&job.name_any()))
            .collect()
    }

    /// Creates the Job for the most recent unmet scheduled time, if policy allows;
    /// returns how long until the next scheduled time.
    async fn schedule(
        &self,
        status: &mut CronJobStatus,
        jobs: &[Job],
        now: Timestamp,
    ) -> Result<Option<Duration>, Error> {
        let Some(spec) = self.cron_job.spec.as_ref() else {
            return Ok(None);
        };
        if spec.suspend == Some(true) {
            return Ok(None);
        }
        let zone = match cron::time_zone(spec.time_zone.as_deref()) {
            Ok(zone) => zone,
            Err(err) => {
                self.record(EventType::Warning, "UnknownTimeZone", &err.to_string())
                    .await;
                return Ok(None);
            }
        };
        let schedule: CronSchedule = match spec.schedule.parse() {
            Ok(schedule) => schedule,
            Err(err) => {
                let message = format!("unparseable schedule: {:?} : {err}", spec.schedule);
                self.record(EventType::Warning, "UnparseableSchedule", &message)
                    .await;
                return Ok(None);
            }
        };
        let wait_for_next = schedule.next_after(now, &zone).map(|next| {
            next.duration_since(now)
                .try_into()
                .unwrap_or(Duration::ZERO)
        });
        let mut earliest = status
            .last_schedule_time
            .as_ref()
            .or(self.cron_job.metadata.creation_timestamp.as_ref())
            .map_or(now, |t| t.0);
        if let Some(deadline) = spec.starting_deadline_seconds {
            let window_start = now
                .checked_sub(SignedDuration::from_secs(deadline))
                .unwrap_or(now);
            earliest = earliest.max(window_start);
        }
        let Some((scheduled, missed)) = most_recent_unmet(&schedule, &zone, earliest, now) else {
            return Ok(wait_for_next);
        };
        if missed > TOO_MANY_MISSED {
            let message = format!(
                "too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
            );
            self.record(EventType::Warning, "TooManyMissedTimes", &message)
                .await;
        }
        let active = status.active.as_deref().unwrap_or_default();
        match spec.concurrency_policy.as_deref() {
            Some("Forbid") if !active.is_empty() => {
                // Upstream leaves lastScheduleTime alone, so the missed run starts
                // once the active Job finishes (within startingDeadlineSeconds).
                self.record(
                    EventType::Normal,
                    "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy is Forbid",
                )
                .await;
                return Ok(wait_for_next);
            }
            Some("Replace") => {
                for reference in active {
                    if let Some(name) = &reference.name {
                        self.delete_job(name).await;
                    }
                }
                status.active = None;
            }
            _ => {}
        }
        let job = self.create_job(scheduled, jobs).await?;
        status
            .active
            .get_or_insert_default()
            .push(object_reference(&job));
        status.last_schedule_time = Some(Time(scheduled));
        Ok(wait_for_next)
    }

    /// Creates the Job for `scheduled`, or returns the one created for it before.
    async fn create_job(&self, scheduled: Timestamp, jobs: &[Job]) -> Result<Job, Error> {
        let name = job_name(&self.cron_job.name_any(), scheduled);
        if let Some(existing) = jobs.iter().find(|job| job.name_any() == name) {
            return Ok(existing.clone());
        }
        let template = self
            .cron_job
            .spec
            .as_ref()
            .map(|s| s.job_template.clone())
            .unwrap_or_default();
        let job = job_from_template(&self.cron_job, template, &name, scheduled);
        match self.jobs.create(&PostParams::default(), &job).await {
            Ok(created) => {
                let message = format!("Created job {name}");
                self.record(EventType::Normal, "SuccessfulCreate", &message)
                    .await;
                Ok(created)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let existing = self.jobs.get(&name).await?;
                Ok(existing)
            }
            Err(err) => {
                let message = format!("Error creating job: {err}");
                self.record(EventType::Warning, "FailedCreate", &message)
                    .await;
                Err(err.into())
            }
        }
    }

    /// Deletes a Job and, in the background, its pods.
    async fn delete_job(&self, name: &str) {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match self.jobs.delete(name, &params).await {
            Ok(_) => {
                let message = format!("Deleted job {name}");
                self.record(EventType::Normal, "SuccessfulDelete", &message)
                    .await;
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => tracing::warn!(job = name, %err, "deleting cron job's job"),
        }
    }

    async fn write_status(&self, status: &CronJobStatus) -> Result<(), Error> {
        let mut status = serde_json::to_value(status).map_err(kube::Error::SerdeError)?;
        for key in ["active", "lastScheduleTime", "lastSuccessfulTime"] {
            if status.get(key).is_none() {
                status[key] = serde_json::Value::Null;
            }
        }
        self.cron_jobs
            .patch_status(
                &self.cron_job.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
        Ok(())
    }

    async fn record(&self, event_type: EventType, reason: &str, message: &str) {
        self.context
            .recorder
            .record(
                &object_reference(&self.cron_job),
                event_type,
                reason,
                message,
            )
            .await;
    }
}

/// The latest scheduled time in `(earliest, now]` and how many there were; `None`
/// if the schedule did not fire in that window.
fn most_recent_unmet(
    schedule: &CronSchedule,
    zone: &jiff::tz::TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> Option<(Timestamp, usize)> {
    let mut latest = None;
    let mut missed = 0;
    let mut cursor = earliest;
    while let Some(next) = schedule.next_after(cursor, zone).filter(|t| *t <= now) {
        latest = Some(next);
        missed += 1;
        cursor = next;
    }
    latest.map(|t| (t, missed))
}

/// `NAME-<minutes since the epoch>`, upstream's deterministic Job name.
fn job_name(cron_job: &str, scheduled: Timestamp) -> String {
    format!("{cron_job}-{}", scheduled.as_second().div_euclid(60))
}

/// When a Job started, for ordering history: its start time, else its creation.
fn job_start(job: &Job) -> Option<Timestamp> {
    job.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(job.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

/// The Job a CronJob runs at `scheduled`: the template's metadata and spec, owned
/// by the CronJob and stamped with the scheduled time.
fn job_from_template(
    cron_job: &CronJob,
    template: JobTemplateSpec,
    name: &str,
    scheduled: Timestamp,
) -> Job {
    let template_meta = template.metadata.unwrap_or_default();
    let mut annotations = template_meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), scheduled.to_string());
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cron_job.namespace(),
            labels: template_meta.labels,
            annotations: Some(annotations),
            owner_references: workload::controller_reference(cron_job).map(|r| vec![r]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("valid timestamp")
    }

    #[test]
    fn job_names_count_minutes_since_the_epoch() {
        assert_eq!(job_name("tick", at("1970-01-01T01:00:00Z")), "tick-60");
        assert_eq!(
            job_name("tick", at("2026-01-01T00:00:59Z")),
            "tick-29453760"
        );
    }

    #[test]
    fn the_latest_missed_time_wins() {
        let every_minute: CronSchedule = "* * * * *".parse().expect("valid");
        let utc = jiff::tz::TimeZone::UTC;
        assert_eq!(
            most_recent_unmet(
                &every_minute,
                &utc,
                at("2026-01-01T00:00:00Z"),
                at("2026-01-01T00:03:30Z")
            ),
            Some((at("2026-01-01T00:03:00Z"), 3))
        );
        assert_eq!(
            most_recent_unmet(
                &every_minute,
                &utc,
                at("2026-01-01T00:03:00Z"),
                at("2026-01-01T00:03:59Z")
            ),
            None
        );
    }

    #[tokio::test]
    async fn fake_clock_reports_jumps() {
        let clock = FakeClock::new(at("2026-01-01T00:00:00Z"));
        let mut jumps = clock.jumps();
        clock.advance(SignedDuration::from_mins(5));
        tokio::time::timeout(Duration::from_secs(5), jumps.next())
            .await
            .expect("a jump is reported")
            .expect("the stream goes on");
        assert_eq!(clock.now(), at("2026-01-01T00:05:00Z"));
    }
}
