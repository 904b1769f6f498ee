//! The StatefulSet controller: pods with stable names (`NAME-0` … `NAME-N-1`), stable
//! hostnames and their own PersistentVolumeClaims, created, replaced and removed in
//! ordinal order, as kube-controller-manager's StatefulSet controller does.
//!
//! Each reconcile reads the StatefulSet and its pods straight from the API server,
//! [`plan`]s the next steps (a pure function of the pods, so the ordering rules are
//! unit-tested), carries them out, and writes a status computed from a fresh listing.
//! Every template the set has had is a ControllerRevision (see [`crate::revisions`]);
//! a pod records the revision it was made from in its `controller-revision-hash`
//! label. A pod below the rolling update's partition that is recreated gets the
//! template of `status.currentRevision`, every other pod that of `updateRevision`.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    ControllerRevision, StatefulSet, StatefulSetSpec, StatefulSetStatus,
};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::core::Selector;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use gantry_client::EventType;

use crate::revisions::{self, History, Revisions, STATEFUL_SET_HASH_LABEL};
use crate::workload::{self, CONTROLLER_REVISION_HASH_LABEL, Context, Error};

/// The component name on this controller's Events.
const COMPONENT: &str = "statefulset-controller";

/// The label naming a StatefulSet pod, so a Service can select exactly one replica.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";

/// The label carrying a StatefulSet pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Runs the StatefulSet controller until `shutdown`; API errors are logged and the
/// affected StatefulSet retried, never returned.
pub async fn run(client: Client, shutdown: CancellationToken) {
    let context = Context::new(client.clone(), COMPONENT);
    let results = Controller::new(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client), watcher::Config::default())
    .graceful_shutdown_on(shutdown.cancelled_owned())
    .run(reconcile, workload::retry_on_error, context);
    workload::drive(results, COMPONENT).await;
}

async fn reconcile(cached: Arc<StatefulSet>, context: Arc<Context>) -> Result<Action, Error> {
    match context.latest(cached.as_ref()).await? {
        Some((set, namespace)) => SetSync::new(&context, set, &namespace)?.run().await,
        None => Ok(Action::await_change()),
    }
}

/// How the StatefulSet wants its pods managed, taken from its spec.
#[derive(Debug, Clone, PartialEq)]
struct Policy {
    /// The first ordinal (`spec.ordinals.start`).
    start: i32,
    /// `spec.replicas`.
    replicas: i32,
    /// OrderedReady: one pod at a time, each waiting for the previous to be Ready.
    ordered: bool,
    /// With RollingUpdate, the partition: pods with a lower index keep their revision.
    /// `None` for OnDelete, which never replaces a running pod.
    rolling_partition: Option<i32>,
}

impl Policy {
    fn of(spec: &StatefulSetSpec) -> Policy {
        let strategy = spec.update_strategy.as_ref();
        let rolling = strategy.and_then(|s| s.type_.as_deref()) != Some("OnDelete");
        let partition = strategy
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0);
        Policy {
            start: spec
                .ordinals
                .as_ref()
                .and_then(|o| o.start)
                .unwrap_or(0)
                .max(0),
            replicas: spec.replicas.unwrap_or(1).max(0),
            ordered: spec.pod_management_policy.as_deref() != Some("Parallel"),
            rolling_partition: rolling.then_some(partition.max(0)),
        }
    }

    /// The ordinals the pods should have.
    fn wanted(&self) -> std::ops::Range<i32> {
        self.start..self.start.saturating_add(self.replicas)
    }

    /// Whether a pod of this ordinal is made at the current revision rather than
    /// the update revision: it is below a rolling update's partition
    /// (upstream's `newVersionedStatefulSetPod`).
    fn keeps_current_revision(&self, ordinal: i32) -> bool {
        self.rolling_partition
            .is_some_and(|partition| ordinal < self.start.saturating_add(partition))
    }
}

/// The revisions one reconcile works with.
struct Versions {
    revisions: Revisions,
    /// `status.currentRevision` if the set still has that revision, else the update
    /// revision, and the template it recorded.
    current_revision: String,
    current_template: PodTemplateSpec,
}

impl Versions {
    /// The current and update revisions after syncing the set's history; the
    /// current one is the revision `status.currentRevision` names, if it still
    /// exists and holds a template.
    fn new(synced: Revisions, set: &StatefulSet, spec: &StatefulSetSpec) -> Versions {
        let recorded = set
            .status
            .as_ref()
            .and_then(|status| status.current_revision.as_deref())
            .and_then(|name| synced.named(name))
            .and_then(|revision| Some((revision.name_any(), revisions::template_of(revision)?)));
        let (current_revision, current_template) =
            recorded.unwrap_or_else(|| (synced.update.name_any(), spec.template.clone()));
        Versions {
            revisions: synced,
            current_revision,
            current_template,
        }
    }

    /// The name of the revision of the set's template as it is now.
    fn update_revision(&self) -> String {
        self.revisions.update.name_any()
    }
}

/// One change a reconcile makes.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// Create the claims and the pod of this ordinal.
    Create(i32),
    /// Delete a finished pod so it is recreated, or an outdated one so it is
    /// recreated from the current template.
    Replace(String),
    /// Delete a pod whose ordinal is no longer wanted (scale-down).
    Condemn(i32, String),
}

/// The next steps for pods keyed by ordinal, as upstream's `updateStatefulSet`
/// orders them: fill in missing ordinals lowest first, then remove unwanted ones
/// highest first, then roll outdated pods highest first down to the partition.
/// OrderedReady stops at the first pod that is not Running and Ready, and takes one
/// step at a time; a rolling update always waits for the pod it replaced.
fn plan(policy: &Policy, pods: &BTreeMap<i32, &Pod>, update_revision: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let wanted = policy.wanted();
    for ordinal in wanted.clone() {
        let pod = pods.get(&ordinal);
        match pod {
            None => steps.push(Step::Create(ordinal)),
            Some(pod) if !workload::is_terminating(&pod.metadata) && has_finished(pod) => {
                steps.push(Step::Replace(pod.name_any()));
            }
            Some(_) => {}
        }
        if policy.ordered && !pod.is_some_and(|pod| is_running_and_ready(pod)) {
            return steps;
        }
    }
    let condemned = pods.iter().rev().filter(|(o, _)| !wanted.contains(o));
    for (ordinal, pod) in condemned {
        if !workload::is_terminating(&pod.metadata) {
            steps.push(Step::Condemn(*ordinal, pod.name_any()));
        }
        if policy.ordered {
            return steps;
        }
    }
    if let Some(partition) = policy.rolling_partition {
        let first_updated = wanted.start.saturating_add(partition);
        for ordinal in (first_updated..wanted.end).rev() {
            let Some(pod) = pods.get(&ordinal) else {
                return steps;
            };
            if workload::revision_of(pod) != Some(update_revision)
                && !workload::is_terminating(&pod.metadata)
            {
                steps.push(Step::Replace(pod.name_any()));
                return steps;
            }
            if !is_running_and_ready(pod) {
                return steps;
            }
        }
    }
    steps
}

/// Whether the pod ran to completion or failed; a StatefulSet pod must keep running.
fn has_finished(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Failed" | "Succeeded"))
}

/// Upstream's `isRunningAndReady`: what OrderedReady waits for.
fn is_running_and_ready(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    phase == Some("Running") && workload::is_ready(pod)
}

/// The ordinal in a pod name `SET-ORDINAL`, if the name has that form.
fn ordinal_of(set_name: &str, pod_name: &str) -> Option<i32> {
    let digits = pod_name.strip_prefix(set_name)?.strip_prefix('-')?;
    if digits.starts_with('+') || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    digits.parse().ok().filter(|ordinal: &i32| *ordinal >= 0)
}

/// The name of the claim a pod gets from one volume claim template.
fn claim_name(template: &PersistentVolumeClaim, set_name: &str, ordinal: i32) -> String {
    format!("{}-{set_name}-{ordinal}", template.name_any())
}

/// One reconcile of one StatefulSet.
struct SetSync<'a> {
    context: &'a Context,
    set: StatefulSet,
    spec: StatefulSetSpec,
    name: String,
    uid: String,
    selector: Selector,
    namespace: String,
    pods: Api<Pod>,
    claims: Api<PersistentVolumeClaim>,
}

impl<'a> SetSync<'a> {
    fn new(context: &'a Context, set: StatefulSet, namespace: &str) -> Result<Self, Error> {
        let name = set.name_any();
        let uid = workload::uid_of(&set)?;
        let spec = set.spec.clone().unwrap_or_default();
        let selector = workload::selector_of(&name, Some(&spec.selector))?;
        Ok(SetSync {
            pods: Api::namespaced(context.client.clone(), namespace),
            claims: Api::namespaced(context.client.clone(), namespace),
            context,
            set,
            spec,
            name,
            uid,
            selector,
            namespace: namespace.to_string(),
        })
    }

    async fn run(self) -> Result<Action, Error> {
        let collisions = self.set.status.as_ref().and_then(|s| s.collision_count);
        let revisions = self.history().sync(collisions).await?;
        let versions = Versions::new(revisions, &self.set, &self.spec);
        if !workload::is_terminating(&self.set.metadata) {
            let pods = self.owned_pods().await?;
            let by_ordinal = self.by_ordinal(&pods);
            let update_revision = versions.update_revision();
            for step in plan(&Policy::of(&self.spec), &by_ordinal, &update_revision) {
                self.take(step, &versions).await?;
            }
        }
        let pods = self.owned_pods().await?;
        let now = Timestamp::now();
        let status = self.calculate_status(&pods, now, &versions);
        if Some(&status) != self.set.status.as_ref() {
            self.context.write_status(&self.set, &status).await?;
        }
        self.trim_history(&versions.revisions, &status, &pods)
            .await?;
        let min_ready = self.spec.min_ready_seconds.unwrap_or(0);
        Ok(workload::recheck_after(workload::next_availability_change(
            &pods, min_ready, now,
        )))
    }

    fn history(&self) -> History<'_, StatefulSet> {
        History::new(
            self.context.client.clone(),
            &self.namespace,
            &self.set,
            &self.uid,
            &self.spec.template,
            &self.selector,
            STATEFUL_SET_HASH_LABEL,
        )
    }

    /// Deletes unused revisions beyond `revisionHistoryLimit`; the current and
    /// update revisions and those of live pods are in use.
    async fn trim_history(
        &self,
        revisions: &Revisions,
        status: &StatefulSetStatus,
        pods: &[Pod],
    ) -> Result<(), Error> {
        let in_use = |revision: &ControllerRevision| {
            let name = revision.name_any();
            status.current_revision.as_deref() == Some(name.as_str())
                || status.update_revision.as_deref() == Some(name.as_str())
                || pods
                    .iter()
                    .any(|pod| workload::revision_of(pod) == Some(name.as_str()))
        };
        self.history()
            .trim(revisions, in_use, self.spec.revision_history_limit)
            .await
    }

    async fn owned_pods(&self) -> Result<Vec<Pod>, Error> {
        workload::owned_pods(&self.pods, &self.selector, &self.uid).await
    }

    fn by_ordinal<'p>(&self, pods: &'p [Pod]) -> BTreeMap<i32, &'p Pod> {
        pods.iter()
            .filter_map(|pod| Some((ordinal_of(&self.name, &pod.name_any())?, pod)))
            .collect()
    }

    async fn take(&self, step: Step, versions: &Versions) -> Result<(), Error> {
        match step {
            Step::Create(ordinal) => {
                self.create_claims(ordinal).await?;
                self.create_pod(ordinal, versions).await
            }
            Step::Replace(pod) => self.delete_pod(&pod).await,
            Step::Condemn(ordinal, pod) => {
                self.delete_pod(&pod).await?;
                if self.retention("whenScaled") == "Delete" {
                    self.delete_claims(ordinal).await?;
                }
                Ok(())
            }
        }
    }

    /// The claims' retention for `whenDeleted` or `whenScaled`: "Retain" or "Delete".
    fn retention(&self, when: &str) -> &str {
        let policy = self.spec.persistent_volume_claim_retention_policy.as_ref();
        let value = policy.and_then(|p| match when {
            "whenDeleted" => p.when_deleted.as_deref(),
            _ => p.when_scaled.as_deref(),
        });
        value.unwrap_or("Retain")
    }

    fn claim_templates(&self) -> &[PersistentVolumeClaim] {
        self.spec
            .volume_claim_templates
            .as_deref()
            .unwrap_or_default()
    }

    /// Creates the pod's claims that do not exist yet, before the pod that mounts them.
    async fn create_claims(&self, ordinal: i32) -> Result<(), Error> {
        for template in self.claim_templates() {
            let claim = self.new_claim(template, ordinal);
            let claim_name = claim.name_any();
            if self.claims.get_opt(&claim_name).await?.is_some() {
                continue;
            }
            let pod_name = format!("{}-{ordinal}", self.name);
            match self.claims.create(&PostParams::default(), &claim).await {
                Ok(_) => {
                    let message = format!(
                        "create Claim {claim_name} Pod {pod_name} in StatefulSet {} success",
                        self.name
                    );
                    self.record(EventType::Normal, "SuccessfulCreate", &message)
                        .await;
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(err) => {
                    let message = format!(
                        "create Claim {claim_name} for Pod {pod_name} in StatefulSet {} failed error: {err}",
                        self.name
                    );
                    self.record(EventType::Warning, "FailedCreate", &message)
                        .await;
                    return Err(err.into());
                }
            }
        }
        Ok(())
    }

    /// A claim from a template: the template's labels plus the set's selector labels,
    /// owned by the set when `whenDeleted: Delete` so garbage collection removes it.
    fn new_claim(&self, template: &PersistentVolumeClaim, ordinal: i32) -> PersistentVolumeClaim {
        let mut labels = template.metadata.labels.clone().unwrap_or_default();
        labels.extend(self.spec.selector.match_labels.clone().unwrap_or_default());
        let owner = (self.retention("whenDeleted") == "Delete")
            .then(|| workload::controller_reference(&self.set))
            .flatten();
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(claim_name(template, &self.name, ordinal)),
                namespace: self.set.namespace(),
                labels: Some(labels),
                annotations: template.metadata.annotations.clone(),
                owner_references: owner.map(|reference| vec![reference]),
                ..Default::default()
            },
            spec: template.spec.clone(),
            status: None,
        }
    }

    async fn delete_claims(&self, ordinal: i32) -> Result<(), Error> {
        for template in self.claim_templates() {
            let name = claim_name(template, &self.name, ordinal);
            match self.claims.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    async fn create_pod(&self, ordinal: i32, versions: &Versions) -> Result<(), Error> {
        let describe = |pod: &str, err: Option<&kube::Error>| match err {
            None => format!("create Pod {pod} in StatefulSet {} successful", self.name),
            Some(err) => format!(
                "create Pod {pod} in StatefulSet {} failed error: {err}",
                self.name
            ),
        };
        let pod = self.new_pod(ordinal, versions);
        self.context
            .create_pod(&self.set, &self.pods, &pod, describe)
            .await?;
        Ok(())
    }

    /// The pod of one ordinal: the template of its revision (the current one below
    /// the partition, the update one elsewhere) plus its stable identity (name,
    /// hostname, subdomain, identity labels) and its claims in place of the template
    /// volumes of the same name.
    fn new_pod(&self, ordinal: i32, versions: &Versions) -> Pod {
        let (template, revision) = if Policy::of(&self.spec).keeps_current_revision(ordinal) {
            (
                versions.current_template.clone(),
                versions.current_revision.clone(),
            )
        } else {
            (self.spec.template.clone(), versions.update_revision())
        };
        let mut template_meta = template.metadata.unwrap_or_default();
        let pod_name = format!("{}-{ordinal}", self.name);
        let mut labels = template_meta.labels.take().unwrap_or_default();
        labels.insert(POD_NAME_LABEL.into(), pod_name.clone());
        labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
        labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), revision);
        let mut spec = template.spec.unwrap_or_default();
        spec.hostname = Some(pod_name.clone());
        spec.subdomain = self.spec.service_name.clone().filter(|s| !s.is_empty());
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        for claim_template in self.claim_templates() {
            let volume = Volume {
                name: claim_template.name_any(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(claim_template, &self.name, ordinal),
                    read_only: None,
                }),
                ..Default::default()
            };
            volumes.retain(|existing| existing.name != volume.name);
            volumes.push(volume);
        }
        let mut pod = workload::owned_pod(&self.set, template_meta, labels, spec);
        pod.metadata.name = Some(pod_name);
        pod
    }

    async fn delete_pod(&self, pod: &str) -> Result<(), Error> {
        let describe = |err: Option<&kube::Error>| match err {
            None => format!("delete Pod {pod} in StatefulSet {} successful", self.name),
            Some(err) => format!(
                "delete Pod {pod} in StatefulSet {} failed error: {err}",
                self.name
            ),
        };
        self.context
            .delete_pod(&self.set, &self.pods, pod, describe)
            .await
    }

    async fn record(&self, event_type: EventType, reason: &str, message: &str) {
        self.context
            .record(&self.set, event_type, reason, message)
            .await;
    }

    /// The status the pods justify (upstream's status part of `updateStatefulSet`):
    /// the current revision becomes the update revision once a rolling update has
    /// every pod updated and Ready.
    fn calculate_status(
        &self,
        pods: &[Pod],
        now: Timestamp,
        versions: &Versions,
    ) -> StatefulSetStatus {
        let previous = self.set.status.clone().unwrap_or_default();
        let update_revision = versions.update_revision();
        let mut current_revision = versions.current_revision.clone();
        let live: Vec<&Pod> = pods
            .iter()
            .filter(|pod| !workload::is_terminating(&pod.metadata))
            .collect();
        let at = |revision: &str| {
            let matching = live
                .iter()
                .filter(|pod| workload::revision_of(pod) == Some(revision));
            count(matching.count())
        };
        let replicas = count(live.len());
        let ready = count(pods.iter().filter(|pod| is_running_and_ready(pod)).count());
        let min_ready = self.spec.min_ready_seconds.unwrap_or(0);
        let available = pods
            .iter()
            .filter(|pod| is_running_and_ready(pod) && workload::is_available(pod, min_ready, now));
        let updated = at(&update_revision);
        let policy = Policy::of(&self.spec);
        if policy.rolling_partition.is_some()
            && replicas == policy.replicas
            && updated == replicas
            && ready == replicas
        {
            current_revision = update_revision.clone();
        }
        StatefulSetStatus {
            replicas,
            ready_replicas: Some(ready),
            available_replicas: Some(count(available.count())),
            current_replicas: Some(at(&current_revision)),
            updated_replicas: Some(updated),
            current_revision: Some(current_revision),
            update_revision: Some(update_revision),
            observed_generation: self.set.metadata.generation,
            collision_count: versions.revisions.collision_count,
            conditions: previous.conditions,
        }
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    use super::*;

    const REVISION: &str = "web-new";

    fn pod(ordinal: i32, phase: &str, ready: bool, revision: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("web-{ordinal}")),
                labels: Some([(CONTROLLER_REVISION_HASH_LABEL.into(), revision.into())].into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn ready(ordinal: i32) -> Pod {
        pod(ordinal, "Running", true, REVISION)
    }

    fn policy(replicas: i32, ordered: bool, partition: Option<i32>) -> Policy {
        Policy {
            start: 0,
            replicas,
            ordered,
            rolling_partition: partition,
        }
    }

    fn plan_for(policy: &Policy, pods: &[Pod]) -> Vec<Step> {
        let by_ordinal = pods
            .iter()
            .map(|pod| (ordinal_of("web", &pod.name_any()).expect("ordinal"), pod))
            .collect();
        plan(policy, &by_ordinal, REVISION)
    }

    #[test]
    fn ordered_ready_creates_one_pod_after_the_previous_is_ready() {
        let ordered = policy(3, true, Some(0));
        assert_eq!(plan_for(&ordered, &[]), [Step::Create(0)]);
        let starting = [pod(0, "Pending", false, REVISION)];
        assert_eq!(plan_for(&ordered, &starting), []);
        assert_eq!(plan_for(&ordered, &[ready(0)]), [Step::Create(1)]);
        let parallel = policy(3, false, Some(0));
        assert_eq!(
            plan_for(&parallel, &starting),
            [Step::Create(1), Step::Create(2)]
        );
    }

    #[test]
    fn scale_down_removes_the_highest_ordinal_first() {
        let pods = [ready(0), ready(1), ready(2), ready(3)];
        assert_eq!(
            plan_for(&policy(2, true, Some(0)), &pods),
            [Step::Condemn(3, "web-3".into())]
        );
        assert_eq!(
            plan_for(&policy(2, false, Some(0)), &pods),
            [
                Step::Condemn(3, "web-3".into()),
                Step::Condemn(2, "web-2".into())
            ]
        );
    }

    #[test]
    fn rolling_update_replaces_from_the_top_down_to_the_partition() {
        let old = |ordinal| pod(ordinal, "Running", true, "web-old");
        let pods = [old(0), old(1), old(2)];
        assert_eq!(
            plan_for(&policy(3, true, Some(0)), &pods),
            [Step::Replace("web-2".into())]
        );
        let rolling = [old(0), old(1), pod(2, "Running", false, REVISION)];
        assert_eq!(plan_for(&policy(3, false, Some(0)), &rolling), []);
        let top_done = [old(0), old(1), ready(2)];
        assert_eq!(
            plan_for(&policy(3, true, Some(0)), &top_done),
            [Step::Replace("web-1".into())]
        );
        assert_eq!(plan_for(&policy(3, true, Some(2)), &top_done), []);
        assert_eq!(plan_for(&policy(3, true, None), &pods), []);
    }

    #[test]
    fn failed_pods_are_replaced() {
        let pods = [ready(0), pod(1, "Failed", false, REVISION)];
        assert_eq!(
            plan_for(&policy(2, true, Some(0)), &pods),
            [Step::Replace("web-1".into())]
        );
    }

    #[test]
    fn only_pods_below_the_partition_keep_the_current_revision() {
        assert!(policy(3, true, Some(2)).keeps_current_revision(1));
        assert!(!policy(3, true, Some(2)).keeps_current_revision(2));
        assert!(!policy(3, true, Some(0)).keeps_current_revision(0));
        assert!(!policy(3, true, None).keeps_current_revision(0));
    }

    #[test]
    fn ordinals_come_from_canonical_names_only() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webs-1"), None);
        assert_eq!(ordinal_of("web", "web--1"), None);
    }
}
