//! VolumeBinding (upstream's plugin, simplified): a pod's PersistentVolumeClaims
//! decide where it may run.
//!
//! - A claim bound to a volume with `nodeAffinity` (a local or provisioned
//!   hostPath volume) restricts the pod to the nodes that volume is on.
//! - An unbound claim of an `Immediate` class (or of no class) waits for the PV
//!   binder: the pod is unschedulable until the claim is bound.
//! - An unbound claim of a `WaitForFirstConsumer` class is provisioned where the
//!   pod goes: the scheduler annotates it with the chosen node
//!   ([`SELECTED_NODE`]) before binding the pod, and the provisioner creates the
//!   volume there. A claim already annotated keeps the pod on that node, so a
//!   volume being provisioned never ends up on another node than its pod.
//!
//! Upstream also matches static volumes for delayed-binding claims in the
//! scheduler and checks storage capacity; here the PV binder binds static
//! volumes, and capacity is not tracked.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    NodeSelector, PersistentVolume, PersistentVolumeClaim, TopologySelectorTerm,
};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::framework::Rejection;
use crate::labels::{self, Labels};
use crate::snapshot::{NodeInfo, PodInfo};

/// The claim annotation naming the node chosen for its first consumer, which
/// tells the provisioner where to create the volume.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Upstream's `ErrReasonNodeConflict`.
pub const REASON_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// Upstream's `ErrReasonBindConflict`.
pub const REASON_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
/// Upstream's `ErrReasonPVNotExist`.
pub const REASON_PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";
/// A node other than the one an unbound claim's provisioning was started for.
pub const REASON_SELECTED_NODE: &str =
    "node(s) didn't match the node selected for an unbound PersistentVolumeClaim";
/// Upstream's PreFilter message for claims the PV binder has not bound yet.
pub const UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";

/// `(namespace, name)` of a claim.
pub type ClaimKey = (String, String);

/// The storage objects scheduling reads: claims, volumes and classes by name.
#[derive(Debug, Clone, Default)]
pub struct Volumes {
    claims: HashMap<ClaimKey, Arc<PersistentVolumeClaim>>,
    volumes: HashMap<String, Arc<PersistentVolume>>,
    classes: HashMap<String, Arc<StorageClass>>,
    /// Claims annotated with a selected node that the watch has not shown yet.
    assumed_selected: HashMap<ClaimKey, String>,
}

impl Volumes {
    /// Indexes the given objects.
    pub fn new(
        claims: impl IntoIterator<Item = Arc<PersistentVolumeClaim>>,
        volumes: impl IntoIterator<Item = Arc<PersistentVolume>>,
        classes: impl IntoIterator<Item = Arc<StorageClass>>,
    ) -> Volumes {
        Volumes {
            claims: claims
                .into_iter()
                .map(|claim| (claim_key(&claim), claim))
                .collect(),
            volumes: volumes
                .into_iter()
                .filter_map(|volume| Some((volume.metadata.name.clone()?, volume)))
                .collect(),
            classes: classes
                .into_iter()
                .filter_map(|class| Some((class.metadata.name.clone()?, class)))
                .collect(),
            assumed_selected: HashMap::new(),
        }
    }

    /// Treats the claim as annotated with `node` (the scheduler just wrote it).
    /// Returns false once the cached claim shows the annotation or is bound, or
    /// is gone, so the caller can forget the assumption.
    pub fn assume_selected_node(&mut self, key: &ClaimKey, node: &str) -> bool {
        let Some(claim) = self.claims.get(key) else {
            return false;
        };
        if volume_name(claim).is_some() || annotated_node(claim) == Some(node) {
            return false;
        }
        self.assumed_selected.insert(key.clone(), node.to_owned());
        true
    }

    /// The node an unbound claim is to be provisioned on, if one was chosen.
    fn selected_node(&self, key: &ClaimKey, claim: &PersistentVolumeClaim) -> Option<String> {
        self.assumed_selected
            .get(key)
            .map(String::as_str)
            .or_else(|| annotated_node(claim))
            .map(str::to_owned)
    }
}

fn claim_key(claim: &PersistentVolumeClaim) -> ClaimKey {
    (
        claim.metadata.namespace.clone().unwrap_or_default(),
        claim.metadata.name.clone().unwrap_or_default(),
    )
}

fn annotated_node(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim
        .metadata
        .annotations
        .as_ref()?
        .get(SELECTED_NODE)
        .map(String::as_str)
        .filter(|node| !node.is_empty())
}

fn volume_name(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim
        .spec
        .as_ref()?
        .volume_name
        .as_deref()
        .filter(|name| !name.is_empty())
}

/// The claim's class: `storageClassName`, or the beta annotation before it.
fn class_name(claim: &PersistentVolumeClaim) -> Option<&str> {
    let annotated = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get("volume.beta.kubernetes.io/storage-class"));
    annotated
        .or(claim.spec.as_ref()?.storage_class_name.as_ref())
        .map(String::as_str)
        .filter(|name| !name.is_empty())
}

/// The names of the claims the pod's volumes use.
fn claim_names(pod: &PodInfo) -> impl Iterator<Item = &str> {
    pod.pod
        .spec
        .as_ref()
        .and_then(|spec| spec.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|volume| volume.persistent_volume_claim.as_ref())
        .map(|source| source.claim_name.as_str())
}

/// An unbound claim that waits for its first consumer.
#[derive(Debug)]
struct DelayedClaim {
    /// Where its provisioning was already started, if anywhere.
    selected_node: Option<String>,
    /// The class's `allowedTopologies`; empty allows every node.
    allowed_topologies: Vec<TopologySelectorTerm>,
}

/// What the pod's claims require of a node, computed once per pod (PreFilter).
#[derive(Debug, Default)]
pub struct State {
    /// The required node affinity of each volume bound to one of the claims.
    bound_affinities: Vec<NodeSelector>,
    /// A claim is bound to a volume that does not exist.
    missing_volume: bool,
    /// Unbound claims to be provisioned where the pod goes.
    delayed: Vec<DelayedClaim>,
}

impl State {
    /// Reads the pod's claims; rejects the pod outright (upstream's PreFilter)
    /// when a claim is missing, being deleted, or unbound with immediate binding.
    pub fn compute(pod: &PodInfo, volumes: &Volumes) -> Result<State, Rejection> {
        let mut state = State::default();
        let mut unbound_immediate = false;
        for name in claim_names(pod) {
            let key = (pod.namespace.clone(), name.to_owned());
            let Some(claim) = volumes.claims.get(&key) else {
                return Err(Rejection::unresolvable(format!(
                    "persistentvolumeclaim \"{name}\" not found"
                )));
            };
            if claim.metadata.deletion_timestamp.is_some() {
                return Err(Rejection::unresolvable(format!(
                    "persistentvolumeclaim \"{name}\" is being deleted"
                )));
            }
            if let Some(volume) = volume_name(claim) {
                match volumes.volumes.get(volume) {
                    Some(volume) => state.bound_affinities.extend(required_affinity(volume)),
                    None => state.missing_volume = true,
                }
                continue;
            }
            let class = class_name(claim).map(|class_name| {
                volumes.classes.get(class_name).ok_or_else(|| {
                    Rejection::unresolvable(format!(
                        "storageclass.storage.k8s.io \"{class_name}\" not found"
                    ))
                })
            });
            match class.transpose()? {
                Some(class) if waits_for_first_consumer(class) => {
                    state.delayed.push(DelayedClaim {
                        selected_node: volumes.selected_node(&key, claim),
                        allowed_topologies: class.allowed_topologies.clone().unwrap_or_default(),
                    });
                }
                _ => unbound_immediate = true,
            }
        }
        if unbound_immediate {
            return Err(Rejection::unresolvable(UNBOUND_IMMEDIATE));
        }
        Ok(state)
    }

    /// Rejects a node the pod's volumes cannot be used or provisioned on.
    pub fn filter(&self, node: &NodeInfo) -> Result<(), Rejection> {
        if self.missing_volume {
            return Err(Rejection::unresolvable(REASON_PV_NOT_EXIST));
        }
        let reachable = self
            .bound_affinities
            .iter()
            .all(|affinity| labels::node_selector_matches(affinity, &node.labels, &node.name));
        if !reachable {
            return Err(Rejection::unresolvable(REASON_NODE_CONFLICT));
        }
        for claim in &self.delayed {
            if claim
                .selected_node
                .as_deref()
                .is_some_and(|selected| selected != node.name)
            {
                return Err(Rejection::unresolvable(REASON_SELECTED_NODE));
            }
            if !topology_terms_match(&claim.allowed_topologies, &node.labels) {
                return Err(Rejection::unresolvable(REASON_BIND_CONFLICT));
            }
        }
        Ok(())
    }
}

/// The pod's unbound delayed-binding claims that are not yet annotated with
/// `node`: the scheduler annotates them before binding the pod there.
pub fn claims_to_select(pod: &PodInfo, volumes: &Volumes, node: &str) -> Vec<ClaimKey> {
    claim_names(pod)
        .map(|name| (pod.namespace.clone(), name.to_owned()))
        .filter(|key| {
            volumes.claims.get(key).is_some_and(|claim| {
                let delayed = class_name(claim)
                    .and_then(|name| volumes.classes.get(name))
                    .is_some_and(|class| waits_for_first_consumer(class));
                delayed && volume_name(claim).is_none() && annotated_node(claim) != Some(node)
            })
        })
        .collect()
}

fn waits_for_first_consumer(class: &StorageClass) -> bool {
    class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
}

fn required_affinity(volume: &PersistentVolume) -> Option<NodeSelector> {
    volume
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .clone()
}

/// Upstream's `MatchTopologySelectorTerms`: no terms match every node; an empty
/// term matches none; otherwise some term's every requirement holds.
fn topology_terms_match(terms: &[TopologySelectorTerm], node_labels: &Labels) -> bool {
    terms.is_empty()
        || terms.iter().any(|term| {
            let requirements = term.match_label_expressions.as_deref().unwrap_or_default();
            !requirements.is_empty()
                && requirements.iter().all(|requirement| {
                    node_labels
                        .get(&requirement.key)
                        .is_some_and(|value| requirement.values.contains(value))
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod};
    use k8s_openapi::api::core::v1::TopologySelectorLabelRequirement;
    use k8s_openapi::api::core::v1::{
        NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaimSpec,
        PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, Volume, VolumeNodeAffinity,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn claim(name: &str, class: Option<&str>, volume: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: class.map(Into::into),
                volume_name: volume.map(Into::into),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn class(name: &str, mode: &str) -> StorageClass {
        StorageClass {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            provisioner: "gantry.dev/local-path".into(),
            volume_binding_mode: Some(mode.into()),
            ..Default::default()
        }
    }

    fn local_volume(name: &str, on_node: &str) -> PersistentVolume {
        let term = NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: "kubernetes.io/hostname".into(),
                operator: "In".into(),
                values: Some(vec![on_node.into()]),
            }]),
            match_fields: None,
        };
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                node_affinity: Some(VolumeNodeAffinity {
                    required: Some(NodeSelector {
                        node_selector_terms: vec![term],
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn using(claims: &[&str]) -> PodInfo {
        let volumes = claims
            .iter()
            .map(|name| Volume {
                name: format!("v-{name}"),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: (*name).into(),
                    read_only: None,
                }),
                ..Default::default()
            })
            .collect();
        PodInfo::new(Arc::new(
            pod("p", "0", "0")
                .with_spec(|spec| spec.volumes = Some(volumes))
                .build(),
        ))
    }

    fn volumes(
        claims: Vec<PersistentVolumeClaim>,
        pvs: Vec<PersistentVolume>,
        classes: Vec<StorageClass>,
    ) -> Volumes {
        Volumes::new(
            claims.into_iter().map(Arc::new),
            pvs.into_iter().map(Arc::new),
            classes.into_iter().map(Arc::new),
        )
    }

    fn on(name: &str) -> NodeInfo {
        NodeInfo::new(Arc::new(node(name, "1", "1Gi")))
    }

    fn reasons(result: Result<State, Rejection>) -> Vec<String> {
        result.expect_err("rejected").reasons
    }

    #[test]
    fn pods_without_claims_fit_everywhere() {
        let state = State::compute(&using(&[]), &Volumes::default()).expect("no claims");
        assert!(state.filter(&on("a")).is_ok());
    }

    #[test]
    fn missing_deleted_and_unbound_immediate_claims_reject_the_pod() {
        let mut deleting = claim("going", Some("fast"), Some("pv"));
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let index = volumes(
            vec![
                deleting,
                claim("classless", None, None),
                claim("immediate", Some("fast"), None),
                claim("orphan", Some("nope"), None),
            ],
            vec![],
            vec![class("fast", "Immediate")],
        );
        assert_eq!(
            reasons(State::compute(&using(&["absent"]), &index)),
            ["persistentvolumeclaim \"absent\" not found"]
        );
        assert_eq!(
            reasons(State::compute(&using(&["going"]), &index)),
            ["persistentvolumeclaim \"going\" is being deleted"]
        );
        assert_eq!(
            reasons(State::compute(&using(&["classless"]), &index)),
            [UNBOUND_IMMEDIATE]
        );
        assert_eq!(
            reasons(State::compute(&using(&["immediate"]), &index)),
            [UNBOUND_IMMEDIATE]
        );
        assert_eq!(
            reasons(State::compute(&using(&["orphan"]), &index)),
            ["storageclass.storage.k8s.io \"nope\" not found"]
        );
    }

    #[test]
    fn bound_local_volumes_pin_the_pod_to_their_node() {
        let index = volumes(
            vec![
                claim("data", Some("local-path"), Some("pv-a")),
                claim("lost", Some("local-path"), Some("gone")),
            ],
            vec![local_volume("pv-a", "a")],
            vec![],
        );
        let state = State::compute(&using(&["data"]), &index).expect("bound");
        assert!(state.filter(&on("a")).is_ok());
        assert_eq!(
            state.filter(&on("b")).expect_err("elsewhere").reasons,
            [REASON_NODE_CONFLICT]
        );
        let state = State::compute(&using(&["lost"]), &index).expect("bound");
        assert_eq!(
            state.filter(&on("a")).expect_err("no pv").reasons,
            [REASON_PV_NOT_EXIST]
        );
    }

    #[test]
    fn delayed_claims_fit_anywhere_until_a_node_is_selected() {
        let mut selected = claim("picked", Some("local-path"), None);
        selected.metadata.annotations = Some([(SELECTED_NODE.to_owned(), "b".to_owned())].into());
        let mut index = volumes(
            vec![claim("fresh", Some("local-path"), None), selected],
            vec![],
            vec![class("local-path", "WaitForFirstConsumer")],
        );
        let pod = using(&["fresh"]);
        let state = State::compute(&pod, &index).expect("delayed binding");
        assert!(state.filter(&on("a")).is_ok() && state.filter(&on("b")).is_ok());
        assert_eq!(
            claims_to_select(&pod, &index, "a"),
            [("default".to_owned(), "fresh".to_owned())]
        );

        let state = State::compute(&using(&["picked"]), &index).expect("delayed binding");
        assert!(state.filter(&on("b")).is_ok());
        assert_eq!(
            state.filter(&on("a")).expect_err("not selected").reasons,
            [REASON_SELECTED_NODE]
        );
        assert!(claims_to_select(&using(&["picked"]), &index, "b").is_empty());

        let fresh = ("default".to_owned(), "fresh".to_owned());
        assert!(index.assume_selected_node(&fresh, "a"));
        let state = State::compute(&pod, &index).expect("delayed binding");
        assert!(state.filter(&on("b")).is_err(), "the assumed node holds");
    }

    #[test]
    fn allowed_topologies_limit_where_a_class_provisions() {
        let mut zoned = class("zoned", "WaitForFirstConsumer");
        zoned.allowed_topologies = Some(vec![TopologySelectorTerm {
            match_label_expressions: Some(vec![TopologySelectorLabelRequirement {
                key: "kubernetes.io/hostname".into(),
                values: vec!["a".into()],
            }]),
        }]);
        let index = volumes(
            vec![claim("data", Some("zoned"), None)],
            vec![],
            vec![zoned],
        );
        let state = State::compute(&using(&["data"]), &index).expect("delayed binding");
        assert!(state.filter(&on("a")).is_ok());
        assert_eq!(
            state.filter(&on("b")).expect_err("outside").reasons,
            [REASON_BIND_CONFLICT]
        );
    }
}
