//! The JSON documents of the OCI image and Docker schema2 formats that the store reads and writes.
//!
//! Both formats share one shape; only media type strings differ, so one set of
//! types covers both and the original bytes are kept for digests and pushes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{ImageError, Result};

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest media type a pull accepts.
pub(crate) const ACCEPTED_MANIFESTS: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Platform {
    pub(crate) architecture: String,
    pub(crate) os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) => write!(f, "/{variant}"),
            None => Ok(()),
        }
    }
}

impl Platform {
    /// The platform images must match to run here.
    pub(crate) fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            architecture: architecture.into(),
            os: std::env::consts::OS.into(),
            variant: None,
        }
    }

    pub(crate) fn runs_on(&self, host: &Platform) -> bool {
        self.os == host.os && self.architecture == host.architecture
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub(crate) media_type: String,
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) urls: Option<Vec<String>>,
}

impl Descriptor {
    pub(crate) fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
            urls: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub(crate) schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) media_type: Option<String>,
    pub(crate) config: Descriptor,
    pub(crate) layers: Vec<Descriptor>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index {
    pub(crate) schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) media_type: Option<String>,
    pub(crate) manifests: Vec<Descriptor>,
}

/// A manifest document as fetched: either one image or a per-platform index.
pub(crate) enum Document {
    Image {
        manifest: Manifest,
        media_type: String,
    },
    Index(Index),
}

impl Document {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Document> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(ImageError::json("parsing manifest"))?;
        let declared = value
            .get("mediaType")
            .and_then(|m| m.as_str())
            .map(str::to_owned);
        if value.get("manifests").is_some() {
            let index =
                serde_json::from_value(value).map_err(ImageError::json("parsing image index"))?;
            return Ok(Document::Index(index));
        }
        if value.get("config").is_none() {
            return Err(ImageError::InvalidContent(
                "manifest has neither config nor manifests (schema1 manifests are not supported)"
                    .into(),
            ));
        }
        let manifest: Manifest =
            serde_json::from_value(value).map_err(ImageError::json("parsing image manifest"))?;
        for layer in &manifest.layers {
            check_layer_media_type(&layer.media_type)?;
        }
        Ok(Document::Image {
            manifest,
            media_type: declared.unwrap_or_else(|| OCI_MANIFEST.into()),
        })
    }
}

/// Layers the store can unpack: plain, gzip or zstd tars of either format.
fn check_layer_media_type(media_type: &str) -> Result<()> {
    let is_tar = media_type.contains(".tar") || media_type.contains("rootfs.diff");
    if !is_tar || media_type.contains("encrypted") {
        return Err(ImageError::UnsupportedMediaType(media_type.to_owned()));
    }
    Ok(())
}

impl Index {
    /// Picks the manifest for `host`, skipping attestation entries.
    pub(crate) fn select(&self, host: &Platform) -> Result<&Descriptor> {
        if let Some(found) = self
            .manifests
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(|p| p.runs_on(host)))
        {
            return Ok(found);
        }
        let available: Vec<String> = self
            .manifests
            .iter()
            .filter_map(|m| m.platform.as_ref())
            .filter(|p| p.os != "unknown")
            .map(Platform::to_string)
            .collect();
        Err(ImageError::PlatformMismatch {
            available: if available.is_empty() {
                "unknown".into()
            } else {
                available.join(", ")
            },
            host: host.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(os: &str, arch: &str) -> Descriptor {
        let mut d = Descriptor::new(OCI_MANIFEST, Digest::of(arch.as_bytes()), 1);
        d.platform = Some(Platform {
            architecture: arch.into(),
            os: os.into(),
            variant: None,
        });
        d
    }

    #[test]
    fn index_selection_picks_the_host_platform_or_says_why_not() {
        let host = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        };
        let index = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![
                entry("linux", "arm64"),
                entry("linux", "amd64"),
                entry("unknown", "unknown"),
            ],
        };
        assert_eq!(index.select(&host).unwrap().digest, Digest::of(b"amd64"));

        let arm_only = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![entry("linux", "arm64")],
        };
        let error = arm_only.select(&host).unwrap_err().to_string();
        assert_eq!(
            error,
            "image platform linux/arm64 does not match the host linux/amd64"
        );
    }

    #[test]
    fn docker_and_oci_manifests_parse_alike() {
        let docker = serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1, "digest": Digest::of(b"c")},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2, "digest": Digest::of(b"l")}]
        });
        let Document::Image {
            manifest,
            media_type,
        } = Document::parse(docker.to_string().as_bytes()).unwrap()
        else {
            panic!("not an image manifest")
        };
        assert_eq!(media_type, DOCKER_MANIFEST);
        assert_eq!(manifest.layers[0].digest, Digest::of(b"l"));

        let encrypted = serde_json::json!({
            "schemaVersion": 2, "config": {"mediaType": OCI_CONFIG, "size": 1, "digest": Digest::of(b"c")},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip+encrypted", "size": 2, "digest": Digest::of(b"l")}]
        });
        assert!(matches!(
            Document::parse(encrypted.to_string().as_bytes()),
            Err(ImageError::UnsupportedMediaType(_))
        ));
    }
}
