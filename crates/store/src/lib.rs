//! The control plane's storage contract.
//!
//! Everything the API server persists goes through [`Store`], whose semantics
//! follow etcd's v3 key-value API: a single, global, strictly increasing
//! revision counter stamps every write, reads can be pinned to a revision,
//! writes are compare-and-swap on a key's last modification revision, and a
//! watch replays every event after a revision, in order, then follows live.
//! Keeping the contract this close to etcd is what lets a real etcd cluster
//! slot in behind the same trait for high availability.

use std::fmt;

mod redb_backend;

pub use redb_backend::{CommitStats, CompactionPolicy, RedbOptions, RedbStore, Retention};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// A position in the store's global history. Revision 0 means "before any
/// write"; the first write gets revision 1.
pub type Revision = u64;

/// One key's current value together with the revisions etcd reports for it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// The revision that created this incarnation of the key.
    pub create_revision: Revision,
    /// The revision of the last write to the key; the API server exposes it
    /// as `metadata.resourceVersion`.
    pub mod_revision: Revision,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .finish()
    }
}

/// A change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The key was created (`prev` is `None`) or updated.
    Put { kv: KeyValue, prev: Option<KeyValue> },
    /// The key was deleted at `revision`; `prev` is its last value.
    Delete { prev: KeyValue, revision: Revision },
}

impl Event {
    /// The revision at which this event happened.
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }

    /// The key this event is about.
    pub fn key(&self) -> &str {
        match self {
            Event::Put { kv, .. } => &kv.key,
            Event::Delete { prev, .. } => &prev.key,
        }
    }
}

/// How to read a range of keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Read the state as of this revision rather than the latest one, so
    /// that the pages of a paginated list form one consistent snapshot.
    pub revision: Option<Revision>,
    /// Start strictly after this key (the continuation of a previous page).
    pub start_after: Option<String>,
    /// Return at most this many keys.
    pub limit: Option<usize>,
}

/// A page of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    /// Matching keys in ascending key order.
    pub items: Vec<KeyValue>,
    /// The revision the read was served at.
    pub revision: Revision,
    /// True when keys beyond `limit` remain.
    pub more: bool,
}

/// The result of a successful write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteResult {
    /// The revision stamped on this write.
    pub revision: Revision,
}

/// What can go wrong talking to a store. Each variant maps onto one
/// Kubernetes API status so the API server never has to guess.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0:?} not found")]
    NotFound(String),
    #[error("key {0:?} already exists")]
    AlreadyExists(String),
    /// A compare-and-swap lost: the key moved on since the caller read it.
    #[error("key {key:?} was modified at revision {current}, expected {expected}")]
    Conflict { key: String, expected: Revision, current: Revision },
    /// The requested revision is older than the oldest one still kept.
    #[error("revision {requested} has been compacted; oldest available is {compacted}")]
    Compacted { requested: Revision, compacted: Revision },
    /// The requested revision is newer than anything written yet.
    #[error("revision {requested} is in the future; current is {current}")]
    FutureRevision { requested: Revision, current: Revision },
    /// The backend failed (I/O, corruption, lost connection).
    #[error("storage backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Wraps any backend failure.
    pub fn backend(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(err))
    }
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A stream of watch events. It ends when the store shuts down; a watcher
/// that falls too far behind gets a final `Err(StoreError::Compacted)`.
pub type WatchStream = BoxStream<'static, Result<Event>>;

/// An MVCC key-value store with etcd's semantics.
///
/// Keys are UTF-8 strings laid out as paths (`/registry/pods/default/web`);
/// prefixes select ranges. Values are opaque bytes. Every successful write
/// is durable before the call returns.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The latest revision (0 for an empty store).
    async fn current_revision(&self) -> Result<Revision>;

    /// Reads one key at the latest revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Reads the keys under `prefix` in key order.
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult>;

    /// Creates `key`, failing with `AlreadyExists` if it is present.
    async fn create(&self, key: &str, value: Bytes) -> Result<WriteResult>;

    /// Replaces `key`'s value. With `expected` set, fails with `Conflict`
    /// unless the key's `mod_revision` equals it. Fails with `NotFound` if
    /// the key is absent.
    async fn update(&self, key: &str, value: Bytes, expected: Option<Revision>)
    -> Result<WriteResult>;

    /// Deletes `key`, with the same compare-and-swap rule as `update`, and
    /// returns the value it had together with the deletion's revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, WriteResult)>;

    /// Streams every event for keys under `prefix` with a revision strictly
    /// greater than `after`, in revision order, then follows new writes.
    /// Fails with `Compacted` if history after `after` is no longer kept.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// Forgets history at or below `revision` (the latest value of every
    /// live key is always kept). Returns the new compacted revision.
    async fn compact(&self, revision: Revision) -> Result<Revision>;

    /// The oldest revision a watch or a pinned read may still start from.
    async fn compacted_revision(&self) -> Result<Revision>;
}
