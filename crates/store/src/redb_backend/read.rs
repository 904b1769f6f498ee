//! Reads served from redb read transactions: MVCC snapshots that never wait
//! for the writer thread.

use std::collections::VecDeque;
use std::ops::Bound;

use redb::{ReadTransaction, ReadableTable};

use super::schema::{
    CURRENT, HISTORY, META, META_COMPACTED, META_REVISION, VERSIONS, VersionKind, decode_current,
    decode_version, read_meta, version_kind,
};
use crate::{Event, KeyValue, ListOptions, ListResult, Result, Revision, StoreError};

/// The revision counter and compaction point of one snapshot.
#[derive(Debug, Clone, Copy)]
pub(super) struct Revisions {
    pub current: Revision,
    pub compacted: Revision,
}

pub(super) fn revisions(txn: &ReadTransaction) -> Result<Revisions> {
    let meta = txn.open_table(META).map_err(StoreError::backend)?;
    Ok(Revisions {
        current: read_meta(&meta, META_REVISION).map_err(StoreError::backend)?,
        compacted: read_meta(&meta, META_COMPACTED).map_err(StoreError::backend)?,
    })
}

/// Fails unless `revision` lies in the retained window of `revs`.
pub(super) fn check_readable(revision: Revision, revs: Revisions) -> Result<()> {
    if revision > revs.current {
        return Err(StoreError::FutureRevision {
            requested: revision,
            current: revs.current,
        });
    }
    if revision < revs.compacted {
        return Err(StoreError::Compacted {
            requested: revision,
            compacted: revs.compacted,
        });
    }
    Ok(())
}

pub(super) fn get(txn: &ReadTransaction, key: &str) -> Result<Option<KeyValue>> {
    let current = txn.open_table(CURRENT).map_err(StoreError::backend)?;
    match current.get(key).map_err(StoreError::backend)? {
        Some(row) => decode_current(key, row.value()).map(Some),
        None => Ok(None),
    }
}

pub(super) fn list(
    txn: &ReadTransaction,
    prefix: &str,
    options: &ListOptions,
) -> Result<ListResult> {
    let revs = revisions(txn)?;
    let revision = options.revision.unwrap_or(revs.current);
    check_readable(revision, revs)?;
    // One extra item tells whether more remain.
    let wanted = options.limit.map(|limit| limit.saturating_add(1));
    let mut items = if revision == revs.current {
        list_current(txn, prefix, options.start_after.as_deref(), wanted)?
    } else {
        list_at(
            txn,
            prefix,
            options.start_after.as_deref(),
            wanted,
            revision,
        )?
    };
    let more = matches!(options.limit, Some(limit) if items.len() > limit);
    if let Some(limit) = options.limit {
        items.truncate(limit);
    }
    Ok(ListResult {
        items,
        revision,
        more,
    })
}

/// Where a scan of keys under `prefix` starts, continuing after `start_after`.
fn start_key<'a>(prefix: &'a str, start_after: Option<&'a str>) -> Bound<&'a str> {
    match start_after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    }
}

fn list_current(
    txn: &ReadTransaction,
    prefix: &str,
    start_after: Option<&str>,
    wanted: Option<usize>,
) -> Result<Vec<KeyValue>> {
    let current = txn.open_table(CURRENT).map_err(StoreError::backend)?;
    let range = current
        .range::<&str>((start_key(prefix, start_after), Bound::Unbounded))
        .map_err(StoreError::backend)?;
    let mut items = Vec::new();
    for row in range {
        if wanted.is_some_and(|wanted| items.len() >= wanted) {
            break;
        }
        let (key, value) = row.map_err(StoreError::backend)?;
        let key = key.value();
        if !key.starts_with(prefix) {
            break;
        }
        items.push(decode_current(key, value.value())?);
    }
    Ok(items)
}

/// Lists the state as of an older `revision`: for each distinct key under
/// the prefix, seek to its newest version at or below `revision`.
fn list_at(
    txn: &ReadTransaction,
    prefix: &str,
    start_after: Option<&str>,
    wanted: Option<usize>,
    revision: Revision,
) -> Result<Vec<KeyValue>> {
    let versions = txn.open_table(VERSIONS).map_err(StoreError::backend)?;
    let mut lower: Bound<(&str, u64)> = match start_key(prefix, start_after) {
        Bound::Excluded(after) => Bound::Excluded((after, u64::MAX)),
        _ => Bound::Included((prefix, 0)),
    };
    let mut items = Vec::new();
    let mut key_buf: String;
    loop {
        if wanted.is_some_and(|wanted| items.len() >= wanted) {
            break;
        }
        let next = versions
            .range::<(&str, u64)>((lower, Bound::Unbounded))
            .map_err(StoreError::backend)?
            .next();
        let Some(row) = next else { break };
        let (found, _) = row.map_err(StoreError::backend)?;
        let (key, _) = found.value();
        if !key.starts_with(prefix) {
            break;
        }
        key_buf = key.to_owned();
        let key = key_buf.as_str();
        let newest = versions
            .range((key, 0)..=(key, revision))
            .map_err(StoreError::backend)?
            .next_back();
        if let Some(row) = newest {
            let (at, body) = row.map_err(StoreError::backend)?;
            let (_, mod_revision) = at.value();
            let version = decode_version(key, body.value())?;
            if version.kind == VersionKind::Put {
                items.push(KeyValue {
                    key: key.to_owned(),
                    value: version.value,
                    create_revision: version.create_revision,
                    mod_revision,
                });
            }
        }
        lower = Bound::Excluded((key, u64::MAX));
    }
    Ok(items)
}

/// The outcome of reading one page of the event log for a watcher.
pub(super) struct HistoryPage {
    pub events: VecDeque<Event>,
    /// The newest revision the page scanned (whether or not it matched).
    pub scanned_to: Revision,
}

/// Reads events in `(after, upto]` for keys under `prefix`, stopping once
/// `max_scan` log entries were examined so a replay never holds one huge
/// snapshot or buffer.
pub(super) fn history_page(
    txn: &ReadTransaction,
    prefix: &str,
    after: Revision,
    upto: Revision,
    max_scan: usize,
) -> Result<HistoryPage> {
    let revs = revisions(txn)?;
    if after < revs.compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted: revs.compacted,
        });
    }
    let history = txn.open_table(HISTORY).map_err(StoreError::backend)?;
    let versions = txn.open_table(VERSIONS).map_err(StoreError::backend)?;
    let mut events = VecDeque::new();
    let mut scanned_to = upto;
    let range = history
        .range((after + 1)..=upto)
        .map_err(StoreError::backend)?;
    for (scanned, row) in range.enumerate() {
        let (revision, key) = row.map_err(StoreError::backend)?;
        let (revision, key) = (revision.value(), key.value());
        if scanned >= max_scan {
            scanned_to = revision - 1;
            break;
        }
        if key.starts_with(prefix) {
            events.push_back(load_event(&versions, key, revision)?);
        }
    }
    Ok(HistoryPage { events, scanned_to })
}

fn load_version(
    versions: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    key: &str,
    revision: Revision,
) -> Result<Option<super::schema::Version>> {
    match versions.get((key, revision)).map_err(StoreError::backend)? {
        Some(body) => decode_version(key, body.value()).map(Some),
        None => Ok(None),
    }
}

/// Rebuilds the event written at `revision`, with its previous value.
fn load_event(
    versions: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    key: &str,
    revision: Revision,
) -> Result<Event> {
    let version = load_version(versions, key, revision)?
        .ok_or_else(|| super::schema::corrupt("history", key))?;
    let prev = if version.prev_revision == 0 {
        None
    } else {
        load_version(versions, key, version.prev_revision)?
            .filter(|prev| prev.kind == VersionKind::Put)
            .map(|prev| KeyValue {
                key: key.to_owned(),
                value: prev.value,
                create_revision: prev.create_revision,
                mod_revision: version.prev_revision,
            })
    };
    match version.kind {
        VersionKind::Put => Ok(Event::Put {
            kv: KeyValue {
                key: key.to_owned(),
                value: version.value,
                create_revision: version.create_revision,
                mod_revision: revision,
            },
            prev,
        }),
        VersionKind::Delete => {
            let prev = prev.ok_or_else(|| super::schema::corrupt("versions", key))?;
            Ok(Event::Delete { prev, revision })
        }
    }
}

/// Newest-at-or-below-`revision` kind of each version of `key` in the
/// compaction range; used by the writer to pick what compaction keeps.
pub(super) fn newest_put_at_or_below(
    versions: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    key: &str,
    revision: Revision,
) -> Result<Option<Revision>> {
    let newest = versions
        .range((key, 0)..=(key, revision))
        .map_err(StoreError::backend)?
        .next_back();
    let Some(row) = newest else { return Ok(None) };
    let (at, body) = row.map_err(StoreError::backend)?;
    Ok(match version_kind(body.value()) {
        Some(VersionKind::Put) => Some(at.value().1),
        Some(VersionKind::Delete) => None,
        None => return Err(super::schema::corrupt("versions", key)),
    })
}
