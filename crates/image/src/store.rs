//! The image store: the public face of this crate.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::ImageConfiguration;
use serde_json::json;

use crate::blobs::BlobStore;
use crate::db::{Database, ImageRecord, Records, open_lock};
use crate::digest::{Digest, ImageId};
use crate::error::{ImageError, Result};
use crate::manifest::{Document, Manifest};
use crate::reference::{ImageReference, familiar, split_tag};
use crate::snapshot::{Snapshots, chain_ids};

/// Answers "is a container using this image?", so `rmi` and `prune` can refuse.
/// The container runtime installs it with [`ImageStore::with_usage_check`].
pub type UsageCheck = Arc<dyn Fn(&ImageId) -> bool + Send + Sync>;

/// Images on disk under `<root>/images`: blobs, the references database and layer snapshots.
///
/// Cheap to clone; every method is safe to call from several processes at once.
#[derive(Clone)]
pub struct ImageStore {
    dir: PathBuf,
    pub(crate) blobs: BlobStore,
    pub(crate) db: Database,
    snapshots: Snapshots,
    usage: Option<UsageCheck>,
}

/// A local image ready to run: what the runtime needs to build a container.
#[derive(Clone, Debug)]
pub struct Image {
    /// The config digest.
    pub id: ImageId,
    /// Docker-style names (`busybox:latest`, `localhost:5000/x:1`).
    pub references: Vec<String>,
    /// `name@sha256:…` of the manifests this image was pulled or pushed as.
    pub repo_digests: Vec<String>,
    /// The platform manifest the image is stored with.
    pub manifest: Digest,
    /// Entrypoint, Cmd, Env, User, WorkingDir… as the image author set them.
    pub config: ImageConfiguration,
    /// Snapshot directories, bottom layer first; stack them as overlay lowerdirs.
    pub layers: Vec<PathBuf>,
    /// Uncompressed size of the image's layers in bytes.
    pub size: u64,
}

/// One row of `gantry images`.
#[derive(Clone, Debug)]
pub struct ImageSummary {
    /// The config digest.
    pub id: ImageId,
    /// Familiar `repository:tag` names; empty for a dangling image.
    pub repo_tags: Vec<String>,
    /// Familiar `repository@sha256:…` names (an image pulled by digest has only these).
    pub repo_digests: Vec<String>,
    /// RFC 3339 creation time from the image config, if the author recorded one.
    pub created: Option<String>,
    /// Uncompressed size of the layers in bytes.
    pub size: u64,
}

/// What `remove` did, in the order Docker reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removed {
    /// A name (`repo:tag` or `repo@digest`) no longer points at the image.
    Untagged(String),
    /// The image itself is gone.
    Deleted(ImageId),
}

/// What `prune` removed.
#[derive(Clone, Debug, Default)]
pub struct PruneReport {
    /// Images removed.
    pub deleted: Vec<ImageId>,
    /// Bytes freed: stored blobs plus unpacked layers.
    pub reclaimed_bytes: u64,
}

impl ImageStore {
    /// Opens (creating if needed) the store under `<root>/images`.
    pub fn open(root: &Path) -> Result<ImageStore> {
        let dir = root.join("images");
        Ok(ImageStore {
            blobs: BlobStore::open(&dir)?,
            db: Database::open(&dir),
            snapshots: Snapshots::open(&dir)?,
            dir,
            usage: None,
        })
    }

    /// Makes `remove` and `prune` spare images that containers use.
    pub fn with_usage_check(mut self, check: UsageCheck) -> ImageStore {
        self.usage = Some(check);
        self
    }

    fn in_use(&self, id: &ImageId) -> bool {
        self.usage.as_ref().is_some_and(|check| check(id))
    }

    /// Holds off garbage collection while new content is being written.
    pub(crate) fn lease(&self) -> Result<File> {
        let lock = open_lock(&self.dir.join("gc.lock"))?;
        lock.lock_shared()
            .map_err(ImageError::io("locking the image store"))?;
        Ok(lock)
    }

    /// Finds a local image by name or ID and makes sure its snapshots exist.
    pub fn resolve(&self, reference_or_id: &str) -> Result<Image> {
        let _lease = self.lease()?;
        let record = self.db.read()?.lookup(reference_or_id)?.clone();
        let manifest = self.manifest(&record.manifest)?;
        let config_bytes = self.blobs.read(&manifest.config.digest)?;
        let config = parse_config(&config_bytes)?;
        let layers = self.ensure_snapshots(&manifest, &config)?;
        Ok(Image {
            id: record.id,
            references: record.repo_tags.iter().map(|t| familiar(t)).collect(),
            repo_digests: record.repo_digests.iter().map(|t| familiar(t)).collect(),
            manifest: record.manifest,
            config,
            layers,
            size: record.size,
        })
    }

    pub(crate) fn manifest(&self, digest: &Digest) -> Result<Manifest> {
        match Document::parse(&self.blobs.read(digest)?)? {
            Document::Image { manifest, .. } => Ok(manifest),
            Document::Index(_) => Err(ImageError::InvalidContent(format!(
                "{digest} is an index, not an image manifest"
            ))),
        }
    }

    fn ensure_snapshots(
        &self,
        manifest: &Manifest,
        config: &ImageConfiguration,
    ) -> Result<Vec<PathBuf>> {
        let diff_ids = diff_ids(config)?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::InvalidContent(format!(
                "the manifest lists {} layers but the config {} diff IDs",
                manifest.layers.len(),
                diff_ids.len()
            )));
        }
        let chains = chain_ids(&diff_ids);
        manifest
            .layers
            .iter()
            .zip(&diff_ids)
            .zip(&chains)
            .map(|((layer, diff_id), chain)| {
                if !self.blobs.contains(&layer.digest) {
                    return Err(ImageError::NotFound(format!("layer {}", layer.digest)));
                }
                self.snapshots
                    .ensure(chain, diff_id, &self.blobs.path(&layer.digest))
            })
            .collect()
    }

    /// Records an image whose config and layer blobs are already stored: stores the
    /// manifest, unpacks and verifies the layers, then points `tags` at it.
    pub(crate) fn register(
        &self,
        manifest_bytes: &[u8],
        tags: &[String],
        repo_digest: Option<String>,
    ) -> Result<ImageId> {
        let Document::Image {
            manifest,
            media_type,
        } = Document::parse(manifest_bytes)?
        else {
            return Err(ImageError::InvalidContent(
                "expected an image manifest, got an index".into(),
            ));
        };
        let config = parse_config(&self.blobs.read(&manifest.config.digest)?)?;
        self.ensure_snapshots(&manifest, &config)?;
        let manifest_digest = self.blobs.put(manifest_bytes)?;
        let id = manifest.config.digest.clone();
        let size = chain_ids(&diff_ids(&config)?)
            .iter()
            .zip(&manifest.layers)
            .map(|(chain, layer)| self.snapshots.size(chain).unwrap_or(layer.size))
            .sum();
        self.db.update(|records| {
            let record = records
                .images
                .entry(id.clone())
                .or_insert_with(|| ImageRecord {
                    id: id.clone(),
                    manifest: manifest_digest.clone(),
                    manifest_media_type: media_type.clone(),
                    repo_tags: BTreeSet::new(),
                    repo_digests: BTreeSet::new(),
                    size,
                });
            record.manifest = manifest_digest.clone();
            record.manifest_media_type = media_type.clone();
            record.size = size;
            if let Some(pinned) = repo_digest {
                record.repo_digests.insert(pinned);
            }
            for tag in tags {
                records.set_tag(&id, tag)?;
            }
            Ok(())
        })?;
        Ok(id)
    }

    /// All local images, newest first.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let records = self.db.read()?;
        let mut summaries: Vec<ImageSummary> = records
            .images
            .values()
            .map(|record| ImageSummary {
                id: record.id.clone(),
                repo_tags: record.repo_tags.iter().map(|t| familiar(t)).collect(),
                repo_digests: record.repo_digests.iter().map(|d| familiar(d)).collect(),
                created: self
                    .blobs
                    .read(&record.id)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                    .and_then(|config| config.get("created")?.as_str().map(str::to_owned)),
                size: record.size,
            })
            .collect();
        summaries.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        Ok(summaries)
    }

    /// Gives the image `source` the extra name `target`, like `docker tag`.
    pub fn tag(&self, source: &str, target: &str) -> Result<()> {
        let target_name = tag_name(target)?;
        self.db.update(|records| {
            let id = records.lookup(source)?.id.clone();
            records.set_tag(&id, &target_name)
        })
    }

    /// Removes a name, or the image itself when it is addressed by ID or by its last name,
    /// then frees content nothing references any more.
    pub fn remove(&self, reference_or_id: &str, force: bool) -> Result<Vec<Removed>> {
        let removed = self
            .db
            .update(|records| self.remove_record(records, reference_or_id, force))?;
        if removed.iter().any(|r| matches!(r, Removed::Deleted(_))) {
            self.collect_garbage()?;
        }
        Ok(removed)
    }

    fn remove_record(
        &self,
        records: &mut Records,
        reference_or_id: &str,
        force: bool,
    ) -> Result<Vec<Removed>> {
        let record = records.lookup(reference_or_id)?.clone();
        let named = ImageReference::parse(reference_or_id)
            .ok()
            .and_then(|r| r.tagged_name())
            .filter(|name| record.repo_tags.contains(name));
        if let Some(name) = &named
            && record.repo_tags.len() > 1
        {
            if let Some(r) = records.images.get_mut(&record.id) {
                r.repo_tags.remove(name);
            }
            return Ok(vec![Removed::Untagged(familiar(name))]);
        }
        if named.is_none() && record.repo_tags.len() > 1 && !force {
            return Err(ImageError::Conflict(format!(
                "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                record.id.short()
            )));
        }
        if self.in_use(&record.id) && !force {
            return Err(ImageError::Conflict(format!(
                "unable to remove {reference_or_id} (must force) - image {} is being used by a container",
                record.id.short()
            )));
        }
        records.images.remove(&record.id);
        let mut removed: Vec<Removed> = record
            .repo_tags
            .iter()
            .map(|t| Removed::Untagged(familiar(t)))
            .collect();
        removed.extend(
            record
                .repo_digests
                .iter()
                .map(|d| Removed::Untagged(familiar(d))),
        );
        removed.push(Removed::Deleted(record.id));
        Ok(removed)
    }

    /// Removes dangling images (all unused images with `all`) and unreferenced content.
    pub fn prune(&self, all: bool) -> Result<PruneReport> {
        let deleted = self.db.update(|records| {
            let victims: Vec<ImageId> = records
                .images
                .values()
                .filter(|r| (all || r.repo_tags.is_empty()) && !self.in_use(&r.id))
                .map(|r| r.id.clone())
                .collect();
            for id in &victims {
                records.images.remove(id);
            }
            Ok(victims)
        })?;
        let reclaimed_bytes = self.collect_garbage()?;
        Ok(PruneReport {
            deleted,
            reclaimed_bytes,
        })
    }

    /// Deletes blobs and snapshots no recorded image references; returns the bytes freed.
    fn collect_garbage(&self) -> Result<u64> {
        let lock = open_lock(&self.dir.join("gc.lock"))?;
        lock.lock()
            .map_err(ImageError::io("locking the image store"))?;
        let records = self.db.read()?;
        let mut keep_blobs = HashSet::new();
        let mut keep_snapshots = HashSet::new();
        for record in records.images.values() {
            keep_blobs.insert(record.manifest.clone());
            let manifest = self.manifest(&record.manifest)?;
            keep_blobs.insert(manifest.config.digest.clone());
            keep_blobs.extend(manifest.layers.iter().map(|l| l.digest.clone()));
            let config = parse_config(&self.blobs.read(&manifest.config.digest)?)?;
            keep_snapshots.extend(chain_ids(&diff_ids(&config)?));
        }
        let mut reclaimed = 0;
        for digest in self.blobs.list()? {
            if !keep_blobs.contains(&digest) {
                reclaimed += self.blobs.remove(&digest)?;
            }
        }
        reclaimed += self.snapshots.retain(&keep_snapshots)?;
        // Nothing is writing (we hold the exclusive lock), so leftovers are from crashes.
        if let Ok(entries) = std::fs::read_dir(self.blobs.tmp_dir()) {
            for entry in entries.filter_map(|e| e.ok()) {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
        Ok(reclaimed)
    }

    /// Docker-compatible `image inspect` JSON.
    pub fn inspect(&self, reference_or_id: &str) -> Result<serde_json::Value> {
        let image = self.resolve(reference_or_id)?;
        let config: serde_json::Value = serde_json::from_slice(&self.blobs.read(&image.id)?)
            .map_err(ImageError::json("parsing image config"))?;
        let field = |name: &str| config.get(name).cloned().unwrap_or(serde_json::Value::Null);
        let lower: Vec<String> = image
            .layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        Ok(json!({
            "Id": image.id,
            "RepoTags": image.references,
            "RepoDigests": image.repo_digests,
            "Parent": "",
            "Comment": config.get("comment").cloned().unwrap_or(json!("")),
            "Created": field("created"),
            "Author": config.get("author").cloned().unwrap_or(json!("")),
            "Config": field("config"),
            "Architecture": field("architecture"),
            "Variant": config.get("variant").cloned(),
            "Os": field("os"),
            "Size": image.size,
            "GraphDriver": {"Name": "overlay", "Data": {"LowerDir": lower.join(":")}},
            "RootFS": {"Type": "layers", "Layers": field("rootfs").get("diff_ids").cloned().unwrap_or(json!([]))},
            "Metadata": {"Manifest": image.manifest},
        }))
    }

    /// The fully-qualified names and manifest digest an image is known by.
    pub(crate) fn record(&self, reference_or_id: &str) -> Result<ImageRecord> {
        Ok(self.db.read()?.lookup(reference_or_id)?.clone())
    }
}

/// The fully-qualified `registry/repo:tag` a user-given name stands for.
pub(crate) fn tag_name(text: &str) -> Result<String> {
    let reference = ImageReference::parse(text)?;
    reference
        .tagged_name()
        .ok_or_else(|| ImageError::InvalidReference {
            reference: text.to_owned(),
            reason: "a digest cannot be used as a tag".into(),
        })
}

pub(crate) fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration> {
    serde_json::from_slice(bytes).map_err(ImageError::json("parsing image config"))
}

pub(crate) fn diff_ids(config: &ImageConfiguration) -> Result<Vec<Digest>> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| Digest::parse(d))
        .collect()
}

/// `repository` and `tag` columns for a familiar name.
pub fn repository_and_tag(familiar_name: &str) -> (String, String) {
    let (name, tag) = split_tag(familiar_name);
    (name.to_owned(), tag.to_owned())
}

impl ImageStore {
    /// Size of a stored blob, e.g. a manifest after a push.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        self.blobs.size(digest)
    }
}
