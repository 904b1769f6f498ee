//! The single writer thread and its group commit.
//!
//! redb allows one write transaction at a time and an fsync costs
//! milliseconds, so committing each write alone would cap throughput at a
//! few hundred writes per second. Instead every write is queued to one
//! dedicated OS thread (blocking I/O stays off the tokio runtime), which
//! drains whatever is queued, applies each request in order inside ONE
//! transaction, commits it with `Durability::Immediate`, and only then
//! answers each caller with its own result. A request that fails its
//! precondition (conflict, missing key) changes nothing and does not affect
//! the others in the batch; only a failed commit fails the whole batch.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use bytes::Bytes;
use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};
use tokio::sync::{broadcast, oneshot};

use super::read::newest_put_at_or_below;
use super::schema::{
    CURRENT, HISTORY, META, META_COMPACTED, META_REVISION, VERSIONS, VersionKind, decode_current,
    encode_current, encode_version, read_meta,
};
use crate::{Event, KeyValue, Result, Revision, StoreError};

/// A mutation queued for the writer.
#[derive(Debug)]
pub(super) enum Command {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Option<Revision>,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

/// What a successfully applied command produced.
#[derive(Debug)]
pub(super) enum Outcome {
    Written(Event),
    Compacted(Revision),
}

pub(super) struct Request {
    command: Command,
    reply: oneshot::Sender<Result<Outcome>>,
}

/// Counters that show group commit at work.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub transactions: AtomicU64,
    pub writes: AtomicU64,
}

/// The queue into the writer thread.
#[derive(Clone)]
pub(super) struct WriteQueue(mpsc::Sender<Request>);

impl WriteQueue {
    /// Queues `command` without blocking; the receiver resolves once the
    /// batch holding it is durable.
    pub fn submit(&self, command: Command) -> Result<oneshot::Receiver<Result<Outcome>>> {
        let (reply, receiver) = oneshot::channel();
        self.0
            .send(Request { command, reply })
            .map_err(|_| writer_gone())?;
        Ok(receiver)
    }
}

pub(super) fn writer_gone() -> StoreError {
    StoreError::backend(std::io::Error::other("store writer has shut down"))
}

/// Starts the writer thread. It exits once every [`WriteQueue`] is dropped.
pub(super) fn spawn(
    db: Arc<Database>,
    events: broadcast::Sender<Event>,
    counters: Arc<Counters>,
    max_batch: usize,
) -> std::io::Result<(WriteQueue, JoinHandle<()>)> {
    let (sender, receiver) = mpsc::channel::<Request>();
    let thread = std::thread::Builder::new()
        .name("gantry-store-writer".into())
        .spawn(move || {
            while let Ok(first) = receiver.recv() {
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match receiver.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                commit_batch(&db, batch, &events, &counters);
            }
        })?;
    Ok((WriteQueue(sender), thread))
}

fn commit_batch(
    db: &Database,
    batch: Vec<Request>,
    events: &broadcast::Sender<Event>,
    counters: &Counters,
) {
    let (commands, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|request| (request.command, request.reply))
        .unzip();
    match apply_and_commit(db, commands) {
        Ok(results) => {
            counters.transactions.fetch_add(1, Ordering::Relaxed);
            counters
                .writes
                .fetch_add(results.len() as u64, Ordering::Relaxed);
            // Publish before acknowledging so a caller that watches after
            // its own write can never see the live stream without it.
            for result in &results {
                if let Ok(Outcome::Written(event)) = result {
                    // No receivers is fine: nobody is watching.
                    let _ = events.send(event.clone());
                }
            }
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(err) => {
            tracing::error!(error = %err, "store commit failed; failing the whole batch");
            let message = err.to_string();
            for reply in replies {
                let _ = reply.send(Err(StoreError::backend(std::io::Error::other(
                    message.clone(),
                ))));
            }
        }
    }
}

/// The tables one batch writes, opened once per transaction.
struct Tables<'t> {
    current: Table<'t, &'static str, &'static [u8]>,
    versions: Table<'t, (&'static str, u64), &'static [u8]>,
    history: Table<'t, u64, &'static str>,
    meta: Table<'t, &'static str, u64>,
    revision: Revision,
}

fn apply_and_commit(
    db: &Database,
    commands: Vec<Command>,
) -> Result<Vec<Result<Outcome>>, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let results = apply_all(&txn, commands)?;
    txn.commit()?;
    Ok(results)
}

fn apply_all(
    txn: &WriteTransaction,
    commands: Vec<Command>,
) -> Result<Vec<Result<Outcome>>, redb::Error> {
    let meta = txn.open_table(META)?;
    let revision = read_meta(&meta, META_REVISION)?;
    let mut tables = Tables {
        current: txn.open_table(CURRENT)?,
        versions: txn.open_table(VERSIONS)?,
        history: txn.open_table(HISTORY)?,
        meta,
        revision,
    };
    let mut results = Vec::with_capacity(commands.len());
    for command in commands {
        results.push(apply(&mut tables, command)?);
    }
    if tables.revision != revision {
        tables.meta.insert(META_REVISION, tables.revision)?;
    }
    Ok(results)
}

/// Applies one command. The outer error aborts the transaction; the inner
/// one is this request's own failure and leaves the tables untouched.
fn apply(tables: &mut Tables<'_>, command: Command) -> Result<Result<Outcome>, redb::Error> {
    match command {
        Command::Create { key, value } => create(tables, key, value),
        Command::Update {
            key,
            value,
            expected,
        } => update(tables, key, value, expected),
        Command::Delete { key, expected } => delete(tables, key, expected),
        Command::Compact { revision } => compact(tables, revision),
    }
}

fn current_value(tables: &Tables<'_>, key: &str) -> Result<Result<Option<KeyValue>>, redb::Error> {
    Ok(match tables.current.get(key)? {
        Some(row) => decode_current(key, row.value()).map(Some),
        None => Ok(None),
    })
}

/// Loads the live value for a compare-and-swap, enforcing `expected`.
fn live_for_swap(
    tables: &Tables<'_>,
    key: &str,
    expected: Option<Revision>,
) -> Result<Result<KeyValue>, redb::Error> {
    let live = match current_value(tables, key)? {
        Ok(Some(live)) => live,
        Ok(None) => return Ok(Err(StoreError::NotFound(key.to_owned()))),
        Err(err) => return Ok(Err(err)),
    };
    if let Some(expected) = expected
        && expected != live.mod_revision
    {
        return Ok(Err(StoreError::Conflict {
            key: key.to_owned(),
            expected,
            current: live.mod_revision,
        }));
    }
    Ok(Ok(live))
}

fn record_version(
    tables: &mut Tables<'_>,
    key: &str,
    kind: VersionKind,
    create_revision: Revision,
    prev_revision: Revision,
    value: &[u8],
) -> Result<Revision, redb::Error> {
    tables.revision += 1;
    let revision = tables.revision;
    tables.versions.insert(
        (key, revision),
        encode_version(kind, create_revision, prev_revision, value).as_slice(),
    )?;
    tables.history.insert(revision, key)?;
    Ok(revision)
}

fn create(
    tables: &mut Tables<'_>,
    key: String,
    value: Bytes,
) -> Result<Result<Outcome>, redb::Error> {
    match current_value(tables, &key)? {
        Ok(None) => {}
        Ok(Some(_)) => return Ok(Err(StoreError::AlreadyExists(key))),
        Err(err) => return Ok(Err(err)),
    }
    let revision = tables.revision + 1;
    record_version(tables, &key, VersionKind::Put, revision, 0, &value)?;
    tables.current.insert(
        key.as_str(),
        encode_current(revision, revision, &value).as_slice(),
    )?;
    let kv = KeyValue {
        key,
        value,
        create_revision: revision,
        mod_revision: revision,
    };
    Ok(Ok(Outcome::Written(Event::Put { kv, prev: None })))
}

fn update(
    tables: &mut Tables<'_>,
    key: String,
    value: Bytes,
    expected: Option<Revision>,
) -> Result<Result<Outcome>, redb::Error> {
    let live = match live_for_swap(tables, &key, expected)? {
        Ok(live) => live,
        Err(err) => return Ok(Err(err)),
    };
    let revision = record_version(
        tables,
        &key,
        VersionKind::Put,
        live.create_revision,
        live.mod_revision,
        &value,
    )?;
    tables.current.insert(
        key.as_str(),
        encode_current(live.create_revision, revision, &value).as_slice(),
    )?;
    let kv = KeyValue {
        key,
        value,
        create_revision: live.create_revision,
        mod_revision: revision,
    };
    Ok(Ok(Outcome::Written(Event::Put {
        kv,
        prev: Some(live),
    })))
}

fn delete(
    tables: &mut Tables<'_>,
    key: String,
    expected: Option<Revision>,
) -> Result<Result<Outcome>, redb::Error> {
    let live = match live_for_swap(tables, &key, expected)? {
        Ok(live) => live,
        Err(err) => return Ok(Err(err)),
    };
    let revision = record_version(
        tables,
        &key,
        VersionKind::Delete,
        live.create_revision,
        live.mod_revision,
        &[],
    )?;
    tables.current.remove(key.as_str())?;
    Ok(Ok(Outcome::Written(Event::Delete {
        prev: live,
        revision,
    })))
}

fn compact(tables: &mut Tables<'_>, revision: Revision) -> Result<Result<Outcome>, redb::Error> {
    let compacted = read_meta(&tables.meta, META_COMPACTED)?;
    if revision > tables.revision {
        return Ok(Err(StoreError::FutureRevision {
            requested: revision,
            current: tables.revision,
        }));
    }
    if revision < compacted {
        return Ok(Err(StoreError::Compacted {
            requested: revision,
            compacted,
        }));
    }
    if revision == compacted {
        return Ok(Ok(Outcome::Compacted(compacted)));
    }
    // Only keys written after the previous compaction can hold versions
    // that are now obsolete; everything older was compacted already.
    let mut touched = BTreeSet::new();
    for row in tables
        .history
        .extract_from_if((compacted + 1)..=revision, |_, _| true)?
    {
        let (_, key) = row?;
        touched.insert(key.value().to_owned());
    }
    for key in &touched {
        // A corrupt record aborts the compaction rather than guessing.
        let keep = newest_put_at_or_below(&tables.versions, key, revision)
            .map_err(|err| redb::Error::from(std::io::Error::other(err.to_string())))?;
        tables.versions.retain_in(
            (key.as_str(), 0)..=(key.as_str(), revision),
            |(_, at), _| Some(at) == keep,
        )?;
    }
    tables.meta.insert(META_COMPACTED, revision)?;
    Ok(Ok(Outcome::Compacted(revision)))
}
