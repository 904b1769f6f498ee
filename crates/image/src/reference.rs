//! Image references parsed the way Docker parses them.
//!
//! `busybox` means `docker.io/library/busybox:latest`; a first component with a
//! dot, a colon or `localhost` is a registry host. Parsing is delegated to
//! `oci-spec`'s distribution `Reference` (the grammar of distribution/reference).

use std::fmt;

use oci_client::Reference;

use crate::digest::Digest;
use crate::error::ImageError;

const DOCKER_HUB: &str = "docker.io";
const OFFICIAL_PREFIX: &str = "library/";

/// A parsed, normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageReference {
    inner: Reference,
}

impl ImageReference {
    /// Parses a reference such as `busybox`, `localhost:5000/x/y:tag` or `name@sha256:…`.
    pub fn parse(text: &str) -> Result<ImageReference, ImageError> {
        let inner = Reference::try_from(text).map_err(|error| {
            let name = text.split(['@', ':']).next().unwrap_or(text);
            let reason = if name.chars().any(|c| c.is_ascii_uppercase()) {
                "repository name must be lowercase".to_owned()
            } else {
                error.to_string()
            };
            ImageError::InvalidReference {
                reference: text.to_owned(),
                reason,
            }
        })?;
        if let Some(digest) = inner.digest() {
            Digest::parse(digest)?;
        }
        Ok(ImageReference { inner })
    }

    /// The registry host (and port), `docker.io` for Docker Hub.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository path inside the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag; `latest` when neither tag nor digest was given.
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The pinned manifest digest, if any.
    pub fn digest(&self) -> Option<Digest> {
        self.inner.digest().and_then(|d| Digest::parse(d).ok())
    }

    /// `registry/repository`, the key images are grouped by.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// `registry/repository:tag` when the reference carries a tag.
    pub fn tagged_name(&self) -> Option<String> {
        self.tag().map(|tag| format!("{}:{tag}", self.name()))
    }

    /// Whether the registry is on this machine, where plain HTTP is the norm.
    pub fn is_loopback_registry(&self) -> bool {
        let host = self.registry();
        let host = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(rest),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    pub(crate) fn oci(&self) -> &Reference {
        &self.inner
    }

    /// The same repository, pinned to a digest (what the registry API addresses).
    pub(crate) fn with_digest(&self, digest: &Digest) -> ImageReference {
        ImageReference {
            inner: Reference::with_digest(
                self.registry().to_owned(),
                self.repository().to_owned(),
                digest.to_string(),
            ),
        }
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&familiar(&self.inner.whole()))
    }
}

/// Shortens a fully-qualified name the way Docker displays it
/// (`docker.io/library/busybox:latest` -> `busybox:latest`).
pub fn familiar(full: &str) -> String {
    match full
        .strip_prefix(DOCKER_HUB)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        Some(rest) => rest
            .strip_prefix(OFFICIAL_PREFIX)
            .unwrap_or(rest)
            .to_owned(),
        None => full.to_owned(),
    }
}

/// Splits `registry/repo:tag` into (`registry/repo`, `tag`), respecting registry ports.
pub fn split_tag(full: &str) -> (&str, &str) {
    match full.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (full, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_docker_hub_official_images() {
        let reference = ImageReference::parse("busybox").unwrap();
        assert_eq!(reference.registry(), "docker.io");
        assert_eq!(reference.repository(), "library/busybox");
        assert_eq!(reference.tag(), Some("latest"));
        assert_eq!(
            reference.tagged_name().unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(reference.to_string(), "busybox:latest");
    }

    #[test]
    fn user_repositories_on_docker_hub_keep_their_namespace() {
        let reference = ImageReference::parse("someone/tool:1.2").unwrap();
        assert_eq!(
            reference.tagged_name().unwrap(),
            "docker.io/someone/tool:1.2"
        );
        assert_eq!(reference.to_string(), "someone/tool:1.2");
    }

    #[test]
    fn registry_hosts_with_ports_are_recognised() {
        let reference = ImageReference::parse("localhost:5000/x/y:tag").unwrap();
        assert_eq!(reference.registry(), "localhost:5000");
        assert_eq!(reference.repository(), "x/y");
        assert_eq!(reference.tag(), Some("tag"));
        assert!(reference.is_loopback_registry());
        assert!(
            ImageReference::parse("127.0.0.1:5000/a")
                .unwrap()
                .is_loopback_registry()
        );
        assert!(
            !ImageReference::parse("quay.io/a/b")
                .unwrap()
                .is_loopback_registry()
        );
        assert_eq!(
            split_tag("localhost:5000/x/y:tag"),
            ("localhost:5000/x/y", "tag")
        );
        assert_eq!(split_tag("localhost:5000/x/y"), ("localhost:5000/x/y", ""));
    }

    #[test]
    fn digests_pin_the_manifest() {
        let digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let reference = ImageReference::parse(&format!("busybox@{digest}")).unwrap();
        assert_eq!(reference.digest().unwrap().as_str(), digest);
        assert_eq!(reference.tag(), None);
    }

    #[test]
    fn bad_references_are_refused_with_a_reason() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "a//b",
            "busybox@sha256:abc",
            "-x",
            "busybox:bad tag",
        ] {
            let error = ImageReference::parse(bad).unwrap_err();
            assert!(
                matches!(
                    error,
                    ImageError::InvalidReference { .. } | ImageError::InvalidDigest(_)
                ),
                "{bad}: {error}"
            );
        }
    }
}
