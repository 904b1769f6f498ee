//! `gantry import`: a root filesystem directory becomes a one-layer image.

use std::path::Path;

use serde_json::json;

use std::fs::File;

use crate::digest::{Digest, HashingReader, HashingWriter, ImageId};
use crate::error::{ImageError, Result};
use crate::layer::{Compression, open_layer};
use crate::manifest::{
    Descriptor, Manifest, OCI_CONFIG, OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST,
    Platform,
};
use crate::store::{ImageStore, tag_name};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The container defaults an imported image gets (Docker's `import --change`).
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Default command; `/bin/sh` when empty and the tree has one.
    pub cmd: Vec<String>,
    /// Entrypoint the command is appended to.
    pub entrypoint: Vec<String>,
    /// Extra `KEY=value` variables (PATH is always set).
    pub env: Vec<String>,
    /// Directory the process starts in.
    pub working_dir: Option<String>,
    /// `user[:group]` the process runs as.
    pub user: Option<String>,
    /// Becomes the history comment, like `docker import --message`.
    pub message: Option<String>,
}

impl ImageStore {
    /// Makes a one-layer image named `name` from a root filesystem: a directory, or a
    /// tarball of one (plain, gzip or zstd), as `docker import` takes.
    pub fn import(&self, source: &Path, name: &str, options: &ImportOptions) -> Result<ImageId> {
        let tag = tag_name(name)?;
        let _lease = self.lease()?;
        let (layer, diff_id) = if source.is_dir() {
            self.layer_from_directory(source)?
        } else if source.is_file() {
            self.layer_from_tarball(source)?
        } else {
            return Err(ImageError::NotFound(format!(
                "directory or tarball {}",
                source.display()
            )));
        };
        let has_shell = source.is_dir() && std::fs::symlink_metadata(source.join("bin/sh")).is_ok();
        self.import_layer(layer, diff_id, has_shell, &tag, source, options)
    }

    /// Archives a directory as an uncompressed layer, whose digest is also its diff ID.
    fn layer_from_directory(&self, rootfs: &Path) -> Result<(Descriptor, Digest)> {
        let temp = self.blobs.new_temp()?;
        let mut builder = tar::Builder::new(HashingWriter::new(std::io::BufWriter::new(temp)));
        builder.follow_symlinks(false);
        builder
            .append_dir_all(".", rootfs)
            .and_then(|()| builder.finish())
            .map_err(ImageError::io(format!("archiving {}", rootfs.display())))?;
        let writer = builder
            .into_inner()
            .map_err(ImageError::io("archiving the root filesystem"))?;
        let (buffered, diff_id, size) = writer.finish();
        let temp = buffered.into_inner().map_err(|e| ImageError::Io {
            context: "writing the layer".into(),
            source: e.into_error(),
        })?;
        self.blobs.commit(temp, &diff_id)?;
        Ok((Descriptor::new(OCI_LAYER, diff_id.clone(), size), diff_id))
    }

    /// Stores a tarball as it is and works out its diff ID from the uncompressed stream.
    fn layer_from_tarball(&self, tarball: &Path) -> Result<(Descriptor, Digest)> {
        let context = format!("reading {}", tarball.display());
        let mut file = File::open(tarball).map_err(ImageError::io(context.clone()))?;
        let media_type =
            match Compression::sniff(&mut file).map_err(ImageError::io(context.clone()))? {
                Compression::None => OCI_LAYER,
                Compression::Gzip => OCI_LAYER_GZIP,
                Compression::Zstd => OCI_LAYER_ZSTD,
            };
        let digest = self
            .blobs
            .put_verified(&mut std::io::BufReader::new(file), None)?;
        let (diff_id, _) = HashingReader::new(open_layer(self.blobs.open_blob(&digest)?)?)
            .finish()
            .map_err(ImageError::io(context))?;
        Ok((
            Descriptor::new(media_type, digest.clone(), self.blobs.size(&digest)?),
            diff_id,
        ))
    }

    fn import_layer(
        &self,
        layer: Descriptor,
        diff_id: Digest,
        has_shell: bool,
        tag: &str,
        source: &Path,
        options: &ImportOptions,
    ) -> Result<ImageId> {
        let created = jiff::Timestamp::now().to_string();
        let mut env = vec![DEFAULT_PATH.to_owned()];
        env.extend(options.env.iter().cloned());
        let cmd = if options.cmd.is_empty() && options.entrypoint.is_empty() && has_shell {
            vec!["/bin/sh".to_owned()]
        } else {
            options.cmd.clone()
        };
        let mut container_config = json!({ "Env": env });
        let settings = [
            ("Cmd", (!cmd.is_empty()).then(|| json!(cmd))),
            (
                "Entrypoint",
                (!options.entrypoint.is_empty()).then(|| json!(options.entrypoint)),
            ),
            ("WorkingDir", options.working_dir.as_ref().map(|w| json!(w))),
            ("User", options.user.as_ref().map(|u| json!(u))),
        ];
        for (key, value) in settings {
            if let Some(value) = value {
                container_config[key] = value;
            }
        }
        let host = Platform::host();
        let config = json!({
            "created": created,
            "architecture": host.architecture,
            "os": host.os,
            "config": container_config,
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{
                "created": created,
                "created_by": format!("gantry import {}", source.display()),
                "comment": options.message.clone().unwrap_or_else(|| "Imported from a directory".into()),
            }],
        });
        let config_bytes =
            serde_json::to_vec(&config).map_err(ImageError::json("encoding image config"))?;
        let config_digest = self.blobs.put(&config_bytes)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            config: Descriptor::new(OCI_CONFIG, config_digest, config_bytes.len() as u64),
            layers: vec![layer],
        };
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(ImageError::json("encoding manifest"))?;
        self.register(&manifest_bytes, &[tag.to_owned()], None)
    }
}
