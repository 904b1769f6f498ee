//! The two pieces every controller here is built from: a watched cache of one
//! kind (kube-runtime's reflector, restarted with backoff on errors) that
//! reports each change, and a work queue that coalesces those reports into
//! keys, reconciles each key once per burst, and retries failures with backoff.

use std::collections::{BTreeSet, HashMap};
use std::fmt::{Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Starts watching `api` into a cache, calling `on_change` with every object
/// added, modified or deleted. The watch runs on `tasks` until `shutdown`;
/// API errors are logged and the watch resumes after a backoff.
pub(crate) fn spawn_reflector<K>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    config: watcher::Config,
    dyntype: K::DynamicType,
    shutdown: CancellationToken,
    on_change: impl Fn(&K) + Send + 'static,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let kind = K::kind(&dyntype).into_owned();
    let writer = reflector::store::Writer::new(dyntype);
    let store = writer.as_reader();
    let changes = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    tasks.spawn(async move {
        let mut changes = std::pin::pin!(changes);
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = changes.next() => next,
            };
            match next {
                Some(Ok(object)) => on_change(&object),
                Some(Err(err)) => tracing::warn!(%err, kind, "watch failed; retrying"),
                None => return,
            }
        }
    });
    store
}

/// Waits until every cache has its first complete list, or shutdown.
/// Returns false on shutdown.
pub(crate) async fn wait_for_caches<K>(stores: &[&Store<K>], shutdown: &CancellationToken) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    for store in stores {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            ready = store.wait_until_ready() => if ready.is_err() { return false },
        }
    }
    true
}

/// Waits until one cache has its first complete list; false on shutdown.
pub(crate) async fn wait_for_cache<K>(store: &Store<K>, shutdown: &CancellationToken) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    wait_for_caches(&[store], shutdown).await
}

/// The sending side of a work queue: cheap to clone into watch callbacks.
#[derive(Clone)]
pub(crate) struct Queue<T> {
    sender: mpsc::UnboundedSender<T>,
}

impl<T> Queue<T> {
    /// Asks for `key` to be reconciled soon; repeated asks before it runs
    /// collapse into one reconcile.
    pub(crate) fn add(&self, key: T) {
        // The worker only stops at shutdown, when nobody needs the key any more.
        let _ = self.sender.send(key);
    }
}

/// The receiving side of a work queue.
pub(crate) struct Worker<T> {
    receiver: mpsc::UnboundedReceiver<T>,
}

/// A new work queue.
pub(crate) fn queue<T>() -> (Queue<T>, Worker<T>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (Queue { sender }, Worker { receiver })
}

/// How long a key waits before its first retry; doubled per failure.
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// The longest wait between retries of one key.
const MAX_RETRY: Duration = Duration::from_secs(30);

impl<T: Ord + Hash + Clone + Display> Worker<T> {
    /// Reconciles queued keys until shutdown. Every `resync` period all keys
    /// from `everything` are queued too, so a change the watches missed is
    /// healed; a failed reconcile is retried with exponential backoff.
    pub(crate) async fn run<F, Fut, E>(
        mut self,
        shutdown: CancellationToken,
        resync: Duration,
        everything: impl Fn() -> Vec<T>,
        mut reconcile: F,
    ) where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Display,
    {
        let mut pending = BTreeSet::new();
        let mut failures: HashMap<T, (Instant, u32)> = HashMap::new();
        let mut retry_tick = tokio::time::interval(FIRST_RETRY);
        let mut resync_tick = tokio::time::interval(resync);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                key = self.receiver.recv() => match key {
                    Some(key) => { pending.insert(key); }
                    None => return,
                },
                _ = retry_tick.tick() => {
                    let now = Instant::now();
                    pending.extend(failures.iter().filter(|(_, (due, _))| *due <= now).map(|(k, _)| k.clone()));
                }
                _ = resync_tick.tick() => pending.extend(everything()),
            }
            while let Ok(key) = self.receiver.try_recv() {
                pending.insert(key);
            }
            for key in std::mem::take(&mut pending) {
                let result = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    result = reconcile(key.clone()) => result,
                };
                match result {
                    Ok(()) => {
                        failures.remove(&key);
                    }
                    Err(err) => {
                        let attempts = failures.get(&key).map_or(0, |(_, n)| *n) + 1;
                        let delay = FIRST_RETRY
                            .saturating_mul(2u32.saturating_pow(attempts - 1))
                            .min(MAX_RETRY);
                        tracing::warn!(%key, %err, attempts, "reconcile failed; retrying in {delay:?}");
                        failures.insert(key, (Instant::now() + delay, attempts));
                    }
                }
            }
        }
    }
}

/// Waits for every task to finish after shutdown was requested.
pub(crate) async fn join_all(mut tasks: JoinSet<()>) {
    while let Some(result) = tasks.join_next().await {
        if let Err(err) = result
            && err.is_panic()
        {
            tracing::error!(%err, "controller task panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Runs a worker over `keys` queued up front; `reconcile` fails a key's
    /// first `failures` attempts. Returns the keys in reconcile order once
    /// `until` attempts were made.
    async fn attempts(keys: &[&'static str], failures: u32, until: usize) -> Vec<&'static str> {
        let (queue, worker) = queue();
        for key in keys {
            queue.add(*key);
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let reconcile = {
            let seen = seen.clone();
            let shutdown = shutdown.clone();
            move |key: &'static str| {
                let mut seen = seen.lock().expect("lock");
                seen.push(key);
                let attempt = seen.iter().filter(|k| **k == key).count() as u32;
                if seen.len() >= until {
                    shutdown.cancel();
                }
                let result = if attempt <= failures {
                    Err("injected failure")
                } else {
                    Ok(())
                };
                std::future::ready(result)
            }
        };
        let run = worker.run(
            shutdown.clone(),
            Duration::from_secs(3600),
            Vec::new,
            reconcile,
        );
        tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("the worker stops at shutdown");
        seen.lock().expect("lock").clone()
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_keys_are_reconciled_once() {
        assert_eq!(attempts(&["b", "a", "b", "a"], 0, 2).await, vec!["a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_keys_are_retried_until_they_succeed() {
        let started = Instant::now();
        assert_eq!(attempts(&["a"], 3, 4).await, vec!["a"; 4]);
        // Backoff of 200 ms, 400 ms and 800 ms between the four attempts.
        assert!(started.elapsed() >= Duration::from_millis(1400));
    }
}
