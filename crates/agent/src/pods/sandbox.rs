//! A pod's sandbox: the network namespace all of its containers join, pinned
//! at `<netns dir>/<pod uid>` so that it outlives any one container and an
//! agent restart. With the node's pod network, the namespace gets an address on
//! the bridge ([`PodNetwork::attach`]); without it, loopback only.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::network::{NetworkError, PodNetwork};

/// Why a pod's sandbox could not be set up or released.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The loopback-only namespace failed.
    #[error(transparent)]
    Namespace(#[from] gantry_runtime::Error),
    /// The pod network failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
}

/// Where pods' namespaces are pinned, and the network that wires them.
#[derive(Clone)]
pub struct Sandboxes {
    dir: PathBuf,
    network: Option<Arc<PodNetwork>>,
}

/// A pod's network as its containers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSandbox {
    /// The namespace file to join.
    pub netns: PathBuf,
    /// The pod's routable IP, when the pod network gave it one.
    pub ip: Option<IpAddr>,
}

impl Sandboxes {
    /// Loopback-only namespaces pinned under `dir`.
    pub fn new(dir: PathBuf) -> Sandboxes {
        Sandboxes { dir, network: None }
    }

    /// Namespaces made and addressed by the node's pod network, which pins
    /// them under `dir`.
    pub fn with_network(dir: PathBuf, network: Arc<PodNetwork>) -> Sandboxes {
        Sandboxes {
            dir,
            network: Some(network),
        }
    }

    fn path(&self, uid: &str) -> PathBuf {
        self.dir.join(uid)
    }

    /// The pod's sandbox, created unless an earlier agent left it pinned.
    pub async fn ensure(&self, uid: &str) -> Result<PodSandbox, SandboxError> {
        if let Some(network) = &self.network {
            let interface = network.attach(uid).await?;
            return Ok(PodSandbox {
                netns: interface.netns,
                ip: Some(IpAddr::V4(interface.ip)),
            });
        }
        let netns = self.path(uid);
        let path = netns.clone();
        tokio::task::spawn_blocking(move || {
            if !is_pinned(&path) {
                gantry_runtime::remove_network_namespace(&path)?;
                gantry_runtime::create_network_namespace(&path)?;
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(gantry_runtime::Error::Network(e.to_string())))?;
        Ok(PodSandbox { netns, ip: None })
    }

    /// Releases the pod's namespace; harmless when there is none.
    pub async fn remove(&self, uid: &str) -> Result<(), SandboxError> {
        if let Some(network) = &self.network {
            return Ok(network.detach(uid).await?);
        }
        let path = self.path(uid);
        tokio::task::spawn_blocking(move || gantry_runtime::remove_network_namespace(&path))
            .await
            .unwrap_or_else(|e| Err(gantry_runtime::Error::Network(e.to_string())))?;
        Ok(())
    }

    /// The UIDs of every pinned sandbox, to release those of pods that are gone.
    pub fn pinned(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A namespace is bind-mounted there: the file lives on another device (nsfs)
/// than its directory.
fn is_pinned(path: &Path) -> bool {
    let (Ok(file), Some(Ok(dir))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    file.dev() != dir.dev()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sandboxes_are_created_once_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let sandboxes = Sandboxes::new(dir.path().join("netns"));
        let first = sandboxes.ensure("uid-1").await.unwrap();
        let inode = std::fs::metadata(&first.netns).unwrap().ino();
        let again = sandboxes.ensure("uid-1").await.unwrap();
        assert_eq!(std::fs::metadata(&again.netns).unwrap().ino(), inode);
        assert_eq!(sandboxes.pinned(), vec!["uid-1".to_owned()]);
        sandboxes.remove("uid-1").await.unwrap();
        assert!(sandboxes.pinned().is_empty());
    }
}
