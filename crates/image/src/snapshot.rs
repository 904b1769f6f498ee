//! Layer snapshots: each layer unpacked once, keyed by its chain ID.
//!
//! `snapshots/<chain-id hex>/fs` holds the layer's own changes (an overlayfs
//! diff dir). The chain ID names the layer *and everything below it*, so two
//! images sharing a base share its snapshots. A snapshot directory only
//! appears, by rename, once it is completely unpacked and verified.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::layer::{open_layer, unpack_layer};

const TMP_PREFIX: &str = ".tmp-";
/// Beside `fs`: the uncompressed size of the layer, what Docker reports as image size.
const SIZE_FILE: &str = "size";

/// The chain IDs of a stack of layers, bottom first (OCI image spec, "ChainID").
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut chain: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

#[derive(Clone, Debug)]
pub(crate) struct Snapshots {
    dir: PathBuf,
}

impl Snapshots {
    pub(crate) fn open(images_dir: &Path) -> Result<Snapshots> {
        let dir = images_dir.join("snapshots");
        fs::create_dir_all(&dir).map_err(ImageError::io(format!("creating {}", dir.display())))?;
        Ok(Snapshots { dir })
    }

    pub(crate) fn fs_dir(&self, chain_id: &Digest) -> PathBuf {
        self.dir.join(chain_id.hex()).join("fs")
    }

    /// The uncompressed size of an unpacked layer, if recorded.
    pub(crate) fn size(&self, chain_id: &Digest) -> Option<u64> {
        fs::read_to_string(self.dir.join(chain_id.hex()).join(SIZE_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Unpacks `layer_blob` as the snapshot `chain_id` unless it already exists,
    /// checking that its uncompressed content hashes to `diff_id`.
    pub(crate) fn ensure(
        &self,
        chain_id: &Digest,
        diff_id: &Digest,
        layer_blob: &Path,
    ) -> Result<PathBuf> {
        let fs_dir = self.fs_dir(chain_id);
        if fs_dir.is_dir() {
            return Ok(fs_dir);
        }
        let staging = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempdir_in(&self.dir)
            .map_err(ImageError::io("creating a snapshot directory"))?;
        let staging_fs = staging.path().join("fs");
        fs::create_dir(&staging_fs).map_err(ImageError::io("creating a snapshot directory"))?;
        let blob = fs::File::open(layer_blob).map_err(ImageError::io(format!(
            "opening layer {}",
            layer_blob.display()
        )))?;
        let (actual, size) = unpack_layer(open_layer(blob)?, &staging_fs)?;
        if actual != *diff_id {
            return Err(ImageError::DigestMismatch {
                what: "layer diff ID".into(),
                expected: diff_id.to_string(),
                actual: actual.to_string(),
            });
        }
        fs::write(staging.path().join(SIZE_FILE), size.to_string())
            .map_err(ImageError::io("recording the snapshot size"))?;
        let staging = staging.keep();
        match fs::rename(&staging, self.dir.join(chain_id.hex())) {
            Ok(()) => Ok(fs_dir),
            // Another process unpacked the same layer first; theirs is as good as ours.
            Err(e) if fs_dir.is_dir() => {
                tracing::debug!("snapshot {chain_id} appeared concurrently: {e}");
                let _ = fs::remove_dir_all(&staging);
                Ok(fs_dir)
            }
            Err(source) => {
                let _ = fs::remove_dir_all(&staging);
                Err(ImageError::Io {
                    context: format!("storing snapshot {chain_id}"),
                    source,
                })
            }
        }
    }

    /// Removes every snapshot not in `keep` and any abandoned staging directory,
    /// returning the (uncompressed) bytes freed. Callers must hold the store's
    /// exclusive garbage-collection lock.
    pub(crate) fn retain(&self, keep: &std::collections::HashSet<Digest>) -> Result<u64> {
        let mut freed = 0;
        let entries = fs::read_dir(&self.dir).map_err(ImageError::io("listing snapshots"))?;
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let unused = name.starts_with(TMP_PREFIX)
                || Digest::parse(&format!("sha256:{name}"))
                    .is_ok_and(|chain| !keep.contains(&chain));
            if unused {
                let size = Digest::parse(&format!("sha256:{name}"))
                    .ok()
                    .and_then(|chain| self.size(&chain))
                    .unwrap_or(0);
                match fs::remove_dir_all(entry.path()) {
                    Ok(()) => freed += size,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(ImageError::Io {
                            context: format!("removing snapshot {name}"),
                            source,
                        });
                    }
                }
            }
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], Digest::of(format!("{a} {b}").as_bytes()));
    }

    /// An overlay mount that is unmounted even when the test fails.
    struct OverlayMount(PathBuf);

    impl OverlayMount {
        fn new(lowerdirs: &[PathBuf], target: &Path) -> std::io::Result<OverlayMount> {
            // lowerdir lists the top layer first.
            let lower: Vec<String> = lowerdirs
                .iter()
                .rev()
                .map(|p| p.display().to_string())
                .collect();
            let options = format!("lowerdir={}", lower.join(":"));
            nix::mount::mount(
                Some("overlay"),
                target,
                Some("overlay"),
                nix::mount::MsFlags::MS_RDONLY,
                Some(options.as_str()),
            )
            .map_err(std::io::Error::from)?;
            Ok(OverlayMount(target.to_owned()))
        }
    }

    impl Drop for OverlayMount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            builder.append_data(&mut header, path, *content).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn stacked_snapshots_hide_whited_out_files_in_a_real_overlay() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = Snapshots::open(dir.path()).unwrap();
        let lower = layer(&[
            ("etc/motd", b"hi"),
            ("etc/keep", b"k"),
            ("var/cache/old", b"o"),
        ]);
        let upper = layer(&[
            ("etc/.wh.motd", b""),
            ("var/cache/.wh..wh..opq", b""),
            ("var/cache/new", b"n"),
        ]);
        let diff_ids = [Digest::of(&lower), Digest::of(&upper)];
        let chains = chain_ids(&diff_ids);
        let mut fs_dirs = Vec::new();
        for ((bytes, diff_id), chain) in [&lower, &upper].iter().zip(&diff_ids).zip(&chains) {
            let blob = dir.path().join(diff_id.hex());
            fs::write(&blob, bytes).unwrap();
            fs_dirs.push(snapshots.ensure(chain, diff_id, &blob).unwrap());
        }
        // Unpacked once: a second ensure finds it.
        assert_eq!(
            snapshots
                .ensure(&chains[0], &diff_ids[0], Path::new("/nonexistent"))
                .unwrap(),
            fs_dirs[0]
        );

        let target = dir.path().join("merged");
        fs::create_dir(&target).unwrap();
        let mount =
            OverlayMount::new(&fs_dirs, &target).expect("mounting overlay (tests run as root)");
        assert!(
            !target.join("etc/motd").exists(),
            "whiteout did not hide the lower file"
        );
        assert_eq!(fs::read(target.join("etc/keep")).unwrap(), b"k");
        assert!(
            !target.join("var/cache/old").exists(),
            "opaque dir did not hide the lower content"
        );
        assert_eq!(fs::read(target.join("var/cache/new")).unwrap(), b"n");
        drop(mount);

        let keep = std::iter::once(chains[0].clone()).collect();
        assert_eq!(snapshots.retain(&keep).unwrap(), upper.len() as u64);
        assert!(fs_dirs[0].is_dir() && !fs_dirs[1].exists());
    }

    #[test]
    fn a_layer_whose_content_does_not_match_its_diff_id_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = Snapshots::open(dir.path()).unwrap();
        let bytes = layer(&[("a", b"a")]);
        let blob = dir.path().join("blob");
        fs::write(&blob, &bytes).unwrap();
        let wrong = Digest::of(b"not this");
        let error = snapshots.ensure(&wrong, &wrong, &blob).unwrap_err();
        assert!(matches!(error, ImageError::DigestMismatch { .. }));
        assert_eq!(
            fs::read_dir(dir.path().join("snapshots")).unwrap().count(),
            0
        );
    }
}
