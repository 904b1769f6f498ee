//! Gantry's image store: content-addressed blobs, OCI registry pull and push, archives and layer snapshots.
//!
//! Everything lives under `<root>/images`:
//!
//! * `blobs/sha256/<hex>`: manifests, configs and layers, verified against their digest
//!   and written atomically;
//! * `images.json`: the references database (image ID -> manifest, tags, repo digests),
//!   updated under a file lock so concurrent `gantry` processes are safe;
//! * `snapshots/<chain-id>/fs`: each layer unpacked once as an overlayfs diff directory.
//!
//! [`ImageStore`] is the entry point; [`ImageStore::resolve`] gives the runtime an
//! [`Image`] whose `layers` are ready to be overlay lowerdirs:
//!
//! ```no_run
//! # async fn example() -> Result<(), gantry_image::ImageError> {
//! use gantry_image::{ImageStore, PullOptions};
//!
//! let store = ImageStore::open(std::path::Path::new("/var/lib/gantry"))?
//!     // So that `rmi` and `image prune` spare images containers still use.
//!     .with_usage_check(std::sync::Arc::new(|_image_id| false));
//! let image = store.resolve_or_pull("busybox", &PullOptions::default()).await?;
//! // overlayfs lists the top layer first.
//! let lowerdir: Vec<String> = image.layers.iter().rev().map(|p| p.display().to_string()).collect();
//! let options = format!("lowerdir={},upperdir=…,workdir=…", lowerdir.join(":"));
//! let command = image.config.config().as_ref().and_then(|c| c.cmd().clone());
//! # let _ = (options, command);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod archive;
mod blobs;
mod db;
mod digest;
mod error;
mod import;
mod layer;
mod manifest;
mod reference;
mod registry;
mod snapshot;
mod store;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use archive::{ArchiveFormat, LoadedImage};
pub use db::ImageRecord;
pub use digest::{Digest, ImageId};
pub use error::ImageError;
pub use import::ImportOptions;
pub use layer::unpack_layer;
pub use reference::{ImageReference, familiar};
pub use registry::{
    Credentials, LayerProgress, PullOptions, PushOptions, credentials_from_config_text,
    credentials_from_docker_config, save_docker_config_credentials, verify_login,
};
pub use snapshot::chain_ids;
pub use store::{
    Image, ImageStore, ImageSummary, PruneReport, Removed, UsageCheck, repository_and_tag,
};

/// The `oci-spec` version the public API speaks (for [`Image::config`]).
pub use oci_spec;
