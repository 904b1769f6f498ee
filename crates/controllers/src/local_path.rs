//! The local-path provisioner (k3s ships rancher's; this is Gantry's): a claim
//! of a StorageClass whose provisioner is [`PROVISIONER`] gets a hostPath
//! PersistentVolume on one node, `<storage dir>/<pv>_<namespace>_<claim>`.
//!
//! The node is the one the scheduler chose for the claim's first pod (the
//! `volume.kubernetes.io/selected-node` annotation, `WaitForFirstConsumer`), or
//! for an `Immediate` class a Ready node picked here. The volume is created
//! pre-bound to its claim (`claimRef` with the claim's uid), with node affinity
//! to that node, so the PV binder binds the pair and the scheduler keeps the
//! claim's pods on the node. Nothing is written on the node here: the agent
//! creates the directory when it first mounts the volume (`DirectoryOrCreate`)
//! and removes it when a `Delete` volume is released.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_client::{EventRecorder, EventType, object_reference};
use gantry_scheduler::filters::volume_binding::SELECTED_NODE;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
    VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::informer;

/// The provisioner name StorageClasses use to ask for local-path volumes.
pub const PROVISIONER: &str = "gantry.dev/local-path";
/// The volume annotation naming who provisioned it (upstream's).
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The claim annotation naming the provisioner expected to serve it (upstream's).
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// Its beta spelling, which older tools read.
const STORAGE_PROVISIONER_BETA: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// Where volumes live on each node unless configured otherwise.
pub const DEFAULT_STORAGE_DIR: &str = "/var/lib/gantry/storage";
/// The node label the volumes' node affinity selects on, as rancher's provisioner does.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// How often every claim is looked at again without a change.
const RESYNC: Duration = Duration::from_secs(30);
/// The component name on the provisioner's Events.
const COMPONENT: &str = "gantry.dev/local-path";

/// A claim the provisioner looks at, `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ClaimKey {
    namespace: String,
    name: String,
}

impl ClaimKey {
    fn of(claim: &PersistentVolumeClaim) -> ClaimKey {
        ClaimKey {
            namespace: claim.namespace().unwrap_or_default(),
            name: claim.name_any(),
        }
    }
}

impl std::fmt::Display for ClaimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "persistentvolumeclaim {}/{}", self.namespace, self.name)
    }
}

/// Where the provisioner puts volumes.
#[derive(Debug, Clone)]
pub struct LocalPathConfig {
    /// The directory on every node that holds the volumes; agents must agree.
    pub storage_dir: PathBuf,
}

impl Default for LocalPathConfig {
    fn default() -> Self {
        LocalPathConfig {
            storage_dir: PathBuf::from(DEFAULT_STORAGE_DIR),
        }
    }
}

/// Why a claim cannot get a local-path volume (reported as `ProvisioningFailed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// local-path volumes are directories.
    #[error("local-path volumes support only volumeMode Filesystem, not {0}")]
    VolumeMode(String),
    /// Static volumes are chosen by selector; a new one has no labels to match.
    #[error("claim Selector is not supported")]
    Selector,
    /// The claim does not say how much storage it wants.
    #[error("claim has no storage request")]
    NoStorageRequest,
}

/// The directory a volume gets on its node: `<storage dir>/<pv>_<namespace>_<claim>`.
pub fn volume_path(storage_dir: &Path, volume: &str, namespace: &str, claim: &str) -> PathBuf {
    storage_dir.join(format!("{volume}_{namespace}_{claim}"))
}

/// The name of the volume provisioned for `claim`: `pvc-<claim uid>`, as upstream names them.
pub fn volume_name(claim: &PersistentVolumeClaim) -> Option<String> {
    claim.metadata.uid.as_ref().map(|uid| format!("pvc-{uid}"))
}

/// The volume for `claim` of `class` on the node whose hostname label is
/// `hostname`, pre-bound to the claim.
pub fn volume_for(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    hostname: &str,
    storage_dir: &Path,
) -> Result<PersistentVolume, ProvisionError> {
    let spec = claim.spec.clone().unwrap_or_default();
    let mode = spec
        .volume_mode
        .clone()
        .unwrap_or_else(|| "Filesystem".into());
    if mode != "Filesystem" {
        return Err(ProvisionError::VolumeMode(mode));
    }
    if spec.selector.is_some() {
        return Err(ProvisionError::Selector);
    }
    let request = spec
        .resources
        .as_ref()
        .and_then(|resources| resources.requests.as_ref())
        .and_then(|requests| requests.get("storage"))
        .cloned()
        .ok_or(ProvisionError::NoStorageRequest)?;
    let name = volume_name(claim).unwrap_or_default();
    let namespace = claim.namespace().unwrap_or_default();
    let path = volume_path(storage_dir, &name, &namespace, &claim.name_any());
    let on_node = NodeSelectorTerm {
        match_expressions: Some(vec![NodeSelectorRequirement {
            key: HOSTNAME_LABEL.into(),
            operator: "In".into(),
            values: Some(vec![hostname.to_owned()]),
        }]),
        match_fields: None,
    };
    Ok(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.to_owned(),
                PROVISIONER.to_owned(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_owned(), request)])),
            access_modes: spec.access_modes.clone(),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: class.metadata.name.clone(),
            mount_options: class.mount_options.clone(),
            volume_mode: Some(mode),
            host_path: Some(HostPathVolumeSource {
                path: path.to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![on_node],
                }),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(namespace),
                name: Some(claim.name_any()),
                uid: claim.metadata.uid.clone(),
                resource_version: claim.metadata.resource_version.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    })
}

/// Where the claim's volume should go, if that is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The scheduler selected this node for the claim's first pod.
    Selected(String),
    /// An `Immediate` class: the provisioner picks the node.
    Anywhere,
    /// `WaitForFirstConsumer` and no pod scheduled yet.
    Wait,
}

/// Whether this provisioner should create a volume for `claim` of `class`, and where.
/// `None` when the claim is not (or no longer) ours to provision.
pub fn placement(claim: &PersistentVolumeClaim, class: &StorageClass) -> Option<Placement> {
    let unbound = claim
        .spec
        .as_ref()
        .and_then(|spec| spec.volume_name.as_deref())
        .is_none_or(str::is_empty);
    let ours = class.provisioner == PROVISIONER;
    if !unbound || !ours || claim.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let selected = claim
        .annotations()
        .get(SELECTED_NODE)
        .filter(|node| !node.is_empty());
    Some(match selected {
        Some(node) => Placement::Selected(node.clone()),
        None if class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer") => {
            Placement::Wait
        }
        None => Placement::Anywhere,
    })
}

/// A Ready, schedulable node for an `Immediate` claim, spread by the claim's uid
/// so claims do not all land on the first node.
pub fn pick_node<'a>(nodes: &'a [Node], claim_uid: &str) -> Option<&'a Node> {
    let mut candidates: Vec<&Node> = nodes.iter().filter(|node| is_usable(node)).collect();
    candidates.sort_by_key(|node| node.name_any());
    let spread = claim_uid.bytes().fold(0usize, |sum, byte| {
        sum.wrapping_mul(31).wrapping_add(byte.into())
    });
    let count = candidates.len();
    (count > 0).then(|| candidates[spread % count])
}

fn is_usable(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
        });
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|spec| spec.unschedulable)
        .unwrap_or(false);
    ready && !cordoned
}

/// The value of a node's hostname label, which the volume's affinity selects.
fn hostname_of(node: &Node) -> String {
    node.labels()
        .get(HOSTNAME_LABEL)
        .cloned()
        .unwrap_or_else(|| node.name_any())
}

/// Runs the provisioner with volumes under [`DEFAULT_STORAGE_DIR`] until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    run_with(client, LocalPathConfig::default(), shutdown).await;
}

/// Runs the provisioner until `shutdown`.
pub async fn run_with(client: kube::Client, config: LocalPathConfig, shutdown: CancellationToken) {
    let shutdown = shutdown.child_token();
    let (queue, worker) = informer::queue();
    let mut tasks = JoinSet::new();
    let claims = {
        let queue = queue.clone();
        informer::spawn_reflector(
            &mut tasks,
            Api::<PersistentVolumeClaim>::all(client.clone()),
            watcher::Config::default(),
            (),
            shutdown.clone(),
            move |claim: &PersistentVolumeClaim| queue.add(ClaimKey::of(claim)),
        )
    };
    let classes = {
        let queue = queue.clone();
        let claims = claims.clone();
        informer::spawn_reflector(
            &mut tasks,
            Api::<StorageClass>::all(client.clone()),
            watcher::Config::default(),
            (),
            shutdown.clone(),
            // A class appearing may be what a claim waits for.
            move |class: &StorageClass| {
                let name = class.metadata.name.as_deref();
                for claim in claims.state() {
                    if claim
                        .spec
                        .as_ref()
                        .and_then(|s| s.storage_class_name.as_deref())
                        == name
                    {
                        queue.add(ClaimKey::of(&claim));
                    }
                }
            },
        )
    };
    let ready = informer::wait_for_cache(&claims, &shutdown).await
        && informer::wait_for_cache(&classes, &shutdown).await;
    if ready {
        let provisioner = Provisioner {
            recorder: EventRecorder::new(client.clone(), COMPONENT, None),
            client,
            claims: claims.clone(),
            classes,
            storage_dir: config.storage_dir,
        };
        let everything = || {
            claims
                .state()
                .iter()
                .map(|claim| ClaimKey::of(claim))
                .collect()
        };
        worker
            .run(shutdown.clone(), RESYNC, everything, |key| {
                provisioner.reconcile(key)
            })
            .await;
    }
    shutdown.cancel();
    informer::join_all(tasks).await;
}

struct Provisioner {
    client: kube::Client,
    recorder: EventRecorder,
    claims: Store<PersistentVolumeClaim>,
    classes: Store<StorageClass>,
    storage_dir: PathBuf,
}

impl Provisioner {
    async fn reconcile(&self, key: ClaimKey) -> Result<(), kube::Error> {
        let reference = ObjectRef::new(&key.name).within(&key.namespace);
        let Some(claim) = self.claims.get(&reference) else {
            return Ok(());
        };
        let class_name = claim
            .spec
            .as_ref()
            .and_then(|spec| spec.storage_class_name.as_deref())
            .filter(|name| !name.is_empty());
        let Some(class) = class_name.and_then(|name| self.classes.get(&ObjectRef::new(name)))
        else {
            return Ok(());
        };
        let node = match placement(&claim, &class) {
            None | Some(Placement::Wait) => return Ok(()),
            Some(Placement::Selected(name)) => {
                let node = Api::<Node>::all(self.client.clone()).get_opt(&name).await?;
                if node.is_none() {
                    return self.reschedule(&claim, &name).await;
                }
                node
            }
            Some(Placement::Anywhere) => {
                let nodes = Api::<Node>::all(self.client.clone())
                    .list(&ListParams::default())
                    .await?
                    .items;
                let uid = claim.metadata.uid.clone().unwrap_or_default();
                pick_node(&nodes, &uid).cloned()
            }
        };
        let Some(node) = node else {
            return self
                .failed(&claim, "no Ready node to provision the volume on")
                .await;
        };
        self.provision(&claim, &class, &node).await
    }

    /// Creates the volume for `claim` on `node`, announcing it on the claim first.
    async fn provision(
        &self,
        claim: &PersistentVolumeClaim,
        class: &StorageClass,
        node: &Node,
    ) -> Result<(), kube::Error> {
        let volume = match volume_for(claim, class, &hostname_of(node), &self.storage_dir) {
            Ok(volume) => volume,
            Err(err) => return self.failed(claim, &err.to_string()).await,
        };
        self.mark_provisioner(claim).await?;
        let volume_name = volume.name_any();
        let reference = object_reference(claim);
        self.recorder
            .record(
                &reference,
                EventType::Normal,
                "Provisioning",
                &format!(
                    "External provisioner is provisioning volume for claim \"{}/{}\"",
                    claim.namespace().unwrap_or_default(),
                    claim.name_any()
                ),
            )
            .await;
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        match volumes.create(&PostParams::default(), &volume).await {
            Ok(_) => {}
            // Created by an earlier pass that the binder has not bound yet.
            Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
            Err(err) => return Err(err),
        }
        tracing::info!(volume = %volume_name, node = %node.name_any(), claim = %claim.name_any(), "provisioned a local-path volume");
        self.recorder
            .record(
                &reference,
                EventType::Normal,
                "ProvisioningSucceeded",
                &format!("Successfully provisioned volume {volume_name}"),
            )
            .await;
        Ok(())
    }

    /// Sets the claim's storage-provisioner annotations (upstream's PV controller
    /// does so before provisioning), unless they are there.
    async fn mark_provisioner(&self, claim: &PersistentVolumeClaim) -> Result<(), kube::Error> {
        let annotations = claim.annotations();
        let marked = [STORAGE_PROVISIONER, STORAGE_PROVISIONER_BETA]
            .iter()
            .all(|key| annotations.get(*key).map(String::as_str) == Some(PROVISIONER));
        if marked {
            return Ok(());
        }
        let patch = serde_json::json!({"metadata": {"annotations": {
            STORAGE_PROVISIONER: PROVISIONER,
            STORAGE_PROVISIONER_BETA: PROVISIONER,
        }}});
        self.claim_api(claim)
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        Ok(())
    }

    /// The selected node is gone: drop the annotation so the scheduler picks
    /// another for the claim's pod, as upstream's external provisioners do.
    async fn reschedule(
        &self,
        claim: &PersistentVolumeClaim,
        node: &str,
    ) -> Result<(), kube::Error> {
        let message = format!("selected node {node:?} does not exist; rescheduling");
        self.failed(claim, &message).await?;
        let patch = serde_json::json!({"metadata": {"annotations": {SELECTED_NODE: null}}});
        self.claim_api(claim)
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        Ok(())
    }

    /// Reports a claim this provisioner cannot serve (upstream's `ProvisioningFailed`).
    async fn failed(
        &self,
        claim: &PersistentVolumeClaim,
        message: &str,
    ) -> Result<(), kube::Error> {
        tracing::warn!(claim = %claim.name_any(), message, "cannot provision");
        self.recorder
            .record(
                &object_reference(claim),
                EventType::Warning,
                "ProvisioningFailed",
                message,
            )
            .await;
        Ok(())
    }

    fn claim_api(&self, claim: &PersistentVolumeClaim) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &claim.namespace().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        NodeCondition, NodeSpec, NodeStatus, PersistentVolumeClaimSpec, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use super::*;

    fn claim(annotations: &[(&str, &str)]) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                namespace: Some("apps".into()),
                uid: Some("1234".into()),
                resource_version: Some("7".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: Some("local-path".into()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".into(), Quantity("2Gi".into()))])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn class(provisioner: &str, mode: &str, reclaim: Option<&str>) -> StorageClass {
        StorageClass {
            metadata: ObjectMeta {
                name: Some("local-path".into()),
                ..Default::default()
            },
            provisioner: provisioner.into(),
            volume_binding_mode: Some(mode.into()),
            reclaim_policy: reclaim.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn the_volume_is_pre_bound_and_pinned_to_its_node() {
        let class = class(PROVISIONER, "WaitForFirstConsumer", Some("Retain"));
        let volume = volume_for(&claim(&[]), &class, "node-a", Path::new("/srv/storage"))
            .expect("provisionable");
        assert_eq!(volume.name_any(), "pvc-1234");
        assert_eq!(volume.annotations()[PROVISIONED_BY], PROVISIONER);
        let spec = volume.spec.expect("spec");
        let host_path = spec.host_path.expect("hostPath");
        assert_eq!(host_path.path, "/srv/storage/pvc-1234_apps_data");
        assert_eq!(host_path.type_.as_deref(), Some("DirectoryOrCreate"));
        assert_eq!(spec.capacity.expect("capacity")["storage"].0, "2Gi");
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some("local-path"));
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_owned()]));
        let claim_ref = spec.claim_ref.expect("claimRef");
        assert_eq!(
            (
                claim_ref.namespace.as_deref(),
                claim_ref.name.as_deref(),
                claim_ref.uid.as_deref()
            ),
            (Some("apps"), Some("data"), Some("1234"))
        );
        let terms = spec
            .node_affinity
            .and_then(|affinity| affinity.required)
            .expect("required affinity")
            .node_selector_terms;
        let requirement = &terms[0].match_expressions.as_ref().expect("expressions")[0];
        assert_eq!(requirement.key, HOSTNAME_LABEL);
        assert_eq!(requirement.values, Some(vec!["node-a".to_owned()]));
    }

    #[test]
    fn the_reclaim_policy_defaults_to_delete() {
        let class = class(PROVISIONER, "Immediate", None);
        let volume = volume_for(&claim(&[]), &class, "n", Path::new("/s")).expect("provisionable");
        let policy = volume
            .spec
            .and_then(|spec| spec.persistent_volume_reclaim_policy);
        assert_eq!(policy.as_deref(), Some("Delete"));
    }

    #[test]
    fn block_volumes_selectors_and_missing_requests_are_refused() {
        let class = class(PROVISIONER, "Immediate", None);
        let storage = Path::new("/s");
        let mut block = claim(&[]);
        block.spec.as_mut().unwrap().volume_mode = Some("Block".into());
        assert_eq!(
            volume_for(&block, &class, "n", storage),
            Err(ProvisionError::VolumeMode("Block".into()))
        );
        let mut selecting = claim(&[]);
        selecting.spec.as_mut().unwrap().selector = Some(LabelSelector::default());
        assert_eq!(
            volume_for(&selecting, &class, "n", storage),
            Err(ProvisionError::Selector)
        );
        let mut no_request = claim(&[]);
        no_request.spec.as_mut().unwrap().resources = None;
        assert_eq!(
            volume_for(&no_request, &class, "n", storage),
            Err(ProvisionError::NoStorageRequest)
        );
    }

    #[test]
    fn placement_follows_the_binding_mode_and_the_selected_node() {
        let delayed = class(PROVISIONER, "WaitForFirstConsumer", None);
        assert_eq!(placement(&claim(&[]), &delayed), Some(Placement::Wait));
        let selected = claim(&[(SELECTED_NODE, "node-b")]);
        assert_eq!(
            placement(&selected, &delayed),
            Some(Placement::Selected("node-b".into()))
        );
        let immediate = class(PROVISIONER, "Immediate", None);
        assert_eq!(
            placement(&claim(&[]), &immediate),
            Some(Placement::Anywhere)
        );
        let foreign = class("ebs.csi.aws.com", "Immediate", None);
        assert_eq!(placement(&claim(&[]), &foreign), None);
        let mut bound = claim(&[]);
        bound.spec.as_mut().unwrap().volume_name = Some("pv".into());
        assert_eq!(placement(&bound, &immediate), None);
    }

    fn node(name: &str, ready: bool, cordoned: bool) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                unschedulable: Some(cordoned),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn immediate_claims_go_to_ready_schedulable_nodes() {
        let nodes = [
            node("down", false, false),
            node("cordoned", true, true),
            node("b", true, false),
            node("a", true, false),
        ];
        let mut chosen: Vec<String> = (0..20)
            .filter_map(|i| pick_node(&nodes, &format!("uid-{i}")))
            .map(ResourceExt::name_any)
            .collect();
        chosen.sort();
        chosen.dedup();
        assert_eq!(chosen, ["a", "b"], "only usable nodes, and both of them");
        assert!(pick_node(&nodes[..2], "uid").is_none());
    }
}
