//! `gantry save` and `gantry load`: docker-archive and OCI-layout tarballs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::db::ImageRecord;
use crate::digest::{Digest, ImageId};
use crate::error::{ImageError, Result};
use crate::layer::{Compression, confined_path, open_layer};
use crate::manifest::{
    Descriptor, Document, Index, Manifest, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD, OCI_MANIFEST, Platform,
};
use crate::reference::{ImageReference, familiar, split_tag};
use crate::store::ImageStore;

const CONTAINERD_NAME: &str = "io.containerd.image.name";
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Which tarball layout `save` writes; `load` recognises both by content.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// What `docker save` wrote for years: `manifest.json`, `repositories`,
    /// `<id>.json` configs and uncompressed `<layer>/layer.tar` files.
    #[default]
    DockerArchive,
    /// An OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`), with a
    /// `manifest.json` beside it so `docker load` takes it too (as Docker 25 writes it).
    OciArchive,
}

/// One image a `load` brought in.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    /// The config digest.
    pub id: ImageId,
    /// Familiar names it was tagged with; empty when the archive named none.
    pub tags: Vec<String>,
}

/// An entry of docker-archive's `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl ImageStore {
    /// Loads every image of a docker-archive or OCI-layout tarball (optionally gzip/zstd compressed).
    pub fn load(&self, input: impl Read) -> Result<Vec<LoadedImage>> {
        let _lease = self.lease()?;
        let staging = tempfile::tempdir_in(self.blobs.tmp_dir())
            .map_err(ImageError::io("creating a staging directory"))?;
        extract_archive(input, staging.path())?;
        let dir = staging.path();
        if dir.join("manifest.json").is_file() {
            self.load_docker_archive(dir)
        } else if dir.join("index.json").is_file() {
            self.load_oci_layout(dir)
        } else {
            Err(ImageError::InvalidContent(
                "the archive has neither manifest.json nor index.json".into(),
            ))
        }
    }

    fn load_docker_archive(&self, dir: &Path) -> Result<Vec<LoadedImage>> {
        let entries: Vec<ArchiveEntry> = read_json(dir, "manifest.json")?;
        let mut loaded = Vec::new();
        for entry in entries {
            let config_bytes = read_inside(dir, &entry.config)?;
            let config_digest = self.blobs.put(&config_bytes)?;
            let mut layers = Vec::new();
            for layer in &entry.layers {
                let mut file = open_inside(dir, layer)?;
                let media_type = match Compression::sniff(&mut file)
                    .map_err(ImageError::io(format!("reading {layer}")))?
                {
                    Compression::None => OCI_LAYER,
                    Compression::Gzip => OCI_LAYER_GZIP,
                    Compression::Zstd => OCI_LAYER_ZSTD,
                };
                let digest = self.blobs.put_verified(&mut BufReader::new(file), None)?;
                layers.push(Descriptor::new(
                    media_type,
                    digest.clone(),
                    self.blobs.size(&digest)?,
                ));
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(OCI_MANIFEST.into()),
                config: Descriptor::new(OCI_CONFIG, config_digest, config_bytes.len() as u64),
                layers,
            };
            let tags = entry.repo_tags.unwrap_or_default();
            let full_tags = tags
                .iter()
                .map(|t| crate::store::tag_name(t))
                .collect::<Result<Vec<_>>>()?;
            let bytes =
                serde_json::to_vec(&manifest).map_err(ImageError::json("encoding manifest"))?;
            let id = self.register(&bytes, &full_tags, None)?;
            loaded.push(LoadedImage {
                id,
                tags: full_tags.iter().map(|t| familiar(t)).collect(),
            });
        }
        Ok(loaded)
    }

    fn load_oci_layout(&self, dir: &Path) -> Result<Vec<LoadedImage>> {
        let index: Index = read_json(dir, "index.json")?;
        let host = Platform::host();
        let mut loaded = Vec::new();
        for descriptor in &index.manifests {
            let name = descriptor
                .annotations
                .get(CONTAINERD_NAME)
                .or_else(|| descriptor.annotations.get(OCI_REF_NAME))
                .and_then(|n| {
                    ImageReference::parse(n)
                        .ok()
                        .filter(|_| n.contains([':', '/']))
                })
                .and_then(|r| r.tagged_name());
            let mut bytes = self.read_layout_blob(dir, &descriptor.digest)?;
            if let Document::Index(nested) = Document::parse(&bytes)? {
                let chosen = nested.select(&host)?;
                bytes = self.read_layout_blob(dir, &chosen.digest)?;
            }
            let Document::Image { manifest, .. } = Document::parse(&bytes)? else {
                return Err(ImageError::InvalidContent(
                    "nested image indexes are not supported".into(),
                ));
            };
            self.copy_layout_blob(dir, &manifest.config.digest)?;
            for layer in &manifest.layers {
                self.copy_layout_blob(dir, &layer.digest)?;
            }
            let tags: Vec<String> = name.into_iter().collect();
            let id = self.register(&bytes, &tags, None)?;
            loaded.push(LoadedImage {
                id,
                tags: tags.iter().map(|t| familiar(t)).collect(),
            });
        }
        Ok(loaded)
    }

    /// Copies `blobs/sha256/<hex>` of an OCI layout into the store, verifying its digest.
    fn copy_layout_blob(&self, dir: &Path, digest: &Digest) -> Result<()> {
        let file = open_inside(dir, &format!("blobs/sha256/{}", digest.hex()))?;
        self.blobs
            .put_verified(&mut BufReader::new(file), Some(digest))?;
        Ok(())
    }

    /// Like `copy_layout_blob`, for a manifest or index the caller goes on to parse.
    fn read_layout_blob(&self, dir: &Path, digest: &Digest) -> Result<Vec<u8>> {
        self.copy_layout_blob(dir, digest)?;
        self.blobs.read(digest)
    }

    /// Writes the named images (by name or ID) into one tarball.
    pub fn save(
        &self,
        references: &[String],
        format: ArchiveFormat,
        output: impl Write,
    ) -> Result<()> {
        let mut selected: Vec<(ImageRecord, Vec<String>)> = Vec::new();
        for reference in references {
            let record = self.record(reference)?;
            let tags = match ImageReference::parse(reference)
                .ok()
                .and_then(|r| r.tagged_name())
            {
                Some(tag) if record.repo_tags.contains(&tag) => vec![tag],
                _ => record.repo_tags.iter().cloned().collect(),
            };
            match selected.iter_mut().find(|(r, _)| r.id == record.id) {
                Some((_, existing)) => existing.extend(tags),
                None => selected.push((record, tags)),
            }
        }
        let mut builder = tar::Builder::new(io::BufWriter::new(output));
        match format {
            ArchiveFormat::DockerArchive => self.write_docker_archive(&mut builder, &selected)?,
            ArchiveFormat::OciArchive => self.write_oci_layout(&mut builder, &selected)?,
        }
        let mut writer = builder
            .into_inner()
            .map_err(ImageError::io("writing the archive"))?;
        writer
            .flush()
            .map_err(ImageError::io("writing the archive"))
    }

    fn write_docker_archive<W: Write>(
        &self,
        builder: &mut tar::Builder<W>,
        images: &[(ImageRecord, Vec<String>)],
    ) -> Result<()> {
        let mut entries = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut written = std::collections::HashSet::new();
        for (record, tags) in images {
            let manifest = self.manifest(&record.manifest)?;
            let config_name = format!("{}.json", record.id.hex());
            append_bytes(builder, &config_name, &self.blobs.read(&record.id)?)?;
            let config = crate::store::parse_config(&self.blobs.read(&record.id)?)?;
            let diff_ids = crate::store::diff_ids(&config)?;
            let mut layer_names = Vec::new();
            for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
                let name = format!("{}/layer.tar", diff_id.hex());
                if written.insert(name.clone()) {
                    self.append_uncompressed_layer(builder, &name, &layer.digest)?;
                }
                layer_names.push(name);
            }
            let familiar_tags: Vec<String> = tags.iter().map(|t| familiar(t)).collect();
            for tag in &familiar_tags {
                let (repo, tag) = split_tag(tag);
                let top = diff_ids
                    .last()
                    .map(|d| d.hex().to_owned())
                    .unwrap_or_default();
                repositories
                    .entry(repo.to_owned())
                    .or_default()
                    .insert(tag.to_owned(), top);
            }
            entries.push(ArchiveEntry {
                config: config_name,
                repo_tags: Some(familiar_tags),
                layers: layer_names,
            });
        }
        append_json(builder, "manifest.json", &entries)?;
        append_json(builder, "repositories", &repositories)?;
        builder
            .finish()
            .map_err(ImageError::io("writing the archive"))
    }

    /// docker-archive layers are plain tars; decompress stored layers to a temp file first
    /// because a tar entry needs its size up front.
    fn append_uncompressed_layer<W: Write>(
        &self,
        builder: &mut tar::Builder<W>,
        name: &str,
        digest: &Digest,
    ) -> Result<()> {
        let mut blob = self.blobs.open_blob(digest)?;
        if Compression::sniff(&mut blob).map_err(ImageError::io("reading layer"))?
            == Compression::None
        {
            return append_file(builder, name, &mut blob);
        }
        let mut temp = tempfile::tempfile_in(self.blobs.tmp_dir())
            .map_err(ImageError::io("decompressing layer"))?;
        io::copy(&mut open_layer(blob)?, &mut temp)
            .and_then(|_| temp.rewind())
            .map_err(ImageError::io("decompressing layer"))?;
        append_file(builder, name, &mut temp)
    }

    fn write_oci_layout<W: Write>(
        &self,
        builder: &mut tar::Builder<W>,
        images: &[(ImageRecord, Vec<String>)],
    ) -> Result<()> {
        let mut index = Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            manifests: Vec::new(),
        };
        let mut docker_entries = Vec::new();
        let mut written = std::collections::HashSet::new();
        let mut add_blob = |builder: &mut tar::Builder<W>, digest: &Digest| -> Result<String> {
            let name = format!("blobs/sha256/{}", digest.hex());
            if written.insert(digest.clone()) {
                append_file(builder, &name, &mut self.blobs.open_blob(digest)?)?;
            }
            Ok(name)
        };
        append_bytes(builder, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        for (record, tags) in images {
            let manifest = self.manifest(&record.manifest)?;
            add_blob(builder, &record.manifest)?;
            let config = add_blob(builder, &manifest.config.digest)?;
            let layers = manifest
                .layers
                .iter()
                .map(|l| add_blob(builder, &l.digest))
                .collect::<Result<Vec<_>>>()?;
            let size = self.blobs.size(&record.manifest)?;
            let descriptor =
                || Descriptor::new(&record.manifest_media_type, record.manifest.clone(), size);
            if tags.is_empty() {
                index.manifests.push(descriptor());
            }
            for tag in tags {
                let mut entry = descriptor();
                entry
                    .annotations
                    .insert(CONTAINERD_NAME.into(), tag.clone());
                entry
                    .annotations
                    .insert(OCI_REF_NAME.into(), split_tag(tag).1.to_owned());
                index.manifests.push(entry);
            }
            docker_entries.push(ArchiveEntry {
                config,
                repo_tags: Some(tags.iter().map(|t| familiar(t)).collect()),
                layers,
            });
        }
        append_json(builder, "index.json", &index)?;
        append_json(builder, "manifest.json", &docker_entries)?;
        builder
            .finish()
            .map_err(ImageError::io("writing the archive"))
    }
}

/// Unpacks a (possibly compressed) tarball into `dest`; the tar crate refuses `..`
/// and writes through symlinks that leave `dest`.
fn extract_archive(input: impl Read, dest: &Path) -> Result<()> {
    let mut buffered = BufReader::new(input);
    let magic = buffered
        .fill_buf()
        .map_err(ImageError::io("reading the archive"))?
        .to_vec();
    let reader: Box<dyn Read> = match magic.as_slice() {
        [0x1f, 0x8b, ..] => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(
            zstd::Decoder::with_buffer(buffered).map_err(ImageError::io("reading the archive"))?,
        ),
        _ => Box::new(buffered),
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive
        .entries()
        .map_err(ImageError::io("reading the archive"))?
    {
        let mut entry = entry.map_err(ImageError::io("reading the archive"))?;
        let path = entry
            .path()
            .map_err(ImageError::io("reading the archive"))?
            .into_owned();
        confined_path(&path)?;
        entry.unpack_in(dest).map_err(|source| {
            if source.to_string().contains("outside of") {
                ImageError::UnsafePath {
                    path: path.clone(),
                    reason: source.to_string(),
                }
            } else {
                ImageError::Io {
                    context: format!("extracting {}", path.display()),
                    source,
                }
            }
        })?;
    }
    Ok(())
}

/// Opens a regular file of the extracted archive. Symlinks are followed (old
/// `docker save` links shared layers) but only while they stay inside `dir`,
/// so a crafted archive cannot smuggle host files into an image.
fn open_inside(dir: &Path, name: &str) -> Result<File> {
    let unsafe_path = |reason: &str| ImageError::UnsafePath {
        path: PathBuf::from(name),
        reason: reason.into(),
    };
    let path = dir.join(confined_path(Path::new(name))?);
    let real = path
        .canonicalize()
        .map_err(ImageError::io(format!("reading {name} from the archive")))?;
    let root = dir
        .canonicalize()
        .map_err(ImageError::io("reading the archive"))?;
    if !real.starts_with(&root) {
        return Err(unsafe_path("it links outside the archive"));
    }
    if !real.is_file() {
        return Err(unsafe_path("it is not a regular file"));
    }
    File::open(&real).map_err(ImageError::io(format!("reading {name} from the archive")))
}

fn read_inside(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_inside(dir, name)?
        .read_to_end(&mut bytes)
        .map_err(ImageError::io(format!("reading {name} from the archive")))?;
    Ok(bytes)
}

fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Result<T> {
    serde_json::from_slice(&read_inside(dir, name)?)
        .map_err(ImageError::json(format!("parsing {name}")))
}

fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append_bytes<W: Write>(builder: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> Result<()> {
    builder
        .append_data(&mut file_header(bytes.len() as u64), name, bytes)
        .map_err(ImageError::io(format!("writing {name} to the archive")))
}

fn append_file<W: Write>(builder: &mut tar::Builder<W>, name: &str, file: &mut File) -> Result<()> {
    let size = file
        .metadata()
        .map_err(ImageError::io(format!("reading {name}")))?
        .len();
    builder
        .append_data(&mut file_header(size), name, file)
        .map_err(ImageError::io(format!("writing {name} to the archive")))
}

fn append_json<W: Write, T: Serialize>(
    builder: &mut tar::Builder<W>,
    name: &str,
    value: &T,
) -> Result<()> {
    let bytes = serde_json::to_vec(value).map_err(ImageError::json(format!("encoding {name}")))?;
    append_bytes(builder, name, &bytes)
}
