//! The scheduler's view of the cluster at one moment: nodes, the pods bound to
//! each and what they request, plus each pod's scheduling-relevant facts parsed
//! once. The scheduling logic reads only this, so it is pure and testable.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::filters::volume_binding::Volumes;
use crate::labels::{self, Labels};
use crate::resources::{PodRequests, Resources};

/// The taint key the node lifecycle controller puts on nodes whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint key the node lifecycle controller puts on nodes whose Ready condition is Unknown.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// A host port a pod's container binds (`hostIP`, `protocol`, `hostPort`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The host address, `0.0.0.0` when unspecified (all addresses).
    pub ip: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port number.
    pub port: i32,
}

impl HostPort {
    /// Whether two bindings cannot coexist on one host (`HostPortInfo.CheckConflict`).
    pub fn conflicts_with(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// A pod (anti-)affinity term with its selector and namespaces resolved.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    /// Pods it selects; `None` selects nothing.
    pub selector: Option<LabelSelector>,
    /// Namespaces listed by name.
    pub namespaces: HashSet<String>,
    /// Namespaces selected by label; `Some(empty)` selects all.
    pub namespace_selector: Option<LabelSelector>,
    /// The node label that defines "the same place".
    pub topology_key: String,
}

impl AffinityTerm {
    fn new(term: &PodAffinityTerm, owner_namespace: &str, owner_labels: &Labels) -> AffinityTerm {
        let mut namespaces: HashSet<String> = term.namespaces.iter().flatten().cloned().collect();
        if namespaces.is_empty() && term.namespace_selector.is_none() {
            namespaces.insert(owner_namespace.to_string());
        }
        let mut selector = term.label_selector.clone();
        if let Some(selector) = selector.as_mut() {
            let with_owner_value = |operator: &str, keys: &Option<Vec<String>>| {
                keys.iter()
                    .flatten()
                    .filter_map(|key| {
                        owner_labels.get(key).map(|value| LabelSelectorRequirement {
                            key: key.clone(),
                            operator: operator.to_string(),
                            values: Some(vec![value.clone()]),
                        })
                    })
                    .collect::<Vec<_>>()
            };
            let mut extra = with_owner_value("In", &term.match_label_keys);
            extra.extend(with_owner_value("NotIn", &term.mismatch_label_keys));
            if !extra.is_empty() {
                selector
                    .match_expressions
                    .get_or_insert_with(Vec::new)
                    .extend(extra);
            }
        }
        AffinityTerm {
            selector,
            namespaces,
            namespace_selector: term.namespace_selector.clone(),
            topology_key: term.topology_key.clone(),
        }
    }

    /// Whether this term selects `pod` (`AffinityTerm.Matches`).
    pub fn matches(&self, pod: &PodInfo, namespace_labels: &HashMap<String, Labels>) -> bool {
        let in_namespace = self.namespaces.contains(&pod.namespace)
            || self.namespace_selector.as_ref().is_some_and(|selector| {
                let empty = Labels::new();
                let labels = namespace_labels.get(&pod.namespace).unwrap_or(&empty);
                labels::selector_matches(selector, labels)
            });
        in_namespace
            && self
                .selector
                .as_ref()
                .is_some_and(|selector| labels::selector_matches(selector, &pod.labels))
    }
}

/// A weighted preferred (anti-)affinity term.
#[derive(Debug, Clone)]
pub struct WeightedAffinityTerm {
    /// The term.
    pub term: AffinityTerm,
    /// Its weight, 1..100.
    pub weight: i64,
}

/// One pod with everything the plugins ask of it computed once.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// The object.
    pub pod: Arc<Pod>,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: Labels,
    /// What it requests.
    pub requests: PodRequests,
    /// Host ports its containers bind.
    pub host_ports: Vec<HostPort>,
    /// `spec.tolerations`.
    pub tolerations: Vec<Toleration>,
    /// Whether it is being deleted (topology spread ignores such pods).
    pub terminating: bool,
    /// `spec.priority`.
    pub priority: i32,
    /// Required pod affinity terms.
    pub required_affinity: Vec<AffinityTerm>,
    /// Required pod anti-affinity terms.
    pub required_anti_affinity: Vec<AffinityTerm>,
    /// Preferred pod affinity terms.
    pub preferred_affinity: Vec<WeightedAffinityTerm>,
    /// Preferred pod anti-affinity terms.
    pub preferred_anti_affinity: Vec<WeightedAffinityTerm>,
}

impl PodInfo {
    /// Parses what scheduling needs from `pod`.
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let affinity = spec.and_then(|spec| spec.affinity.as_ref());
        let pod_affinity = affinity.and_then(|affinity| affinity.pod_affinity.as_ref());
        let pod_anti_affinity = affinity.and_then(|affinity| affinity.pod_anti_affinity.as_ref());
        let required = |terms: Option<&Vec<PodAffinityTerm>>| {
            terms
                .into_iter()
                .flatten()
                .map(|term| AffinityTerm::new(term, &namespace, &labels))
                .collect::<Vec<_>>()
        };
        let preferred =
            |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
                terms
                    .into_iter()
                    .flatten()
                    .map(|weighted| WeightedAffinityTerm {
                        term: AffinityTerm::new(&weighted.pod_affinity_term, &namespace, &labels),
                        weight: weighted.weight.into(),
                    })
                    .collect::<Vec<_>>()
            };
        PodInfo {
            name: pod.metadata.name.clone().unwrap_or_default(),
            requests: PodRequests::of(&pod),
            host_ports: host_ports(&pod),
            tolerations: spec
                .and_then(|spec| spec.tolerations.clone())
                .unwrap_or_default(),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            priority: spec.and_then(|spec| spec.priority).unwrap_or(0),
            required_affinity: required(pod_affinity.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti_affinity: required(pod_anti_affinity.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: preferred(pod_affinity.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: preferred(pod_anti_affinity.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            pod,
            namespace,
            labels,
        }
    }

    /// Whether the pod has any pod (anti-)affinity term, required or preferred.
    pub fn has_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }

    /// `namespace/name`, how Events and logs name a pod.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|init| init.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|container| container.ports.iter().flatten())
        .filter_map(|port| {
            let host_port = port.host_port.filter(|host_port| *host_port > 0)?;
            Some(HostPort {
                ip: port
                    .host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                protocol: port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port: host_port,
            })
        })
        .collect()
}

/// One node with the pods bound to it and their sums.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The object.
    pub node: Arc<Node>,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: Labels,
    /// `spec.taints`, plus the not-ready/unreachable taint a node whose Ready
    /// condition is not True would carry in a cluster with a node lifecycle controller.
    pub taints: Vec<Taint>,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// `status.allocatable`.
    pub allocatable: Resources,
    /// Sum of the requests of the pods bound here; `pods` counts them.
    pub requested: Resources,
    /// Sum of the pods' non-zero CPU requests (for scores).
    pub non_zero_milli_cpu: i64,
    /// Sum of the pods' non-zero memory requests (for scores).
    pub non_zero_memory: i64,
    /// The pods bound here.
    pub pods: Vec<Arc<PodInfo>>,
    /// Host ports in use.
    pub used_ports: Vec<HostPort>,
}

impl NodeInfo {
    /// A node with no pods yet.
    pub fn new(node: Arc<Node>) -> NodeInfo {
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: effective_taints(&node),
            unschedulable: node
                .spec
                .as_ref()
                .and_then(|spec| spec.unschedulable)
                .unwrap_or(false),
            allocatable: Resources::allocatable(&node),
            requested: Resources::default(),
            non_zero_milli_cpu: 0,
            non_zero_memory: 0,
            pods: Vec::new(),
            used_ports: Vec::new(),
            node,
        }
    }

    /// Accounts `pod` as bound to this node.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests.requests);
        self.requested.pods += 1;
        self.non_zero_milli_cpu += pod.requests.non_zero_milli_cpu;
        self.non_zero_memory += pod.requests.non_zero_memory;
        self.used_ports.extend(pod.host_ports.iter().cloned());
        self.pods.push(pod);
    }
}

fn effective_taints(node: &Node) -> Vec<Taint> {
    let mut taints = node
        .spec
        .as_ref()
        .and_then(|spec| spec.taints.clone())
        .unwrap_or_default();
    let ready = node
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .and_then(|conditions| {
            conditions
                .iter()
                .find(|condition| condition.type_ == "Ready")
        })
        .map(|condition| condition.status.as_str());
    let implied = match ready {
        Some("True") => None,
        Some("False") => Some(TAINT_NOT_READY),
        _ => Some(TAINT_UNREACHABLE),
    };
    if let Some(key) = implied
        && !taints
            .iter()
            .any(|taint| taint.key == key && taint.effect == "NoSchedule")
    {
        taints.push(Taint {
            key: key.to_string(),
            effect: "NoSchedule".into(),
            value: None,
            time_added: None,
        });
    }
    taints
}

/// Whether a pod occupies resources on its node: bound and not finished.
pub fn occupies_node(pod: &Pod) -> bool {
    let bound = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.node_name.as_deref())
        .is_some_and(|name| !name.is_empty());
    let phase = pod
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref());
    bound && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The nodes, sorted by name, and the pods bound to them.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Nodes in name order (the tie-break order).
    pub nodes: Vec<NodeInfo>,
    /// Node name -> position in `nodes`.
    index: HashMap<String, usize>,
    /// Namespace name -> labels, for namespace selectors of affinity terms.
    pub namespace_labels: HashMap<String, Labels>,
    /// (node position, pod) of every bound pod with a required anti-affinity term,
    /// which every scheduling decision must respect.
    pub pods_with_required_anti_affinity: Vec<(usize, Arc<PodInfo>)>,
    /// (node position, pod) of every bound pod with any affinity term (for scores).
    pub pods_with_affinity: Vec<(usize, Arc<PodInfo>)>,
    /// Claims, volumes and storage classes, for pods' PersistentVolumeClaims.
    pub volumes: Arc<Volumes>,
}

impl Snapshot {
    /// Builds a snapshot; pods bound to nodes not in `nodes` are left out.
    pub fn new(
        nodes: impl IntoIterator<Item = Arc<Node>>,
        pods: impl IntoIterator<Item = Arc<PodInfo>>,
        namespace_labels: HashMap<String, Labels>,
    ) -> Snapshot {
        let mut nodes: Vec<NodeInfo> = nodes.into_iter().map(NodeInfo::new).collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (node.name.clone(), i))
            .collect();
        let mut snapshot = Snapshot {
            nodes,
            index,
            namespace_labels,
            ..Default::default()
        };
        for pod in pods {
            let node = pod
                .pod
                .spec
                .as_ref()
                .and_then(|spec| spec.node_name.clone());
            if let Some(node) = node {
                snapshot.add_pod(pod, &node);
            }
        }
        snapshot
    }

    /// Accounts `pod` on `node` (a bound pod, or one the scheduler just assumed there);
    /// returns false if there is no such node.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>, node: &str) -> bool {
        let Some(&position) = self.index.get(node) else {
            return false;
        };
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity
                .push((position, pod.clone()));
        }
        if pod.has_affinity() {
            self.pods_with_affinity.push((position, pod.clone()));
        }
        self.nodes[position].add_pod(pod);
        true
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&position| &self.nodes[position])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod};

    #[test]
    fn nodes_are_sorted_and_pods_accounted() {
        let nodes = [node("b", "2", "4Gi"), node("a", "2", "4Gi")];
        let bound = pod("p", "500m", "1Gi").on("b").build();
        let snapshot = Snapshot::new(
            nodes.map(Arc::new),
            [Arc::new(PodInfo::new(Arc::new(bound)))],
            HashMap::new(),
        );
        assert_eq!(snapshot.nodes[0].name, "a");
        let b = snapshot.node("b").expect("node b");
        assert_eq!(b.requested.milli_cpu, 500);
        assert_eq!(b.requested.pods, 1);
        assert_eq!(b.non_zero_memory, 1 << 30);
    }

    #[test]
    fn a_node_that_is_not_ready_carries_the_not_ready_taint() {
        let mut not_ready = node("n", "1", "1Gi");
        if let Some(condition) = not_ready
            .status
            .as_mut()
            .and_then(|status| status.conditions.as_mut())
            .and_then(|conditions| conditions.first_mut())
        {
            condition.status = "False".into();
        }
        let info = NodeInfo::new(Arc::new(not_ready));
        assert_eq!(info.taints.len(), 1);
        assert_eq!(info.taints[0].key, TAINT_NOT_READY);
        let mut unknown = node("n", "1", "1Gi");
        if let Some(status) = unknown.status.as_mut() {
            status.conditions = None;
        }
        assert_eq!(
            NodeInfo::new(Arc::new(unknown)).taints[0].key,
            TAINT_UNREACHABLE
        );
        assert!(
            NodeInfo::new(Arc::new(node("n", "1", "1Gi")))
                .taints
                .is_empty()
        );
    }

    #[test]
    fn finished_pods_do_not_occupy_their_node() {
        let mut finished = pod("p", "1", "1Gi").on("n").build();
        assert!(occupies_node(&finished));
        finished.status.get_or_insert_default().phase = Some("Succeeded".into());
        assert!(!occupies_node(&finished));
        assert!(!occupies_node(&pod("q", "1", "1Gi").build()));
    }

    #[test]
    fn host_ports_conflict_on_overlapping_addresses() {
        let any = HostPort {
            ip: "0.0.0.0".into(),
            protocol: "TCP".into(),
            port: 80,
        };
        let one = HostPort {
            ip: "10.0.0.1".into(),
            ..any.clone()
        };
        let other = HostPort {
            ip: "10.0.0.2".into(),
            ..any.clone()
        };
        let udp = HostPort {
            protocol: "UDP".into(),
            ..any.clone()
        };
        assert!(any.conflicts_with(&one));
        assert!(!one.conflicts_with(&other));
        assert!(!any.conflicts_with(&udp));
    }

    #[test]
    fn match_label_keys_narrow_an_affinity_selector_to_the_owners_value() {
        let term = PodAffinityTerm {
            label_selector: Some(LabelSelector::default()),
            match_label_keys: Some(vec!["version".into()]),
            topology_key: "kubernetes.io/hostname".into(),
            ..Default::default()
        };
        let owner: Labels = [("version".to_string(), "v1".to_string())].into();
        let term = AffinityTerm::new(&term, "default", &owner);
        let v1 = PodInfo::new(Arc::new(pod("a", "0", "0").label("version", "v1").build()));
        let v2 = PodInfo::new(Arc::new(pod("b", "0", "0").label("version", "v2").build()));
        assert!(term.matches(&v1, &HashMap::new()));
        assert!(!term.matches(&v2, &HashMap::new()));
    }
}
