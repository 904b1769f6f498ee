//! On-disk layout of the redb backend.
//!
//! Four tables, all written in the same transaction so they never disagree:
//!
//! * `current`: key -> (create_revision, mod_revision, value). The live state;
//!   serves `get` in O(log n) and latest-revision `list` as a range scan.
//! * `versions`: (key, revision) -> (kind, create_revision, prev_revision,
//!   value). Every retained version of every key, ordered by key then
//!   revision, so a read pinned to an old revision seeks each key under the
//!   prefix straight to its newest version at or below that revision without
//!   touching other prefixes.
//! * `history`: revision -> key. The global event log a watch replays; the
//!   event body lives in `versions`, so each value is stored once per version
//!   (plus once in `current` while it is the live one).
//! * `meta`: the revision counter and the compacted revision.
//!
//! Compaction to revision `r` deletes `history` up to `r` and, for every key
//! written in the compacted range, all versions at or below `r` except the
//! newest one if it is a put. That is exactly what is needed to answer a read
//! at any revision >= `r` and to give every retained event its `prev` value
//! (an event's previous version is either retained or the key's newest
//! version at or below `r`).

use bytes::Bytes;
use redb::{ReadableTable, TableDefinition};

use crate::{KeyValue, Revision, StoreError};

pub(super) const CURRENT: TableDefinition<&str, &[u8]> = TableDefinition::new("current");
pub(super) const VERSIONS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("versions");
pub(super) const HISTORY: TableDefinition<u64, &str> = TableDefinition::new("history");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(super) const META_REVISION: &str = "revision";
pub(super) const META_COMPACTED: &str = "compacted";

const U64: usize = std::mem::size_of::<u64>();

/// A record that does not decode means the file is damaged or was written by
/// an incompatible version; surfaced as a backend error, never a panic.
#[derive(Debug, thiserror::Error)]
#[error("corrupt {table} record for key {key:?}")]
pub(super) struct CorruptRecord {
    table: &'static str,
    key: String,
}

pub(super) fn corrupt(table: &'static str, key: &str) -> StoreError {
    StoreError::backend(CorruptRecord {
        table,
        key: key.to_owned(),
    })
}

/// Reads a counter from `meta`, 0 when it was never written.
pub(super) fn read_meta(
    table: &impl ReadableTable<&'static str, u64>,
    name: &str,
) -> Result<u64, redb::StorageError> {
    Ok(table.get(name)?.map(|guard| guard.value()).unwrap_or(0))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let slice = bytes.get(at..at + U64)?;
    Some(u64::from_le_bytes(slice.try_into().ok()?))
}

/// Encodes a `current` row.
pub(super) fn encode_current(
    create_revision: Revision,
    mod_revision: Revision,
    value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * U64 + value.len());
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(&mod_revision.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes a `current` row into the key's [`KeyValue`].
pub(super) fn decode_current(key: &str, bytes: &[u8]) -> Result<KeyValue, StoreError> {
    let (Some(create_revision), Some(mod_revision)) = (read_u64(bytes, 0), read_u64(bytes, U64))
    else {
        return Err(corrupt("current", key));
    };
    Ok(KeyValue {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(&bytes[2 * U64..]),
        create_revision,
        mod_revision,
    })
}

/// Whether a version wrote a value or removed the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum VersionKind {
    Put,
    Delete,
}

impl VersionKind {
    fn tag(self) -> u8 {
        match self {
            VersionKind::Put => 1,
            VersionKind::Delete => 2,
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(VersionKind::Put),
            2 => Some(VersionKind::Delete),
            _ => None,
        }
    }
}

/// One row of `versions`.
#[derive(Debug, Clone)]
pub(super) struct Version {
    pub kind: VersionKind,
    pub create_revision: Revision,
    /// The key's previous version (0 when this put created the key).
    pub prev_revision: Revision,
    /// The written value; empty for a delete.
    pub value: Bytes,
}

const VERSION_HEADER: usize = 1 + 2 * U64;

/// Encodes a `versions` row.
pub(super) fn encode_version(
    kind: VersionKind,
    create_revision: Revision,
    prev_revision: Revision,
    value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(VERSION_HEADER + value.len());
    out.push(kind.tag());
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(&prev_revision.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes a `versions` row.
pub(super) fn decode_version(key: &str, bytes: &[u8]) -> Result<Version, StoreError> {
    let kind = bytes.first().copied().and_then(VersionKind::from_tag);
    let (Some(kind), Some(create_revision), Some(prev_revision)) =
        (kind, read_u64(bytes, 1), read_u64(bytes, 1 + U64))
    else {
        return Err(corrupt("versions", key));
    };
    Ok(Version {
        kind,
        create_revision,
        prev_revision,
        value: Bytes::copy_from_slice(&bytes[VERSION_HEADER..]),
    })
}

/// Only the kind of a `versions` row, without copying its value.
pub(super) fn version_kind(bytes: &[u8]) -> Option<VersionKind> {
    bytes.first().copied().and_then(VersionKind::from_tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_round_trips() {
        let encoded = encode_current(3, 7, b"hello");
        let kv = decode_current("/a", &encoded).unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision), (3, 7));
        assert_eq!(&kv.value[..], b"hello");
    }

    #[test]
    fn version_round_trips() {
        let encoded = encode_version(VersionKind::Delete, 2, 5, b"");
        let version = decode_version("/a", &encoded).unwrap();
        assert_eq!(version.kind, VersionKind::Delete);
        assert_eq!((version.create_revision, version.prev_revision), (2, 5));
        assert_eq!(version_kind(&encoded), Some(VersionKind::Delete));
    }

    #[test]
    fn truncated_records_are_reported_not_panicked() {
        assert!(decode_current("/a", &[1, 2, 3]).is_err());
        assert!(decode_version("/a", &[9; 20]).is_err());
        assert!(decode_version("/a", &[1, 0]).is_err());
    }
}
