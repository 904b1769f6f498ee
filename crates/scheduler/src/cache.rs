//! The scheduler's informers: reflector stores of nodes, pods and namespaces kept
//! current by watches, and a signal that wakes the scheduling loop when something
//! changed that could make a pending pod schedulable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::SchedulerError;

/// What changed in the cluster since the scheduler last looked.
#[derive(Debug, Default)]
pub struct Changes {
    /// Bumped on every change that can free room or satisfy a constraint: a node
    /// or namespace event, a bound pod's event, or any pod's deletion. Pending pods
    /// that failed at one value are retried only once it moves.
    generation: AtomicU64,
    /// Wakes the scheduling loop (for any pod or node event).
    wake: Notify,
}

impl Changes {
    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Waits for the next wake-up (immediately if one arrived since the last wait).
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Records a cluster change and wakes the loop.
    pub fn cluster_changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Wakes the loop without a cluster change (a new pending pod).
    pub fn pod_pending(&self) {
        self.wake.notify_one();
    }
}

/// Read-only views of the watched objects.
#[derive(Clone)]
pub struct Cache {
    /// All nodes.
    pub nodes: Store<Node>,
    /// All pods, bound and pending.
    pub pods: Store<Pod>,
    /// All namespaces (for namespace selectors in affinity terms).
    pub namespaces: Store<Namespace>,
    /// All PersistentVolumeClaims (pods' volumes).
    pub claims: Store<PersistentVolumeClaim>,
    /// All PersistentVolumes (where bound claims' data lives).
    pub volumes: Store<PersistentVolume>,
    /// All StorageClasses (how unbound claims get their volumes).
    pub storage_classes: Store<StorageClass>,
    /// The change signal.
    pub changes: Arc<Changes>,
}

impl Cache {
    /// Starts the watches as tasks in `tasks`; they end when `shutdown` is cancelled.
    pub fn start(
        client: &kube::Client,
        tasks: &mut JoinSet<Result<(), SchedulerError>>,
        shutdown: &CancellationToken,
    ) -> Cache {
        let changes = Arc::new(Changes::default());
        let (nodes, node_writer) = reflector::store();
        let (pods, pod_writer) = reflector::store();
        let (namespaces, namespace_writer) = reflector::store();
        let node_events = reflector::reflector(node_writer, watch::<Node>(client));
        let pod_events = reflector::reflector(pod_writer, watch::<Pod>(client));
        let namespace_events = reflector::reflector(namespace_writer, watch::<Namespace>(client));
        tasks.spawn(follow(
            "nodes",
            node_events,
            changes.clone(),
            shutdown.clone(),
            |_| true,
        ));
        tasks.spawn(follow(
            "pods",
            pod_events,
            changes.clone(),
            shutdown.clone(),
            pod_event_is_cluster_change,
        ));
        tasks.spawn(follow(
            "namespaces",
            namespace_events,
            changes.clone(),
            shutdown.clone(),
            |_| true,
        ));
        let claims = follow_all::<PersistentVolumeClaim>(
            "persistentvolumeclaims",
            client,
            tasks,
            &changes,
            shutdown,
        );
        let volumes =
            follow_all::<PersistentVolume>("persistentvolumes", client, tasks, &changes, shutdown);
        let storage_classes =
            follow_all::<StorageClass>("storageclasses", client, tasks, &changes, shutdown);
        Cache {
            nodes,
            pods,
            namespaces,
            claims,
            volumes,
            storage_classes,
            changes,
        }
    }

    /// Waits until every store holds a complete initial list.
    pub async fn synced(&self) -> Result<(), SchedulerError> {
        let ended = |_| SchedulerError::WatchEnded("initial list");
        self.nodes.wait_until_ready().await.map_err(ended)?;
        self.pods.wait_until_ready().await.map_err(ended)?;
        self.namespaces.wait_until_ready().await.map_err(ended)?;
        self.claims.wait_until_ready().await.map_err(ended)?;
        self.volumes.wait_until_ready().await.map_err(ended)?;
        self.storage_classes.wait_until_ready().await.map_err(ended)
    }
}

/// A store of every `K`, kept by a watch task on `tasks`; any change to one is a
/// cluster change (a claim bound or annotated, a volume or class created).
fn follow_all<K>(
    what: &'static str,
    client: &kube::Client,
    tasks: &mut JoinSet<Result<(), SchedulerError>>,
    changes: &Arc<Changes>,
    shutdown: &CancellationToken,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let events = reflector::reflector(writer, watch::<K>(client));
    tasks.spawn(follow(
        what,
        events,
        changes.clone(),
        shutdown.clone(),
        |_| true,
    ));
    store
}

fn watch<K>(
    client: &kube::Client,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}

/// A pending pod's own update changes nothing for other pending pods; everything
/// else about pods (bindings, status of bound pods, deletions) might.
fn pod_event_is_cluster_change(event: &Event<Pod>) -> bool {
    match event {
        Event::Apply(pod) | Event::InitApply(pod) => {
            crate::snapshot::occupies_node(pod) || pod_is_finished_or_bound(pod)
        }
        Event::Delete(_) | Event::Init | Event::InitDone => true,
    }
}

fn pod_is_finished_or_bound(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.node_name.as_deref())
        .is_some_and(|node| !node.is_empty())
}

/// Drives one reflector until shutdown, signalling changes.
async fn follow<K, S>(
    what: &'static str,
    events: S,
    changes: Arc<Changes>,
    shutdown: CancellationToken,
    is_cluster_change: fn(&Event<K>) -> bool,
) -> Result<(), SchedulerError>
where
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send,
{
    let mut events = std::pin::pin!(events);
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            event = events.next() => event,
        };
        match event {
            None => return Err(SchedulerError::WatchEnded(what)),
            Some(Err(err)) => tracing::warn!(%err, what, "watch failed; retrying with backoff"),
            Some(Ok(event)) if is_cluster_change(&event) => changes.cluster_changed(),
            Some(Ok(_)) => changes.pod_pending(),
        }
    }
}
