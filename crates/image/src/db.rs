//! The references database: which images exist and which names point at them.
//!
//! A small JSON file replaced atomically, guarded by an advisory file lock so
//! concurrent `gantry` processes serialise their read-modify-write cycles.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::blobs::write_atomic;
use crate::digest::{Digest, ImageId};
use crate::error::{ImageError, Result};
use crate::reference::ImageReference;

/// What the store remembers about one image.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest, as Docker defines image IDs.
    pub id: ImageId,
    /// The platform-specific manifest this image was stored with.
    pub manifest: Digest,
    /// The manifest's media type (OCI or Docker schema2), needed to push it unchanged.
    pub manifest_media_type: String,
    /// Fully-qualified `registry/repository:tag` names.
    pub repo_tags: BTreeSet<String>,
    /// Fully-qualified `registry/repository@sha256:…` names of manifests pulled or pushed.
    pub repo_digests: BTreeSet<String>,
    /// Uncompressed size of all layers, what `gantry images` shows.
    pub size: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Records {
    pub(crate) images: BTreeMap<ImageId, ImageRecord>,
}

impl Records {
    /// Points `tag` (fully qualified) at `id`, taking it away from any other image.
    pub(crate) fn set_tag(&mut self, id: &ImageId, tag: &str) -> Result<()> {
        for record in self.images.values_mut() {
            record.repo_tags.remove(tag);
        }
        let record = self
            .images
            .get_mut(id)
            .ok_or_else(|| ImageError::NotFound(id.to_string()))?;
        record.repo_tags.insert(tag.to_owned());
        Ok(())
    }

    /// Finds an image by name (`busybox`, `x:tag`, `name@sha256:…`) or by (a prefix of) its ID.
    pub(crate) fn lookup(&self, reference_or_id: &str) -> Result<&ImageRecord> {
        if let Ok(reference) = ImageReference::parse(reference_or_id) {
            let found = match (reference.digest(), reference.tagged_name()) {
                (Some(digest), _) => {
                    let pinned = format!("{}@{digest}", reference.name());
                    self.images
                        .values()
                        .find(|r| r.repo_digests.contains(&pinned) || r.manifest == digest)
                }
                (None, Some(tagged)) => {
                    self.images.values().find(|r| r.repo_tags.contains(&tagged))
                }
                (None, None) => None,
            };
            if let Some(record) = found {
                return Ok(record);
            }
        }
        self.lookup_id(reference_or_id)
            .ok_or_else(|| ImageError::NotFound(reference_or_id.to_owned()))
    }

    fn lookup_id(&self, text: &str) -> Option<&ImageRecord> {
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut matches = self.images.values().filter(|r| r.id.hex().starts_with(hex));
        let first = matches.next()?;
        matches.next().is_none().then_some(first)
    }
}

/// The on-disk database file and its lock.
#[derive(Clone, Debug)]
pub(crate) struct Database {
    path: PathBuf,
    lock_path: PathBuf,
}

impl Database {
    pub(crate) fn open(images_dir: &Path) -> Database {
        Database {
            path: images_dir.join("images.json"),
            lock_path: images_dir.join("images.lock"),
        }
    }

    /// A consistent snapshot of the records.
    pub(crate) fn read(&self) -> Result<Records> {
        let lock = open_lock(&self.lock_path)?;
        lock.lock_shared()
            .map_err(ImageError::io("locking the image database"))?;
        self.load()
    }

    /// Runs `change` on the records under an exclusive lock and saves the result if it succeeds.
    pub(crate) fn update<T>(&self, change: impl FnOnce(&mut Records) -> Result<T>) -> Result<T> {
        let lock = open_lock(&self.lock_path)?;
        lock.lock()
            .map_err(ImageError::io("locking the image database"))?;
        let mut records = self.load()?;
        let value = change(&mut records)?;
        let bytes = serde_json::to_vec_pretty(&records)
            .map_err(ImageError::json("encoding the image database"))?;
        write_atomic(&self.path, &bytes)?;
        Ok(value)
    }

    fn load(&self) -> Result<Records> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(ImageError::json(format!("reading {}", self.path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Records::default()),
            Err(source) => Err(ImageError::Io {
                context: format!("reading {}", self.path.display()),
                source,
            }),
        }
    }
}

/// Opens (creating) a lock file; the lock is released when the file is dropped.
pub(crate) fn open_lock(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(ImageError::io(format!("opening {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(content: &[u8]) -> ImageRecord {
        ImageRecord {
            id: Digest::of(content),
            manifest: Digest::of(&[content, b"m"].concat()),
            manifest_media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            repo_tags: BTreeSet::new(),
            repo_digests: BTreeSet::new(),
            size: 0,
        }
    }

    #[test]
    fn a_tag_moves_to_the_image_it_is_set_on() {
        let mut records = Records::default();
        let (a, b) = (record(b"a"), record(b"b"));
        let (a_id, b_id) = (a.id.clone(), b.id.clone());
        records.images.insert(a_id.clone(), a);
        records.images.insert(b_id.clone(), b);
        records
            .set_tag(&a_id, "docker.io/library/x:latest")
            .unwrap();
        assert_eq!(records.lookup("x").unwrap().id, a_id);
        records
            .set_tag(&b_id, "docker.io/library/x:latest")
            .unwrap();
        assert_eq!(records.lookup("x:latest").unwrap().id, b_id);
        assert!(records.images[&a_id].repo_tags.is_empty());
        assert_eq!(records.lookup(&b_id.hex()[..8]).unwrap().id, b_id);
        assert_eq!(records.lookup(b_id.as_str()).unwrap().id, b_id);
        assert!(matches!(
            records.lookup("nope"),
            Err(ImageError::NotFound(_))
        ));
    }

    #[test]
    fn concurrent_updates_are_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path());
        db.update(|r| {
            r.images.insert(Digest::of(b"x"), record(b"x"));
            Ok(())
        })
        .unwrap();
        let id = Digest::of(b"x");
        std::thread::scope(|scope| {
            for i in 0..8 {
                let (db, id) = (db.clone(), id.clone());
                scope.spawn(move || {
                    db.update(|r| r.set_tag(&id, &format!("docker.io/library/t:{i}")))
                        .unwrap()
                });
            }
        });
        assert_eq!(db.read().unwrap().images[&id].repo_tags.len(), 8);
    }
}
