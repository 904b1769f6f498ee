//! Pod volumes: materialises emptyDir, hostPath, configMap, secret, projected,
//! downwardAPI and persistentVolumeClaim volumes on the node and turns container
//! volumeMounts into the runtime's bind mounts.
//!
//! Layout, as the kubelet's: `<root>/<pod uid>/volumes/<plugin>/<volume name>`, with
//! plugins `kubernetes.io~empty-dir`, `~configmap`, `~secret`, `~downward-api` and
//! `~projected`. hostPath and persistentVolumeClaim volumes are the host paths
//! themselves. configMap, secret, downwardAPI and projected contents are written by
//! the [`atomic_writer`], so updates are atomic and visible in running containers.

mod atomic_writer;
mod downward;
mod host;
mod mounts;
mod paths;
mod projection;
pub mod reclaimer;
mod watcher;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gantry_runtime::BindMount;
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, HostPathVolumeSource, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use kube::{Api, Client};

pub use atomic_writer::{AtomicWriter, FileProjection, Payload};
pub use gantry_api::quantity::{InvalidQuantity, Quantity};
pub use host::HostPathType;
pub use paths::{InvalidPath, validate_item_path, validate_key, validate_sub_path};
pub use projection::ObjectKind;
pub use watcher::VolumeWatcher;

use host::{check_host_path, create_volume_dir, mount_tmpfs, unmount_and_remove};
use mounts::bind_mount;
use projection::Projector;

/// emptyDir volumes are world-writable: containers may run as any user.
const EMPTY_DIR_MODE: u32 = 0o777;
/// Directories of the atomic-writer volumes (only the agent writes them).
const PROJECTED_DIR_MODE: u32 = 0o755;

/// Why a volume could not be prepared or mounted.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The pod has no `metadata.uid` (it was never stored by an API server).
    #[error("pod has no metadata.uid")]
    MissingUid,
    /// A pod uid that is not a single path segment.
    #[error("invalid pod uid {0:?}")]
    InvalidUid(String),
    /// A ConfigMap or Secret the pod needs does not exist.
    #[error("{kind} \"{name}\" not found")]
    ObjectNotFound {
        /// ConfigMap or Secret.
        kind: ObjectKind,
        /// Its name.
        name: String,
    },
    /// An `items` entry names a key the object does not have.
    #[error("{kind} \"{name}\" has no key \"{key}\"")]
    MissingKey {
        /// ConfigMap or Secret.
        kind: ObjectKind,
        /// Its name.
        name: String,
        /// The missing key.
        key: String,
    },
    /// A persistentVolumeClaim volume names a claim that does not exist.
    #[error("persistentvolumeclaim \"{0}\" not found")]
    ClaimNotFound(String),
    /// The claim exists but no PersistentVolume is bound to it yet.
    #[error("persistentvolumeclaim {0} is not bound")]
    ClaimNotBound(String),
    /// The claim's PersistentVolume does not exist, or is bound to another claim.
    #[error("persistentvolume \"{volume}\" for claim {claim}: {reason}")]
    BadPersistentVolume {
        /// The PersistentVolume's name.
        volume: String,
        /// The claim's name.
        claim: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A volume type (or PersistentVolume source) the agent cannot provide.
    #[error("volume \"{volume}\": {kind} volumes are not supported")]
    UnsupportedVolumeType {
        /// The volume's name.
        volume: String,
        /// The source's field name (`nfs`, `csi`, ...).
        kind: String,
    },
    /// A feature of a supported volume type that is not implemented.
    #[error("{0} are not supported")]
    Unsupported(&'static str),
    /// A downward API field that volumes cannot expose.
    #[error("downward API field {0:?} is not supported in volumes")]
    UnsupportedField(String),
    /// A resourceFieldRef names a container the pod does not have.
    #[error("resourceFieldRef: pod has no container {0:?}")]
    UnknownContainer(String),
    /// An unset limit, and the node does not report the resource as allocatable.
    #[error("resourceFieldRef: no limit set and node allocatable {0:?} unknown")]
    NoAllocatable(String),
    /// A file mode outside 0..=0777.
    #[error("invalid file mode {0:#o}: must be between 0 and 0777")]
    InvalidMode(i32),
    /// A key, item path or subPath that could leave the volume.
    #[error(transparent)]
    InvalidPath(#[from] InvalidPath),
    /// A malformed sizeLimit or resource quantity.
    #[error(transparent)]
    InvalidQuantity(#[from] InvalidQuantity),
    /// A hostPath (or hostPath/local PersistentVolume) failed its type check.
    #[error("hostPath {path}: {reason}")]
    HostPath {
        /// The host path.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// A volumeMount names a volume the pod does not declare.
    #[error("volumeMount refers to volume \"{0}\", which the pod does not declare")]
    UnknownVolume(String),
    /// A subPath that resolves (through symlinks) outside its volume.
    #[error("subPath {sub_path:?} of volume \"{volume}\" resolves outside the volume")]
    SubPathEscapes {
        /// The volume's name.
        volume: String,
        /// The subPath as given.
        sub_path: String,
    },
    /// The API server could not be asked.
    #[error("reading from the API: {0}")]
    Api(#[from] kube::Error),
    /// A filesystem or mount operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A blocking task panicked or was cancelled.
    #[error("volume task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl VolumeError {
    /// Whether the pod's own configuration is at fault (a missing ConfigMap or
    /// Secret, a bad key or path), which the agent reports as the container's
    /// waiting reason `CreateContainerConfigError`; other errors are transient or
    /// node-side and retried.
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            Self::ObjectNotFound { .. }
                | Self::MissingKey { .. }
                | Self::InvalidMode(_)
                | Self::InvalidPath(_)
                | Self::InvalidQuantity(_)
                | Self::UnsupportedField(_)
                | Self::UnknownContainer(_)
                | Self::UnknownVolume(_)
                | Self::SubPathEscapes { .. }
        )
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> VolumeError {
    let context = context.into();
    move |source| VolumeError::Io { context, source }
}

/// Whether a write may create the volume (prepare) or only update it (refresh).
#[derive(Clone, Copy, Debug)]
enum Write {
    Prepare,
    Refresh,
}

/// What kind of volume a prepared volume is, which decides how it is refreshed and
/// how its subPaths resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeKind {
    /// A scratch directory (or tmpfs) owned by the pod.
    EmptyDir,
    /// A path on the host.
    HostPath,
    /// ConfigMap contents, written by the atomic writer.
    ConfigMap,
    /// Secret contents on a tmpfs, written by the atomic writer.
    Secret,
    /// Downward API files, written by the atomic writer.
    DownwardApi,
    /// Merged projections on a tmpfs, written by the atomic writer.
    Projected,
    /// A bound PersistentVolume's host path.
    PersistentVolumeClaim,
}

impl VolumeKind {
    /// The kubelet's plugin directory name, for kinds that live under the pod.
    fn plugin_dir(self) -> Option<&'static str> {
        match self {
            Self::EmptyDir => Some("kubernetes.io~empty-dir"),
            Self::ConfigMap => Some("kubernetes.io~configmap"),
            Self::Secret => Some("kubernetes.io~secret"),
            Self::DownwardApi => Some("kubernetes.io~downward-api"),
            Self::Projected => Some("kubernetes.io~projected"),
            Self::HostPath | Self::PersistentVolumeClaim => None,
        }
    }

    /// Whether the atomic writer owns the contents (refreshed, always read-only).
    pub fn is_projected(self) -> bool {
        matches!(
            self,
            Self::ConfigMap | Self::Secret | Self::DownwardApi | Self::Projected
        )
    }
}

/// One volume, ready to be bind-mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedVolume {
    /// The host directory (or file) backing the volume.
    pub path: PathBuf,
    /// Mounted read-only whatever the volumeMount says (configMap, secret,
    /// downwardAPI and projected volumes, read-only claims).
    pub read_only: bool,
    /// The volume's kind.
    pub kind: VolumeKind,
}

/// The prepared volumes of one pod, by volume name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodVolumes {
    volumes: BTreeMap<String, PreparedVolume>,
}

impl PodVolumes {
    /// The volume called `name`.
    pub fn get(&self, name: &str) -> Option<&PreparedVolume> {
        self.volumes.get(name)
    }

    /// All volumes, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PreparedVolume)> {
        self.volumes
            .iter()
            .map(|(name, volume)| (name.as_str(), volume))
    }
}

/// Prepares, refreshes and removes the volumes of the pods on this node.
#[derive(Clone)]
pub struct VolumeManager {
    client: Client,
    root: PathBuf,
    /// Serialises atomic-writer updates, so a refresh racing a prepare (or the
    /// watcher) cannot interleave two swaps of the same volume.
    write_lock: Arc<Mutex<()>>,
}

impl VolumeManager {
    /// `root` is <engine root>/pods; each pod's volumes live under
    /// `<root>/<pod uid>/volumes/<plugin>/<name>`.
    pub fn new(client: Client, root: PathBuf) -> Self {
        Self {
            client,
            root,
            write_lock: Arc::default(),
        }
    }

    /// Materialises every volume of the pod. Idempotent: calling it again (after an
    /// agent restart, or to retry a failed volume) reuses what exists.
    pub async fn prepare(&self, pod: &Pod) -> Result<PodVolumes, VolumeError> {
        let pod_dir = self.pod_dir(pod_uid(pod)?)?;
        let mut prepared = PodVolumes::default();
        for volume in pod_volumes(pod) {
            let ready = self.prepare_volume(pod, &pod_dir, volume).await?;
            prepared.volumes.insert(volume.name.clone(), ready);
        }
        Ok(prepared)
    }

    /// The bind mounts for one container's volumeMounts (subPath, readOnly), in the
    /// runtime's terms. A subPath of a writable volume is created if missing (as
    /// the kubelet does) and must not resolve outside its volume; this does a few
    /// metadata syscalls on the caller's thread, one per subPath.
    pub fn mounts_for(
        &self,
        volumes: &PodVolumes,
        container: &Container,
    ) -> Result<Vec<BindMount>, VolumeError> {
        container
            .volume_mounts
            .iter()
            .flatten()
            .map(|mount| bind_mount(volumes, container, mount))
            .collect()
    }

    /// Re-syncs the contents of configMap/secret/projected/downwardAPI volumes (call
    /// periodically and on change); unchanged volumes are not rewritten. One
    /// failing volume does not hold back the others; the first error is returned.
    pub async fn refresh(&self, pod: &Pod, volumes: &PodVolumes) -> Result<(), VolumeError> {
        let mut first_error = None;
        for volume in pod_volumes(pod) {
            let Some(prepared) = volumes.get(&volume.name) else {
                continue;
            };
            if !prepared.kind.is_projected() {
                continue;
            }
            let written = self
                .write_projected(pod, volume, prepared, Write::Refresh)
                .await;
            if let Err(error) = written {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Unmounts and deletes everything under `<root>/<pod uid>`; idempotent.
    pub async fn cleanup(&self, pod_uid: &str) -> Result<(), VolumeError> {
        let pod_dir = self.pod_dir(pod_uid)?;
        let context = format!("removing {}", pod_dir.display());
        let lock = Arc::clone(&self.write_lock);
        tokio::task::spawn_blocking(move || {
            // Under the write lock, so a concurrent refresh cannot recreate what
            // is being removed.
            let _guard = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            unmount_and_remove(&pod_dir)
        })
        .await?
        .map_err(io_error(context))
    }

    /// `<root>/<uid>`: the pod's directory, where its volumes and the other
    /// per-pod files the agent manages (/etc/hosts, resolv.conf) live, all
    /// removed by [`VolumeManager::cleanup`].
    pub fn pod_dir(&self, uid: &str) -> Result<PathBuf, VolumeError> {
        pod_dir(&self.root, uid)
    }

    /// The uids of the pods that have a directory on this node, so that those of
    /// pods deleted while no agent ran can be cleaned up.
    pub async fn pods_on_disk(&self) -> Result<Vec<String>, VolumeError> {
        let root = self.root.clone();
        let context = format!("listing {}", root.display());
        tokio::task::spawn_blocking(move || -> io::Result<Vec<String>> {
            let entries = match std::fs::read_dir(&root) {
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                entries => entries?,
            };
            let mut uids = Vec::new();
            for entry in entries {
                let entry = entry?;
                if entry.file_type()?.is_dir()
                    && let Ok(uid) = entry.file_name().into_string()
                {
                    uids.push(uid);
                }
            }
            Ok(uids)
        })
        .await?
        .map_err(io_error(context))
    }

    async fn prepare_volume(
        &self,
        pod: &Pod,
        pod_dir: &Path,
        volume: &Volume,
    ) -> Result<PreparedVolume, VolumeError> {
        // The name becomes a directory name: one plain segment (DNS labels are).
        validate_key(&volume.name)?;
        let under_pod = |kind: VolumeKind| PreparedVolume {
            path: pod_dir
                .join("volumes")
                .join(kind.plugin_dir().unwrap_or_default())
                .join(&volume.name),
            read_only: true,
            kind,
        };
        if let Some(empty_dir) = &volume.empty_dir {
            let prepared = PreparedVolume {
                read_only: false,
                ..under_pod(VolumeKind::EmptyDir)
            };
            prepare_empty_dir(&prepared.path, empty_dir).await?;
            return Ok(prepared);
        }
        if let Some(host_path) = &volume.host_path {
            return prepare_host_path(host_path, false, VolumeKind::HostPath).await;
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            return self.prepare_claim(pod, claim).await;
        }
        let kind = if volume.config_map.is_some() {
            VolumeKind::ConfigMap
        } else if volume.secret.is_some() {
            VolumeKind::Secret
        } else if volume.downward_api.is_some() {
            VolumeKind::DownwardApi
        } else if volume.projected.is_some() {
            VolumeKind::Projected
        } else {
            return Err(VolumeError::UnsupportedVolumeType {
                volume: volume.name.clone(),
                kind: source_field_name(volume),
            });
        };
        let prepared = under_pod(kind);
        self.write_projected(pod, volume, &prepared, Write::Prepare)
            .await?;
        Ok(prepared)
    }

    /// Builds a projected-kind volume's files from the API and writes them.
    async fn write_projected(
        &self,
        pod: &Pod,
        volume: &Volume,
        prepared: &PreparedVolume,
        write: Write,
    ) -> Result<(), VolumeError> {
        let projector = Projector::new(&self.client, pod);
        let payload = if let Some(source) = &volume.config_map {
            projector.config_map(source).await?
        } else if let Some(source) = &volume.secret {
            projector.secret(source).await?
        } else if let Some(source) = &volume.downward_api {
            let items = source.items.as_deref().unwrap_or_default();
            projector.downward_api(items, source.default_mode).await?
        } else if let Some(source) = &volume.projected {
            projector.projected(source).await?
        } else {
            return Ok(());
        };
        // Secrets (and projections, which may hold them) never touch the disk.
        let on_tmpfs = matches!(prepared.kind, VolumeKind::Secret | VolumeKind::Projected);
        let path = prepared.path.clone();
        let lock = Arc::clone(&self.write_lock);
        let context = format!("writing volume {}", path.display());
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let _guard = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match write {
                Write::Prepare => {
                    create_volume_dir(&path, PROJECTED_DIR_MODE)?;
                    if on_tmpfs {
                        mount_tmpfs(&path, None, PROJECTED_DIR_MODE)?;
                    }
                }
                // A pod cleaned up meanwhile stays cleaned up.
                Write::Refresh if !path.is_dir() => return Ok(()),
                Write::Refresh => {}
            }
            AtomicWriter::new(&path).write(&payload).map(drop)
        })
        .await?
        .map_err(io_error(context))
    }

    /// Resolves a claim to its bound PersistentVolume's host path.
    async fn prepare_claim(
        &self,
        pod: &Pod,
        source: &PersistentVolumeClaimVolumeSource,
    ) -> Result<PreparedVolume, VolumeError> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let claim_name = &source.claim_name;
        let claim = claims
            .get_opt(claim_name)
            .await?
            .ok_or_else(|| VolumeError::ClaimNotFound(claim_name.clone()))?;
        let volume_name = claim
            .spec
            .as_ref()
            .and_then(|spec| spec.volume_name.clone())
            .filter(|name| !name.is_empty())
            .ok_or_else(|| VolumeError::ClaimNotBound(claim_name.clone()))?;
        let bad_volume = |reason| VolumeError::BadPersistentVolume {
            volume: volume_name.clone(),
            claim: claim_name.clone(),
            reason,
        };
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let volume = volumes
            .get_opt(&volume_name)
            .await?
            .ok_or_else(|| bad_volume("not found"))?;
        let provisioned = reclaimer::is_local_path_volume(&volume);
        let spec = volume.spec.unwrap_or_default();
        let claim_ref_uid = spec.claim_ref.as_ref().and_then(|r| r.uid.as_ref());
        if let (Some(bound_to), Some(uid)) = (claim_ref_uid, claim.metadata.uid.as_ref())
            && bound_to != uid
        {
            return Err(bad_volume("bound to another claim"));
        }
        let read_only = source.read_only.unwrap_or(false);
        let kind = VolumeKind::PersistentVolumeClaim;
        if let Some(host_path) = &spec.host_path {
            if provisioned {
                create_provisioned_dir(&host_path.path).await?;
            }
            return prepare_host_path(host_path, read_only, kind).await;
        }
        if let Some(local) = &spec.local {
            // A local volume must already exist, as a directory (or a block device,
            // which bind-mounting does not support yet).
            let host_path = HostPathVolumeSource {
                path: local.path.clone(),
                type_: Some("Directory".to_owned()),
            };
            return prepare_host_path(&host_path, read_only, kind).await;
        }
        Err(bad_volume(
            "only hostPath and local PersistentVolumes are supported",
        ))
    }
}

/// Creates a provisioned volume's directory world-writable on first use, as
/// rancher's local-path provisioner does, so containers running as any user can
/// write to their claim; an existing directory is left as it is.
async fn create_provisioned_dir(path: &str) -> Result<(), VolumeError> {
    let path = PathBuf::from(path);
    let context = format!("creating volume directory {}", path.display());
    tokio::task::spawn_blocking(move || match std::fs::symlink_metadata(&path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            create_volume_dir(&path, EMPTY_DIR_MODE)
        }
        _ => Ok(()),
    })
    .await?
    .map_err(io_error(context))
}

/// `<root>/<uid>`, refusing a uid that is not a single, ordinary path segment.
fn pod_dir(root: &Path, uid: &str) -> Result<PathBuf, VolumeError> {
    let is_one_segment = !uid.is_empty() && !uid.starts_with('.') && !uid.contains(['/', '\0']);
    if !is_one_segment {
        return Err(VolumeError::InvalidUid(uid.to_owned()));
    }
    Ok(root.join(uid))
}

fn pod_uid(pod: &Pod) -> Result<&str, VolumeError> {
    pod.metadata.uid.as_deref().ok_or(VolumeError::MissingUid)
}

fn pod_volumes(pod: &Pod) -> impl Iterator<Item = &Volume> {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.volumes.as_ref())
        .into_iter()
        .flatten()
}

/// The name of the source field a volume sets (`nfs`, `csi`, ...), for errors.
fn source_field_name(volume: &Volume) -> String {
    serde_json::to_value(volume)
        .ok()
        .and_then(|value| {
            value
                .as_object()?
                .keys()
                .find(|key| *key != "name")
                .cloned()
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

async fn prepare_empty_dir(path: &Path, source: &EmptyDirVolumeSource) -> Result<(), VolumeError> {
    let in_memory = match source.medium.as_deref().unwrap_or_default() {
        "" => false,
        "Memory" => true,
        _ => {
            return Err(VolumeError::Unsupported(
                "emptyDir media other than \"\" and Memory",
            ));
        }
    };
    let size_bytes = match (&source.size_limit, in_memory) {
        (Some(limit), true) => Some(Quantity::parse(&limit.0)?.ceil_units())
            .filter(|size| *size > 0)
            .map(i128::unsigned_abs),
        _ => None,
    };
    let path = path.to_owned();
    let context = format!("preparing emptyDir {}", path.display());
    tokio::task::spawn_blocking(move || {
        create_volume_dir(&path, EMPTY_DIR_MODE)?;
        if in_memory {
            mount_tmpfs(&path, size_bytes, EMPTY_DIR_MODE)?;
        }
        Ok(())
    })
    .await?
    .map_err(io_error(context))
}

async fn prepare_host_path(
    source: &HostPathVolumeSource,
    read_only: bool,
    kind: VolumeKind,
) -> Result<PreparedVolume, VolumeError> {
    let host_path_error = |reason: String| VolumeError::HostPath {
        path: source.path.clone(),
        reason,
    };
    let path = PathBuf::from(&source.path);
    if !path.is_absolute() {
        return Err(host_path_error("must be an absolute path".to_owned()));
    }
    let path_type = HostPathType::parse(source.type_.as_deref()).ok_or_else(|| {
        host_path_error(format!(
            "unknown type {:?}",
            source.type_.as_deref().unwrap_or_default()
        ))
    })?;
    let checked = path.clone();
    tokio::task::spawn_blocking(move || check_host_path(&checked, path_type))
        .await?
        .map_err(host_path_error)?;
    Ok(PreparedVolume {
        path,
        read_only,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pod worker runs these on a multi-threaded runtime, so they must be Send
    /// for any borrow (checked at compile time).
    #[allow(dead_code)]
    fn operations_are_send(manager: &VolumeManager, pod: &Pod, volumes: &PodVolumes) {
        fn assert_send<T: Send>(_: T) {}
        assert_send(manager.prepare(pod));
        assert_send(manager.refresh(pod, volumes));
        assert_send(manager.cleanup("uid"));
    }

    #[test]
    fn bad_uids_are_refused() {
        for uid in ["", "..", ".", "a/b", "../etc"] {
            assert!(pod_dir(Path::new("/pods"), uid).is_err(), "{uid:?}");
        }
        assert_eq!(
            pod_dir(Path::new("/pods"), "0b1c").unwrap(),
            Path::new("/pods/0b1c")
        );
    }
}
