//! The score plugins of kube-scheduler's default profile: each rates every
//! feasible node 0..=100 (after upstream's per-plugin normalisation) and the
//! weighted sum picks the node.

use std::collections::{HashMap, HashSet};

use crate::filters::inter_pod_affinity::TopologyCounts;
use crate::filters::topology_spread::{self, Constraint};
use crate::labels;
use crate::snapshot::{AffinityTerm, NodeInfo, PodInfo, Snapshot};

/// The best score a plugin gives (`framework.MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;

/// The default profile's weights.
const TAINT_TOLERATION_WEIGHT: i64 = 3;
const NODE_AFFINITY_WEIGHT: i64 = 2;
const RESOURCES_FIT_WEIGHT: i64 = 1;
const BALANCED_ALLOCATION_WEIGHT: i64 = 1;
const TOPOLOGY_SPREAD_WEIGHT: i64 = 2;
const INTER_POD_AFFINITY_WEIGHT: i64 = 2;
/// The weight an existing pod's *required* affinity term lends to a pod it selects
/// (`hardPodAffinityWeight`, default 1).
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// The weighted total for each node of `feasible` (positions in `snapshot.nodes`).
pub fn total(pod: &PodInfo, snapshot: &Snapshot, feasible: &[usize]) -> Vec<i64> {
    let nodes: Vec<&NodeInfo> = feasible
        .iter()
        .map(|&position| &snapshot.nodes[position])
        .collect();
    let mut totals = vec![0i64; nodes.len()];
    let mut add = |weight: i64, scores: Vec<i64>| {
        for (total, score) in totals.iter_mut().zip(scores) {
            *total += weight * score;
        }
    };
    add(TAINT_TOLERATION_WEIGHT, taint_toleration(pod, &nodes));
    add(NODE_AFFINITY_WEIGHT, node_affinity(pod, &nodes));
    add(
        RESOURCES_FIT_WEIGHT,
        nodes
            .iter()
            .map(|node| least_allocated(pod, node))
            .collect(),
    );
    add(
        BALANCED_ALLOCATION_WEIGHT,
        nodes
            .iter()
            .map(|node| balanced_allocation(pod, node))
            .collect(),
    );
    add(
        TOPOLOGY_SPREAD_WEIGHT,
        topology_spread(pod, snapshot, &nodes),
    );
    add(
        INTER_POD_AFFINITY_WEIGHT,
        inter_pod_affinity(pod, snapshot, &nodes),
    );
    totals
}

/// `helper.DefaultNormalizeScore`: scales to 0..=100 by the maximum, optionally reversed.
fn normalize(mut scores: Vec<i64>, reverse: bool) -> Vec<i64> {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.fill(MAX_NODE_SCORE);
        }
        return scores;
    }
    for score in &mut scores {
        let scaled = MAX_NODE_SCORE * *score / max;
        *score = if reverse {
            MAX_NODE_SCORE - scaled
        } else {
            scaled
        };
    }
    scores
}

/// TaintToleration: fewer untolerated `PreferNoSchedule` taints is better.
pub fn taint_toleration(pod: &PodInfo, nodes: &[&NodeInfo]) -> Vec<i64> {
    let tolerations: Vec<_> = pod
        .tolerations
        .iter()
        .filter(|toleration| {
            matches!(
                toleration.effect.as_deref(),
                None | Some("") | Some("PreferNoSchedule")
            )
        })
        .cloned()
        .collect();
    let raw = nodes
        .iter()
        .map(|node| {
            let untolerated = node.taints.iter().filter(|taint| {
                taint.effect == "PreferNoSchedule" && !labels::tolerated(&tolerations, taint)
            });
            untolerated.count() as i64
        })
        .collect();
    normalize(raw, true)
}

/// NodeAffinity: the summed weights of the preferred terms a node matches.
pub fn node_affinity(pod: &PodInfo, nodes: &[&NodeInfo]) -> Vec<i64> {
    let preferred = pod
        .pod
        .spec
        .as_ref()
        .and_then(|spec| spec.affinity.as_ref())
        .and_then(|affinity| affinity.node_affinity.as_ref())
        .and_then(|affinity| {
            affinity
                .preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default();
    let raw = nodes
        .iter()
        .map(|node| {
            preferred
                .iter()
                .filter(|term| {
                    labels::node_selector_term_matches(&term.preference, &node.labels, &node.name)
                })
                .map(|term| i64::from(term.weight))
                .sum()
        })
        .collect();
    normalize(raw, false)
}

/// The (allocatable, requested-with-the-pod) pairs for CPU and memory the
/// resource scores use; `non_zero` counts request-less containers as the defaults.
fn cpu_and_memory(pod: &PodInfo, node: &NodeInfo, non_zero: bool) -> [(i64, i64); 2] {
    let (cpu, memory) = if non_zero {
        (
            node.non_zero_milli_cpu + pod.requests.non_zero_milli_cpu,
            node.non_zero_memory + pod.requests.non_zero_memory,
        )
    } else {
        (
            node.requested.milli_cpu + pod.requests.requests.milli_cpu,
            node.requested.memory + pod.requests.requests.memory,
        )
    };
    [
        (node.allocatable.milli_cpu, cpu),
        (node.allocatable.memory, memory),
    ]
}

/// NodeResourcesFit with the LeastAllocated strategy: the free share of CPU and
/// memory after placing the pod, averaged with equal weights.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let resources = cpu_and_memory(pod, node, true);
    let sum: i64 = resources
        .iter()
        .map(|&(capacity, requested)| {
            if capacity == 0 || requested > capacity {
                0
            } else {
                (capacity - requested) * MAX_NODE_SCORE / capacity
            }
        })
        .sum();
    sum / resources.len() as i64
}

/// NodeResourcesBalancedAllocation: prefers nodes whose CPU and memory would be
/// used in similar proportions (1 - standard deviation of the fractions).
pub fn balanced_allocation(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let fractions: Vec<f64> = cpu_and_memory(pod, node, false)
        .iter()
        .filter(|(capacity, _)| *capacity > 0)
        .map(|&(capacity, requested)| (requested as f64 / capacity as f64).min(1.0))
        .collect();
    let deviation = match fractions.as_slice() {
        [a, b] => ((a - b) / 2.0).abs(),
        [] | [_] => 0.0,
        many => {
            let mean = many.iter().sum::<f64>() / many.len() as f64;
            (many.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / many.len() as f64).sqrt()
        }
    };
    ((1.0 - deviation) * MAX_NODE_SCORE as f64) as i64
}

/// PodTopologySpread for `ScheduleAnyway` constraints: fewer matching pods in the
/// node's domains is better; each constraint is weighted by log(domains + 2).
pub fn topology_spread(pod: &PodInfo, snapshot: &Snapshot, nodes: &[&NodeInfo]) -> Vec<i64> {
    let constraints = Constraint::of(pod, "ScheduleAnyway");
    if constraints.is_empty() {
        return vec![0; nodes.len()];
    }
    let ignored: Vec<bool> = nodes
        .iter()
        .map(|node| !topology_spread::has_all_keys(&constraints, node))
        .collect();
    let considered = || {
        nodes
            .iter()
            .zip(&ignored)
            .filter(|(_, ignored)| !**ignored)
            .map(|(node, _)| node)
    };
    let mut domain_counts: Vec<HashMap<&str, i64>> = Vec::new();
    let mut weights = Vec::new();
    for constraint in &constraints {
        let domains: HashSet<&str> = considered()
            .map(|node| node.labels[&constraint.topology_key].as_str())
            .collect();
        weights.push(((domains.len() + 2) as f64).ln());
        let mut counts: HashMap<&str, i64> = HashMap::new();
        if constraint.topology_key != HOSTNAME {
            for node in snapshot
                .nodes
                .iter()
                .filter(|node| topology_spread::has_all_keys(&constraints, node))
            {
                let domain = node.labels[&constraint.topology_key].as_str();
                if domains.contains(domain) && constraint.includes(pod, node) {
                    *counts.entry(domain).or_default() += constraint.count_on(pod, node);
                }
            }
        }
        domain_counts.push(counts);
    }
    let raw: Vec<Option<i64>> = nodes
        .iter()
        .zip(&ignored)
        .map(|(node, ignored)| {
            if *ignored {
                return None;
            }
            let score: f64 = constraints
                .iter()
                .enumerate()
                .map(|(index, constraint)| {
                    let count = if constraint.topology_key == HOSTNAME {
                        constraint.count_on(pod, node)
                    } else {
                        let domain = node.labels[&constraint.topology_key].as_str();
                        domain_counts[index].get(domain).copied().unwrap_or(0)
                    };
                    count as f64 * weights[index] + (constraint.max_skew - 1) as f64
                })
                .sum();
            Some(score.round() as i64)
        })
        .collect();
    let present = || raw.iter().flatten().copied();
    let (min, max) = (present().min().unwrap_or(0), present().max().unwrap_or(0));
    raw.into_iter()
        .map(|score| match score {
            None => 0,
            Some(_) if max == 0 => MAX_NODE_SCORE,
            Some(score) => MAX_NODE_SCORE * (max + min - score) / max,
        })
        .collect()
}

const HOSTNAME: &str = "kubernetes.io/hostname";

/// InterPodAffinity: preferred (anti-)affinity of the incoming pod towards bound
/// pods, and of bound pods towards it, summed per topology pair and min-max scaled.
pub fn inter_pod_affinity(pod: &PodInfo, snapshot: &Snapshot, nodes: &[&NodeInfo]) -> Vec<i64> {
    let namespaces = &snapshot.namespace_labels;
    let mut pairs = TopologyCounts::new();
    let mut add = |term: &AffinityTerm, node: &NodeInfo, weight: i64| {
        if let Some(value) = node.labels.get(&term.topology_key) {
            *pairs
                .entry((term.topology_key.clone(), value.clone()))
                .or_default() += weight;
        }
    };
    let mut score_existing = |existing: &PodInfo, node: &NodeInfo| {
        for weighted in &pod.preferred_affinity {
            if weighted.term.matches(existing, namespaces) {
                add(&weighted.term, node, weighted.weight);
            }
        }
        for weighted in &pod.preferred_anti_affinity {
            if weighted.term.matches(existing, namespaces) {
                add(&weighted.term, node, -weighted.weight);
            }
        }
        for term in &existing.required_affinity {
            if term.matches(pod, namespaces) {
                add(term, node, HARD_POD_AFFINITY_WEIGHT);
            }
        }
        for weighted in &existing.preferred_affinity {
            if weighted.term.matches(pod, namespaces) {
                add(&weighted.term, node, weighted.weight);
            }
        }
        for weighted in &existing.preferred_anti_affinity {
            if weighted.term.matches(pod, namespaces) {
                add(&weighted.term, node, -weighted.weight);
            }
        }
    };
    if pod.preferred_affinity.is_empty() && pod.preferred_anti_affinity.is_empty() {
        for (position, existing) in &snapshot.pods_with_affinity {
            score_existing(existing, &snapshot.nodes[*position]);
        }
    } else {
        for node in &snapshot.nodes {
            for existing in &node.pods {
                score_existing(existing, node);
            }
        }
    }
    if pairs.is_empty() {
        return vec![0; nodes.len()];
    }
    let raw: Vec<i64> = nodes
        .iter()
        .map(|node| {
            node.labels
                .iter()
                .filter_map(|(key, value)| pairs.get(&(key.clone(), value.clone())))
                .sum()
        })
        .collect();
    let (min, max) = (
        raw.iter().copied().min().unwrap_or(0),
        raw.iter().copied().max().unwrap_or(0),
    );
    raw.into_iter()
        .map(|score| {
            if max > min {
                MAX_NODE_SCORE * (score - min) / (max - min)
            } else {
                0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod, with_label, with_taint};
    use k8s_openapi::api::core::v1::{
        Affinity, NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm, PodAffinity,
        PodAffinityTerm, PreferredSchedulingTerm, TopologySpreadConstraint,
        WeightedPodAffinityTerm,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use std::sync::Arc;

    fn info(pod: crate::testing::PodBuilder) -> PodInfo {
        PodInfo::new(Arc::new(pod.build()))
    }

    fn snapshot(
        nodes: Vec<k8s_openapi::api::core::v1::Node>,
        bound: Vec<k8s_openapi::api::core::v1::Pod>,
    ) -> Snapshot {
        let pods = bound
            .into_iter()
            .map(|pod| Arc::new(PodInfo::new(Arc::new(pod))));
        Snapshot::new(nodes.into_iter().map(Arc::new), pods, HashMap::new())
    }

    fn all(snapshot: &Snapshot) -> Vec<&NodeInfo> {
        snapshot.nodes.iter().collect()
    }

    #[test]
    fn normalize_scales_by_the_maximum() {
        assert_eq!(normalize(vec![0, 5, 10], false), [0, 50, 100]);
        assert_eq!(normalize(vec![0, 5, 10], true), [100, 50, 0]);
        assert_eq!(normalize(vec![0, 0], true), [100, 100]);
        assert_eq!(normalize(vec![0, 0], false), [0, 0]);
    }

    #[test]
    fn least_allocated_prefers_free_nodes() {
        let cluster = snapshot(
            vec![node("a", "4", "8Gi"), node("b", "4", "8Gi")],
            vec![pod("busy", "2", "4Gi").on("a").build()],
        );
        let pod = info(pod("p", "1", "2Gi"));
        // a: cpu (4000-3000)*100/4000 = 25, memory 25 -> 25; b: 75.
        assert_eq!(least_allocated(&pod, &cluster.nodes[0]), 25);
        assert_eq!(least_allocated(&pod, &cluster.nodes[1]), 75);
        let request_less = info(pod_without_requests());
        assert_eq!(
            least_allocated(&request_less, &cluster.nodes[1]),
            (97 + 97) / 2,
            "counted as 100m/200Mi"
        );
    }

    fn pod_without_requests() -> crate::testing::PodBuilder {
        pod("p", "0", "0")
    }

    #[test]
    fn balanced_allocation_prefers_even_usage() {
        let cluster = snapshot(
            vec![node("a", "4", "8Gi"), node("b", "4", "8Gi")],
            vec![pod("cpu-heavy", "2", "0").on("a").build()],
        );
        let pod = info(pod("p", "1", "2Gi"));
        // a: cpu 3/4, memory 2/8 -> std 0.25 -> 75; b: 1/4 and 2/8 -> 100.
        assert_eq!(balanced_allocation(&pod, &cluster.nodes[0]), 75);
        assert_eq!(balanced_allocation(&pod, &cluster.nodes[1]), 100);
    }

    #[test]
    fn prefer_no_schedule_taints_lower_the_score() {
        let cluster = snapshot(
            vec![
                with_taint(
                    with_taint(node("a", "1", "1Gi"), "x", "1", "PreferNoSchedule"),
                    "y",
                    "1",
                    "PreferNoSchedule",
                ),
                with_taint(node("b", "1", "1Gi"), "x", "1", "PreferNoSchedule"),
                node("c", "1", "1Gi"),
            ],
            vec![],
        );
        assert_eq!(
            taint_toleration(&info(pod("p", "0", "0")), &all(&cluster)),
            [0, 50, 100]
        );
    }

    #[test]
    fn preferred_node_affinity_weights_are_summed_and_scaled() {
        let cluster = snapshot(
            vec![
                with_label(node("a", "1", "1Gi"), "disk", "ssd"),
                node("b", "1", "1Gi"),
            ],
            vec![],
        );
        let preferred = |weight| PreferredSchedulingTerm {
            weight,
            preference: NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: "disk".into(),
                    operator: "In".into(),
                    values: Some(vec!["ssd".into()]),
                }]),
                match_fields: None,
            },
        };
        let pod = info(pod("p", "0", "0").affinity(Affinity {
            node_affinity: Some(NodeAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    preferred(20),
                    preferred(30),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }));
        assert_eq!(node_affinity(&pod, &all(&cluster)), [100, 0]);
    }

    #[test]
    fn preferred_pod_affinity_is_min_max_scaled() {
        let cluster = snapshot(
            vec![
                with_label(node("a", "1", "1Gi"), "zone", "z1"),
                with_label(node("b", "1", "1Gi"), "zone", "z1"),
                with_label(node("c", "1", "1Gi"), "zone", "z2"),
            ],
            vec![pod("db", "0", "0").label("app", "db").on("a").build()],
        );
        let pod = info(pod("p", "0", "0").affinity(Affinity {
            pod_affinity: Some(PodAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 10,
                        pod_affinity_term: PodAffinityTerm {
                            label_selector: Some(LabelSelector {
                                match_labels: Some([("app".to_string(), "db".to_string())].into()),
                                ..Default::default()
                            }),
                            topology_key: "zone".into(),
                            ..Default::default()
                        },
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }));
        assert_eq!(
            inter_pod_affinity(&pod, &cluster, &all(&cluster)),
            [100, 100, 0]
        );
        let indifferent = info(pod_without_requests());
        assert_eq!(
            inter_pod_affinity(&indifferent, &cluster, &all(&cluster)),
            [0, 0, 0]
        );
    }

    #[test]
    fn schedule_anyway_spread_prefers_emptier_domains() {
        let cluster = snapshot(
            vec![
                node("a", "1", "1Gi"),
                node("b", "1", "1Gi"),
                node("c", "1", "1Gi"),
            ],
            vec![
                pod("w1", "0", "0").label("app", "web").on("a").build(),
                pod("w2", "0", "0").label("app", "web").on("a").build(),
                pod("w3", "0", "0").label("app", "web").on("b").build(),
            ],
        );
        let pod = info(pod("p", "0", "0").label("app", "web").with_spec(|spec| {
            spec.topology_spread_constraints = Some(vec![TopologySpreadConstraint {
                max_skew: 1,
                topology_key: HOSTNAME.into(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                label_selector: Some(LabelSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }]);
        }));
        // weight ln(5) ~ 1.609: raw a=round(3.22)=3, b=round(1.61)=2, c=0; max 3, min 0.
        assert_eq!(
            topology_spread(&pod, &cluster, &all(&cluster)),
            [0, 33, 100]
        );
    }

    #[test]
    fn totals_combine_the_weighted_plugins() {
        let cluster = snapshot(
            vec![node("a", "4", "8Gi"), node("b", "4", "8Gi")],
            vec![pod("busy", "2", "4Gi").on("a").build()],
        );
        let pod = info(pod("p", "1", "2Gi"));
        let totals = total(&pod, &cluster, &[0, 1]);
        assert!(totals[1] > totals[0], "{totals:?}");
        // b: taints 3*100 + resources 75 + balanced 100 (no affinity, no spread).
        assert_eq!(totals[1], 300 + 75 + 100);
    }
}
