//! The arithmetic of a rollout, kept free of I/O so it can be tested exhaustively:
//! how far a rolling update may surge above and dip below the desired replicas, how
//! many pods the new ReplicaSet gets next, and how far each old one shrinks. The rules
//! are kube-controller-manager's (`pkg/controller/deployment/util`, `rolling.go`),
//! with one tightening: counts use `max(spec, status)` replicas per ReplicaSet, so pods
//! still being created or deleted are never forgotten.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::workload::{self, Error};

/// The annotation holding a ReplicaSet's (and its Deployment's) revision number.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had before a rollback reused it.
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when this ReplicaSet was last scaled.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's replicas plus surge when this ReplicaSet was last scaled.
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";

/// How far a rolling update may go above (`max_surge`) and below (`max_unavailable`)
/// the desired replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fenceposts {
    /// Pods allowed above the desired count.
    pub max_surge: i32,
    /// Pods allowed to be unavailable.
    pub max_unavailable: i32,
}

/// The Deployment's desired replicas.
pub fn desired_replicas(deployment: &Deployment) -> i32 {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1)
}

/// Whether the Deployment replaces all pods at once rather than rolling.
pub fn is_recreate(deployment: &Deployment) -> bool {
    strategy_type(deployment) == "Recreate"
}

fn strategy_type(deployment: &Deployment) -> &str {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.strategy.as_ref())
        .and_then(|strategy| strategy.type_.as_deref())
        .unwrap_or("RollingUpdate")
}

/// Resolves `maxSurge` (rounding up) and `maxUnavailable` (rounding down) against the
/// desired replicas; if both come to zero, one pod may be unavailable, as upstream
/// decides, since a rollout that may neither surge nor dip could never progress.
pub fn fenceposts(deployment: &Deployment) -> Result<Fenceposts, Error> {
    let desired = desired_replicas(deployment);
    if strategy_type(deployment) != "RollingUpdate" {
        return Ok(Fenceposts {
            max_surge: 0,
            max_unavailable: 0,
        });
    }
    let rolling = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.strategy.as_ref())
        .and_then(|strategy| strategy.rolling_update.as_ref());
    let quarter = IntOrString::String("25%".into());
    let surge = rolling
        .and_then(|r| r.max_surge.as_ref())
        .unwrap_or(&quarter);
    let unavailable = rolling
        .and_then(|r| r.max_unavailable.as_ref())
        .unwrap_or(&quarter);
    let max_surge = workload::scaled_value(surge, desired, true)?;
    let mut max_unavailable = workload::scaled_value(unavailable, desired, false)?;
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    Ok(Fenceposts {
        max_surge,
        max_unavailable: max_unavailable.min(desired),
    })
}

/// A ReplicaSet's `spec.replicas`.
pub fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(0)
}

/// A ReplicaSet's `status.replicas` (its active pods).
pub fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |status| status.replicas)
}

/// A ReplicaSet's available pods.
pub fn available_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|status| status.available_replicas)
        .unwrap_or(0)
}

/// A ReplicaSet's ready pods.
pub fn ready_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|status| status.ready_replicas)
        .unwrap_or(0)
}

/// The pods a ReplicaSet has or is about to have.
fn pods_counted(rs: &ReplicaSet) -> i32 {
    spec_replicas(rs).max(status_replicas(rs))
}

/// A ReplicaSet's revision (0 when unannotated or unparsable).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(REVISION_ANNOTATION))
        .and_then(|revision| revision.parse().ok())
        .unwrap_or(0)
}

/// Whether a ReplicaSet still has or wants pods.
pub fn is_active(rs: &ReplicaSet) -> bool {
    spec_replicas(rs) > 0 || status_replicas(rs) > 0
}

/// Whether the ReplicaSet controller has acted on the ReplicaSet's current spec, so
/// its status counts can be trusted for the next step of a rollout.
pub fn is_settled(rs: &ReplicaSet) -> bool {
    let observed = rs.status.as_ref().and_then(|s| s.observed_generation);
    observed >= rs.metadata.generation
}

/// The replicas the new ReplicaSet should have now (upstream's `NewRSNewReplicas`):
/// all of them for Recreate; for a rolling update as many more as the surge allows,
/// never more than desired.
pub fn new_replica_set_replicas(
    deployment: &Deployment,
    fenceposts: Fenceposts,
    all: &[&ReplicaSet],
    new_spec_replicas: i32,
) -> i32 {
    let desired = desired_replicas(deployment);
    if is_recreate(deployment) {
        return desired;
    }
    let current: i32 = all.iter().map(|rs| pods_counted(rs)).sum();
    let max_total = desired + fenceposts.max_surge;
    if current >= max_total {
        return new_spec_replicas;
    }
    let scale_up = max_total - current;
    new_spec_replicas + scale_up.min(desired - new_spec_replicas).max(0)
}

/// The `spec.replicas` each old ReplicaSet (given oldest first) should shrink to, so
/// that at least `desired - maxUnavailable` pods stay available (upstream's
/// `reconcileOldReplicaSets`): first pods that are not available anyway, then
/// available ones only as far as availability above the minimum allows.
pub fn old_replica_set_targets(
    deployment: &Deployment,
    fenceposts: Fenceposts,
    old: &[&ReplicaSet],
    new: &ReplicaSet,
) -> Vec<i32> {
    let mut targets: Vec<i32> = old.iter().map(|rs| spec_replicas(rs)).collect();
    if targets.iter().all(|replicas| *replicas == 0) {
        return targets;
    }
    let min_available = desired_replicas(deployment) - fenceposts.max_unavailable;
    let all_pods: i32 = old.iter().map(|rs| pods_counted(rs)).sum::<i32>() + pods_counted(new);
    let new_unavailable = (spec_replicas(new) - available_replicas(new)).max(0);
    let mut budget = all_pods - min_available - new_unavailable;
    if budget <= 0 {
        return targets;
    }
    for (target, rs) in targets.iter_mut().zip(old) {
        let unhealthy = (*target - available_replicas(rs)).max(0);
        let cut = unhealthy.min(budget);
        *target -= cut;
        budget -= cut;
        if budget == 0 {
            break;
        }
    }
    let available: i32 =
        old.iter().map(|rs| available_replicas(rs)).sum::<i32>() + available_replicas(new);
    let mut surplus = available - min_available;
    for target in targets.iter_mut() {
        if surplus <= 0 {
            break;
        }
        let cut = (*target).min(surplus);
        *target -= cut;
        surplus -= cut;
    }
    targets
}

/// Whether `spec.replicas` changed since an active ReplicaSet was last scaled, as its
/// `desired-replicas` annotation tells (upstream's `isScalingEvent`).
pub fn is_scaling_event(deployment: &Deployment, all: &[&ReplicaSet]) -> bool {
    let desired = desired_replicas(deployment).to_string();
    all.iter()
        .filter(|rs| spec_replicas(rs) > 0)
        .filter_map(|rs| {
            rs.metadata
                .annotations
                .as_ref()?
                .get(DESIRED_REPLICAS_ANNOTATION)
        })
        .any(|annotated| *annotated != desired)
}

/// The sizes a scaling event gives the ReplicaSets (upstream's `scale`): a lone active
/// (or else the newest) ReplicaSet takes all replicas; a saturated new one ends the old
/// ones; mid-rollout, every active ReplicaSet grows or shrinks in proportion to its
/// share of the Deployment's previous maximum, leftovers going to the largest.
pub fn scaling_targets<'a>(
    deployment: &Deployment,
    fenceposts: Fenceposts,
    new: Option<&'a ReplicaSet>,
    old: &[&'a ReplicaSet],
) -> Vec<(&'a ReplicaSet, i32)> {
    let desired = desired_replicas(deployment);
    let mut active: Vec<&ReplicaSet> = old
        .iter()
        .copied()
        .chain(new)
        .filter(|rs| spec_replicas(rs) > 0)
        .collect();
    match active.as_slice() {
        [] => {
            return new
                .or(old.last().copied())
                .map(|rs| vec![(rs, desired)])
                .unwrap_or_default();
        }
        [only] => return vec![(*only, desired)],
        _ => {}
    }
    if let Some(new) = new.filter(|rs| is_saturated(deployment, rs)) {
        return active
            .into_iter()
            .filter(|rs| rs.metadata.uid != new.metadata.uid)
            .map(|rs| (rs, 0))
            .collect();
    }
    if is_recreate(deployment) {
        return Vec::new();
    }
    let allowed = if desired > 0 {
        desired + fenceposts.max_surge
    } else {
        0
    };
    let to_add = allowed - active.iter().map(|rs| spec_replicas(rs)).sum::<i32>();
    if to_add == 0 {
        return Vec::new();
    }
    let created = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
    if to_add > 0 {
        // Largest first, newer first among equals.
        active.sort_by(|a, b| {
            spec_replicas(b)
                .cmp(&spec_replicas(a))
                .then(created(b).cmp(&created(a)))
        });
    } else {
        // Largest first, older first among equals.
        active.sort_by(|a, b| {
            spec_replicas(b)
                .cmp(&spec_replicas(a))
                .then(created(a).cmp(&created(b)))
        });
    }
    let mut added = 0;
    let mut sizes: Vec<i32> = active
        .iter()
        .map(|rs| {
            let share = proportion(rs, deployment, fenceposts, to_add, added);
            added += share;
            spec_replicas(rs) + share
        })
        .collect();
    sizes[0] = (sizes[0] + to_add - added).max(0);
    active.into_iter().zip(sizes).collect()
}

/// Whether the new ReplicaSet alone already runs every desired pod, available.
fn is_saturated(deployment: &Deployment, rs: &ReplicaSet) -> bool {
    let desired = desired_replicas(deployment);
    let annotated = rs
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DESIRED_REPLICAS_ANNOTATION))
        .and_then(|v| v.parse::<i32>().ok());
    annotated == Some(desired) && spec_replicas(rs) == desired && available_replicas(rs) == desired
}

/// How many replicas a ReplicaSet gains (or loses) of the `to_add` still unassigned.
fn proportion(
    rs: &ReplicaSet,
    deployment: &Deployment,
    fenceposts: Fenceposts,
    to_add: i32,
    added: i32,
) -> i32 {
    let current = spec_replicas(rs);
    if current == 0 || to_add == added {
        return 0;
    }
    let desired = desired_replicas(deployment);
    let fraction = if desired == 0 {
        -current
    } else {
        let previous_max = rs
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MAX_REPLICAS_ANNOTATION))
            .and_then(|v| v.parse::<i32>().ok())
            .or_else(|| deployment.status.as_ref().and_then(|s| s.replicas))
            .filter(|max| *max > 0)
            .unwrap_or(current);
        let scaled = f64::from(current) * f64::from(desired + fenceposts.max_surge)
            / f64::from(previous_max);
        // The ratio of two i32 quantities times an i32 stays far inside i32.
        scaled.round() as i32 - current
    };
    let remaining = to_add - added;
    if to_add > 0 {
        fraction.min(remaining)
    } else {
        fraction.max(remaining)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, ReplicaSetStatus,
        RollingUpdateDeployment,
    };

    use super::*;

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn rs(spec: i32, status: i32, available: i32) -> ReplicaSet {
        ReplicaSet {
            spec: Some(ReplicaSetSpec {
                replicas: Some(spec),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas: status,
                available_replicas: Some(available),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn percent(text: &str) -> IntOrString {
        IntOrString::String(text.into())
    }

    #[test]
    fn surge_rounds_up_and_unavailable_rounds_down() {
        let d = deployment(5, percent("25%"), percent("25%"));
        assert_eq!(
            fenceposts(&d).expect("valid"),
            Fenceposts {
                max_surge: 2,
                max_unavailable: 1
            }
        );
        let d = deployment(10, percent("0%"), percent("10%"));
        assert_eq!(fenceposts(&d).expect("valid").max_unavailable, 1);
    }

    #[test]
    fn both_fenceposts_zero_allow_one_unavailable() {
        let d = deployment(3, IntOrString::Int(0), percent("10%"));
        assert_eq!(
            fenceposts(&d).expect("valid"),
            Fenceposts {
                max_surge: 0,
                max_unavailable: 1
            }
        );
    }

    #[test]
    fn unavailable_is_capped_at_desired_and_garbage_is_refused() {
        let d = deployment(2, IntOrString::Int(0), IntOrString::Int(5));
        assert_eq!(fenceposts(&d).expect("valid").max_unavailable, 2);
        let d = deployment(2, percent("many"), IntOrString::Int(1));
        assert!(matches!(fenceposts(&d), Err(Error::InvalidIntOrPercent(_))));
    }

    #[test]
    fn new_replica_set_grows_by_the_surge_only() {
        let d = deployment(5, IntOrString::Int(1), IntOrString::Int(1));
        let fence = fenceposts(&d).expect("valid");
        let old = rs(5, 5, 5);
        let new = rs(0, 0, 0);
        assert_eq!(new_replica_set_replicas(&d, fence, &[&old, &new], 0), 1);
        let old = rs(4, 4, 4);
        let new = rs(1, 1, 0);
        assert_eq!(new_replica_set_replicas(&d, fence, &[&old, &new], 1), 2);
        // Pods still terminating count: nothing more until the old one is gone.
        let old = rs(4, 5, 4);
        let new = rs(1, 1, 1);
        assert_eq!(new_replica_set_replicas(&d, fence, &[&old, &new], 1), 1);
    }

    #[test]
    fn old_replica_sets_shrink_only_while_enough_stay_available() {
        let d = deployment(5, IntOrString::Int(1), IntOrString::Int(1));
        let fence = fenceposts(&d).expect("valid");
        // 5 old available, a new pod not yet available: at most one old pod may go.
        let old = rs(5, 5, 5);
        let new = rs(1, 1, 0);
        assert_eq!(old_replica_set_targets(&d, fence, &[&old], &new), [4]);
        // New pod available: 6 available, min 4, two may go.
        let new = rs(1, 1, 1);
        assert_eq!(old_replica_set_targets(&d, fence, &[&old], &new), [3]);
        // Unavailable old pods go first, without touching available ones beyond the budget.
        let old = rs(5, 5, 3);
        let new = rs(1, 1, 1);
        assert_eq!(old_replica_set_targets(&d, fence, &[&old], &new), [3]);
    }

    #[test]
    fn oldest_replica_sets_shrink_first() {
        let d = deployment(4, IntOrString::Int(0), IntOrString::Int(2));
        let fence = fenceposts(&d).expect("valid");
        let oldest = rs(2, 2, 2);
        let older = rs(2, 2, 2);
        let new = rs(0, 0, 0);
        assert_eq!(
            old_replica_set_targets(&d, fence, &[&oldest, &older], &new),
            [0, 2]
        );
    }

    fn annotated(mut rs: ReplicaSet, desired: i32, max: i32) -> ReplicaSet {
        rs.metadata.annotations = Some(
            [
                (DESIRED_REPLICAS_ANNOTATION.to_string(), desired.to_string()),
                (MAX_REPLICAS_ANNOTATION.to_string(), max.to_string()),
            ]
            .into(),
        );
        rs
    }

    #[test]
    fn scaling_a_steady_deployment_resizes_its_only_replica_set() {
        let d = deployment(10, IntOrString::Int(1), IntOrString::Int(1));
        let fence = fenceposts(&d).expect("valid");
        let only = annotated(rs(5, 5, 5), 5, 6);
        assert!(is_scaling_event(&d, &[&only]));
        let targets = scaling_targets(&d, fence, Some(&only), &[]);
        assert_eq!(targets.iter().map(|(_, n)| *n).collect::<Vec<_>>(), [10]);
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        let d = deployment(10, IntOrString::Int(1), IntOrString::Int(1));
        let fence = fenceposts(&d).expect("valid");
        let old = annotated(rs(3, 3, 3), 5, 6);
        let new = annotated(rs(3, 3, 2), 5, 6);
        let targets = scaling_targets(&d, fence, Some(&new), &[&old]);
        let sizes: Vec<i32> = targets.iter().map(|(_, n)| *n).collect();
        assert_eq!(sizes.iter().sum::<i32>(), 11, "desired plus surge");
        assert!(sizes.contains(&6) && sizes.contains(&5), "{sizes:?}");
        // Scaling back down shrinks both, never below zero.
        let d = deployment(2, IntOrString::Int(0), IntOrString::Int(1));
        let fence = fenceposts(&d).expect("valid");
        let old = annotated(rs(6, 6, 6), 10, 11);
        let new = annotated(rs(5, 5, 2), 10, 11);
        let targets = scaling_targets(&d, fence, Some(&new), &[&old]);
        let sizes: Vec<i32> = targets.iter().map(|(_, n)| *n).collect();
        assert_eq!(sizes.iter().sum::<i32>(), 2, "{sizes:?}");
        assert!(sizes.iter().all(|n| *n >= 0));
    }
}
