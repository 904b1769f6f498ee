//! Deletes this node's released local-path volumes: the provisioner in the
//! controller manager creates them as PersistentVolume objects only, so the
//! agent of the node they live on removes their directory once their claim is
//! gone (reclaim policy `Delete`), then the object. `Retain` volumes are left.
//!
//! Only a directory directly under the agent's storage root is removed, never
//! following a symlink out of it, and never while a pod on this node still uses
//! the claim, whatever a PersistentVolume says.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, Pod};
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

/// The provisioner whose volumes this reclaims (the controller manager's).
pub const PROVISIONER: &str = "gantry.dev/local-path";
/// The volume annotation naming who provisioned it.
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The node label provisioned volumes' node affinity selects on.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// How often released volumes are looked at again (one in use, or a failed removal).
const RESYNC: Duration = Duration::from_secs(10);

/// Why a volume's directory could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum ReclaimError {
    /// Removing the directory failed.
    #[error("removing {path}: {source}")]
    Remove {
        /// The volume's directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The blocking removal task failed.
    #[error("removal task: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// Listing pods or deleting the volume object failed.
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// Whether `volume` was created by the local-path provisioner.
pub fn is_local_path_volume(volume: &PersistentVolume) -> bool {
    volume.annotations().get(PROVISIONED_BY).map(String::as_str) == Some(PROVISIONER)
}

/// The directory to remove for `volume`, if it is a released local-path
/// volume with reclaim policy `Delete` on node `node` (whose hostname label is
/// its name, as the agent registers it) stored under `storage_root`.
pub fn reclaimable(volume: &PersistentVolume, node: &str, storage_root: &Path) -> Option<PathBuf> {
    let ours = is_local_path_volume(volume);
    let spec = volume.spec.as_ref()?;
    let released = volume.status.as_ref()?.phase.as_deref() == Some("Released");
    let delete = spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete");
    let deleting = volume.metadata.deletion_timestamp.is_some();
    if !(ours && released && delete && !deleting && is_on_node(volume, node)) {
        return None;
    }
    let path = PathBuf::from(&spec.host_path.as_ref()?.path);
    is_directly_under(&path, storage_root).then_some(path)
}

/// Whether the volume's required node affinity names `node` by hostname.
fn is_on_node(volume: &PersistentVolume, node: &str) -> bool {
    let terms = volume
        .spec
        .as_ref()
        .and_then(|spec| spec.node_affinity.as_ref())
        .and_then(|affinity| affinity.required.as_ref())
        .map(|selector| selector.node_selector_terms.as_slice())
        .unwrap_or_default();
    terms.iter().any(|term| {
        term.match_expressions.iter().flatten().any(|requirement| {
            requirement.key == HOSTNAME_LABEL
                && requirement.operator == "In"
                && requirement
                    .values
                    .iter()
                    .flatten()
                    .any(|value| value == node)
        })
    })
}

/// Whether `path` is `root` plus exactly one ordinary name (no `..`, no `.`).
fn is_directly_under(path: &Path, root: &Path) -> bool {
    let Ok(rest) = path.strip_prefix(root) else {
        return false;
    };
    let mut components = rest.components();
    root.is_absolute()
        && matches!(components.next(), Some(Component::Normal(_)))
        && components.next().is_none()
}

/// Removes a volume's directory. A symlink in its place is removed itself, not
/// followed; inside it, `remove_dir_all` does not follow symlinks either. A
/// directory that is already gone counts as removed.
pub fn remove_volume_dir(path: &Path) -> io::Result<()> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    if metadata.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// Reclaims this node's released local-path volumes until `shutdown`.
pub async fn run(
    client: kube::Client,
    node_name: String,
    storage_root: PathBuf,
    shutdown: CancellationToken,
) {
    let reclaimer = Reclaimer {
        client: client.clone(),
        node_name,
        storage_root,
    };
    let (volumes, writer) = reflector::store();
    let events = watcher(
        Api::<PersistentVolume>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects();
    let mut events = std::pin::pin!(events);
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.next() => match event {
                Some(Ok(volume)) => reclaimer.reclaim_if_released(&volume).await,
                Some(Err(err)) => tracing::warn!(%err, "persistentvolume watch failed; retrying"),
                None => return,
            },
            _ = resync.tick() => reclaimer.reclaim_all(&volumes).await,
        }
    }
}

struct Reclaimer {
    client: kube::Client,
    node_name: String,
    storage_root: PathBuf,
}

impl Reclaimer {
    async fn reclaim_all(&self, volumes: &Store<PersistentVolume>) {
        for volume in volumes.state() {
            self.reclaim_if_released(&volume).await;
        }
    }

    async fn reclaim_if_released(&self, volume: &PersistentVolume) {
        let Some(path) = reclaimable(volume, &self.node_name, &self.storage_root) else {
            return;
        };
        if let Err(err) = self.reclaim(volume, path).await {
            tracing::warn!(volume = %volume.name_any(), %err, "reclaiming a local-path volume");
        }
    }

    /// Removes the directory, then deletes the volume object (if it is still
    /// the same one), unless a pod here still uses its claim.
    async fn reclaim(&self, volume: &PersistentVolume, path: PathBuf) -> Result<(), ReclaimError> {
        if self.claim_in_use(volume).await? {
            tracing::debug!(volume = %volume.name_any(), "released volume still mounted; waiting");
            return Ok(());
        }
        let removed = path.clone();
        tokio::task::spawn_blocking(move || remove_volume_dir(&removed))
            .await?
            .map_err(|source| ReclaimError::Remove {
                path: path.clone(),
                source,
            })?;
        let preconditions = Preconditions {
            uid: volume.metadata.uid.clone(),
            resource_version: None,
        };
        let params = DeleteParams {
            preconditions: Some(preconditions),
            ..DeleteParams::default()
        };
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api.delete(&volume.name_any(), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(err) => return Err(err.into()),
        }
        tracing::info!(volume = %volume.name_any(), path = %path.display(), "reclaimed a local-path volume");
        Ok(())
    }

    /// Whether an unfinished pod on this node mounts the volume's former claim.
    async fn claim_in_use(&self, volume: &PersistentVolume) -> Result<bool, kube::Error> {
        let Some(claim) = volume
            .spec
            .as_ref()
            .and_then(|spec| spec.claim_ref.as_ref())
        else {
            return Ok(false);
        };
        let (Some(namespace), Some(name)) = (claim.namespace.as_deref(), claim.name.as_deref())
        else {
            return Ok(false);
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let on_node = ListParams::default().fields(&format!("spec.nodeName={}", self.node_name));
        let pods = pods.list(&on_node).await?.items;
        Ok(pods.iter().any(|pod| {
            let phase = pod
                .status
                .as_ref()
                .and_then(|status| status.phase.as_deref());
            let finished = matches!(phase, Some("Succeeded" | "Failed"));
            !finished && uses_claim(pod, name)
        }))
    }
}

fn uses_claim(pod: &Pod, claim: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|volume| volume.persistent_volume_claim.as_ref())
        .any(|source| source.claim_name == claim)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::symlink;

    use k8s_openapi::api::core::v1::{
        HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
        PersistentVolumeSpec, PersistentVolumeStatus, VolumeNodeAffinity,
    };
    use kube::api::ObjectMeta;

    use super::*;

    fn volume(path: &str, node: &str, policy: &str, phase: &str) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pvc-1".into()),
                annotations: Some(BTreeMap::from([(
                    PROVISIONED_BY.to_owned(),
                    PROVISIONER.to_owned(),
                )])),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                persistent_volume_reclaim_policy: Some(policy.into()),
                host_path: Some(HostPathVolumeSource {
                    path: path.into(),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                node_affinity: Some(VolumeNodeAffinity {
                    required: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: HOSTNAME_LABEL.into(),
                                operator: "In".into(),
                                values: Some(vec![node.into()]),
                            }]),
                            match_fields: None,
                        }],
                    }),
                }),
                ..Default::default()
            }),
            status: Some(PersistentVolumeStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn only_released_delete_volumes_of_this_node_under_the_root_are_reclaimed() {
        let root = Path::new("/srv/storage");
        let path = "/srv/storage/pvc-1_default_data";
        let released = volume(path, "a", "Delete", "Released");
        assert_eq!(reclaimable(&released, "a", root), Some(PathBuf::from(path)));
        assert_eq!(reclaimable(&released, "b", root), None, "another node's");
        assert_eq!(
            reclaimable(&volume(path, "a", "Retain", "Released"), "a", root),
            None
        );
        assert_eq!(
            reclaimable(&volume(path, "a", "Delete", "Bound"), "a", root),
            None
        );
        let mut foreign = released.clone();
        foreign.metadata.annotations = None;
        assert_eq!(
            reclaimable(&foreign, "a", root),
            None,
            "not provisioned here"
        );
        for outside in [
            "/srv/storage",
            "/srv/storage/../etc",
            "/srv/storage/a/b",
            "/etc/passwd",
            "/srv/storage-other/x",
            "relative/x",
        ] {
            let volume = volume(outside, "a", "Delete", "Released");
            assert_eq!(reclaimable(&volume, "a", root), None, "{outside}");
        }
    }

    #[test]
    fn removal_never_follows_symlinks_out_of_the_volume() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let outside = scratch.path().join("outside");
        std::fs::create_dir(&outside).expect("outside dir");
        std::fs::write(outside.join("keep"), "precious").expect("outside file");
        let root = scratch.path().join("storage");
        let volume_dir = root.join("pvc-1_default_data");
        std::fs::create_dir_all(volume_dir.join("nested")).expect("volume dir");
        std::fs::write(volume_dir.join("nested/data"), "x").expect("volume file");
        symlink(&outside, volume_dir.join("escape")).expect("symlink inside");
        let linked_volume = root.join("pvc-2_default_linked");
        symlink(&outside, &linked_volume).expect("volume that is a symlink");

        remove_volume_dir(&volume_dir).expect("removed");
        remove_volume_dir(&linked_volume).expect("link removed");
        remove_volume_dir(&volume_dir).expect("already gone is fine");

        assert!(!volume_dir.exists());
        assert!(std::fs::symlink_metadata(&linked_volume).is_err());
        let kept = std::fs::read_to_string(outside.join("keep")).expect("outside intact");
        assert_eq!(kept, "precious");
    }
}
