//! The PersistentVolume binder (the binding half of upstream's PV controller):
//! an unbound PersistentVolumeClaim gets the smallest Available PersistentVolume
//! that satisfies it (storage class, access modes, volume mode, capacity, label
//! selector), or the volume it names or that names it. The volume is bound first
//! (`spec.claimRef`, phase Bound), then the claim (`spec.volumeName`, phase Bound
//! with the volume's capacity), so a crash in between leaves a volume reserved
//! for its claim, which the next pass completes. Volumes whose claim is gone
//! become Released; fresh volumes become Available.
//!
//! There is no dynamic provisioning: a claim nothing satisfies stays Pending,
//! and pods using it wait on their node.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use gantry_api::quantity::Quantity;
use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
    PersistentVolumeStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::informer::{self, Queue};

/// Set on a volume the binder bound (upstream's annotation, read by tools).
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// Set on a claim once its binding is complete.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";

/// How often every claim and volume is looked at again without a change.
const RESYNC: Duration = Duration::from_secs(15);

/// What the binder reconciles: a claim, or a volume (its phase only).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    Claim { namespace: String, name: String },
    Volume(String),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Claim { namespace, name } => write!(f, "persistentvolumeclaim {namespace}/{name}"),
            Key::Volume(name) => write!(f, "persistentvolume {name}"),
        }
    }
}

fn claim_key(claim: &PersistentVolumeClaim) -> Key {
    Key::Claim {
        namespace: claim.namespace().unwrap_or_default(),
        name: claim.name_any(),
    }
}

/// Runs the binder until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
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
            move |claim: &PersistentVolumeClaim| {
                queue.add(claim_key(claim));
                // A deleted claim releases its volume.
                let volume_name = claim.spec.as_ref().and_then(|s| s.volume_name.clone());
                if let Some(volume_name) = volume_name.filter(|name| !name.is_empty()) {
                    queue.add(Key::Volume(volume_name));
                }
            },
        )
    };
    let volumes = {
        let queue: Queue<Key> = queue.clone();
        let claims = claims.clone();
        informer::spawn_reflector(
            &mut tasks,
            Api::<PersistentVolume>::all(client.clone()),
            watcher::Config::default(),
            (),
            shutdown.clone(),
            move |volume: &PersistentVolume| {
                queue.add(Key::Volume(volume.name_any()));
                // A volume appearing or freed may be what a pending claim waits for.
                for claim in claims.state() {
                    if !is_bound(&claim) {
                        queue.add(claim_key(&claim));
                    }
                }
            },
        )
    };
    let ready = informer::wait_for_cache(&claims, &shutdown).await
        && informer::wait_for_cache(&volumes, &shutdown).await;
    if ready {
        let context = Context {
            client,
            claims: claims.clone(),
            volumes: volumes.clone(),
        };
        let everything = || {
            let claim_keys = claims.state().into_iter().map(|c| claim_key(&c));
            let volume_keys = volumes
                .state()
                .into_iter()
                .map(|v| Key::Volume(v.name_any()));
            claim_keys.chain(volume_keys).collect()
        };
        worker
            .run(shutdown.clone(), RESYNC, everything, |key| {
                reconcile(&context, key)
            })
            .await;
    }
    shutdown.cancel();
    informer::join_all(tasks).await;
}

struct Context {
    client: kube::Client,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
}

async fn reconcile(context: &Context, key: Key) -> Result<(), kube::Error> {
    match key {
        Key::Claim { namespace, name } => {
            let reference = ObjectRef::new(&name).within(&namespace);
            match context.claims.get(&reference) {
                Some(claim) => sync_claim(context, &claim).await,
                None => Ok(()),
            }
        }
        Key::Volume(name) => match context.volumes.get(&ObjectRef::new(&name)) {
            Some(volume) => sync_volume(context, &volume).await,
            None => Ok(()),
        },
    }
}

/// Binds an unbound claim, or completes a half-done binding.
async fn sync_claim(context: &Context, claim: &PersistentVolumeClaim) -> Result<(), kube::Error> {
    if claim.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let named = claim
        .spec
        .as_ref()
        .and_then(|spec| spec.volume_name.as_deref())
        .filter(|name| !name.is_empty());
    let volumes = match named {
        Some(_) => context.volumes.state(),
        // Choosing needs every volume: the two watches race, and the cache may
        // not have seen volumes created just before the claim. Unbound claims
        // are few, so a fresh list each time is cheap.
        None => Api::<PersistentVolume>::all(context.client.clone())
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .map(std::sync::Arc::new)
            .collect(),
    };
    let chosen = match named {
        // The claim names its volume: bind that one if it is free or already ours.
        Some(name) => volumes
            .iter()
            .find(|volume| volume.name_any() == name)
            .map(AsRef::as_ref)
            .filter(|volume| claim_ref_allows(volume, claim)),
        None => volumes
            .iter()
            .find(|volume| is_pre_bound_to(volume, claim))
            .map(AsRef::as_ref)
            .or_else(|| best_match(claim, &volumes)),
    };
    let Some(volume) = chosen else {
        if is_bound(claim) && named.is_some() {
            // Its volume vanished or went to another claim: upstream's ClaimLost.
            return set_claim_phase(context, claim, "Lost").await;
        }
        return Ok(());
    };
    let volume = bind_volume(context, volume, claim).await?;
    bind_claim(context, claim, &volume).await
}

/// The volume with `claimRef` pointing at `claim` and phase Bound.
async fn bind_volume(
    context: &Context,
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Result<PersistentVolume, kube::Error> {
    let api: Api<PersistentVolume> = Api::all(context.client.clone());
    let mut volume = volume.clone();
    let wanted_ref = claim_reference(claim);
    let current_ref = volume
        .spec
        .as_ref()
        .and_then(|spec| spec.claim_ref.as_ref());
    if current_ref.is_none_or(|current| current.uid != wanted_ref.uid) {
        tracing::info!(volume = %volume.name_any(), claim = %claim_key(claim), "binding volume");
        volume.spec.get_or_insert_default().claim_ref = Some(wanted_ref);
        volume
            .annotations_mut()
            .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
        // Carries the cached resourceVersion: a stale choice fails with 409 and is retried.
        volume = api
            .replace(&volume.name_any(), &PostParams::default(), &volume)
            .await?;
    }
    if phase_of_volume(&volume) != "Bound" {
        let status = PersistentVolumeStatus {
            phase: Some("Bound".into()),
            ..volume.status.clone().unwrap_or_default()
        };
        volume = api
            .patch_status(
                &volume.name_any(),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await?;
    }
    Ok(volume)
}

/// The claim with `spec.volumeName` and phase Bound, capacity and access modes
/// taken from its volume.
async fn bind_claim(
    context: &Context,
    claim: &PersistentVolumeClaim,
    volume: &PersistentVolume,
) -> Result<(), kube::Error> {
    let namespace = claim.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(context.client.clone(), &namespace);
    let volume_name = volume.name_any();
    let mut claim = claim.clone();
    let names_volume = claim
        .spec
        .as_ref()
        .and_then(|spec| spec.volume_name.as_deref())
        == Some(volume_name.as_str());
    let completed = claim.annotations().get(BIND_COMPLETED).map(String::as_str) == Some("yes");
    if !names_volume || !completed {
        claim.spec.get_or_insert_default().volume_name = Some(volume_name.clone());
        claim
            .annotations_mut()
            .insert(BIND_COMPLETED.into(), "yes".into());
        claim = api
            .replace(&claim.name_any(), &PostParams::default(), &claim)
            .await?;
    }
    let spec = volume.spec.as_ref();
    let status = PersistentVolumeClaimStatus {
        phase: Some("Bound".into()),
        access_modes: spec.and_then(|spec| spec.access_modes.clone()),
        capacity: spec.and_then(|spec| spec.capacity.clone()),
        ..claim.status.clone().unwrap_or_default()
    };
    if claim.status.as_ref() != Some(&status) {
        api.patch_status(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await?;
    }
    Ok(())
}

/// Keeps a volume's phase true to its claimRef: Available without one,
/// Released once the claim it was bound to is gone.
async fn sync_volume(context: &Context, volume: &PersistentVolume) -> Result<(), kube::Error> {
    let claim_ref = volume
        .spec
        .as_ref()
        .and_then(|spec| spec.claim_ref.as_ref());
    let phase = phase_of_volume(volume);
    let wanted = match claim_ref {
        None if phase == "Released" || phase == "Failed" => return Ok(()),
        None => "Available",
        // Pre-bound to a claim by name only: reserved for it, not yet bound.
        Some(reference) if reference.uid.as_deref().unwrap_or_default().is_empty() => "Available",
        Some(reference) => {
            let claim = context.claims.get(
                &ObjectRef::new(reference.name.as_deref().unwrap_or_default())
                    .within(reference.namespace.as_deref().unwrap_or_default()),
            );
            let claim_exists = claim.is_some_and(|claim| claim.metadata.uid == reference.uid);
            match (claim_exists, phase) {
                (true, _) => return Ok(()),
                (false, "Bound") => "Released",
                // Bound by us a moment ago; the claim cache has not caught up.
                (false, _) => return Ok(()),
            }
        }
    };
    if phase == wanted {
        return Ok(());
    }
    let api: Api<PersistentVolume> = Api::all(context.client.clone());
    api.patch_status(
        &volume.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": { "phase": wanted } })),
    )
    .await?;
    Ok(())
}

async fn set_claim_phase(
    context: &Context,
    claim: &PersistentVolumeClaim,
    phase: &str,
) -> Result<(), kube::Error> {
    let current = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    if current == Some(phase) {
        return Ok(());
    }
    let api: Api<PersistentVolumeClaim> = Api::namespaced(
        context.client.clone(),
        &claim.namespace().unwrap_or_default(),
    );
    api.patch_status(
        &claim.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": { "phase": phase } })),
    )
    .await?;
    Ok(())
}

fn is_bound(claim: &PersistentVolumeClaim) -> bool {
    claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}

fn phase_of_volume(volume: &PersistentVolume) -> &str {
    volume
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or_default()
}

fn claim_reference(claim: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: claim.namespace(),
        name: Some(claim.name_any()),
        uid: claim.metadata.uid.clone(),
        resource_version: claim.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// Whether the volume's claimRef (if any) names this claim.
fn claim_ref_allows(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(reference) = volume
        .spec
        .as_ref()
        .and_then(|spec| spec.claim_ref.as_ref())
    else {
        return true;
    };
    reference.name.as_deref() == claim.metadata.name.as_deref()
        && reference.namespace.as_deref() == claim.metadata.namespace.as_deref()
        && reference
            .uid
            .as_deref()
            .is_none_or(|uid| uid.is_empty() || Some(uid) == claim.metadata.uid.as_deref())
}

/// A volume an administrator reserved for this claim through its claimRef.
fn is_pre_bound_to(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let has_ref = volume
        .spec
        .as_ref()
        .is_some_and(|spec| spec.claim_ref.is_some());
    has_ref && claim_ref_allows(volume, claim) && phase_of_volume(volume) != "Released"
}

/// The smallest free volume that satisfies the claim (upstream's `findBestMatch`).
pub fn best_match<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &'a [std::sync::Arc<PersistentVolume>],
) -> Option<&'a PersistentVolume> {
    let requested = requested_storage(claim)?;
    volumes
        .iter()
        .map(AsRef::as_ref)
        .filter(|volume| is_free(volume) && satisfies(volume, claim, requested))
        .filter_map(|volume| Some((capacity(volume)?, volume)))
        .min_by(|(a, a_volume), (b, b_volume)| {
            a.cmp(b)
                .then_with(|| a_volume.name_any().cmp(&b_volume.name_any()))
        })
        .map(|(_, volume)| volume)
}

/// Available (or not yet phased) and reserved for nobody.
fn is_free(volume: &PersistentVolume) -> bool {
    let unclaimed = volume
        .spec
        .as_ref()
        .is_none_or(|spec| spec.claim_ref.is_none());
    let phase = phase_of_volume(volume);
    unclaimed
        && matches!(phase, "" | "Pending" | "Available")
        && volume.metadata.deletion_timestamp.is_none()
}

fn satisfies(
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
    requested: Quantity,
) -> bool {
    let (Some(volume_spec), Some(claim_spec)) = (volume.spec.as_ref(), claim.spec.as_ref()) else {
        return false;
    };
    let class = |class: &Option<String>| class.clone().unwrap_or_default();
    let mode = |mode: &Option<String>| mode.clone().unwrap_or_else(|| "Filesystem".into());
    let offered_modes = volume_spec.access_modes.as_deref().unwrap_or_default();
    let has_modes = claim_spec
        .access_modes
        .iter()
        .flatten()
        .all(|wanted| offered_modes.contains(wanted));
    let selected = claim_spec
        .selector
        .as_ref()
        .is_none_or(|selector| selector_matches(selector, volume.labels()));
    class(&volume_spec.storage_class_name) == class(&claim_spec.storage_class_name)
        && mode(&volume_spec.volume_mode) == mode(&claim_spec.volume_mode)
        && has_modes
        && selected
        && capacity(volume).is_some_and(|capacity| capacity >= requested)
}

fn requested_storage(claim: &PersistentVolumeClaim) -> Option<Quantity> {
    let request = claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage");
    match request {
        Some(quantity) => Quantity::parse(&quantity.0).ok(),
        None => Some(Quantity::zero()),
    }
}

fn capacity(volume: &PersistentVolume) -> Option<Quantity> {
    let quantity = volume.spec.as_ref()?.capacity.as_ref()?.get("storage")?;
    Quantity::parse(&quantity.0).ok()
}

/// Label selector semantics: every matchLabels entry and every expression holds.
fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    labels_match
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|requirement| requirement_matches(requirement, labels))
}

fn requirement_matches(
    requirement: &LabelSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let value = labels.get(&requirement.key);
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|value| values.contains(value)),
        "NotIn" => value.is_none_or(|value| !values.contains(value)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimSpec, PersistentVolumeSpec, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
    use kube::api::ObjectMeta;

    use super::*;

    fn volume(
        name: &str,
        size: &str,
        modes: &[&str],
        class: Option<&str>,
    ) -> Arc<PersistentVolume> {
        Arc::new(PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                capacity: Some(BTreeMap::from([(
                    "storage".into(),
                    ApiQuantity(size.into()),
                )])),
                access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
                storage_class_name: class.map(Into::into),
                ..Default::default()
            }),
            status: Some(PersistentVolumeStatus {
                phase: Some("Available".into()),
                ..Default::default()
            }),
        })
    }

    fn claim(size: &str, modes: &[&str], class: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                namespace: Some("default".into()),
                uid: Some("claim-uid".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
                storage_class_name: class.map(Into::into),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".into(),
                        ApiQuantity(size.into()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn chosen(claim: &PersistentVolumeClaim, volumes: &[Arc<PersistentVolume>]) -> Option<String> {
        best_match(claim, volumes).map(ResourceExt::name_any)
    }

    #[test]
    fn the_smallest_sufficient_volume_wins() {
        let volumes = [
            volume("big", "10Gi", &["ReadWriteOnce"], None),
            volume("small", "500Mi", &["ReadWriteOnce"], None),
            volume("fits", "1Gi", &["ReadWriteOnce"], None),
        ];
        let wanted = claim("1Gi", &["ReadWriteOnce"], None);
        assert_eq!(chosen(&wanted, &volumes).as_deref(), Some("fits"));
    }

    #[test]
    fn access_modes_and_classes_must_match() {
        let volumes = [
            volume("rwo", "1Gi", &["ReadWriteOnce"], None),
            volume(
                "fast",
                "1Gi",
                &["ReadWriteOnce", "ReadWriteMany"],
                Some("fast"),
            ),
        ];
        let many = claim("1Gi", &["ReadWriteMany"], None);
        assert_eq!(chosen(&many, &volumes), None);
        let fast_many = claim("1Gi", &["ReadWriteMany"], Some("fast"));
        assert_eq!(chosen(&fast_many, &volumes).as_deref(), Some("fast"));
        let classless = claim("1Gi", &["ReadWriteOnce"], None);
        assert_eq!(chosen(&classless, &volumes).as_deref(), Some("rwo"));
    }

    #[test]
    fn claimed_and_released_volumes_are_not_free() {
        let mut taken = (*volume("taken", "1Gi", &["ReadWriteOnce"], None)).clone();
        taken.spec.as_mut().unwrap().claim_ref = Some(ObjectReference {
            name: Some("other".into()),
            namespace: Some("default".into()),
            ..Default::default()
        });
        let mut released = (*volume("released", "1Gi", &["ReadWriteOnce"], None)).clone();
        released.status.as_mut().unwrap().phase = Some("Released".into());
        let volumes = [Arc::new(taken), Arc::new(released)];
        assert_eq!(
            chosen(&claim("1Gi", &["ReadWriteOnce"], None), &volumes),
            None
        );
    }

    #[test]
    fn selectors_filter_volumes() {
        let mut labelled = (*volume("ssd", "1Gi", &["ReadWriteOnce"], None)).clone();
        labelled.metadata.labels = Some(BTreeMap::from([("disk".into(), "ssd".into())]));
        let volumes = [
            volume("plain", "1Gi", &["ReadWriteOnce"], None),
            Arc::new(labelled),
        ];
        let mut wanted = claim("1Gi", &["ReadWriteOnce"], None);
        wanted.spec.as_mut().unwrap().selector = Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "disk".into(),
                operator: "In".into(),
                values: Some(vec!["ssd".into()]),
            }]),
            ..Default::default()
        });
        assert_eq!(chosen(&wanted, &volumes).as_deref(), Some("ssd"));
    }
}
