//! Gantry's scheduler: watches pods without a node and binds each through
//! `pods/binding` to the node kube-scheduler's default profile would choose.
//!
//! The decision logic is pure and synchronous ([`framework::schedule`] over a
//! [`snapshot::Snapshot`]), so it is unit-tested plugin by plugin and benchmarked
//! without an API server; [`run`] is the thin async shell around it that keeps the
//! snapshot current from watches, binds, and reports failures.

pub mod filters;
pub mod framework;
pub mod labels;
pub mod resources;
pub mod scores;
pub mod snapshot;

#[cfg(test)]
mod testing;

mod cache;
mod scheduler;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use scheduler::SCHEDULER_NAME;

/// Why the scheduler stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A watch stream ended, so the scheduler's view would go stale.
    #[error("the {0} watch ended unexpectedly")]
    WatchEnded(&'static str),
    /// A watch task panicked.
    #[error("a watch task failed: {0}")]
    WatchFailed(String),
}

/// Schedules pending pods until `shutdown` is cancelled. Leader election is the
/// caller's: run this only while holding the lease.
pub async fn run(client: kube::Client, shutdown: CancellationToken) -> Result<(), SchedulerError> {
    let stop = shutdown.child_token();
    let mut watches = JoinSet::new();
    let cache = cache::Cache::start(&client, &mut watches, &stop);
    let scheduling = async {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            synced = cache.synced() => synced?,
        }
        tracing::info!("scheduler caches synced; scheduling");
        scheduler::Scheduler::new(client, cache.clone())
            .run(stop.clone())
            .await;
        Ok(())
    };
    let outcome = tokio::select! {
        outcome = scheduling => outcome,
        Some(ended) = watches.join_next() => match ended {
            Ok(result) => result,
            Err(err) => Err(SchedulerError::WatchFailed(err.to_string())),
        },
    };
    stop.cancel();
    while watches.join_next().await.is_some() {}
    outcome
}
