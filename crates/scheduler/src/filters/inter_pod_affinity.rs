//! InterPodAffinity (filter half): required pod affinity and anti-affinity, both
//! the incoming pod's and the anti-affinity of pods already bound.
//!
//! As upstream, the work is split: a pre-filter pass counts, per topology pair
//! (`topologyKey`, node's value), the bound pods each rule cares about; the
//! per-node filter then only looks those counts up.

use std::collections::HashMap;

use crate::framework::Rejection;
use crate::snapshot::{AffinityTerm, NodeInfo, PodInfo, Snapshot};

/// Upstream's `ErrReasonExistingAntiAffinityRulesNotMatch`.
pub const EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
/// Upstream's `ErrReasonAffinityRulesNotMatch`.
pub const AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// Upstream's `ErrReasonAntiAffinityRulesNotMatch`.
pub const ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";

/// Pod counts per (topology key, value).
pub type TopologyCounts = HashMap<(String, String), i64>;

/// What the filter needs for one incoming pod.
#[derive(Debug, Default)]
pub struct State {
    /// Bound pods whose required anti-affinity selects the incoming pod.
    existing_anti_affinity: TopologyCounts,
    /// Bound pods matching all of the incoming pod's required affinity terms.
    affinity: TopologyCounts,
    /// Bound pods matching one of the incoming pod's required anti-affinity terms.
    anti_affinity: TopologyCounts,
}

fn count(counts: &mut TopologyCounts, term: &AffinityTerm, node: &NodeInfo) {
    if let Some(value) = node.labels.get(&term.topology_key) {
        *counts
            .entry((term.topology_key.clone(), value.clone()))
            .or_default() += 1;
    }
}

impl State {
    /// The pre-filter pass over the bound pods.
    pub fn compute(pod: &PodInfo, snapshot: &Snapshot) -> State {
        let namespaces = &snapshot.namespace_labels;
        let mut state = State::default();
        for (position, existing) in &snapshot.pods_with_required_anti_affinity {
            let node = &snapshot.nodes[*position];
            for term in &existing.required_anti_affinity {
                if term.matches(pod, namespaces) {
                    count(&mut state.existing_anti_affinity, term, node);
                }
            }
        }
        if pod.required_affinity.is_empty() && pod.required_anti_affinity.is_empty() {
            return state;
        }
        for node in &snapshot.nodes {
            for existing in &node.pods {
                let matches_all = |terms: &[AffinityTerm]| {
                    terms.iter().all(|term| term.matches(existing, namespaces))
                };
                if !pod.required_affinity.is_empty() && matches_all(&pod.required_affinity) {
                    for term in &pod.required_affinity {
                        count(&mut state.affinity, term, node);
                    }
                }
                for term in &pod.required_anti_affinity {
                    if term.matches(existing, namespaces) {
                        count(&mut state.anti_affinity, term, node);
                    }
                }
            }
        }
        state
    }

    /// Rejects a node breaking a required (anti-)affinity rule, checked in upstream's order.
    pub fn filter(
        &self,
        pod: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) -> Result<(), Rejection> {
        let counted = |counts: &TopologyCounts, key: &str| {
            node.labels
                .get(key)
                .and_then(|value| counts.get(&(key.to_string(), value.clone())))
                .is_some_and(|&count| count > 0)
        };
        if !self.existing_anti_affinity.is_empty()
            && node
                .labels
                .keys()
                .any(|key| counted(&self.existing_anti_affinity, key))
        {
            return Err(Rejection::unschedulable(EXISTING_ANTI_AFFINITY));
        }
        if pod
            .required_anti_affinity
            .iter()
            .any(|term| counted(&self.anti_affinity, &term.topology_key))
        {
            return Err(Rejection::unschedulable(ANTI_AFFINITY));
        }
        if !self.satisfies_affinity(pod, node, snapshot) {
            return Err(Rejection::unresolvable(AFFINITY));
        }
        Ok(())
    }

    fn satisfies_affinity(&self, pod: &PodInfo, node: &NodeInfo, snapshot: &Snapshot) -> bool {
        let mut pods_exist = true;
        for term in &pod.required_affinity {
            let Some(value) = node.labels.get(&term.topology_key) else {
                return false;
            };
            let pair = (term.topology_key.clone(), value.clone());
            if self.affinity.get(&pair).copied().unwrap_or(0) <= 0 {
                pods_exist = false;
            }
        }
        // The first pod of a group with affinity to itself may go anywhere with the
        // topology labels, or no such group could ever start.
        pods_exist
            || (self.affinity.is_empty()
                && pod
                    .required_affinity
                    .iter()
                    .all(|term| term.matches(pod, &snapshot.namespace_labels)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod, with_label};
    use k8s_openapi::api::core::v1::{Affinity, PodAffinity, PodAffinityTerm, PodAntiAffinity};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use std::sync::Arc;

    const HOSTNAME: &str = "kubernetes.io/hostname";

    fn term(app: &str, key: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            }),
            topology_key: key.into(),
            ..Default::default()
        }
    }

    fn anti(app: &str, key: &str) -> Affinity {
        Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![term(app, key)]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn affinity(app: &str, key: &str) -> Affinity {
        Affinity {
            pod_affinity: Some(PodAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![term(app, key)]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn cluster(bound: Vec<(&str, k8s_openapi::api::core::v1::Pod)>) -> Snapshot {
        let nodes = ["a", "b", "c"].map(|name| {
            let zone = if name == "c" { "z2" } else { "z1" };
            Arc::new(with_label(node(name, "4", "8Gi"), "zone", zone))
        });
        let pods = bound.into_iter().map(|(node, pod)| {
            let mut pod = pod;
            pod.spec.get_or_insert_default().node_name = Some(node.into());
            Arc::new(PodInfo::new(Arc::new(pod)))
        });
        Snapshot::new(nodes, pods, HashMap::new())
    }

    fn verdicts(pod: &PodInfo, snapshot: &Snapshot) -> Vec<Result<(), String>> {
        let state = State::compute(pod, snapshot);
        snapshot
            .nodes
            .iter()
            .map(|node| {
                state
                    .filter(pod, node, snapshot)
                    .map_err(|rejection| rejection.reasons[0].clone())
            })
            .collect()
    }

    #[test]
    fn anti_affinity_keeps_replicas_apart_per_topology() {
        let snapshot = cluster(vec![(
            "a",
            pod("web-1", "0", "0").label("app", "web").build(),
        )]);
        let by_host = PodInfo::new(Arc::new(
            pod("web-2", "0", "0")
                .label("app", "web")
                .affinity(anti("web", HOSTNAME))
                .build(),
        ));
        assert_eq!(
            verdicts(&by_host, &snapshot),
            [Err(ANTI_AFFINITY.into()), Ok(()), Ok(())]
        );
        let by_zone = PodInfo::new(Arc::new(
            pod("web-2", "0", "0").affinity(anti("web", "zone")).build(),
        ));
        assert_eq!(
            verdicts(&by_zone, &snapshot),
            [Err(ANTI_AFFINITY.into()), Err(ANTI_AFFINITY.into()), Ok(())]
        );
    }

    #[test]
    fn bound_pods_anti_affinity_is_respected() {
        let loner = pod("loner", "0", "0")
            .affinity(anti("web", HOSTNAME))
            .build();
        let snapshot = cluster(vec![("b", loner)]);
        let web = PodInfo::new(Arc::new(pod("web", "0", "0").label("app", "web").build()));
        assert_eq!(
            verdicts(&web, &snapshot),
            [Ok(()), Err(EXISTING_ANTI_AFFINITY.into()), Ok(())]
        );
        let other_namespace = PodInfo::new(Arc::new(
            pod("web", "0", "0")
                .label("app", "web")
                .namespace("other")
                .build(),
        ));
        assert!(
            verdicts(&other_namespace, &snapshot)
                .iter()
                .all(Result::is_ok),
            "terms default to their pod's namespace"
        );
    }

    #[test]
    fn affinity_requires_a_matching_pod_in_the_topology() {
        let snapshot = cluster(vec![("c", pod("db", "0", "0").label("app", "db").build())]);
        let near_db = PodInfo::new(Arc::new(
            pod("web", "0", "0")
                .affinity(affinity("db", "zone"))
                .build(),
        ));
        assert_eq!(
            verdicts(&near_db, &snapshot),
            [Err(AFFINITY.into()), Err(AFFINITY.into()), Ok(())]
        );
    }

    #[test]
    fn the_first_pod_of_a_self_affine_group_may_go_anywhere() {
        let snapshot = cluster(vec![]);
        let first = PodInfo::new(Arc::new(
            pod("web", "0", "0")
                .label("app", "web")
                .affinity(affinity("web", "zone"))
                .build(),
        ));
        assert!(verdicts(&first, &snapshot).iter().all(Result::is_ok));
        let not_self = PodInfo::new(Arc::new(
            pod("web", "0", "0")
                .affinity(affinity("db", "zone"))
                .build(),
        ));
        assert!(verdicts(&not_self, &snapshot).iter().all(Result::is_err));
    }
}
