//! The DaemonSet controller: one pod on every eligible node, as
//! kube-controller-manager's DaemonSet controller does.
//!
//! A node is eligible when it matches the template's nodeSelector and required node
//! affinity and its NoSchedule/NoExecute taints are tolerated, judged with the
//! scheduler's own matching rules. As upstream since 1.12, the pod is not bound here:
//! it gets a required node affinity for `metadata.name` of its node and the scheduler
//! binds it. Each reconcile reads the nodes and pods straight from the API server,
//! [`plan`]s the creations and deletions (a pure function, unit-tested), carries them
//! out, and writes a status computed from a fresh listing. A template change rolls out
//! by deleting old pods within `maxUnavailable` (RollingUpdate) or never (OnDelete).
//! Every template the set has had is a ControllerRevision (see [`crate::revisions`]),
//! whose hash its pods carry in the `controller-revision-hash` label.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetSpec, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ListParams;
use kube::core::Selector;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use gantry_scheduler::filters::node_affinity;
use gantry_scheduler::labels::tolerated;

use crate::deployment::pod_template_hash;
use crate::revisions::{self, History, Revisions};
use crate::workload::{self, CONTROLLER_REVISION_HASH_LABEL, Context, Error};

/// The component name on this controller's Events.
const COMPONENT: &str = "daemonset-controller";

/// The deprecated label upstream still puts on DaemonSet pods: the set's generation.
const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

/// Tolerations upstream adds to every DaemonSet pod (`AddOrUpdateDaemonPodTolerations`):
/// a daemon keeps running on a node that is unreachable, not ready, under pressure or
/// cordoned, since it is often what the node needs to recover.
const DEFAULT_TOLERATIONS: [(&str, &str); 6] = [
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];

/// Runs the DaemonSet controller until `shutdown`; API errors are logged and the
/// affected DaemonSet retried, never returned. Any node change reconciles every
/// DaemonSet, since it may change where they belong.
pub async fn run(client: Client, shutdown: CancellationToken) {
    let context = Context::new(client.clone(), COMPONENT);
    let controller = Controller::new(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let daemon_sets = controller.store();
    let results = controller
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .watches(
            Api::<Node>::all(client),
            watcher::Config::default(),
            move |_| {
                let all = daemon_sets.state();
                all.iter()
                    .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, workload::retry_on_error, context);
    workload::drive(results, COMPONENT).await;
}

async fn reconcile(cached: Arc<DaemonSet>, context: Arc<Context>) -> Result<Action, Error> {
    match context.latest(cached.as_ref()).await? {
        Some((ds, namespace)) => {
            DaemonSync::load(&context, ds, &namespace)
                .await?
                .run()
                .await
        }
        None => Ok(Action::await_change()),
    }
}

/// Where one node stands with a DaemonSet.
#[derive(Debug)]
struct NodeState<'p> {
    name: String,
    /// A pod should be created here if there is none.
    should_run: bool,
    /// A pod already here may stay (only NoExecute taints evict it).
    should_continue: bool,
    /// The set's pods aimed at this node, oldest first.
    pods: Vec<&'p Pod>,
}

impl NodeState<'_> {
    /// The pods not being deleted.
    fn live(&self) -> impl Iterator<Item = &Pod> {
        self.pods
            .iter()
            .copied()
            .filter(|pod| !workload::is_terminating(&pod.metadata))
    }
}

/// What a reconcile changes.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// Nodes that get a new pod.
    create_on: Vec<String>,
    /// Pods to delete: on ineligible or vanished nodes, duplicates, failed or outdated.
    delete: Vec<String>,
}

/// The settings [`plan`] needs besides the nodes.
struct Rollout<'a> {
    /// The current template's hash; pods with another are outdated.
    hash: &'a str,
    /// With RollingUpdate: how many eligible nodes may lack an available pod at once.
    /// `None` for OnDelete.
    max_unavailable: Option<i32>,
    min_ready_seconds: i32,
    now: Timestamp,
}

/// The creations and deletions that bring the nodes to one pod each (upstream's
/// `manage` and `rollingUpdate`): create on eligible nodes without a pod, delete pods
/// where none belongs, failed pods and duplicates, then outdated pods, the unavailable
/// ones at once and the available ones while the unavailable count stays within budget.
fn plan(nodes: &[NodeState], stray: &[&Pod], rollout: &Rollout) -> Plan {
    let mut plan = Plan::default();
    plan.delete.extend(stray.iter().map(|pod| pod.name_any()));
    for node in nodes {
        let live: Vec<&Pod> = node.live().collect();
        if !node.should_continue {
            plan.delete.extend(live.iter().map(|pod| pod.name_any()));
        } else if node.should_run && node.pods.is_empty() {
            plan.create_on.push(node.name.clone());
        } else {
            let (failed, running): (Vec<&Pod>, Vec<&Pod>) = live.iter().partition(|p| is_failed(p));
            plan.delete.extend(failed.iter().map(|pod| pod.name_any()));
            plan.delete
                .extend(running.iter().skip(1).map(|pod| pod.name_any()));
        }
    }
    if let Some(max_unavailable) = rollout.max_unavailable {
        plan.delete
            .extend(outdated_to_delete(nodes, rollout, max_unavailable));
    }
    plan
}

/// The outdated pods a rolling update deletes now, in node name order.
fn outdated_to_delete(nodes: &[NodeState], rollout: &Rollout, max_unavailable: i32) -> Vec<String> {
    let is_available =
        |pod: &Pod| workload::is_available(pod, rollout.min_ready_seconds, rollout.now);
    let mut unavailable = 0;
    let mut candidates = Vec::new();
    let mut deletions = Vec::new();
    for node in nodes.iter().filter(|node| node.should_run) {
        let live: Vec<&Pod> = node.live().collect();
        match live.as_slice() {
            [pod] if workload::revision_of(pod) != Some(rollout.hash) => {
                if is_available(pod) {
                    candidates.push(pod.name_any());
                } else {
                    unavailable += 1;
                    deletions.push(pod.name_any());
                }
            }
            [pod] if is_available(pod) => {}
            _ => unavailable += 1,
        }
    }
    let budget = usize::try_from(max_unavailable - unavailable).unwrap_or(0);
    deletions.extend(candidates.into_iter().take(budget));
    deletions
}

fn is_failed(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
}

/// The node a DaemonSet pod is aimed at: its `nodeName` once bound, otherwise the
/// `metadata.name` node affinity this controller gave it.
fn target_node(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(node);
    }
    let required = spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    let fields = required
        .node_selector_terms
        .first()?
        .match_fields
        .as_ref()?;
    fields
        .iter()
        .find(|field| field.key == "metadata.name" && field.operator == "In")
        .and_then(|field| match field.values.as_deref() {
            Some([node]) => Some(node.as_str()),
            _ => None,
        })
}

/// Whether `pod` (the template with the default tolerations) may be placed on and
/// may keep running on `node`: `(should_run, should_continue)`.
fn eligibility(pod: &Pod, node: &Node) -> (bool, bool) {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if !node_affinity::required_matches(pod, &labels, &node.name_any()) {
        return (false, false);
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let untolerated = |effect: &str| {
        taints
            .iter()
            .any(|taint| taint.effect == effect && !tolerated(tolerations, taint))
    };
    let should_continue = !untolerated("NoExecute");
    (
        should_continue && !untolerated("NoSchedule"),
        should_continue,
    )
}

/// The template's tolerations plus upstream's defaults for daemons.
fn with_default_tolerations(tolerations: Option<Vec<Toleration>>) -> Vec<Toleration> {
    let mut tolerations = tolerations.unwrap_or_default();
    for (key, effect) in DEFAULT_TOLERATIONS {
        let present = tolerations.iter().any(|t| {
            t.key.as_deref() == Some(key)
                && t.effect.as_deref() == Some(effect)
                && t.operator.as_deref() == Some("Exists")
        });
        if !present {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                ..Default::default()
            });
        }
    }
    tolerations
}

/// Affinity that pins a pod to `node` for the scheduler; the template's other
/// required node terms are dropped, as upstream does, since the controller already
/// checked them.
fn pinned_to(node: &str, affinity: Option<Affinity>) -> Affinity {
    let mut affinity = affinity.unwrap_or_default();
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
        }],
    });
    affinity
}

/// One reconcile of one DaemonSet.
struct DaemonSync<'a> {
    context: &'a Context,
    ds: DaemonSet,
    spec: DaemonSetSpec,
    name: String,
    uid: String,
    selector: Selector,
    /// The hash of the current template's revision, which its pods carry.
    hash: String,
    /// The set's revisions, synced with its template.
    revisions: Revisions,
    /// The template as a pod with the default tolerations: what eligibility is judged on.
    template_pod: Pod,
    pods: Api<Pod>,
}

impl<'a> DaemonSync<'a> {
    /// Reads what a reconcile needs and brings the set's revision history up to
    /// date with its template (upstream's `constructHistory`).
    async fn load(context: &'a Context, ds: DaemonSet, namespace: &str) -> Result<Self, Error> {
        let name = ds.name_any();
        let uid = workload::uid_of(&ds)?;
        let spec = ds.spec.clone().unwrap_or_default();
        let selector = workload::selector_of(&name, Some(&spec.selector))?;
        let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
        let history = History::new(
            context.client.clone(),
            namespace,
            &ds,
            &uid,
            &spec.template,
            &selector,
            CONTROLLER_REVISION_HASH_LABEL,
        );
        let revisions = history.sync(collisions).await?;
        let hash = revisions::daemon_hash_of(&revisions.update).map_or_else(
            || pod_template_hash(&spec.template, revisions.collision_count),
            str::to_string,
        );
        let mut template_spec = spec.template.spec.clone().unwrap_or_default();
        template_spec.tolerations = Some(with_default_tolerations(template_spec.tolerations));
        let template_pod = Pod {
            spec: Some(template_spec),
            ..Default::default()
        };
        Ok(DaemonSync {
            pods: Api::namespaced(context.client.clone(), namespace),
            context,
            ds,
            spec,
            name,
            uid,
            selector,
            hash,
            revisions,
            template_pod,
        })
    }

    async fn run(self) -> Result<Action, Error> {
        let nodes = Api::<Node>::all(self.context.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        if !workload::is_terminating(&self.ds.metadata) {
            let pods = self.owned_pods().await?;
            let (states, stray) = self.node_states(&nodes, &pods);
            let now = Timestamp::now();
            let plan = plan(&states, &stray, &self.rollout(states.len(), now)?);
            self.carry_out(plan).await?;
        }
        let pods = self.owned_pods().await?;
        let (states, _) = self.node_states(&nodes, &pods);
        let now = Timestamp::now();
        let status = self.calculate_status(&states, now);
        if Some(&status) != self.ds.status.as_ref() {
            self.context.write_status(&self.ds, &status).await?;
        }
        self.trim_history(&pods).await?;
        let min_ready = self.spec.min_ready_seconds.unwrap_or(0);
        Ok(workload::recheck_after(workload::next_availability_change(
            &pods, min_ready, now,
        )))
    }

    /// Deletes unused revisions beyond `revisionHistoryLimit` (upstream's
    /// `cleanupHistory`); the current revision and those of live pods are in use.
    async fn trim_history(&self, pods: &[Pod]) -> Result<(), Error> {
        let update = self.revisions.update.name_any();
        let in_use = |revision: &ControllerRevision| {
            revision.name_any() == update
                || revisions::daemon_hash_of(revision).is_some_and(|hash| {
                    pods.iter()
                        .any(|pod| workload::revision_of(pod) == Some(hash))
                })
        };
        let history = History::new(
            self.context.client.clone(),
            self.ds.namespace().as_deref().unwrap_or_default(),
            &self.ds,
            &self.uid,
            &self.spec.template,
            &self.selector,
            CONTROLLER_REVISION_HASH_LABEL,
        );
        history
            .trim(&self.revisions, in_use, self.spec.revision_history_limit)
            .await
    }

    /// The pods this DaemonSet controls, oldest first.
    async fn owned_pods(&self) -> Result<Vec<Pod>, Error> {
        let mut pods = workload::owned_pods(&self.pods, &self.selector, &self.uid).await?;
        pods.sort_by_key(|pod| {
            let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
            (created, pod.name_any())
        });
        Ok(pods)
    }

    /// Each node's eligibility and pods, in node name order, and the pods aimed at
    /// no existing node.
    fn node_states<'p>(
        &self,
        nodes: &[Node],
        pods: &'p [Pod],
    ) -> (Vec<NodeState<'p>>, Vec<&'p Pod>) {
        let mut by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
        let mut stray = Vec::new();
        for pod in pods {
            match target_node(pod) {
                Some(node) => by_node.entry(node).or_default().push(pod),
                None => stray.push(pod),
            }
        }
        let mut states: Vec<NodeState> = nodes
            .iter()
            .map(|node| {
                let name = node.name_any();
                let (should_run, should_continue) = eligibility(&self.template_pod, node);
                let pods = by_node.remove(name.as_str()).unwrap_or_default();
                NodeState {
                    name,
                    should_run,
                    should_continue,
                    pods,
                }
            })
            .collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        stray.extend(by_node.into_values().flatten());
        stray.retain(|pod| !workload::is_terminating(&pod.metadata));
        (states, stray)
    }

    fn rollout(&self, nodes: usize, now: Timestamp) -> Result<Rollout<'_>, Error> {
        let strategy = self.spec.update_strategy.as_ref();
        let max_unavailable = if strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
            None
        } else {
            let one = IntOrString::Int(1);
            let value = strategy
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.max_unavailable.as_ref())
                .unwrap_or(&one);
            let total = i32::try_from(nodes).unwrap_or(i32::MAX);
            Some(workload::scaled_value(value, total, true)?.max(1))
        };
        Ok(Rollout {
            hash: &self.hash,
            max_unavailable,
            min_ready_seconds: self.spec.min_ready_seconds.unwrap_or(0),
            now,
        })
    }

    async fn carry_out(&self, plan: Plan) -> Result<(), Error> {
        let creations = plan.create_on.iter().map(|node| self.create_pod(node));
        let deletions = plan.delete.iter().map(|pod| self.delete_pod(pod));
        let created = join_all(creations).await;
        let deleted = join_all(deletions).await;
        created.into_iter().chain(deleted).collect()
    }

    async fn create_pod(&self, node: &str) -> Result<(), Error> {
        let describe = |pod: &str, err: Option<&kube::Error>| match err {
            None => format!("Created pod: {pod}"),
            Some(err) => format!("Error creating: {err}"),
        };
        let pod = self.new_pod(node);
        self.context
            .create_pod(&self.ds, &self.pods, &pod, describe)
            .await?;
        Ok(())
    }

    /// A pod for `node`: the template with the revision labels, the default
    /// tolerations and an affinity pinning it to the node.
    fn new_pod(&self, node: &str) -> Pod {
        let template = self.spec.template.clone();
        let mut template_meta = template.metadata.unwrap_or_default();
        let mut labels = template_meta.labels.take().unwrap_or_default();
        labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), self.hash.clone());
        if let Some(generation) = self.ds.metadata.generation {
            labels.insert(TEMPLATE_GENERATION_LABEL.into(), generation.to_string());
        }
        let mut spec = self.template_pod.spec.clone().unwrap_or_default();
        spec.affinity = Some(pinned_to(node, spec.affinity));
        let mut pod = workload::owned_pod(&self.ds, template_meta, labels, spec);
        pod.metadata.generate_name = Some(format!("{}-", self.name));
        pod
    }

    async fn delete_pod(&self, pod: &str) -> Result<(), Error> {
        let describe = |err: Option<&kube::Error>| match err {
            None => format!("Deleted pod: {pod}"),
            Some(err) => format!("Error deleting: {err}"),
        };
        self.context
            .delete_pod(&self.ds, &self.pods, pod, describe)
            .await
    }

    /// The status the nodes and pods justify (upstream's `updateDaemonSetStatus`),
    /// judged on each eligible node's newest live pod.
    fn calculate_status(&self, nodes: &[NodeState], now: Timestamp) -> DaemonSetStatus {
        let min_ready = self.spec.min_ready_seconds.unwrap_or(0);
        let mut status = DaemonSetStatus {
            observed_generation: self.ds.metadata.generation,
            collision_count: self.revisions.collision_count,
            conditions: self.ds.status.as_ref().and_then(|s| s.conditions.clone()),
            ..Default::default()
        };
        let (mut available, mut updated) = (0, 0);
        for node in nodes {
            let newest = node.live().last();
            match (node.should_run, newest) {
                (true, Some(pod)) => {
                    status.current_number_scheduled += 1;
                    status.number_ready += i32::from(workload::is_ready(pod));
                    available += i32::from(workload::is_available(pod, min_ready, now));
                    updated += i32::from(workload::revision_of(pod) == Some(self.hash.as_str()));
                }
                (false, Some(_)) => status.number_misscheduled += 1,
                (_, None) => {}
            }
            status.desired_number_scheduled += i32::from(node.should_run);
        }
        status.number_available = Some(available);
        status.updated_number_scheduled = Some(updated);
        status.number_unavailable = Some(status.desired_number_scheduled - available);
        status
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeSpec, PodCondition, PodSpec, PodStatus, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod(name: &str, hash: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([(CONTROLLER_REVISION_HASH_LABEL.into(), hash.into())].into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn state<'p>(name: &str, should_run: bool, pods: Vec<&'p Pod>) -> NodeState<'p> {
        NodeState {
            name: name.into(),
            should_run,
            should_continue: should_run,
            pods,
        }
    }

    fn rollout(max_unavailable: Option<i32>) -> Rollout<'static> {
        Rollout {
            hash: "new",
            max_unavailable,
            min_ready_seconds: 0,
            now: Timestamp::now(),
        }
    }

    fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn creates_where_missing_and_deletes_where_not_wanted() {
        let (a, b) = (pod("ds-a", "new", true), pod("ds-b", "new", true));
        let duplicate = pod("ds-a2", "new", true);
        let nodes = [
            state("n1", true, vec![]),
            state("n2", false, vec![&b]),
            state("n3", true, vec![&a, &duplicate]),
        ];
        let plan = plan(&nodes, &[], &rollout(Some(1)));
        assert_eq!(plan.create_on, ["n1"]);
        assert_eq!(plan.delete, ["ds-b", "ds-a2"]);
    }

    #[test]
    fn rolling_update_stays_within_max_unavailable() {
        let old: Vec<Pod> = (0..4)
            .map(|i| pod(&format!("old-{i}"), "old", true))
            .collect();
        let nodes: Vec<NodeState> = old
            .iter()
            .enumerate()
            .map(|(i, pod)| state(&format!("n{i}"), true, vec![pod]))
            .collect();
        assert_eq!(plan(&nodes, &[], &rollout(Some(1))).delete, ["old-0"]);
        assert_eq!(
            plan(&nodes, &[], &rollout(Some(2))).delete,
            ["old-0", "old-1"]
        );
        assert!(plan(&nodes, &[], &rollout(None)).delete.is_empty());
        let starting = pod("new-0", "new", false);
        let mut rolling = nodes;
        rolling[0] = state("n0", true, vec![&starting]);
        assert!(
            plan(&rolling, &[], &rollout(Some(1))).delete.is_empty(),
            "an unready new pod uses up the budget"
        );
        let broken = pod("old-broken", "old", false);
        rolling[1] = state("n1", true, vec![&broken]);
        assert_eq!(
            plan(&rolling, &[], &rollout(Some(1))).delete,
            ["old-broken"],
            "unavailable old pods go at once"
        );
    }

    #[test]
    fn eligibility_follows_selector_and_taints() {
        let template = Pod {
            spec: Some(PodSpec {
                node_selector: Some([("disk".to_string(), "ssd".to_string())].into()),
                tolerations: Some(with_default_tolerations(None)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ssd = [("disk", "ssd")];
        assert_eq!(
            eligibility(&template, &node("a", &ssd, vec![])),
            (true, true)
        );
        assert_eq!(
            eligibility(&template, &node("b", &[], vec![])),
            (false, false)
        );
        let cordoned = node(
            "c",
            &ssd,
            vec![taint("node.kubernetes.io/unschedulable", "NoSchedule")],
        );
        assert_eq!(eligibility(&template, &cordoned), (true, true));
        let dedicated = node("d", &ssd, vec![taint("dedicated", "NoSchedule")]);
        assert_eq!(eligibility(&template, &dedicated), (false, true));
        let evicting = node("e", &ssd, vec![taint("dedicated", "NoExecute")]);
        assert_eq!(eligibility(&template, &evicting), (false, false));
    }

    #[test]
    fn pods_are_pinned_to_their_node() {
        let pinned = Pod {
            spec: Some(PodSpec {
                affinity: Some(pinned_to("n7", None)),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(target_node(&pinned), Some("n7"));
        let labels = BTreeMap::new();
        assert!(node_affinity::required_matches(&pinned, &labels, "n7"));
        assert!(!node_affinity::required_matches(&pinned, &labels, "n8"));
    }
}
