//! The node lifecycle controller: notices nodes whose agent stopped renewing
//! its Lease, marks them `Unknown` and taints them unreachable, and evicts
//! their pods once the pods' tolerations for the taint run out (the taint
//! manager); pods bound to a node that no longer exists are deleted too
//! (PodGC).
//!
//! Liveness is judged by when *this controller* last saw the Lease's
//! `renewTime` change, not by comparing the timestamp with the local clock,
//! so clock skew between the node and the server cannot fake a dead node.
//! Nobody runs the pods of a dead node any more, so evictions are forced
//! deletions (`gracePeriodSeconds=0`) after the pod is marked with a
//! `DisruptionTarget` condition saying why, as upstream does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use gantry_client::{EventRecorder, EventType, object_reference};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::informer;

/// The namespace holding the node heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The taint of a node whose agent stopped reporting.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// The taint of a node whose agent reports it not ready.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// The conditions an agent reports and this controller sets to `Unknown`.
const AGENT_CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Timing of the node lifecycle controller.
#[derive(Debug, Clone)]
pub struct NodeLifecycleConfig {
    /// How long a node's Lease may go unrenewed before the node is
    /// unreachable (`--node-monitor-grace-period`, 40 s upstream).
    pub grace_period: Duration,
    /// How often nodes and their pods are checked (`--node-monitor-period`).
    pub monitor_period: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            grace_period: Duration::from_secs(40),
            monitor_period: Duration::from_secs(5),
        }
    }
}

/// Runs the node lifecycle controller with upstream's timing until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    run_with(client, NodeLifecycleConfig::default(), shutdown).await;
}

/// Runs the node lifecycle controller with the given timing until `shutdown`.
pub async fn run_with(
    client: kube::Client,
    config: NodeLifecycleConfig,
    shutdown: CancellationToken,
) {
    let shutdown = shutdown.child_token();
    let mut tasks = JoinSet::new();
    let nodes = informer::spawn_reflector(
        &mut tasks,
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        (),
        shutdown.clone(),
        |_: &Node| {},
    );
    let leases = informer::spawn_reflector(
        &mut tasks,
        Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
        watcher::Config::default(),
        (),
        shutdown.clone(),
        |_: &Lease| {},
    );
    let pods = informer::spawn_reflector(
        &mut tasks,
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        (),
        shutdown.clone(),
        |_: &Pod| {},
    );
    let ready = informer::wait_for_cache(&nodes, &shutdown).await
        && informer::wait_for_cache(&leases, &shutdown).await
        && informer::wait_for_cache(&pods, &shutdown).await;
    if ready {
        let mut monitor = Monitor {
            recorder: EventRecorder::new(client.clone(), "node-controller", None),
            client,
            config,
            nodes,
            leases,
            pods,
            heartbeats: HashMap::new(),
            missing_since: HashMap::new(),
        };
        let mut tick = tokio::time::interval(monitor.config.monitor_period);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => monitor.check().await,
            }
        }
    }
    shutdown.cancel();
    informer::join_all(tasks).await;
}

/// The last Lease renewal seen for a node, and when it was seen.
struct Heartbeat {
    renew_time: Option<Timestamp>,
    seen_at: Instant,
}

struct Monitor {
    client: kube::Client,
    recorder: EventRecorder,
    config: NodeLifecycleConfig,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    heartbeats: HashMap<String, Heartbeat>,
    /// Nodes that pods are bound to but the cache lacks, and since when:
    /// PodGC's quarantine, so a node being re-registered is not mistaken
    /// for a deleted one.
    missing_since: HashMap<String, Instant>,
}

impl Monitor {
    /// One pass over every node and every bound pod; failures are logged and
    /// the next pass retries.
    async fn check(&mut self) {
        let mut current_nodes = HashMap::new();
        for node in self.nodes.state() {
            let name = node.name_any();
            let node = match self.check_node(&node).await {
                Ok(updated) => updated.map(Arc::new).unwrap_or(node),
                Err(err) => {
                    tracing::warn!(node = name, %err, "updating node health");
                    node
                }
            };
            current_nodes.insert(name, node);
        }
        self.heartbeats
            .retain(|name, _| current_nodes.contains_key(name));
        let mut still_missing = HashSet::new();
        for pod in self.pods.state() {
            match node_name(&pod) {
                Some(node) if !current_nodes.contains_key(node) => {
                    still_missing.insert(node.to_string());
                }
                _ => {}
            }
            if let Err(err) = self.check_pod(&pod, &current_nodes).await {
                tracing::warn!(pod = %ObjectRef::from_obj(pod.as_ref()), %err, "evicting pod");
            }
        }
        self.missing_since
            .retain(|name, _| still_missing.contains(name));
    }

    /// Whether the node's Lease was renewed within the grace period.
    fn is_responsive(&mut self, node: &str) -> bool {
        let lease = self
            .leases
            .get(&ObjectRef::new(node).within(NODE_LEASE_NAMESPACE));
        let renew_time = lease
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0);
        let now = Instant::now();
        let heartbeat = self
            .heartbeats
            .entry(node.to_string())
            .or_insert(Heartbeat {
                renew_time,
                seen_at: now,
            });
        if heartbeat.renew_time != renew_time {
            heartbeat.renew_time = renew_time;
            heartbeat.seen_at = now;
        }
        now.duration_since(heartbeat.seen_at) <= self.config.grace_period
    }

    /// Brings the node's conditions and taints in line with its health;
    /// returns the node as written, if it was.
    async fn check_node(&mut self, node: &Node) -> Result<Option<Node>, kube::Error> {
        let name = node.name_any();
        let api: Api<Node> = Api::all(self.client.clone());
        let responsive = self.is_responsive(&name);
        let mut written = None;
        if !responsive && let Some(unknown) = with_conditions_unknown(node, Timestamp::now()) {
            let updated = api
                .replace_status(&name, &PostParams::default(), &unknown)
                .await?;
            tracing::info!(
                node = name,
                "node stopped renewing its lease; marked Unknown"
            );
            self.recorder
                .record(
                    &object_reference(&updated),
                    EventType::Normal,
                    "NodeNotReady",
                    &format!("Node {name} status is now: NodeNotReady"),
                )
                .await;
            written = Some(updated);
        }
        let base = written.as_ref().unwrap_or(node);
        let taints = desired_taints(base, responsive, Timestamp::now());
        if let Some(taints) = taints {
            let mut updated = base.clone();
            updated.spec.get_or_insert_with(Default::default).taints =
                (!taints.is_empty()).then_some(taints);
            written = Some(api.replace(&name, &PostParams::default(), &updated).await?);
        }
        if !responsive {
            self.mark_pods_not_ready(&name).await;
        }
        Ok(written)
    }

    /// Sets `Ready=False` on the pods of an unreachable node, so that
    /// Services stop sending them traffic before they are evicted.
    async fn mark_pods_not_ready(&self, node: &str) {
        let on_node = self
            .pods
            .state_filter(|p| node_name(p) == Some(node) && crate::endpoints::is_ready(p));
        for pod in on_node {
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            let patch = json!({"status": {"conditions": [{
                "type": "Ready", "status": "False",
                "lastTransitionTime": Time(Timestamp::now()),
            }]}});
            if let Err(err) = api
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(patch),
                )
                .await
            {
                tracing::debug!(pod = pod.name_any(), %err, "marking pod not ready");
            }
        }
    }

    /// Evicts a bound pod whose node is gone or whose tolerations of the
    /// node's NoExecute taints have run out.
    async fn check_pod(
        &mut self,
        pod: &Pod,
        nodes: &HashMap<String, Arc<Node>>,
    ) -> Result<(), kube::Error> {
        let Some(node_name) = node_name(pod) else {
            return Ok(());
        };
        let Some(node) = nodes.get(node_name) else {
            return self.delete_if_node_gone(pod, node_name).await;
        };
        let taints = no_execute_taints(node);
        if taints.is_empty() {
            return Ok(());
        }
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        match eviction_time(&taints, &tolerations, Timestamp::now()) {
            Some(due) if due <= Timestamp::now() => {
                let message = format!(
                    "Marking for deletion Pod {}/{}",
                    pod.namespace().unwrap_or_default(),
                    pod.name_any()
                );
                self.recorder
                    .record(
                        &object_reference(pod),
                        EventType::Normal,
                        "TaintManagerEviction",
                        &message,
                    )
                    .await;
                self.force_delete(
                    pod,
                    "DeletionByTaintManager",
                    "Taint manager: deleting due to NoExecute taint",
                )
                .await
            }
            _ => Ok(()),
        }
    }

    /// Deletes a pod bound to a node that has been missing for the grace
    /// period and that the API confirms is gone (the cache may lag).
    async fn delete_if_node_gone(&mut self, pod: &Pod, node_name: &str) -> Result<(), kube::Error> {
        let since = *self
            .missing_since
            .entry(node_name.to_string())
            .or_insert_with(Instant::now);
        if since.elapsed() < self.config.grace_period {
            return Ok(());
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        if nodes.get_opt(node_name).await?.is_some() {
            return Ok(());
        }
        tracing::info!(
            pod = pod.name_any(),
            node = node_name,
            "deleting pod bound to a missing node"
        );
        self.force_delete(pod, "DeletionByPodGC", "PodGC: node no longer exists")
            .await
    }

    /// Marks the pod with a `DisruptionTarget` condition, then deletes it at
    /// once: its node is not there to stop its containers gracefully.
    async fn force_delete(
        &self,
        pod: &Pod,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let name = pod.name_any();
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let mark = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": Time(Timestamp::now()),
        }]}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(mark))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(err) => return Err(err),
        }
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(err) => Err(err),
        }
    }
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// The node with every agent-reported condition `Unknown`, or `None` if
/// they already are.
pub fn with_conditions_unknown(node: &Node, now: Timestamp) -> Option<Node> {
    let mut updated = node.clone();
    let status = updated.status.get_or_insert_with(Default::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let mut changed = false;
    for kind in AGENT_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == *kind) {
            Some(condition) if condition.status == "Unknown" => {}
            Some(condition) => {
                condition.status = "Unknown".into();
                condition.reason = Some("NodeStatusUnknown".into());
                condition.message = Some("Kubelet stopped posting node status.".into());
                condition.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: kind.to_string(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(updated)
}

/// The node's taints as its health calls for (unreachable while its Lease
/// is stale; not-ready while its agent reports `Ready=False`), or `None`
/// when they already are.
pub fn desired_taints(node: &Node, responsive: bool, now: Timestamp) -> Option<Vec<Taint>> {
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let reported_not_ready = ready_status(node) == Some("False");
    let wanted = [
        (UNREACHABLE_TAINT, !responsive),
        (NOT_READY_TAINT, responsive && reported_not_ready),
    ];
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| wanted.iter().all(|(key, want)| t.key != *key || *want))
        .cloned()
        .collect();
    for (key, want) in wanted {
        if !want {
            continue;
        }
        for effect in ["NoSchedule", "NoExecute"] {
            if !taints.iter().any(|t| t.key == key && t.effect == effect) {
                taints.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    time_added: (effect == "NoExecute").then_some(Time(now)),
                    value: None,
                });
            }
        }
    }
    (taints != current).then_some(taints)
}

fn ready_status(node: &Node) -> Option<&str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

fn no_execute_taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|taints| {
            taints
                .iter()
                .filter(|t| t.effect == "NoExecute")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// When a pod with these tolerations must leave a node with these NoExecute
/// taints: now if one taint is not tolerated, never if every matching
/// toleration is unbounded, else the earliest `timeAdded + tolerationSeconds`.
pub fn eviction_time(
    taints: &[Taint],
    tolerations: &[Toleration],
    now: Timestamp,
) -> Option<Timestamp> {
    let mut earliest: Option<Timestamp> = None;
    for taint in taints {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(now);
        }
        let Some(seconds) = matching.iter().filter_map(|t| t.toleration_seconds).min() else {
            continue;
        };
        let added = taint.time_added.as_ref().map_or(now, |t| t.0);
        let due = added
            .checked_add(jiff::SignedDuration::from_secs(seconds.max(0)))
            .unwrap_or(Timestamp::MAX);
        earliest = Some(earliest.map_or(due, |e| e.min(due)));
    }
    earliest
}

/// Whether a toleration matches a taint (upstream `ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    let operator = toleration.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        return operator == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match operator {
        "Exists" => true,
        _ => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, added: Timestamp) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(added)),
            value: None,
        }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    #[test]
    fn untolerated_taints_evict_at_once_and_tolerated_ones_after_the_shortest_toleration() {
        let now = Timestamp::from_second(1_000_000).expect("timestamp");
        let taints = [taint(UNREACHABLE_TAINT, now)];
        assert_eq!(eviction_time(&taints, &[], now), Some(now));
        let bounded = [
            toleration(UNREACHABLE_TAINT, Some(300)),
            toleration(UNREACHABLE_TAINT, Some(5)),
        ];
        assert_eq!(
            eviction_time(&taints, &bounded, now),
            Some(Timestamp::from_second(1_000_005).expect("timestamp"))
        );
        let unbounded = [toleration(UNREACHABLE_TAINT, None)];
        assert_eq!(eviction_time(&taints, &unbounded, now), None);
        let other_key = [toleration(NOT_READY_TAINT, None)];
        assert_eq!(eviction_time(&taints, &other_key, now), Some(now));
    }

    #[test]
    fn a_wildcard_toleration_matches_every_taint() {
        let wildcard = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert!(tolerates(&wildcard, &taint("anything", Timestamp::now())));
        let equal = Toleration {
            key: Some("k".into()),
            value: Some("v".into()),
            ..Default::default()
        };
        let mut t = taint("k", Timestamp::now());
        assert!(!tolerates(&equal, &t));
        t.value = Some("v".into());
        assert!(tolerates(&equal, &t));
    }

    #[test]
    fn unreachable_taints_come_and_go_with_responsiveness() {
        let now = Timestamp::now();
        let node = Node::default();
        let tainted = desired_taints(&node, false, now).expect("taints added");
        assert_eq!(tainted.len(), 2);
        assert!(tainted.iter().all(|t| t.key == UNREACHABLE_TAINT));
        let mut node = node;
        node.spec.get_or_insert_with(Default::default).taints = Some(tainted);
        assert_eq!(desired_taints(&node, false, now), None, "already tainted");
        assert_eq!(desired_taints(&node, true, now), Some(Vec::new()));
    }

    #[test]
    fn conditions_become_unknown_once() {
        let now = Timestamp::now();
        let mut node = Node::default();
        node.status.get_or_insert_with(Default::default).conditions = Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]);
        let unknown = with_conditions_unknown(&node, now).expect("changed");
        let conditions = unknown
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .expect("conditions");
        assert_eq!(conditions.len(), AGENT_CONDITIONS.len());
        assert!(conditions.iter().all(|c| c.status == "Unknown"));
        assert_eq!(conditions[0].reason.as_deref(), Some("NodeStatusUnknown"));
        assert!(with_conditions_unknown(&unknown, now).is_none());
    }
}
