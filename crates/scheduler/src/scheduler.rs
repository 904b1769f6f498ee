//! The scheduling loop: on every wake-up, snapshot the cache, schedule each
//! pending pod in priority order against it, and hand the API calls (binding,
//! unschedulable status, Events) to concurrent tasks.
//!
//! A pod is "assumed" on its node from the moment it is chosen until the watch
//! shows it bound, so the next decisions already account for it, as
//! kube-scheduler's assume cache does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use gantry_client::{EventRecorder, EventType, object_reference};
use k8s_openapi::api::core::v1::{Binding, ObjectReference, PersistentVolumeClaim, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::filters::volume_binding::{self, ClaimKey, Volumes};
use crate::framework::{self, Unschedulable};
use crate::labels::Labels;
use crate::snapshot::{self, PodInfo, Snapshot};

/// The scheduler name pods ask for to be scheduled by Gantry.
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// How often unschedulable pods are retried even if nothing seemed to change.
const RETRY_UNSCHEDULABLE_EVERY: Duration = Duration::from_secs(60);
/// At most this many API writes in flight; beyond it scheduling waits for one.
const MAX_IN_FLIGHT: usize = 64;

/// A pod that failed, and the cluster generation and spec it failed with.
struct Failed {
    generation: u64,
    spec: Option<PodSpec>,
    labels: Option<std::collections::BTreeMap<String, String>>,
}

/// What an API task reports back.
enum Outcome {
    Bound {
        pod: Arc<Pod>,
    },
    /// Binding failed; `transient` if retrying at once may succeed (a conflict
    /// with a concurrent write to the pod). `unselected` are the claims whose
    /// selected-node annotation could not be written.
    BindFailed {
        pod: Arc<Pod>,
        transient: bool,
        unselected: Vec<ClaimKey>,
    },
    Reported {
        pod: Arc<Pod>,
    },
}

/// The scheduling loop's state.
pub struct Scheduler {
    client: kube::Client,
    cache: Cache,
    recorder: EventRecorder,
    /// Pods chosen for a node whose binding the watch has not shown yet: uid -> node.
    assumed: HashMap<String, String>,
    /// Pending pods that did not fit, by uid.
    failed: HashMap<String, Failed>,
    in_flight: JoinSet<Outcome>,
    /// Pods with an API write in flight; not reconsidered until it completes, so
    /// two writes to one pod never race.
    busy: HashSet<String>,
    /// Parsed pods by uid, reused while their resourceVersion is unchanged.
    parsed: HashMap<String, (Option<String>, Arc<PodInfo>)>,
    /// Claims annotated with a selected node that the watch has not shown yet:
    /// claim -> node, so pods sharing a claim follow it to the same node.
    selected_claims: HashMap<ClaimKey, String>,
}

impl Scheduler {
    /// A scheduler over `cache`, writing through `client`.
    pub fn new(client: kube::Client, cache: Cache) -> Scheduler {
        Scheduler {
            recorder: EventRecorder::new(client.clone(), SCHEDULER_NAME, None),
            client,
            cache,
            assumed: HashMap::new(),
            failed: HashMap::new(),
            in_flight: JoinSet::new(),
            busy: HashSet::new(),
            parsed: HashMap::new(),
            selected_claims: HashMap::new(),
        }
    }

    /// Schedules until `shutdown`, then waits for the API writes already started.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut retry_all = tokio::time::interval(RETRY_UNSCHEDULABLE_EVERY);
        retry_all.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.cache.changes.woken() => {}
                _ = retry_all.tick() => self.failed.clear(),
                Some(outcome) = self.in_flight.join_next() => {
                    self.settle(outcome);
                    continue;
                }
            }
            self.schedule_pending().await;
        }
        while let Some(outcome) = self.in_flight.join_next().await {
            self.settle(outcome);
        }
    }

    fn settle(&mut self, outcome: Result<Outcome, tokio::task::JoinError>) {
        match outcome {
            Ok(Outcome::BindFailed {
                pod,
                transient,
                unselected,
            }) => {
                // Forget the assumption so its room is free again; retry the pod at
                // once after a conflict, otherwise when the cluster changes.
                for claim in &unselected {
                    self.selected_claims.remove(claim);
                }
                let uid = uid(&pod);
                self.busy.remove(&uid);
                self.assumed.remove(&uid);
                if !transient {
                    self.remember_failure(&pod, self.cache.changes.generation());
                }
                self.cache.changes.pod_pending();
            }
            Ok(Outcome::Bound { pod }) => {
                self.busy.remove(&uid(&pod));
            }
            Ok(Outcome::Reported { pod }) => {
                self.busy.remove(&uid(&pod));
                self.cache.changes.pod_pending();
            }
            Err(err) => tracing::error!(%err, "a scheduler API task failed"),
        }
    }

    /// One pass over the pending pods.
    async fn schedule_pending(&mut self) {
        let generation = self.cache.changes.generation();
        let pods = self.cache.pods.state();
        let (mut snapshot, pending) = self.snapshot(&pods);
        for info in pending {
            let pod = info.pod.clone();
            match framework::schedule(&info, &snapshot) {
                Ok(decision) => {
                    snapshot.add_pod(info.clone(), &decision.node);
                    let claims =
                        volume_binding::claims_to_select(&info, &snapshot.volumes, &decision.node);
                    let volumes = Arc::make_mut(&mut snapshot.volumes);
                    for claim in &claims {
                        volumes.assume_selected_node(claim, &decision.node);
                        self.selected_claims
                            .insert(claim.clone(), decision.node.clone());
                    }
                    self.failed.remove(&uid(&pod));
                    self.assumed.insert(uid(&pod), decision.node.clone());
                    self.busy.insert(uid(&pod));
                    self.spawn(bind(
                        self.client.clone(),
                        self.recorder.clone(),
                        pod,
                        decision.node,
                        claims,
                    ))
                    .await;
                }
                Err(reason) => {
                    tracing::debug!(pod = info.key(), %reason, "unschedulable");
                    self.remember_failure(&pod, generation);
                    self.busy.insert(uid(&pod));
                    self.spawn(report_unschedulable(
                        self.client.clone(),
                        self.recorder.clone(),
                        pod,
                        reason,
                    ))
                    .await;
                }
            }
        }
    }

    fn remember_failure(&mut self, pod: &Pod, generation: u64) {
        let failed = Failed {
            generation,
            spec: pod.spec.clone(),
            labels: pod.metadata.labels.clone(),
        };
        self.failed.insert(uid(pod), failed);
    }

    async fn spawn(&mut self, task: impl Future<Output = Outcome> + Send + 'static) {
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            if let Some(outcome) = self.in_flight.join_next().await {
                self.settle(outcome);
            }
        }
        self.in_flight.spawn(task);
    }

    /// The snapshot to decide against (bound pods plus assumed ones) and the pods
    /// to schedule now, highest priority first, then oldest (PrioritySort).
    fn snapshot(&mut self, pods: &[Arc<Pod>]) -> (Snapshot, Vec<Arc<PodInfo>>) {
        let generation = self.cache.changes.generation();
        let mut occupying = Vec::new();
        let mut assumed = Vec::new();
        let mut pending = Vec::new();
        let mut parsed = HashMap::with_capacity(pods.len());
        for pod in pods {
            let uid = uid(pod);
            let version = pod.metadata.resource_version.clone();
            let info = match self.parsed.remove(&uid) {
                Some((seen, info)) if seen == version => info,
                _ => Arc::new(PodInfo::new(pod.clone())),
            };
            parsed.insert(uid.clone(), (version, info.clone()));
            if snapshot::occupies_node(pod) {
                occupying.push(info);
            } else if let Some(node) = self.assumed.get(&uid).filter(|_| wants_scheduling(pod)) {
                assumed.push((uid, node.clone(), info));
            } else if wants_scheduling(pod)
                && !self.busy.contains(&uid)
                && self.should_retry(&uid, pod, generation)
            {
                pending.push(info);
            }
        }
        self.parsed = parsed;
        self.failed.retain(|uid, _| self.parsed.contains_key(uid));
        pending.sort_by_key(|info| {
            let pod = &info.pod;
            let priority = pod
                .spec
                .as_ref()
                .and_then(|spec| spec.priority)
                .unwrap_or(0);
            let created = pod.metadata.creation_timestamp.as_ref().map(|time| time.0);
            (
                std::cmp::Reverse(priority),
                created,
                pod.metadata.namespace.clone(),
                pod.metadata.name.clone(),
            )
        });
        let namespace_labels: HashMap<String, Labels> = self
            .cache
            .namespaces
            .state()
            .iter()
            .filter_map(|namespace| {
                let name = namespace.metadata.name.clone()?;
                Some((name, namespace.metadata.labels.clone().unwrap_or_default()))
            })
            .collect();
        let mut snapshot = Snapshot::new(self.cache.nodes.state(), occupying, namespace_labels);
        snapshot.volumes = Arc::new(self.volumes());
        self.assumed.clear();
        for (uid, node, info) in assumed {
            snapshot.add_pod(info, &node);
            self.assumed.insert(uid, node);
        }
        (snapshot, pending)
    }

    /// The storage objects, with the claim annotations written but not yet seen
    /// applied; assumptions the cache has caught up with are forgotten.
    fn volumes(&mut self) -> Volumes {
        let mut volumes = Volumes::new(
            self.cache.claims.state(),
            self.cache.volumes.state(),
            self.cache.storage_classes.state(),
        );
        self.selected_claims
            .retain(|claim, node| volumes.assume_selected_node(claim, node));
        volumes
    }

    /// A pod that failed is retried once the cluster or the pod itself changed.
    fn should_retry(&self, uid: &str, pod: &Pod, generation: u64) -> bool {
        match self.failed.get(uid) {
            None => true,
            Some(failed) => {
                failed.generation != generation
                    || failed.spec != pod.spec
                    || failed.labels != pod.metadata.labels
            }
        }
    }
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        )
    })
}

/// Whether `pod` is this scheduler's to place: no node yet, asks for the default
/// scheduler, not being deleted, not finished and not held by scheduling gates.
pub fn wants_scheduling(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let unassigned = spec.node_name.as_deref().is_none_or(str::is_empty);
    let ours = spec
        .scheduler_name
        .as_deref()
        .is_none_or(|name| name.is_empty() || name == SCHEDULER_NAME);
    let gated = spec
        .scheduling_gates
        .as_ref()
        .is_some_and(|gates| !gates.is_empty());
    let phase = pod
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref());
    let finished = matches!(phase, Some("Succeeded" | "Failed"));
    unassigned && ours && !gated && !finished && pod.metadata.deletion_timestamp.is_none()
}

fn pod_api(client: &kube::Client, pod: &Pod) -> Api<Pod> {
    Api::namespaced(
        client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    )
}

/// Annotates each of `claims` with the node chosen for its first consumer, so the
/// provisioner creates its volume there; returns the claims it could not annotate.
async fn select_node_for_claims(
    client: &kube::Client,
    claims: Vec<ClaimKey>,
    node: &str,
) -> Vec<ClaimKey> {
    let mut failed = Vec::new();
    let patch = serde_json::json!({
        "metadata": {"annotations": {volume_binding::SELECTED_NODE: node}}
    });
    for (namespace, name) in claims {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
        let patched = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        if let Err(err) = patched {
            tracing::warn!(%err, claim = %format!("{namespace}/{name}"), node, "selecting the node of a claim");
            failed.push((namespace, name));
        }
    }
    failed
}

/// Annotates the pod's delayed-binding `claims` with `node`, then binds `pod` to
/// `node` through `pods/binding` and records `Scheduled`.
async fn bind(
    client: kube::Client,
    recorder: EventRecorder,
    pod: Arc<Pod>,
    node: String,
    claims: Vec<ClaimKey>,
) -> Outcome {
    let unselected = select_node_for_claims(&client, claims, &node).await;
    if !unselected.is_empty() {
        return Outcome::BindFailed {
            pod,
            transient: false,
            unselected,
        };
    }
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.clone()),
            ..Default::default()
        },
    };
    let api = pod_api(&client, &pod);
    let created: Result<serde_json::Value, _> = api
        .create_subresource("binding", &name, &PostParams::default(), &binding)
        .await;
    if let Err(err) = created {
        let transient = matches!(&err, kube::Error::Api(status) if status.code == 409);
        tracing::warn!(%err, pod = %format!("{namespace}/{name}"), node, "binding failed");
        return Outcome::BindFailed {
            pod,
            transient,
            unselected: Vec::new(),
        };
    }
    let message = format!("Successfully assigned {namespace}/{name} to {node}");
    recorder
        .record(
            &object_reference(pod.as_ref()),
            EventType::Normal,
            "Scheduled",
            &message,
        )
        .await;
    Outcome::Bound { pod }
}

fn scheduled_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .and_then(|conditions| {
            conditions
                .iter()
                .find(|condition| condition.type_ == "PodScheduled")
        })
}

fn pod_scheduled_patch(
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) -> serde_json::Value {
    serde_json::json!({
        "status": {
            "conditions": [{
                "type": "PodScheduled",
                "status": status,
                "reason": reason,
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": jiff::Timestamp::now().to_string(),
            }]
        }
    })
}

/// Sets `PodScheduled=False` (reason `Unschedulable`) unless already set with the
/// same message, and records a `FailedScheduling` Warning.
async fn report_unschedulable(
    client: kube::Client,
    recorder: EventRecorder,
    pod: Arc<Pod>,
    reason: Unschedulable,
) -> Outcome {
    let message = reason.to_string();
    let current = scheduled_condition(&pod);
    let unchanged = current.is_some_and(|condition| {
        condition.status == "False"
            && condition.reason.as_deref() == Some("Unschedulable")
            && condition.message.as_deref() == Some(message.as_str())
    });
    if !unchanged {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let patch = pod_scheduled_patch("False", Some("Unschedulable"), Some(&message));
        let patched = pod_api(&client, &pod)
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await;
        if let Err(err) = patched {
            tracing::debug!(%err, pod = name, "setting the Unschedulable condition");
        }
    }
    recorder
        .record(
            &object_reference(pod.as_ref()),
            EventType::Warning,
            "FailedScheduling",
            &message,
        )
        .await;
    Outcome::Reported { pod }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;

    #[test]
    fn only_unassigned_default_scheduler_pods_are_ours() {
        assert!(wants_scheduling(&pod("p", "0", "0").build()));
        assert!(!wants_scheduling(&pod("p", "0", "0").on("n").build()));
        let other =
            pod("p", "0", "0").with_spec(|spec| spec.scheduler_name = Some("volcano".into()));
        assert!(!wants_scheduling(&other.build()));
        let named =
            pod("p", "0", "0").with_spec(|spec| spec.scheduler_name = Some(SCHEDULER_NAME.into()));
        assert!(wants_scheduling(&named.build()));
        let gated = pod("p", "0", "0").with_spec(|spec| {
            spec.scheduling_gates = Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
                name: "wait".into(),
            }])
        });
        assert!(!wants_scheduling(&gated.build()));
    }
}
