//! Validation of the paths a pod spec or a ConfigMap/Secret key can put on the node's
//! disk. The API server validates these too, but the agent must not trust that: an
//! object written by an older server, or a key chosen by whoever can edit a Secret,
//! must never make the agent write or mount outside a volume's directory.

use std::path::{Component, Path, PathBuf};

/// The longest path the kubelet's atomic writer accepts.
const MAX_PATH_LEN: usize = 4096;
/// The longest single path segment (a Linux file name).
const MAX_SEGMENT_LEN: usize = 255;
/// The longest ConfigMap/Secret key (a DNS subdomain's length).
const MAX_KEY_LEN: usize = 253;

/// Why a path or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path {path:?}: {reason}")]
pub struct InvalidPath {
    /// The path as given.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn invalid(path: &str, reason: &'static str) -> InvalidPath {
    InvalidPath {
        path: path.to_owned(),
        reason,
    }
}

/// Checks a ConfigMap or Secret key used directly as a file name (a volume without
/// `items`), as the API server's `IsConfigMapKey` does: `[-._a-zA-Z0-9]+`, not `.`,
/// `..` or anything starting with `..` (the atomic writer's private names).
pub fn validate_key(key: &str) -> Result<(), InvalidPath> {
    if key.is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(invalid(key, "must be no more than 253 characters"));
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(
            key,
            "must consist of alphanumeric characters, '-', '_' or '.'",
        ));
    }
    if key == "." || key == ".." {
        return Err(invalid(key, "must not be '.' or '..'"));
    }
    if key.starts_with("..") {
        return Err(invalid(key, "must not start with '..'"));
    }
    Ok(())
}

/// Checks an item's target path (`items[].path` of configMap, secret, downwardAPI and
/// projected volumes) like the API server and the kubelet's atomic writer: relative,
/// no `..` element, not starting with `..`, bounded length. Returns the path
/// normalised (`./` elements dropped) so equal paths compare equal.
pub fn validate_item_path(path: &str) -> Result<PathBuf, InvalidPath> {
    if path.is_empty() {
        return Err(invalid(path, "must not be empty"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(invalid(path, "must be no more than 4096 characters"));
    }
    if path.starts_with("..") {
        return Err(invalid(path, "must not start with '..'"));
    }
    let normalised = descending_path(path)?;
    if normalised.as_os_str().is_empty() {
        return Err(invalid(path, "must name a file below the volume"));
    }
    if normalised
        .iter()
        .any(|segment| segment.len() > MAX_SEGMENT_LEN)
    {
        return Err(invalid(path, "has a segment longer than 255 characters"));
    }
    Ok(normalised)
}

/// Checks a volumeMount's `subPath` like the API server's `validateLocalDescendingPath`:
/// relative and without `..` elements. An empty result means the volume's root.
pub fn validate_sub_path(sub_path: &str) -> Result<PathBuf, InvalidPath> {
    descending_path(sub_path)
}

/// Refuses absolute paths and `..` elements; drops `.` elements and `\0`.
fn descending_path(path: &str) -> Result<PathBuf, InvalidPath> {
    if path.contains('\0') {
        return Err(invalid(path, "must not contain NUL"));
    }
    let mut normalised = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(segment) => normalised.push(segment),
            Component::CurDir => {}
            Component::ParentDir => return Err(invalid(path, "must not contain '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid(path, "must be a relative path"));
            }
        }
    }
    Ok(normalised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_are_file_names_are_accepted() {
        for key in ["app.conf", "a", "_x-1.y", ".hidden", "a..b"] {
            assert_eq!(validate_key(key), Ok(()), "{key}");
        }
    }

    #[test]
    fn keys_that_traverse_or_collide_with_writer_names_are_refused() {
        for key in [
            "", ".", "..", "..data", "../etc", "a/b", "/abs", "sp ace", "é",
        ] {
            assert!(validate_key(key).is_err(), "{key:?} accepted");
        }
        assert!(validate_key(&"k".repeat(254)).is_err());
    }

    #[test]
    fn item_paths_may_nest_but_not_escape() {
        assert_eq!(validate_item_path("a/b/c"), Ok(PathBuf::from("a/b/c")));
        assert_eq!(validate_item_path("./a//b"), Ok(PathBuf::from("a/b")));
        assert_eq!(validate_item_path("a..b"), Ok(PathBuf::from("a..b")));
        for path in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a/..",
            "..data/x",
            "..x",
            ".",
            "./",
        ] {
            assert!(validate_item_path(path).is_err(), "{path:?} accepted");
        }
    }

    #[test]
    fn item_paths_are_bounded() {
        assert!(validate_item_path(&"a".repeat(256)).is_err());
        assert!(validate_item_path(&"a".repeat(255)).is_ok());
        let long = vec!["a"; 2049].join("/");
        assert!(validate_item_path(&long).is_err());
    }

    #[test]
    fn sub_paths_are_relative_and_descending() {
        assert_eq!(validate_sub_path(""), Ok(PathBuf::new()));
        assert_eq!(validate_sub_path("data/x"), Ok(PathBuf::from("data/x")));
        assert_eq!(validate_sub_path("..data"), Ok(PathBuf::from("..data")));
        for path in ["/x", "..", "a/../b", "a\0b"] {
            assert!(validate_sub_path(path).is_err(), "{path:?} accepted");
        }
    }
}
