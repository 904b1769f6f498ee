//! A pod's sandbox: the network namespace all of its containers join, pinned
//! at `<netns dir>/<pod uid>` so that it outlives any one container and an
//! agent restart. Until the pod network assigns addresses, it has loopback only.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where pods' namespaces are pinned.
#[derive(Clone, Debug)]
pub struct Sandboxes {
    dir: PathBuf,
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
    /// Namespaces pinned under `dir`.
    pub fn new(dir: PathBuf) -> Sandboxes {
        Sandboxes { dir }
    }

    fn path(&self, uid: &str) -> PathBuf {
        self.dir.join(uid)
    }

    /// The pod's sandbox, created unless an earlier agent left it pinned.
    pub async fn ensure(&self, uid: &str) -> gantry_runtime::Result<PodSandbox> {
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
    pub async fn remove(&self, uid: &str) -> gantry_runtime::Result<()> {
        let path = self.path(uid);
        tokio::task::spawn_blocking(move || gantry_runtime::remove_network_namespace(&path))
            .await
            .unwrap_or_else(|e| Err(gantry_runtime::Error::Network(e.to_string())))
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
