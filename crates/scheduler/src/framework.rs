//! One scheduling cycle: filter every node, score the feasible ones, pick the
//! best; or, when none fits, the failure summary kube-scheduler reports.

use std::collections::BTreeMap;
use std::fmt;

use crate::filters::PreFilterState;
use crate::scores;
use crate::snapshot::{PodInfo, Snapshot};

/// How final a rejection is (upstream's status codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The node does not fit now, but evicting pods from it might make it fit.
    Unschedulable,
    /// Evicting pods cannot make this node fit (taints, selectors, size).
    UnschedulableAndUnresolvable,
}

/// Why a filter rejected a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Whether preemption could help.
    pub code: Code,
    /// Upstream's reason strings, e.g. `Insufficient cpu`.
    pub reasons: Vec<String>,
}

impl Rejection {
    /// A rejection preemption might resolve.
    pub fn unschedulable(reason: impl Into<String>) -> Rejection {
        Rejection {
            code: Code::Unschedulable,
            reasons: vec![reason.into()],
        }
    }

    /// A rejection preemption cannot resolve.
    pub fn unresolvable(reason: impl Into<String>) -> Rejection {
        Rejection {
            code: Code::UnschedulableAndUnresolvable,
            reasons: vec![reason.into()],
        }
    }
}

/// Upstream's `ErrNoNodesAvailable` message.
pub const NO_NODES: &str = "no nodes available to schedule pods";
/// What the preemption summary says of a node where evicting cannot help.
const PREEMPTION_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// What it says of a node without lower-priority pods to evict.
const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// Why a pod could not be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unschedulable {
    /// The cluster has no nodes.
    NoNodes,
    /// Every node was rejected.
    NoFit(FitError),
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unschedulable::NoNodes => f.write_str(NO_NODES),
            Unschedulable::NoFit(fit) => fit.fmt(f),
        }
    }
}

/// Every node's rejection, summarised as upstream's `FitError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    /// How many nodes were considered.
    pub num_all_nodes: usize,
    /// Node name -> why it was rejected.
    pub rejections: BTreeMap<String, Rejection>,
    /// Why a pre-filter rejected the pod before any node was looked at (then
    /// every node carries that rejection); empty when the filters ran.
    pub pre_filter_message: String,
    /// The preemption summary (upstream's PostFilter message).
    pub post_filter_message: String,
}

impl FitError {
    fn new(
        pod: &PodInfo,
        snapshot: &Snapshot,
        rejections: BTreeMap<String, Rejection>,
    ) -> FitError {
        let num_all_nodes = snapshot.nodes.len();
        let post_filter_message = preemption_summary(pod, snapshot, &rejections, num_all_nodes);
        FitError {
            num_all_nodes,
            rejections,
            pre_filter_message: String::new(),
            post_filter_message,
        }
    }

    /// The pod was rejected by a pre-filter: every node gets that rejection, and
    /// the message is the pre-filter's alone (upstream's `Diagnosis.PreFilterMsg`).
    fn pre_filter(pod: &PodInfo, snapshot: &Snapshot, rejection: Rejection) -> FitError {
        let rejections = snapshot
            .nodes
            .iter()
            .map(|node| (node.name.clone(), rejection.clone()))
            .collect();
        FitError {
            pre_filter_message: rejection.reasons.join(", "),
            ..FitError::new(pod, snapshot, rejections)
        }
    }
}

/// `count reason` pairs sorted as strings, as upstream's `sortReasonsHistogram`.
fn histogram<'a>(reasons: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for reason in reasons {
        *counts.entry(reason).or_default() += 1;
    }
    let mut entries: Vec<String> = counts
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    entries.sort();
    entries.join(", ")
}

/// Gantry does not preempt; this reports, per node, what upstream's dry run
/// reports when it finds no victims: unresolvable nodes are "not helpful", and
/// the others have no lower-priority pod whose eviction was attempted.
fn preemption_summary(
    pod: &PodInfo,
    snapshot: &Snapshot,
    rejections: &BTreeMap<String, Rejection>,
    num_all_nodes: usize,
) -> String {
    let policy = pod
        .pod
        .spec
        .as_ref()
        .and_then(|spec| spec.preemption_policy.as_deref());
    if policy == Some("Never") {
        return "not eligible due to preemptionPolicy=Never.".into();
    }
    let per_node = snapshot
        .nodes
        .iter()
        .map(|node| match rejections.get(&node.name) {
            Some(rejection) if rejection.code == Code::Unschedulable => NO_VICTIMS,
            _ => PREEMPTION_NOT_HELPFUL,
        });
    format!(
        "preemption: 0/{num_all_nodes} nodes are available: {}.",
        histogram(per_node)
    )
}

impl fmt::Display for FitError {
    /// `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {k: v}. preemption: ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reasons = self
            .rejections
            .values()
            .flat_map(|rejection| rejection.reasons.iter().map(String::as_str));
        write!(f, "0/{} nodes are available:", self.num_all_nodes)?;
        let reasons = if self.pre_filter_message.is_empty() {
            histogram(reasons)
        } else {
            self.pre_filter_message.clone()
        };
        if !reasons.is_empty() {
            write!(f, " {reasons}.")?;
        }
        if !self.post_filter_message.is_empty() {
            write!(f, " {}.", self.post_filter_message)?;
        }
        Ok(())
    }
}

/// Where a pod should go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The chosen node.
    pub node: String,
    /// How many nodes passed the filters.
    pub feasible_nodes: usize,
}

/// Runs one scheduling cycle for `pod` against `snapshot`. Ties between equally
/// scored nodes go to the first by name, so decisions are reproducible.
pub fn schedule(pod: &PodInfo, snapshot: &Snapshot) -> Result<Decision, Unschedulable> {
    if snapshot.nodes.is_empty() {
        return Err(Unschedulable::NoNodes);
    }
    let state = PreFilterState::compute(pod, snapshot).map_err(|rejection| {
        Unschedulable::NoFit(FitError::pre_filter(pod, snapshot, rejection))
    })?;
    let mut feasible = Vec::new();
    let mut rejections = BTreeMap::new();
    for (position, node) in snapshot.nodes.iter().enumerate() {
        match state.filter(pod, node, snapshot) {
            Ok(()) => feasible.push(position),
            Err(rejection) => {
                rejections.insert(node.name.clone(), rejection);
            }
        }
    }
    let chosen = match feasible.as_slice() {
        [] => {
            return Err(Unschedulable::NoFit(FitError::new(
                pod, snapshot, rejections,
            )));
        }
        [only] => *only,
        _ => {
            let totals = scores::total(pod, snapshot, &feasible);
            let mut best = 0;
            for (index, total) in totals.iter().enumerate() {
                if *total > totals[best] {
                    best = index;
                }
            }
            feasible[best]
        }
    };
    Ok(Decision {
        node: snapshot.nodes[chosen].name.clone(),
        feasible_nodes: feasible.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod, with_label, with_taint};
    use std::collections::HashMap;
    use std::sync::Arc;

    fn cluster(
        nodes: Vec<k8s_openapi::api::core::v1::Node>,
        bound: Vec<k8s_openapi::api::core::v1::Pod>,
    ) -> Snapshot {
        let pods = bound
            .into_iter()
            .map(|pod| Arc::new(PodInfo::new(Arc::new(pod))));
        Snapshot::new(nodes.into_iter().map(Arc::new), pods, HashMap::new())
    }

    fn info(pod: k8s_openapi::api::core::v1::Pod) -> PodInfo {
        PodInfo::new(Arc::new(pod))
    }

    #[test]
    fn the_failure_message_matches_kube_scheduler() {
        let snapshot = cluster(
            vec![
                node("a", "1", "4Gi"),
                with_taint(node("b", "8", "4Gi"), "dedicated", "gpu", "NoSchedule"),
                with_taint(node("c", "8", "4Gi"), "dedicated", "gpu", "NoSchedule"),
            ],
            vec![],
        );
        let error = schedule(&info(pod("big", "2", "1Gi").build()), &snapshot).expect_err("no fit");
        assert_eq!(
            error.to_string(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: gpu}. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.."
        );
    }

    #[test]
    fn resolvable_rejections_report_no_victims() {
        let snapshot = cluster(
            vec![
                node("a", "2", "4Gi"),
                with_taint(node("b", "2", "4Gi"), "k", "", "NoSchedule"),
            ],
            vec![pod("busy", "1500m", "0").on("a").build()],
        );
        let error = schedule(&info(pod("p", "1", "0").build()), &snapshot).expect_err("no fit");
        assert_eq!(
            error.to_string(),
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {k: }. \
             preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, \
             1 Preemption is not helpful for scheduling.."
        );
    }

    #[test]
    fn every_reason_of_a_node_is_counted_and_sorted_as_strings() {
        let snapshot = cluster(
            (0..12)
                .map(|i| node(&format!("n{i:02}"), "1", "1Gi"))
                .collect(),
            vec![],
        );
        let pod =
            pod("p", "2", "2Gi").with_spec(|spec| spec.preemption_policy = Some("Never".into()));
        let error = schedule(&info(pod.build()), &snapshot).expect_err("no fit");
        assert_eq!(
            error.to_string(),
            "0/12 nodes are available: 12 Insufficient cpu, 12 Insufficient memory. \
             not eligible due to preemptionPolicy=Never.."
        );
    }

    #[test]
    fn a_pre_filter_rejection_is_reported_once_not_per_node() {
        use crate::filters::volume_binding::UNBOUND_IMMEDIATE;
        use k8s_openapi::api::core::v1::{
            PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Volume,
        };
        let mut snapshot = cluster(vec![node("a", "1", "1Gi"), node("b", "1", "1Gi")], vec![]);
        let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "data", "namespace": "default"},
            "spec": {"storageClassName": ""},
        }))
        .expect("claim");
        snapshot.volumes = Arc::new(crate::filters::volume_binding::Volumes::new(
            [Arc::new(claim)],
            [],
            [],
        ));
        let pod = pod("p", "0", "0").with_spec(|spec| {
            spec.volumes = Some(vec![Volume {
                name: "data".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: "data".into(),
                    read_only: None,
                }),
                ..Default::default()
            }])
        });
        let error = schedule(&info(pod.build()), &snapshot).expect_err("unbound");
        assert_eq!(
            error.to_string(),
            format!(
                "0/2 nodes are available: {UNBOUND_IMMEDIATE}. \
                 preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.."
            )
        );
    }

    #[test]
    fn no_nodes_at_all() {
        let error = schedule(&info(pod("p", "0", "0").build()), &Snapshot::default())
            .expect_err("no nodes");
        assert_eq!(error.to_string(), NO_NODES);
    }

    #[test]
    fn the_best_scored_feasible_node_wins_and_ties_go_by_name() {
        let snapshot = cluster(
            vec![
                node("a", "4", "8Gi"),
                node("b", "4", "8Gi"),
                with_label(node("c", "4", "8Gi"), "disk", "ssd"),
            ],
            vec![pod("busy", "2", "4Gi").on("a").build()],
        );
        let decision = schedule(&info(pod("p", "1", "1Gi").build()), &snapshot).expect("fits");
        assert_eq!(
            decision,
            Decision {
                node: "b".into(),
                feasible_nodes: 3
            }
        );
        let decision = schedule(
            &info(pod("p", "1", "1Gi").node_selector("disk", "ssd").build()),
            &snapshot,
        )
        .expect("fits");
        assert_eq!(decision.node, "c");
    }

    #[test]
    fn consecutive_decisions_spread_identical_pods() {
        let mut snapshot = cluster(
            (0..3).map(|i| node(&format!("n{i}"), "2", "4Gi")).collect(),
            vec![],
        );
        let mut placed = Vec::new();
        for i in 0..6 {
            let pod = Arc::new(info(pod(&format!("p{i}"), "500m", "1Gi").build()));
            let decision = schedule(&pod, &snapshot).expect("fits");
            assert!(snapshot.add_pod(pod, &decision.node));
            placed.push(decision.node);
        }
        assert_eq!(placed, ["n0", "n1", "n2", "n0", "n1", "n2"]);
        let error =
            schedule(&info(pod("more", "1500m", "0").build()), &snapshot).expect_err("full");
        assert!(
            error
                .to_string()
                .starts_with("0/3 nodes are available: 3 Insufficient cpu."),
            "{error}"
        );
    }
}
