//! The ReplicaSet controller: keeps `spec.replicas` pods matching each ReplicaSet's
//! selector, as kube-controller-manager's does.
//!
//! Each reconcile reads the ReplicaSet and lists its namespace's pods straight from
//! the API server rather than from a watch cache, so a pod it created a moment ago is
//! always counted and it never creates one twice (upstream needs "expectations" for
//! that). It adopts matching orphans, releases pods that stopped matching, creates or
//! deletes the difference, then writes a status computed from the pods as they are
//! *after* that, so `observedGeneration` promises the counts reflect the current spec.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::Selector;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use gantry_client::{EventRecorder, EventType, object_reference};

use crate::workload::{self, Error};

/// The component name on this controller's Events.
const COMPONENT: &str = "replicaset-controller";

/// Pods created at most per slow-start batch doubling (upstream's `SlowStartInitialBatchSize` is 1).
const MAX_BURST: usize = 500;

/// Runs the ReplicaSet controller until `shutdown`; API errors are logged and the
/// affected ReplicaSet retried, never returned.
pub async fn run(client: Client, shutdown: CancellationToken) {
    let controller = Controller::new(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let replica_sets = controller.store();
    let context = Arc::new(Context {
        client: client.clone(),
        recorder: EventRecorder::new(client.clone(), COMPONENT, None),
    });
    controller
        .watches(
            Api::<Pod>::all(client),
            watcher::Config::default(),
            move |pod| replica_sets_for_pod(&replica_sets, &pod),
        )
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, "replicaset controller");
            }
        })
        .await;
}

/// What every reconcile needs.
struct Context {
    client: Client,
    recorder: EventRecorder,
}

/// The ReplicaSets a pod event concerns: its controller if it has one, otherwise every
/// ReplicaSet in its namespace that would adopt it.
fn replica_sets_for_pod(replica_sets: &Store<ReplicaSet>, pod: &Pod) -> Vec<ObjectRef<ReplicaSet>> {
    let namespace = pod.namespace().unwrap_or_default();
    if let Some(owner) = workload::controller_of(&pod.metadata) {
        if owner.kind == "ReplicaSet" {
            return vec![ObjectRef::new(&owner.name).within(&namespace)];
        }
        return Vec::new();
    }
    if workload::is_terminating(&pod.metadata) {
        return Vec::new();
    }
    replica_sets
        .state()
        .iter()
        .filter(|rs| rs.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|rs| {
            let name = rs.name_any();
            let selector = rs.spec.as_ref().map(|s| &s.selector);
            workload::selector_of(&name, selector)
                .is_ok_and(|selector| workload::selects(&selector, pod.metadata.labels.as_ref()))
        })
        .map(|rs| ObjectRef::from_obj(rs.as_ref()))
        .collect()
}

fn error_policy(rs: Arc<ReplicaSet>, err: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(replicaset = %rs.name_any(), %err, "syncing replica set");
    Action::requeue(workload::RETRY_AFTER_ERROR)
}

async fn reconcile(cached: Arc<ReplicaSet>, context: Arc<Context>) -> Result<Action, Error> {
    let (name, namespace) = workload::name_and_namespace(cached.as_ref())?;
    let api: Api<ReplicaSet> = Api::namespaced(context.client.clone(), &namespace);
    let Some(rs) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    Sync::new(&context, rs, &namespace)?.run().await
}

/// One reconcile of one ReplicaSet.
struct Sync<'a> {
    context: &'a Context,
    rs: ReplicaSet,
    uid: String,
    selector: Selector,
    pods: Api<Pod>,
}

impl<'a> Sync<'a> {
    fn new(context: &'a Context, rs: ReplicaSet, namespace: &str) -> Result<Self, Error> {
        let name = rs.name_any();
        let uid = rs
            .metadata
            .uid
            .clone()
            .ok_or_else(|| Error::MissingMetadata(name.clone(), "uid"))?;
        let selector = workload::selector_of(&name, rs.spec.as_ref().map(|s| &s.selector))?;
        Ok(Sync {
            pods: Api::namespaced(context.client.clone(), namespace),
            context,
            rs,
            uid,
            selector,
        })
    }

    async fn run(self) -> Result<Action, Error> {
        let listed = self.pods.list(&ListParams::default()).await?.items;
        let mut pods = self.claim_pods(listed).await?;
        let mut create_error = None;
        if !workload::is_terminating(&self.rs.metadata) {
            let outcome = self.manage_replicas(&pods).await;
            pods.retain(|pod| !outcome.deleted.contains(&pod.name_any()));
            pods.extend(outcome.created);
            create_error = outcome.create_error;
        }
        let now = Timestamp::now();
        let status = self.calculate_status(&pods, create_error.as_ref(), now);
        if Some(&status) != self.rs.status.as_ref() {
            self.write_status(status).await?;
        }
        if let Some(err) = create_error {
            return Err(err);
        }
        Ok(workload::recheck_after(
            self.next_availability_change(&pods, now),
        ))
    }

    /// The pods this ReplicaSet controls after adopting matching orphans and releasing
    /// owned pods that no longer match (upstream's `ClaimPods`).
    async fn claim_pods(&self, pods: Vec<Pod>) -> Result<Vec<Pod>, Error> {
        let mut claimed = Vec::new();
        for pod in pods {
            let matches = workload::selects(&self.selector, pod.metadata.labels.as_ref());
            match workload::controller_of(&pod.metadata) {
                Some(owner) if owner.uid == self.uid => {
                    if matches {
                        claimed.push(pod);
                    } else if !workload::is_terminating(&pod.metadata) {
                        self.release(&pod).await?;
                    }
                }
                Some(_) => {}
                None => {
                    if matches
                        && !workload::is_terminating(&pod.metadata)
                        && !workload::is_terminating(&self.rs.metadata)
                        && let Some(adopted) = self.adopt(&pod).await?
                    {
                        claimed.push(adopted);
                    }
                }
            }
        }
        Ok(claimed)
    }

    /// Makes this ReplicaSet the pod's controller; `None` if the pod changed or vanished
    /// meanwhile (the next reconcile looks again).
    async fn adopt(&self, pod: &Pod) -> Result<Option<Pod>, Error> {
        let Some(reference) = workload::controller_reference(&self.rs) else {
            return Ok(None);
        };
        let mut references = pod.metadata.owner_references.clone().unwrap_or_default();
        references.push(reference);
        self.patch_owner_references(pod, &references).await
    }

    /// Removes this ReplicaSet's reference from a pod it no longer selects.
    async fn release(&self, pod: &Pod) -> Result<(), Error> {
        let references: Vec<OwnerReference> = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|reference| reference.uid != self.uid)
            .cloned()
            .collect();
        self.patch_owner_references(pod, &references).await?;
        Ok(())
    }

    /// Sets a pod's owner references, guarded by its uid and resourceVersion so that a
    /// concurrent change (or a new pod of the same name) is not overwritten.
    async fn patch_owner_references(
        &self,
        pod: &Pod,
        references: &[OwnerReference],
    ) -> Result<Option<Pod>, Error> {
        let patch = json!({"metadata": {
            "ownerReferences": references,
            "uid": pod.metadata.uid,
            "resourceVersion": pod.metadata.resource_version,
        }});
        match self
            .pods
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(patched) => Ok(Some(patched)),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Creates or deletes pods until the active ones number `spec.replicas`.
    async fn manage_replicas(&self, pods: &[Pod]) -> ManageOutcome {
        let desired = usize::try_from(self.desired_replicas()).unwrap_or(0);
        let mut active: Vec<&Pod> = pods.iter().filter(|pod| workload::is_active(pod)).collect();
        let mut outcome = ManageOutcome::default();
        if active.len() < desired {
            self.create_pods((desired - active.len()).min(MAX_BURST), &mut outcome)
                .await;
        } else if active.len() > desired {
            active.sort_by_key(|pod| deletion_rank(pod));
            let surplus = &active[..(active.len() - desired).min(MAX_BURST)];
            outcome.deleted = self.delete_pods(surplus).await;
        }
        outcome
    }

    /// Creates `count` pods in doubling batches, stopping at the first failure so that
    /// a quota or admission error costs one request, not hundreds (upstream's slow start).
    async fn create_pods(&self, count: usize, outcome: &mut ManageOutcome) {
        let mut batch = 1;
        let mut remaining = count;
        while remaining > 0 {
            let size = batch.min(remaining);
            let results = join_all((0..size).map(|_| self.create_pod())).await;
            for result in results {
                match result {
                    Ok(pod) => outcome.created.push(pod),
                    Err(err) => outcome.create_error = Some(err),
                }
            }
            if outcome.create_error.is_some() {
                return;
            }
            remaining -= size;
            batch *= 2;
        }
    }

    async fn create_pod(&self) -> Result<Pod, Error> {
        let pod = self.pod_from_template();
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(created) => {
                let message = format!("Created pod: {}", created.name_any());
                self.record(EventType::Normal, "SuccessfulCreate", &message)
                    .await;
                Ok(created)
            }
            Err(err) => {
                let message = format!("Error creating: {err}");
                self.record(EventType::Warning, "FailedCreate", &message)
                    .await;
                Err(err.into())
            }
        }
    }

    /// A new pod from the template: labels and annotations from it, a generated name
    /// prefixed by the ReplicaSet's, and this ReplicaSet as its controller.
    fn pod_from_template(&self) -> Pod {
        let template = self
            .rs
            .spec
            .as_ref()
            .and_then(|spec| spec.template.clone())
            .unwrap_or_default();
        let template_meta = template.metadata.unwrap_or_default();
        Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", self.rs.name_any())),
                namespace: self.rs.namespace(),
                labels: template_meta.labels,
                annotations: template_meta.annotations,
                finalizers: template_meta.finalizers,
                owner_references: workload::controller_reference(&self.rs).map(|r| vec![r]),
                ..Default::default()
            },
            spec: template.spec,
            status: None,
        }
    }

    /// Deletes the pods concurrently; returns the names that are gone or going.
    async fn delete_pods(&self, pods: &[&Pod]) -> Vec<String> {
        let deletions = pods.iter().map(|pod| async move {
            let name = pod.name_any();
            let params = DeleteParams {
                preconditions: workload::uid_precondition(&pod.metadata),
                ..Default::default()
            };
            match self.pods.delete(&name, &params).await {
                Ok(_) => {
                    let message = format!("Deleted pod: {name}");
                    self.record(EventType::Normal, "SuccessfulDelete", &message)
                        .await;
                    Some(name)
                }
                Err(kube::Error::Api(status)) if status.code == 404 => Some(name),
                Err(err) => {
                    let message = format!("Error deleting: {err}");
                    self.record(EventType::Warning, "FailedDelete", &message)
                        .await;
                    None
                }
            }
        });
        join_all(deletions).await.into_iter().flatten().collect()
    }

    async fn record(&self, event_type: EventType, reason: &str, message: &str) {
        self.context
            .recorder
            .record(&object_reference(&self.rs), event_type, reason, message)
            .await;
    }

    fn desired_replicas(&self) -> i32 {
        self.rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.rs
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    /// The status the pods justify (upstream's `calculateStatus`).
    fn calculate_status(
        &self,
        pods: &[Pod],
        create_error: Option<&Error>,
        now: Timestamp,
    ) -> ReplicaSetStatus {
        let active: Vec<&Pod> = pods.iter().filter(|pod| workload::is_active(pod)).collect();
        let template_labels = self
            .rs
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let fully_labeled = active
            .iter()
            .filter(|pod| {
                let labels = pod.metadata.labels.clone().unwrap_or_default();
                template_labels
                    .iter()
                    .all(|(key, value)| labels.get(key) == Some(value))
            })
            .count();
        let ready = active.iter().filter(|pod| workload::is_ready(pod)).count();
        let min_ready = self.min_ready_seconds();
        let available = active
            .iter()
            .filter(|pod| {
                workload::time_until_available(pod, min_ready, now) == Some(Duration::ZERO)
            })
            .count();
        ReplicaSetStatus {
            replicas: count(active.len()),
            fully_labeled_replicas: Some(count(fully_labeled)),
            ready_replicas: Some(count(ready)),
            available_replicas: Some(count(available)),
            terminating_replicas: None,
            observed_generation: self.rs.metadata.generation,
            conditions: self.conditions(create_error, now),
        }
    }

    /// `ReplicaFailure` while pods cannot be created, gone once they can.
    fn conditions(
        &self,
        create_error: Option<&Error>,
        now: Timestamp,
    ) -> Option<Vec<ReplicaSetCondition>> {
        let mut conditions: Vec<ReplicaSetCondition> = self
            .rs
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let existing = conditions.iter().position(|c| c.type_ == "ReplicaFailure");
        match (create_error, existing) {
            (Some(err), existing) => {
                let condition = ReplicaSetCondition {
                    type_: "ReplicaFailure".into(),
                    status: "True".into(),
                    reason: Some("FailedCreate".into()),
                    message: Some(err.to_string()),
                    last_transition_time: Some(Time(now)),
                };
                match existing {
                    Some(index) if conditions[index].status == "True" => {
                        conditions[index].message = condition.message;
                        conditions[index].reason = condition.reason;
                    }
                    Some(index) => conditions[index] = condition,
                    None => conditions.push(condition),
                }
            }
            (None, Some(index)) => {
                conditions.remove(index);
            }
            (None, None) => {}
        }
        (!conditions.is_empty()).then_some(conditions)
    }

    /// Writes the status through the status subresource; an explicit `null` clears
    /// conditions that no longer apply (a merge patch would otherwise keep them).
    async fn write_status(&self, status: ReplicaSetStatus) -> Result<(), Error> {
        let mut status = serde_json::to_value(&status).map_err(kube::Error::SerdeError)?;
        if status.get("conditions").is_none() {
            status["conditions"] = serde_json::Value::Null;
        }
        let api: Api<ReplicaSet> = Api::namespaced(
            self.context.client.clone(),
            &self.rs.namespace().unwrap_or_default(),
        );
        api.patch_status(
            &self.rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
        Ok(())
    }

    /// When the next Ready pod becomes available under `minReadySeconds`, so the
    /// status can count it then.
    fn next_availability_change(&self, pods: &[Pod], now: Timestamp) -> Option<Duration> {
        let min_ready = self.min_ready_seconds();
        if min_ready <= 0 {
            return None;
        }
        pods.iter()
            .filter(|pod| workload::is_active(pod))
            .filter_map(|pod| workload::time_until_available(pod, min_ready, now))
            .filter(|wait| !wait.is_zero())
            .min()
    }
}

/// What `manage_replicas` did.
#[derive(Default)]
struct ManageOutcome {
    created: Vec<Pod>,
    deleted: Vec<String>,
    create_error: Option<Error>,
}

/// Which surplus pods go first (smallest first), upstream's `ActivePods` order:
/// unscheduled before scheduled, pending before unknown before running, not ready
/// before ready, ready for less time before longer, more restarts before fewer, and
/// newer before older.
fn deletion_rank(pod: &Pod) -> impl Ord + use<> {
    let scheduled = pod
        .spec
        .as_ref()
        .is_some_and(|spec| spec.node_name.as_deref().is_some_and(|n| !n.is_empty()));
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Running") => 2,
        Some("Unknown") => 1,
        _ => 0,
    };
    let ready_since = workload::ready_since(pod);
    let restarts: i32 = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|statuses| statuses.iter().map(|s| s.restart_count).sum())
        .unwrap_or(0);
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        scheduled,
        phase,
        ready_since.is_some(),
        Reverse(ready_since),
        Reverse(restarts),
        Reverse(created),
    )
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};

    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(
                    Timestamp::from_second(created).expect("valid time"),
                )),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready.then(|| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(
                            Timestamp::from_second(created + 10).expect("valid time"),
                        )),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn surplus_pods_are_ranked_as_upstream() {
        let mut pods = [
            pod("ready-old", Some("n"), "Running", true, 100),
            pod("ready-new", Some("n"), "Running", true, 200),
            pod("running-not-ready", Some("n"), "Running", false, 50),
            pod("pending", Some("n"), "Pending", false, 10),
            pod("unscheduled", None, "Pending", false, 5),
        ];
        pods.sort_by_key(deletion_rank);
        let order: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(
            order,
            [
                "unscheduled",
                "pending",
                "running-not-ready",
                "ready-new",
                "ready-old"
            ]
        );
    }
}
