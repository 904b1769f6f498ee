//! [`RedbStore`]: the embedded, durable default backend of `gantry server`.
//!
//! Built on redb (a copy-on-write B-tree file with ACID transactions):
//! reads run in MVCC read transactions and never wait for writes; all
//! writes funnel through one writer thread that group-commits them (see
//! [`writer`]); the table layout and compaction rules are in [`schema`].

mod autocompact;
mod read;
mod schema;
mod watch;
mod writer;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase};
use tokio::sync::broadcast;

use autocompact::AutoCompactor;
pub use autocompact::{CompactionPolicy, Retention};
use watch::blocking;
use writer::{Command, Counters, Outcome, WriteQueue, writer_gone};

use crate::{
    Event, KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError, WatchStream,
    WriteResult,
};

/// Tuning knobs for [`RedbStore::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedbOptions {
    /// Live events buffered per watcher before it must catch up from disk.
    pub watch_buffer: usize,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            watch_buffer: 4096,
            max_batch: 1024,
        }
    }
}

/// How much group commit is batching: `writes / transactions` writes share
/// each fsync on average.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitStats {
    /// Write transactions committed.
    pub transactions: u64,
    /// Requests (writes and compactions) those transactions carried.
    pub writes: u64,
}

/// The redb-backed [`Store`].
///
/// Dropping it (or calling [`RedbStore::shutdown`]) stops the compactor,
/// lets the writer finish queued requests, and ends every watch stream.
pub struct RedbStore {
    db: Arc<Database>,
    queue: Mutex<Option<WriteQueue>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    events: Mutex<Option<broadcast::Sender<Event>>>,
    compactor: Mutex<Option<AutoCompactor>>,
    counters: Arc<Counters>,
}

impl RedbStore {
    /// Creates the database file at `path`, or reopens it with everything
    /// acknowledged before a crash. Blocking: call it at startup or from
    /// `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, RedbOptions::default())
    }

    /// [`RedbStore::open`] with explicit tuning.
    pub fn open_with(path: impl AsRef<Path>, options: RedbOptions) -> Result<Self> {
        let db = Arc::new(Database::create(path).map_err(StoreError::backend)?);
        create_tables(&db).map_err(StoreError::backend)?;
        let (events, _) = broadcast::channel(options.watch_buffer.max(1));
        let counters = Arc::new(Counters::default());
        let (queue, writer_thread) = writer::spawn(
            Arc::clone(&db),
            events.clone(),
            Arc::clone(&counters),
            options.max_batch.max(1),
        )
        .map_err(StoreError::backend)?;
        Ok(RedbStore {
            db,
            queue: Mutex::new(Some(queue)),
            writer_thread: Mutex::new(Some(writer_thread)),
            events: Mutex::new(Some(events)),
            compactor: Mutex::new(None),
            counters,
        })
    }

    /// Starts (or replaces) the background compactor.
    pub fn enable_auto_compaction(&self, policy: CompactionPolicy) -> Result<()> {
        let queue = self.queue()?;
        let compactor = AutoCompactor::start(Arc::clone(&self.db), queue, policy)
            .map_err(StoreError::backend)?;
        // The old compactor, if any, is stopped and joined when dropped.
        let previous = lock(&self.compactor).replace(compactor);
        drop(previous);
        Ok(())
    }

    /// Transactions and writes committed since open.
    pub fn commit_stats(&self) -> CommitStats {
        CommitStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
        }
    }

    /// Stops the compactor and the writer (after it commits what is queued)
    /// and ends all watch streams. Later writes fail; reads keep working.
    /// Blocks until the threads exit; idempotent.
    pub fn shutdown(&self) {
        if let Some(mut compactor) = lock(&self.compactor).take() {
            compactor.stop();
        }
        lock(&self.queue).take();
        if let Some(thread) = lock(&self.writer_thread).take() {
            let _ = thread.join();
        }
        lock(&self.events).take();
    }

    fn queue(&self) -> Result<WriteQueue> {
        lock(&self.queue).clone().ok_or_else(writer_gone)
    }

    async fn write(&self, command: Command) -> Result<Outcome> {
        let reply = self.queue()?.submit(command)?;
        reply.await.map_err(|_| writer_gone())?
    }

    async fn write_event(&self, command: Command) -> Result<Event> {
        match self.write(command).await? {
            Outcome::Written(event) => Ok(event),
            Outcome::Compacted(_) => unreachable!("the writer answers a write with its event"),
        }
    }

    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&redb::ReadTransaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = Arc::clone(&self.db);
        blocking(move || {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            read(&txn)
        })
        .await
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes sure every table exists so read transactions can open them.
fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.open_table(schema::CURRENT)?;
    txn.open_table(schema::VERSIONS)?;
    txn.open_table(schema::HISTORY)?;
    txn.open_table(schema::META)?;
    txn.commit()?;
    Ok(())
}

#[async_trait]
impl Store for RedbStore {
    async fn current_revision(&self) -> Result<Revision> {
        self.read(|txn| Ok(read::revisions(txn)?.current)).await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.read(move |txn| read::get(txn, &key)).await
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
        let prefix = prefix.to_owned();
        self.read(move |txn| read::list(txn, &prefix, &options))
            .await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<WriteResult> {
        let event = self
            .write_event(Command::Create {
                key: key.to_owned(),
                value,
            })
            .await?;
        Ok(WriteResult {
            revision: event.revision(),
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<Revision>,
    ) -> Result<WriteResult> {
        let event = self
            .write_event(Command::Update {
                key: key.to_owned(),
                value,
                expected,
            })
            .await?;
        Ok(WriteResult {
            revision: event.revision(),
        })
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(KeyValue, WriteResult)> {
        match self
            .write_event(Command::Delete {
                key: key.to_owned(),
                expected,
            })
            .await?
        {
            Event::Delete { prev, revision } => Ok((prev, WriteResult { revision })),
            Event::Put { .. } => unreachable!("the writer answers a delete with a delete event"),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // Subscribe first: anything committed from here on is either in the
        // snapshot read below or waiting in this receiver.
        let live = lock(&self.events)
            .as_ref()
            .ok_or_else(writer_gone)?
            .subscribe();
        let revs = self.read(read::revisions).await?;
        read::check_readable(after, revs)?;
        Ok(watch::stream(
            Arc::clone(&self.db),
            prefix.to_owned(),
            live,
            after,
            revs.current,
        ))
    }

    async fn compact(&self, revision: Revision) -> Result<Revision> {
        match self.write(Command::Compact { revision }).await? {
            Outcome::Compacted(revision) => Ok(revision),
            Outcome::Written(_) => {
                unreachable!("the writer answers a compaction with its revision")
            }
        }
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        self.read(|txn| Ok(read::revisions(txn)?.compacted)).await
    }
}

#[cfg(test)]
mod tests;
