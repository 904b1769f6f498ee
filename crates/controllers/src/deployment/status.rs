//! A Deployment's status and conditions as upstream computes them
//! (`calculateStatus`, `syncRolloutStatus`), so `kubectl rollout status` reads the
//! same story: `Available` while enough pods serve, `Progressing` while the rollout
//! moves and until its deadline, `NewReplicaSetAvailable` once it is done.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::rollout::{self, Fenceposts};

/// `Progressing` reason: the rollout created its new ReplicaSet.
pub const NEW_REPLICA_SET_CREATED: &str = "NewReplicaSetCreated";
/// `Progressing` reason: the rollout found its new ReplicaSet already there.
pub const FOUND_NEW_REPLICA_SET: &str = "FoundNewReplicaSet";
const REPLICA_SET_UPDATED: &str = "ReplicaSetUpdated";
const NEW_REPLICA_SET_AVAILABLE: &str = "NewReplicaSetAvailable";
const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
const DEPLOYMENT_PAUSED: &str = "DeploymentPaused";
const DEPLOYMENT_RESUMED: &str = "DeploymentResumed";

/// The status the ReplicaSets justify, keeping the Deployment's conditions and
/// updating `Available`.
pub fn calculate_status(
    deployment: &Deployment,
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    fenceposts: Fenceposts,
    now: Timestamp,
) -> DeploymentStatus {
    let current = deployment.status.clone().unwrap_or_default();
    let available: i32 = all.iter().map(|rs| rollout::available_replicas(rs)).sum();
    let wanted: i32 = all.iter().map(|rs| rollout::spec_replicas(rs)).sum();
    let mut status = DeploymentStatus {
        observed_generation: deployment.metadata.generation,
        replicas: Some(all.iter().map(|rs| rollout::status_replicas(rs)).sum()),
        updated_replicas: Some(new.map_or(0, rollout::status_replicas)),
        ready_replicas: Some(all.iter().map(|rs| rollout::ready_replicas(rs)).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((wanted - available).max(0)),
        collision_count: current.collision_count,
        conditions: current.conditions,
        terminating_replicas: None,
    };
    let minimum = rollout::desired_replicas(deployment) - fenceposts.max_unavailable;
    let availability = if available >= minimum {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now,
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            now,
        )
    };
    set_condition(&mut status, availability);
    status
}

/// Updates `Progressing` (and `ReplicaFailure`) after a rollout step; returns how
/// long until the progress deadline would pass, so the caller can look again then.
pub fn update_progress(
    deployment: &Deployment,
    status: &mut DeploymentStatus,
    new: Option<&ReplicaSet>,
    now: Timestamp,
) -> Option<Duration> {
    copy_replica_failure(status, new, now);
    let deadline = progress_deadline(deployment)?;
    let current = get_condition(status, "Progressing").cloned();
    let already_complete = status.replicas == status.updated_replicas
        && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_REPLICA_SET_AVAILABLE);
    if already_complete {
        return None;
    }
    let subject = match new {
        Some(rs) => format!("ReplicaSet {:?}", rs.name_any()),
        None => format!("Deployment {:?}", deployment.name_any()),
    };
    if is_complete(deployment, status) {
        let message = format!("{subject} has successfully progressed.");
        set_condition(
            status,
            condition(
                "Progressing",
                "True",
                NEW_REPLICA_SET_AVAILABLE,
                &message,
                now,
            ),
        );
        return None;
    }
    if is_progressing(deployment, status) {
        let message = format!("{subject} is progressing.");
        let mut progressing = condition("Progressing", "True", REPLICA_SET_UPDATED, &message, now);
        if let Some(current) = &current
            && current.status == "True"
        {
            progressing.last_transition_time = current.last_transition_time.clone();
        }
        remove_condition(status, "Progressing");
        set_condition(status, progressing);
    } else if has_timed_out(status, deadline, now) {
        let message = format!("{subject} has timed out progressing.");
        set_condition(
            status,
            condition(
                "Progressing",
                "False",
                PROGRESS_DEADLINE_EXCEEDED,
                &message,
                now,
            ),
        );
        return None;
    }
    let last_update = get_condition(status, "Progressing")?
        .last_update_time
        .as_ref()?
        .0;
    let remaining = (last_update + deadline).duration_since(now);
    Some(Duration::try_from(remaining).unwrap_or(Duration::ZERO) + Duration::from_secs(1))
}

/// Marks `Progressing` Unknown while paused and again once resumed, as upstream does,
/// so a paused rollout never times out.
pub fn update_paused(deployment: &Deployment, status: &mut DeploymentStatus, now: Timestamp) {
    let paused = deployment
        .spec
        .as_ref()
        .is_some_and(|s| s.paused == Some(true));
    let reason = get_condition(status, "Progressing").and_then(|c| c.reason.clone());
    if paused && reason.as_deref() != Some(DEPLOYMENT_PAUSED) {
        set_condition(
            status,
            condition(
                "Progressing",
                "Unknown",
                DEPLOYMENT_PAUSED,
                "Deployment is paused",
                now,
            ),
        );
    } else if !paused && reason.as_deref() == Some(DEPLOYMENT_PAUSED) {
        set_condition(
            status,
            condition(
                "Progressing",
                "Unknown",
                DEPLOYMENT_RESUMED,
                "Deployment is resumed",
                now,
            ),
        );
    }
}

/// Whether every desired pod runs the current template and is available.
pub fn is_complete(deployment: &Deployment, status: &DeploymentStatus) -> bool {
    let desired = Some(rollout::desired_replicas(deployment));
    status.updated_replicas == desired
        && status.replicas == desired
        && status.available_replicas == desired
        && status.observed_generation >= deployment.metadata.generation
}

/// Whether the rollout moved since the last recorded status: more updated, ready or
/// available pods, or fewer old ones.
fn is_progressing(deployment: &Deployment, status: &DeploymentStatus) -> bool {
    let old = deployment.status.clone().unwrap_or_default();
    let old_pods = |s: &DeploymentStatus| s.replicas.unwrap_or(0) - s.updated_replicas.unwrap_or(0);
    status.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || old_pods(status) < old_pods(&old)
        || status.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || status.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

fn has_timed_out(status: &DeploymentStatus, deadline: SignedDuration, now: Timestamp) -> bool {
    let Some(progressing) = get_condition(status, "Progressing") else {
        return false;
    };
    match progressing.reason.as_deref() {
        Some(NEW_REPLICA_SET_AVAILABLE) => false,
        Some(PROGRESS_DEADLINE_EXCEEDED) => true,
        _ => progressing
            .last_update_time
            .as_ref()
            .is_some_and(|since| since.0 + deadline < now),
    }
}

/// `spec.progressDeadlineSeconds`, unless absent or "never" (`i32::MAX`).
fn progress_deadline(deployment: &Deployment) -> Option<SignedDuration> {
    let seconds = deployment.spec.as_ref()?.progress_deadline_seconds?;
    (seconds != i32::MAX).then(|| SignedDuration::from_secs(i64::from(seconds)))
}

/// Surfaces the new ReplicaSet's `ReplicaFailure` (pods cannot be created) on the Deployment.
fn copy_replica_failure(status: &mut DeploymentStatus, new: Option<&ReplicaSet>, now: Timestamp) {
    let failure = new
        .and_then(|rs| rs.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == "ReplicaFailure"));
    match failure {
        Some(failure) => set_condition(
            status,
            condition(
                "ReplicaFailure",
                &failure.status,
                failure.reason.as_deref().unwrap_or_default(),
                failure.message.as_deref().unwrap_or_default(),
                now,
            ),
        ),
        None => remove_condition(status, "ReplicaFailure"),
    }
}

/// A condition stamped `now`.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// The condition of this type, if any.
pub fn get_condition<'a>(
    status: &'a DeploymentStatus,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

/// Upstream's `SetDeploymentCondition`: an unchanged status and reason keep the old
/// condition; an unchanged status keeps its transition time.
pub fn set_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    if let Some(current) = get_condition(status, &condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &condition.type_);
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(condition);
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
        if conditions.is_empty() {
            status.conditions = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetSpec, ReplicaSetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn deployment(replicas: i32, generation: i64, status: Option<DeploymentStatus>) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                progress_deadline_seconds: Some(600),
                ..Default::default()
            }),
            status,
        }
    }

    fn rs(name: &str, spec: i32, status: i32, available: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(spec),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas: status,
                ready_replicas: Some(available),
                available_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    const FENCE: Fenceposts = Fenceposts {
        max_surge: 1,
        max_unavailable: 1,
    };

    fn now() -> Timestamp {
        Timestamp::from_second(2_000_000_000).expect("valid time")
    }

    #[test]
    fn finished_rollout_is_available_and_complete() {
        let d = deployment(3, 2, None);
        let new = rs("web-abc", 3, 3, 3);
        let mut status = calculate_status(&d, &[&new], Some(&new), FENCE, now());
        assert_eq!(status.updated_replicas, Some(3));
        assert_eq!(status.unavailable_replicas, Some(0));
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(
            get_condition(&status, "Available").map(|c| c.status.as_str()),
            Some("True")
        );
        assert_eq!(update_progress(&d, &mut status, Some(&new), now()), None);
        let progressing = get_condition(&status, "Progressing").expect("set");
        assert_eq!(
            progressing.reason.as_deref(),
            Some(NEW_REPLICA_SET_AVAILABLE)
        );
        assert_eq!(
            progressing.message.as_deref(),
            Some("ReplicaSet \"web-abc\" has successfully progressed.")
        );
    }

    #[test]
    fn rollout_in_flight_progresses_then_times_out() {
        let start = now();
        let mut previous = DeploymentStatus::default();
        set_condition(
            &mut previous,
            condition(
                "Progressing",
                "True",
                NEW_REPLICA_SET_CREATED,
                "created",
                start,
            ),
        );
        let d = deployment(3, 2, Some(previous.clone()));
        let old = rs("web-old", 3, 3, 3);
        let new = rs("web-new", 1, 1, 0);
        let mut status = calculate_status(&d, &[&old, &new], Some(&new), FENCE, start);
        let recheck = update_progress(&d, &mut status, Some(&new), start);
        assert_eq!(
            get_condition(&status, "Progressing").and_then(|c| c.reason.as_deref()),
            Some(REPLICA_SET_UPDATED)
        );
        assert_eq!(recheck, Some(Duration::from_secs(601)));
        // Nothing moves for longer than the deadline: the rollout has timed out.
        let d = deployment(3, 2, Some(status.clone()));
        let later = start + SignedDuration::from_secs(700);
        let mut stuck = calculate_status(&d, &[&old, &new], Some(&new), FENCE, later);
        assert_eq!(update_progress(&d, &mut stuck, Some(&new), later), None);
        let progressing = get_condition(&stuck, "Progressing").expect("set");
        assert_eq!(progressing.status, "False");
        assert_eq!(
            progressing.reason.as_deref(),
            Some(PROGRESS_DEADLINE_EXCEEDED)
        );
    }

    #[test]
    fn too_few_available_pods_make_the_deployment_unavailable() {
        let d = deployment(5, 1, None);
        let new = rs("web-new", 5, 5, 3);
        let status = calculate_status(&d, &[&new], Some(&new), FENCE, now());
        let available = get_condition(&status, "Available").expect("set");
        assert_eq!(available.status, "False");
        assert_eq!(
            available.reason.as_deref(),
            Some("MinimumReplicasUnavailable")
        );
        assert_eq!(status.unavailable_replicas, Some(2));
    }

    #[test]
    fn an_unchanged_condition_keeps_its_times() {
        let mut status = DeploymentStatus::default();
        set_condition(&mut status, condition("Available", "True", "A", "m", now()));
        let later = now() + SignedDuration::from_secs(5);
        set_condition(&mut status, condition("Available", "True", "A", "m", later));
        let kept = get_condition(&status, "Available").expect("set");
        assert_eq!(kept.last_update_time, Some(Time(now())));
        set_condition(&mut status, condition("Available", "True", "B", "m", later));
        let updated = get_condition(&status, "Available").expect("set");
        assert_eq!(updated.last_transition_time, Some(Time(now())));
        assert_eq!(updated.last_update_time, Some(Time(later)));
    }
}
