//! PodTopologySpread (filter half): `DoNotSchedule` constraints. Placing the pod
//! must not make the number of matching pods in the node's domain exceed the
//! least-populated domain's by more than `maxSkew`.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::filters::node_affinity;
use crate::framework::Rejection;
use crate::labels;
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

/// Upstream's `ErrReasonConstraintsNotMatch`.
pub const CONSTRAINTS_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
/// Upstream's `ErrReasonNodeLabelNotMatch`.
pub const MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// One spread constraint with its selector resolved (`matchLabelKeys` merged in).
#[derive(Debug, Clone)]
pub struct Constraint {
    /// `maxSkew`.
    pub max_skew: i64,
    /// `topologyKey`.
    pub topology_key: String,
    /// Pods counted; `None` counts none.
    pub selector: Option<LabelSelector>,
    /// `minDomains` (1 when unset).
    pub min_domains: i64,
    /// `nodeAffinityPolicy: Honor` (the default): only nodes the pod could select count.
    pub honor_node_affinity: bool,
    /// `nodeTaintsPolicy: Honor`: only nodes whose taints the pod tolerates count.
    pub honor_node_taints: bool,
}

impl Constraint {
    /// The pod's constraints with `whenUnsatisfiable == when`.
    pub fn of(pod: &PodInfo, when: &str) -> Vec<Constraint> {
        let constraints = pod
            .pod
            .spec
            .as_ref()
            .and_then(|spec| spec.topology_spread_constraints.as_ref());
        constraints
            .into_iter()
            .flatten()
            .filter(|constraint| constraint.when_unsatisfiable == when)
            .map(|constraint| {
                let mut selector = constraint.label_selector.clone();
                if let Some(selector) = selector.as_mut() {
                    let extra: Vec<_> = constraint
                        .match_label_keys
                        .iter()
                        .flatten()
                        .filter_map(|key| {
                            pod.labels.get(key).map(|value| LabelSelectorRequirement {
                                key: key.clone(),
                                operator: "In".into(),
                                values: Some(vec![value.clone()]),
                            })
                        })
                        .collect();
                    selector
                        .match_expressions
                        .get_or_insert_with(Vec::new)
                        .extend(extra);
                }
                Constraint {
                    max_skew: constraint.max_skew.into(),
                    topology_key: constraint.topology_key.clone(),
                    selector,
                    min_domains: constraint.min_domains.unwrap_or(1).into(),
                    honor_node_affinity: constraint.node_affinity_policy.as_deref()
                        != Some("Ignore"),
                    honor_node_taints: constraint.node_taints_policy.as_deref() == Some("Honor"),
                }
            })
            .collect()
    }

    /// Whether `pod`'s labels are selected (in the incoming pod's namespace).
    pub fn selects(&self, pod: &PodInfo) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|selector| labels::selector_matches(selector, &pod.labels))
    }

    /// How many pods on `node` this constraint counts for `incoming`: same namespace,
    /// selected, not being deleted.
    pub fn count_on(&self, incoming: &PodInfo, node: &NodeInfo) -> i64 {
        let counted = node.pods.iter().filter(|pod| {
            !pod.terminating && pod.namespace == incoming.namespace && self.selects(pod)
        });
        counted.count() as i64
    }

    /// Whether `node` takes part in the spread for `pod` under the inclusion policies.
    pub fn includes(&self, pod: &PodInfo, node: &NodeInfo) -> bool {
        let affinity_ok = !self.honor_node_affinity
            || node_affinity::required_matches(&pod.pod, &node.labels, &node.name);
        let taints_ok = !self.honor_node_taints
            || node.taints.iter().all(|taint| {
                !matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
                    || labels::tolerated(&pod.tolerations, taint)
            });
        affinity_ok && taints_ok
    }
}

/// Whether `node` has every constraint's topology label.
pub fn has_all_keys(constraints: &[Constraint], node: &NodeInfo) -> bool {
    constraints
        .iter()
        .all(|constraint| node.labels.contains_key(&constraint.topology_key))
}

/// Matching-pod counts per domain for each `DoNotSchedule` constraint.
#[derive(Debug, Default)]
pub struct State {
    constraints: Vec<Constraint>,
    /// Per constraint: domain value -> matching pods.
    counts: Vec<HashMap<String, i64>>,
    /// Per constraint: the smallest count over its domains (0 if fewer than `minDomains`).
    min_counts: Vec<i64>,
}

impl State {
    /// The pre-filter pass over the nodes.
    pub fn compute(pod: &PodInfo, snapshot: &Snapshot) -> State {
        let constraints = Constraint::of(pod, "DoNotSchedule");
        if constraints.is_empty() {
            return State::default();
        }
        let mut counts = vec![HashMap::<String, i64>::new(); constraints.len()];
        for node in snapshot
            .nodes
            .iter()
            .filter(|node| has_all_keys(&constraints, node))
        {
            for (constraint, counts) in constraints.iter().zip(counts.iter_mut()) {
                if !constraint.includes(pod, node) {
                    continue;
                }
                let domain = node.labels[&constraint.topology_key].clone();
                *counts.entry(domain).or_default() += constraint.count_on(pod, node);
            }
        }
        let min_counts = constraints
            .iter()
            .zip(&counts)
            .map(|(constraint, counts)| {
                if (counts.len() as i64) < constraint.min_domains {
                    0
                } else {
                    counts.values().copied().min().unwrap_or(0)
                }
            })
            .collect();
        State {
            constraints,
            counts,
            min_counts,
        }
    }

    /// Rejects a node where the pod would raise a skew above `maxSkew`.
    pub fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        for (index, constraint) in self.constraints.iter().enumerate() {
            let Some(domain) = node.labels.get(&constraint.topology_key) else {
                return Err(Rejection::unresolvable(MISSING_LABEL));
            };
            let self_match = i64::from(constraint.selects(pod));
            let matching = self.counts[index].get(domain).copied().unwrap_or(0);
            if matching + self_match - self.min_counts[index] > constraint.max_skew {
                return Err(Rejection::unschedulable(CONSTRAINTS_NOT_MATCH));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod, with_label};
    use k8s_openapi::api::core::v1::TopologySpreadConstraint;
    use std::sync::Arc;

    fn spread(max_skew: i32, key: &str, when: &str) -> TopologySpreadConstraint {
        TopologySpreadConstraint {
            max_skew,
            topology_key: key.into(),
            when_unsatisfiable: when.into(),
            label_selector: Some(LabelSelector {
                match_labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn web(name: &str, constraint: Option<TopologySpreadConstraint>) -> PodInfo {
        let pod = pod(name, "0", "0")
            .label("app", "web")
            .with_spec(|spec| spec.topology_spread_constraints = constraint.map(|c| vec![c]));
        PodInfo::new(Arc::new(pod.build()))
    }

    /// Zones z1 (nodes a, b) and z2 (node c); node d has no zone label.
    fn cluster(web_pods_on: &[&str]) -> Snapshot {
        let nodes = [
            ("a", Some("z1")),
            ("b", Some("z1")),
            ("c", Some("z2")),
            ("d", None),
        ]
        .map(|(name, zone)| {
            let node = node(name, "4", "8Gi");
            Arc::new(match zone {
                Some(zone) => with_label(node, "zone", zone),
                None => node,
            })
        });
        let pods = web_pods_on.iter().enumerate().map(|(i, node)| {
            let mut pod = web(&format!("web-{i}"), None).pod.as_ref().clone();
            pod.spec.get_or_insert_default().node_name = Some(node.to_string());
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
                    .filter(pod, node)
                    .map_err(|rejection| rejection.reasons[0].clone())
            })
            .collect()
    }

    #[test]
    fn skew_above_max_is_rejected() {
        let snapshot = cluster(&["a", "b"]);
        let pod = web("new", Some(spread(1, "zone", "DoNotSchedule")));
        // z1 has 2, z2 has 0: only z2 keeps the skew within 1.
        assert_eq!(
            verdicts(&pod, &snapshot),
            [
                Err(CONSTRAINTS_NOT_MATCH.into()),
                Err(CONSTRAINTS_NOT_MATCH.into()),
                Ok(()),
                Err(MISSING_LABEL.into())
            ]
        );
        let relaxed = web("new", Some(spread(3, "zone", "DoNotSchedule")));
        assert_eq!(verdicts(&relaxed, &snapshot)[..3], [Ok(()), Ok(()), Ok(())]);
    }

    #[test]
    fn schedule_anyway_constraints_do_not_filter() {
        let snapshot = cluster(&["a", "b"]);
        let pod = web("new", Some(spread(1, "zone", "ScheduleAnyway")));
        assert!(verdicts(&pod, &snapshot).iter().all(Result::is_ok));
    }

    #[test]
    fn min_domains_above_the_domain_count_makes_the_minimum_zero() {
        let snapshot = cluster(&["a", "c"]);
        let mut constraint = spread(1, "zone", "DoNotSchedule");
        let pod = web("new", Some(constraint.clone()));
        assert!(verdicts(&pod, &snapshot)[..3].iter().all(Result::is_ok));
        constraint.min_domains = Some(3);
        let pod = web("new", Some(constraint));
        assert!(verdicts(&pod, &snapshot)[..3].iter().all(Result::is_err));
    }
}
