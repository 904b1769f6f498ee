//! Watch streams: replay from the event log, then follow the live broadcast.
//!
//! The watcher subscribes to the broadcast BEFORE reading the log, so every
//! write is either in the snapshot it replays or still queued in its
//! receiver; events at or below the last revision it has covered are
//! dropped as duplicates. A receiver that overflows does not lose events
//! either: it re-reads the gap from the log and resumes. Only when the gap
//! has been compacted away does the stream end with `Compacted`, which the
//! API server turns into 410 Gone.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use redb::{Database, ReadableDatabase};
use tokio::sync::broadcast::{self, error::RecvError};

use super::read::{self, HistoryPage};
use crate::{Event, Result, Revision, StoreError, WatchStream};

/// Log entries examined per replay page (one read transaction each).
const REPLAY_PAGE: usize = 1024;

struct Watcher {
    db: Arc<Database>,
    prefix: String,
    live: broadcast::Receiver<Event>,
    /// Every event at or below this revision was delivered or skipped.
    covered: Revision,
    /// The log must be replayed up to here before following `live`.
    replay_to: Revision,
    buffered: VecDeque<Event>,
    finished: bool,
}

pub(super) fn stream(
    db: Arc<Database>,
    prefix: String,
    live: broadcast::Receiver<Event>,
    after: Revision,
    replay_to: Revision,
) -> WatchStream {
    let watcher = Watcher {
        db,
        prefix,
        live,
        covered: after,
        replay_to,
        buffered: VecDeque::new(),
        finished: false,
    };
    futures::stream::unfold(watcher, |mut watcher| async move {
        let item = watcher.next().await?;
        Some((item, watcher))
    })
    .boxed()
}

impl Watcher {
    async fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(event) = self.buffered.pop_front() {
                return Some(Ok(event));
            }
            if self.covered < self.replay_to {
                if let Err(err) = self.replay_page().await {
                    self.finished = true;
                    return Some(Err(err));
                }
                continue;
            }
            match self.live.recv().await {
                Ok(event) => {
                    if event.revision() <= self.covered {
                        continue;
                    }
                    self.covered = event.revision();
                    if event.key().starts_with(&self.prefix) {
                        return Some(Ok(event));
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, prefix = %self.prefix, "watcher lagged; catching up from the log");
                    match self.current_revision().await {
                        Ok(current) => self.replay_to = current,
                        Err(err) => {
                            self.finished = true;
                            return Some(Err(err));
                        }
                    }
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    async fn replay_page(&mut self) -> Result<()> {
        let db = Arc::clone(&self.db);
        let prefix = self.prefix.clone();
        let (after, upto) = (self.covered, self.replay_to);
        let page: HistoryPage = blocking(move || {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            read::history_page(&txn, &prefix, after, upto, REPLAY_PAGE)
        })
        .await?;
        self.covered = page.scanned_to;
        self.buffered = page.events;
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision> {
        let db = Arc::clone(&self.db);
        blocking(move || {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            Ok(read::revisions(&txn)?.current)
        })
        .await
    }
}

/// Runs a redb read off the async runtime.
pub(super) async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(StoreError::backend)?
}
