//! The one error type of the image store.

use std::path::PathBuf;

/// Everything that can go wrong in the image store, phrased for the person at the CLI.
// Variant fields are named for what they hold and shown in the messages.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The user typed a reference Docker would also refuse.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// A digest string that is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    InvalidDigest(String),

    /// No local image matches the reference or ID.
    #[error("No such image: {0}")]
    NotFound(String),

    /// The image exists but has no variant for this machine.
    #[error("image platform {available} does not match the host {host}")]
    PlatformMismatch { available: String, host: String },

    /// Content did not hash to the digest it was announced with.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// The registry refused or failed a request.
    #[error("{0}")]
    Registry(String),

    /// A manifest, config, index or archive that does not follow the spec.
    #[error("invalid image content: {0}")]
    InvalidContent(String),

    /// A media type the store cannot handle (e.g. foreign or encrypted layers).
    #[error("unsupported media type {0}")]
    UnsupportedMediaType(String),

    /// A layer or archive tried to write outside its destination.
    #[error("refusing unsafe path {path:?} in archive: {reason}")]
    UnsafePath { path: PathBuf, reason: String },

    /// The operation would break something the user did not ask to break.
    #[error("conflict: {0}")]
    Conflict(String),

    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    /// JSON that could not be read or written.
    #[error("{context}: {source}")]
    Json {
        context: String,
        source: serde_json::Error,
    },
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
        let context = context.into();
        move |source| ImageError::Io { context, source }
    }

    pub(crate) fn json(context: impl Into<String>) -> impl FnOnce(serde_json::Error) -> ImageError {
        let context = context.into();
        move |source| ImageError::Json { context, source }
    }
}

/// Short alias used across the crate.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;
