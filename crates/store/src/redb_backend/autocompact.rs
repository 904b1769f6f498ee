//! Automatic compaction, the store-side equivalent of kube-apiserver's
//! periodic etcd compaction: without it history grows without bound.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase};

use super::read;
use super::writer::{Command, WriteQueue};
use crate::{Result, Revision, StoreError};

/// How much history to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Keep the last `n` revisions.
    Revisions(u64),
    /// Keep every revision written within this long (kube-apiserver keeps
    /// roughly five minutes).
    Duration(Duration),
}

/// When and how far the background compactor compacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    pub retention: Retention,
    /// How often the compactor wakes up.
    pub interval: Duration,
}

impl CompactionPolicy {
    /// kube-apiserver's default: keep five minutes, checked every minute.
    pub fn kubernetes_default() -> Self {
        CompactionPolicy {
            retention: Retention::Duration(Duration::from_secs(300)),
            interval: Duration::from_secs(60),
        }
    }
}

/// The running compactor thread; stopping it (or dropping this) joins it.
pub(super) struct AutoCompactor {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AutoCompactor {
    pub fn start(
        db: Arc<Database>,
        queue: WriteQueue,
        policy: CompactionPolicy,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("gantry-store-compactor".into())
            .spawn(move || {
                let mut samples: VecDeque<(Instant, Revision)> = VecDeque::new();
                // Wake every interval until told to stop (or the store is gone).
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(policy.interval)
                {
                    if let Err(err) = tick(&db, &queue, policy.retention, &mut samples) {
                        tracing::warn!(error = %err, "automatic compaction failed");
                    }
                }
            })?;
        Ok(AutoCompactor {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn stop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for AutoCompactor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tick(
    db: &Database,
    queue: &WriteQueue,
    retention: Retention,
    samples: &mut VecDeque<(Instant, Revision)>,
) -> Result<()> {
    let revs = read::revisions(&db.begin_read().map_err(StoreError::backend)?)?;
    let now = Instant::now();
    samples.push_back((now, revs.current));
    let target = compaction_target(retention, revs.current, now, samples);
    if target <= revs.compacted {
        return Ok(());
    }
    let reply = queue.submit(Command::Compact { revision: target })?;
    reply
        .blocking_recv()
        .map_err(|_| super::writer::writer_gone())??;
    tracing::debug!(revision = target, "compacted store history");
    Ok(())
}

/// The newest revision that falls outside the retention window. Samples
/// older than the window are dropped, except the newest of them, which is
/// the answer for duration-based retention.
fn compaction_target(
    retention: Retention,
    current: Revision,
    now: Instant,
    samples: &mut VecDeque<(Instant, Revision)>,
) -> Revision {
    match retention {
        Retention::Revisions(keep) => current.saturating_sub(keep),
        Retention::Duration(window) => {
            let expired = |at: Instant| now.duration_since(at) >= window;
            while samples.len() > 1 && expired(samples[1].0) {
                samples.pop_front();
            }
            match samples.front() {
                Some(&(at, revision)) if expired(at) => revision,
                _ => 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_retention_keeps_the_last_n() {
        let mut samples = VecDeque::new();
        let now = Instant::now();
        assert_eq!(
            compaction_target(Retention::Revisions(10), 25, now, &mut samples),
            15
        );
        assert_eq!(
            compaction_target(Retention::Revisions(10), 5, now, &mut samples),
            0
        );
    }

    #[test]
    fn duration_retention_picks_the_newest_expired_sample() {
        let start = Instant::now();
        let window = Duration::from_secs(300);
        let mut samples: VecDeque<_> = [
            (start, 10),
            (start + Duration::from_secs(100), 20),
            (start + Duration::from_secs(200), 30),
        ]
        .into();
        // Nothing is five minutes old yet.
        let now = start + Duration::from_secs(250);
        assert_eq!(
            compaction_target(Retention::Duration(window), 40, now, &mut samples),
            0
        );
        // At 310s only the first sample expired; at 420s the second too.
        let now = start + Duration::from_secs(310);
        assert_eq!(
            compaction_target(Retention::Duration(window), 40, now, &mut samples),
            10
        );
        let now = start + Duration::from_secs(420);
        assert_eq!(
            compaction_target(Retention::Duration(window), 40, now, &mut samples),
            20
        );
        assert_eq!(samples.len(), 2);
    }
}
