//! The garbage collector: deletes objects whose owners are gone, and carries
//! out the `Foreground` and `Orphan` deletions the API server only records as
//! finalizers (`foregroundDeletion`, `orphan`).
//!
//! It watches every served kind that can be owned (events are not) into
//! caches and, after each burst of changes, sweeps the owner graph built
//! from them by uid. A sweep costs one pass over the cached objects, which
//! suits the cluster sizes Gantry targets and keeps the collector free of the
//! incremental bookkeeping upstream's graph builder needs. An owner missing
//! from the caches is looked up live before anything is deleted: the caches
//! of different kinds are filled by different watches and may lag each other.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::informer;

/// The finalizer of a pending `Foreground` deletion.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The finalizer of a pending `Orphan` deletion.
pub const ORPHAN_FINALIZER: &str = "orphan";

/// How often the graph is swept without any change, to retry what failed.
const RESYNC: Duration = Duration::from_secs(30);

/// A kind the collector watches: its API resource and whether it is namespaced.
#[derive(Clone)]
struct Kind {
    resource: ApiResource,
    namespaced: bool,
}

impl Kind {
    fn of<K>(namespaced: bool) -> Kind
    where
        K: kube::Resource<DynamicType = ()>,
    {
        Kind {
            resource: ApiResource::erase::<K>(&()),
            namespaced,
        }
    }

    fn api(&self, client: &kube::Client, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &self.resource),
            None => Api::all_with(client.clone(), &self.resource),
        }
    }

    fn is(&self, owner: &OwnerReference) -> bool {
        self.resource.api_version == owner.api_version && self.resource.kind == owner.kind
    }
}

/// The served kinds that are owned (or own) in practice.
fn watched_kinds() -> Vec<Kind> {
    vec![
        Kind::of::<Pod>(true),
        Kind::of::<ReplicaSet>(true),
        Kind::of::<Deployment>(true),
        Kind::of::<StatefulSet>(true),
        Kind::of::<DaemonSet>(true),
        Kind::of::<ControllerRevision>(true),
        Kind::of::<Job>(true),
        Kind::of::<CronJob>(true),
        Kind::of::<Service>(true),
        Kind::of::<Endpoints>(true),
        Kind::of::<EndpointSlice>(true),
        Kind::of::<ConfigMap>(true),
        Kind::of::<Secret>(true),
        Kind::of::<PersistentVolumeClaim>(true),
        Kind::of::<ServiceAccount>(true),
        Kind::of::<Lease>(true),
        Kind::of::<Node>(false),
        Kind::of::<PersistentVolume>(false),
    ]
}

/// The single work item: sweep the whole graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Sweep;

impl fmt::Display for Sweep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("owner graph")
    }
}

/// Runs the garbage collector until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let shutdown = shutdown.child_token();
    let (queue, worker) = informer::queue();
    let mut tasks = JoinSet::new();
    let caches: Vec<(Kind, Store<DynamicObject>)> = watched_kinds()
        .into_iter()
        .map(|kind| {
            let queue = queue.clone();
            let store = informer::spawn_reflector(
                &mut tasks,
                kind.api(&client, None),
                watcher::Config::default(),
                kind.resource.clone(),
                shutdown.clone(),
                move |_: &DynamicObject| queue.add(Sweep),
            );
            (kind, store)
        })
        .collect();
    let stores: Vec<&Store<DynamicObject>> = caches.iter().map(|(_, s)| s).collect();
    if informer::wait_for_caches(&stores, &shutdown).await {
        let collector = Collector { client, caches };
        worker
            .run(
                shutdown.clone(),
                RESYNC,
                || vec![Sweep],
                |_| collector.sweep(),
            )
            .await;
    }
    shutdown.cancel();
    informer::join_all(tasks).await;
}

/// A cached object and the kind it is.
struct Entry<'a> {
    kind: &'a Kind,
    object: Arc<DynamicObject>,
}

/// The owner graph of one sweep: objects by uid, and who points at whom.
struct Graph<'a> {
    objects: HashMap<String, Entry<'a>>,
    /// Owner uid to the uids of its dependents.
    dependents: HashMap<String, Vec<String>>,
}

/// How one owner reference of a dependent stands.
#[derive(Debug, PartialEq, Eq)]
enum OwnerState {
    /// The owner exists and is not waiting for its dependents to go.
    Solid,
    /// The owner exists and is being deleted in the foreground.
    WaitingForDependents,
    /// No object with this uid exists.
    Dangling,
}

struct Collector {
    client: kube::Client,
    caches: Vec<(Kind, Store<DynamicObject>)>,
}

impl Collector {
    /// One pass over the graph. Every object is handled even when another
    /// fails; the last failure is returned so the sweep is retried.
    async fn sweep(&self) -> Result<(), kube::Error> {
        let graph = self.graph();
        let mut result = Ok(());
        for entry in graph.objects.values() {
            let outcome = if entry.object.metadata.deletion_timestamp.is_some() {
                self.finish_deletion(&graph, entry).await
            } else {
                self.collect_if_orphaned(&graph, entry).await
            };
            if let Err(err) = outcome {
                tracing::warn!(object = describe(entry), %err, "garbage collection");
                result = Err(err);
            }
        }
        result
    }

    fn graph(&self) -> Graph<'_> {
        let mut objects = HashMap::new();
        let mut dependents: HashMap<String, Vec<String>> = HashMap::new();
        for (kind, store) in &self.caches {
            for object in store.state() {
                let Some(uid) = object.uid() else { continue };
                for owner in object.owner_references() {
                    dependents
                        .entry(owner.uid.clone())
                        .or_default()
                        .push(uid.clone());
                }
                objects.insert(uid, Entry { kind, object });
            }
        }
        Graph {
            objects,
            dependents,
        }
    }

    /// For an object being deleted with a garbage-collection finalizer:
    /// orphan its dependents or wait for its blocking ones, then let it go.
    async fn finish_deletion(
        &self,
        graph: &Graph<'_>,
        owner: &Entry<'_>,
    ) -> Result<(), kube::Error> {
        let finalizers = owner.object.finalizers();
        let uid = owner.object.uid().unwrap_or_default();
        let dependents: Vec<&Entry> = graph
            .dependents
            .get(&uid)
            .into_iter()
            .flatten()
            .filter_map(|d| graph.objects.get(d))
            .collect();
        if finalizers.iter().any(|f| f == ORPHAN_FINALIZER) {
            if dependents.is_empty() {
                return self.remove_finalizer(owner, ORPHAN_FINALIZER).await;
            }
            for dependent in dependents {
                self.remove_owner_references(dependent, &[uid.as_str()])
                    .await?;
            }
        } else if finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) {
            let blocking = dependents.iter().any(|d| {
                d.object
                    .owner_references()
                    .iter()
                    .any(|o| o.uid == uid && o.block_owner_deletion == Some(true))
            });
            if !blocking {
                return self.remove_finalizer(owner, FOREGROUND_FINALIZER).await;
            }
        }
        Ok(())
    }

    /// Deletes a dependent all of whose owners are gone or being deleted in
    /// the foreground; drops references to such owners from a dependent that
    /// still has a live one.
    async fn collect_if_orphaned(
        &self,
        graph: &Graph<'_>,
        dependent: &Entry<'_>,
    ) -> Result<(), kube::Error> {
        let owners = dependent.object.owner_references();
        if owners.is_empty() {
            return Ok(());
        }
        let mut states = Vec::with_capacity(owners.len());
        for owner in owners {
            states.push((owner, self.owner_state(graph, dependent, owner).await?));
        }
        let solid = states.iter().any(|(_, s)| *s == OwnerState::Solid);
        let waiting = states
            .iter()
            .any(|(_, s)| *s == OwnerState::WaitingForDependents);
        if solid {
            let gone: Vec<&str> = states
                .iter()
                .filter(|(_, s)| *s != OwnerState::Solid)
                .map(|(o, _)| o.uid.as_str())
                .collect();
            if gone.is_empty() {
                return Ok(());
            }
            return self.remove_owner_references(dependent, &gone).await;
        }
        let policy = if waiting {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        tracing::info!(
            object = describe(dependent),
            ?policy,
            "deleting dependent whose owners are gone"
        );
        self.delete(dependent, policy).await
    }

    /// Where an owner reference stands, checking live when the caches do
    /// not have the owner. Owners of kinds the collector does not watch are
    /// taken as present: nothing is deleted on a guess.
    async fn owner_state(
        &self,
        graph: &Graph<'_>,
        dependent: &Entry<'_>,
        owner: &OwnerReference,
    ) -> Result<OwnerState, kube::Error> {
        if let Some(entry) = graph.objects.get(&owner.uid) {
            return Ok(state_of(&entry.object));
        }
        let Some((kind, _)) = self.caches.iter().find(|(k, _)| k.is(owner)) else {
            return Ok(OwnerState::Solid);
        };
        if kind.namespaced && !dependent.kind.namespaced {
            return Ok(OwnerState::Solid);
        }
        let namespace = dependent.object.namespace();
        let live = kind
            .api(&self.client, namespace.as_deref())
            .get_opt(&owner.name)
            .await?;
        Ok(match live {
            Some(found) if found.uid().as_deref() == Some(owner.uid.as_str()) => state_of(&found),
            _ => OwnerState::Dangling,
        })
    }

    async fn delete(
        &self,
        entry: &Entry<'_>,
        policy: PropagationPolicy,
    ) -> Result<(), kube::Error> {
        let params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: entry.object.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let api = entry
            .kind
            .api(&self.client, entry.object.namespace().as_deref());
        ignore_not_found(
            api.delete(&entry.object.name_any(), &params)
                .await
                .map(|_| ()),
        )
    }

    /// Drops the owner references with these uids, guarded by the cached
    /// resourceVersion so a concurrent change is not overwritten.
    async fn remove_owner_references(
        &self,
        entry: &Entry<'_>,
        owner_uids: &[&str],
    ) -> Result<(), kube::Error> {
        let remaining: Vec<&OwnerReference> = entry
            .object
            .owner_references()
            .iter()
            .filter(|o| !owner_uids.contains(&o.uid.as_str()))
            .collect();
        tracing::info!(
            object = describe(entry),
            "removing owner references {owner_uids:?}"
        );
        let patch = json!({"metadata": {
            "ownerReferences": remaining,
            "resourceVersion": entry.object.resource_version(),
        }});
        self.patch(entry, patch).await
    }

    async fn remove_finalizer(
        &self,
        entry: &Entry<'_>,
        finalizer: &str,
    ) -> Result<(), kube::Error> {
        let remaining: Vec<&String> = entry
            .object
            .finalizers()
            .iter()
            .filter(|f| *f != finalizer)
            .collect();
        tracing::info!(
            object = describe(entry),
            finalizer,
            "dependents handled; removing finalizer"
        );
        let patch = json!({"metadata": {
            "finalizers": remaining,
            "resourceVersion": entry.object.resource_version(),
        }});
        self.patch(entry, patch).await
    }

    async fn patch(&self, entry: &Entry<'_>, patch: serde_json::Value) -> Result<(), kube::Error> {
        let api = entry
            .kind
            .api(&self.client, entry.object.namespace().as_deref());
        let result = api
            .patch(
                &entry.object.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await;
        ignore_not_found(result.map(|_| ()))
    }
}

fn state_of(owner: &DynamicObject) -> OwnerState {
    let foreground = owner.metadata.deletion_timestamp.is_some()
        && owner.finalizers().iter().any(|f| f == FOREGROUND_FINALIZER);
    if foreground {
        OwnerState::WaitingForDependents
    } else {
        OwnerState::Solid
    }
}

fn ignore_not_found(result: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other,
    }
}

fn describe(entry: &Entry<'_>) -> String {
    match entry.object.namespace() {
        Some(ns) => format!(
            "{} {ns}/{}",
            entry.kind.resource.kind,
            entry.object.name_any()
        ),
        None => format!("{} {}", entry.kind.resource.kind, entry.object.name_any()),
    }
}
