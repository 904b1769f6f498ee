//! The Deployment controller: rolls a Deployment's pod template out through
//! ReplicaSets, as kube-controller-manager's does.
//!
//! Each template gets a ReplicaSet named `<deployment>-<pod-template-hash>`, whose
//! selector and template carry the `pod-template-hash` label, and whose
//! `deployment.kubernetes.io/revision` annotation numbers the rollouts; that is what
//! `kubectl rollout history` lists and what `kubectl rollout undo` copies back.
//!
//! Each reconcile takes one step (create the new ReplicaSet, grow it, or shrink old
//! ones) and only when every ReplicaSet's status has caught up with its spec
//! (`observedGeneration`), so the counts a step relies on are the ReplicaSet
//! controller's view *after* the previous step. That makes `maxSurge` and
//! `maxUnavailable` hold at every moment, not just eventually.

mod hash;
mod rollout;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::Selector;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use gantry_client::{EventRecorder, EventType, object_reference};

use crate::workload::{self, Error, POD_TEMPLATE_HASH_LABEL};
use rollout::{
    DESIRED_REPLICAS_ANNOTATION, Fenceposts, MAX_REPLICAS_ANNOTATION, REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
};

pub use hash::pod_template_hash;

/// The component name on this controller's Events.
const COMPONENT: &str = "deployment-controller";

/// Deployment annotations not copied to its ReplicaSets (and not copied back by
/// `kubectl rollout undo`): they describe the Deployment or one ReplicaSet only.
const ANNOTATIONS_NOT_COPIED: [&str; 5] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
];

/// How often a Recreate rollout looks whether the old pods are gone; pods are not
/// watched here, and their final deletion changes no ReplicaSet.
const OLD_PODS_POLL: Duration = Duration::from_secs(1);

/// Runs the Deployment controller until `shutdown`; API errors are logged and the
/// affected Deployment retried, never returned.
pub async fn run(client: Client, shutdown: CancellationToken) {
    let context = Arc::new(Context {
        client: client.clone(),
        recorder: EventRecorder::new(client.clone(), COMPONENT, None),
    });
    Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<ReplicaSet>::all(client), watcher::Config::default())
    .graceful_shutdown_on(shutdown.cancelled_owned())
    .run(reconcile, error_policy, context)
    .for_each(|result| async move {
        if let Err(err) = result {
            tracing::debug!(%err, "deployment controller");
        }
    })
    .await;
}

/// What every reconcile needs.
struct Context {
    client: Client,
    recorder: EventRecorder,
}

fn error_policy(deployment: Arc<Deployment>, err: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(deployment = %deployment.name_any(), %err, "syncing deployment");
    Action::requeue(workload::RETRY_AFTER_ERROR)
}

async fn reconcile(cached: Arc<Deployment>, context: Arc<Context>) -> Result<Action, Error> {
    let (name, namespace) = workload::name_and_namespace(cached.as_ref())?;
    let deployments: Api<Deployment> = Api::namespaced(context.client.clone(), &namespace);
    let Some(deployment) = deployments.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if workload::is_terminating(&deployment.metadata) {
        return Ok(Action::await_change());
    }
    let selector =
        match workload::selector_of(&name, deployment.spec.as_ref().map(|spec| &spec.selector)) {
            Ok(selector) => selector,
            Err(Error::EmptySelector(_)) => {
                let message =
                    "This deployment is selecting all pods. A non-empty selector is required.";
                context
                    .recorder
                    .record(
                        &object_reference(&deployment),
                        EventType::Warning,
                        "SelectingAll",
                        message,
                    )
                    .await;
                return Ok(Action::await_change());
            }
            Err(err) => return Err(err),
        };
    let mut rollout = Rollout::new(&context, deployment, &namespace, selector)?;
    rollout.claim_replica_sets().await?;
    rollout.run().await
}

/// One reconcile of one Deployment.
struct Rollout<'a> {
    context: &'a Context,
    deployment: Deployment,
    uid: String,
    selector: Selector,
    fenceposts: Fenceposts,
    deployments: Api<Deployment>,
    replica_sets: Api<ReplicaSet>,
    pods: Api<Pod>,
    /// The ReplicaSets this Deployment controls, kept current as this reconcile changes them.
    owned: Vec<ReplicaSet>,
    /// A `Progressing` condition this step earned (new ReplicaSet created or found).
    progress_note: Option<DeploymentCondition>,
}

impl<'a> Rollout<'a> {
    fn new(
        context: &'a Context,
        deployment: Deployment,
        namespace: &str,
        selector: Selector,
    ) -> Result<Self, Error> {
        let uid = deployment
            .metadata
            .uid
            .clone()
            .ok_or_else(|| Error::MissingMetadata(deployment.name_any(), "uid"))?;
        let fenceposts = rollout::fenceposts(&deployment)?;
        let client = context.client.clone();
        Ok(Rollout {
            context,
            deployment,
            uid,
            selector,
            fenceposts,
            deployments: Api::namespaced(client.clone(), namespace),
            replica_sets: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client, namespace),
            owned: Vec::new(),
            progress_note: None,
        })
    }

    async fn run(self) -> Result<Action, Error> {
        if !self.owned.iter().all(rollout::is_settled) {
            // A ReplicaSet has not caught up with its last change; its status update
            // triggers the next reconcile.
            return Ok(Action::await_change());
        }
        let all: Vec<&ReplicaSet> = self.owned.iter().collect();
        if self.is_paused() || rollout::is_scaling_event(&self.deployment, &all) {
            self.sync_scaling().await
        } else if rollout::is_recreate(&self.deployment) {
            self.recreate().await
        } else {
            self.rolling_update().await
        }
    }

    fn is_paused(&self) -> bool {
        self.deployment
            .spec
            .as_ref()
            .is_some_and(|spec| spec.paused == Some(true))
    }

    fn desired(&self) -> i32 {
        rollout::desired_replicas(&self.deployment)
    }

    fn template(&self) -> PodTemplateSpec {
        self.deployment
            .spec
            .as_ref()
            .map(|spec| spec.template.clone())
            .unwrap_or_default()
    }

    /// Lists the ReplicaSets this Deployment selects, keeps those it controls and
    /// adopts orphans (upstream's `ClaimReplicaSets`).
    async fn claim_replica_sets(&mut self) -> Result<(), Error> {
        let params = ListParams::default().labels(&self.selector.to_string());
        for rs in self.replica_sets.list(&params).await?.items {
            match workload::controller_of(&rs.metadata) {
                Some(owner) if owner.uid == self.uid => self.owned.push(rs),
                Some(_) => {}
                None if !workload::is_terminating(&rs.metadata) => {
                    if let Some(adopted) = self.adopt(&rs).await? {
                        self.owned.push(adopted);
                    }
                }
                None => {}
            }
        }
        self.owned
            .sort_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0));
        Ok(())
    }

    async fn adopt(&self, rs: &ReplicaSet) -> Result<Option<ReplicaSet>, Error> {
        let Some(reference) = workload::controller_reference(&self.deployment) else {
            return Ok(None);
        };
        let mut references = rs.metadata.owner_references.clone().unwrap_or_default();
        references.push(reference);
        let patch = json!({"metadata": {
            "ownerReferences": references,
            "uid": rs.metadata.uid,
            "resourceVersion": rs.metadata.resource_version,
        }});
        match self
            .replica_sets
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(adopted) => Ok(Some(adopted)),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// The ReplicaSet running the current template (the oldest, should there be
    /// several) and the others, oldest first.
    fn split(&self) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
        let template = self.template();
        let new = self
            .owned
            .iter()
            .find(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|spec| spec.template.as_ref())
                    .is_some_and(|t| workload::templates_equal_ignoring_hash(t, &template))
            })
            .cloned();
        let new_uid = new.as_ref().and_then(|rs| rs.metadata.uid.clone());
        let old = self
            .owned
            .iter()
            .filter(|rs| rs.metadata.uid != new_uid || new_uid.is_none())
            .cloned()
            .collect();
        (new, old)
    }

    /// Replaces (or adds) a ReplicaSet this reconcile changed.
    fn remember(&mut self, rs: ReplicaSet) {
        match self
            .owned
            .iter_mut()
            .find(|o| o.metadata.uid == rs.metadata.uid)
        {
            Some(slot) => *slot = rs,
            None => self.owned.push(rs),
        }
    }

    async fn rolling_update(mut self) -> Result<Action, Error> {
        let Some(new) = self.ensure_new_replica_set(true).await? else {
            return self.finish(None).await;
        };
        let (_, old) = self.split();
        let desired = self.desired();
        let current = rollout::spec_replicas(&new);
        let target = if current > desired {
            desired
        } else {
            let all: Vec<&ReplicaSet> = self.owned.iter().collect();
            rollout::new_replica_set_replicas(&self.deployment, self.fenceposts, &all, current)
        };
        if target != current {
            let scaled = self.scale(&new, target).await?;
            return self.finish(Some(scaled)).await;
        }
        let old_refs: Vec<&ReplicaSet> = old.iter().collect();
        let targets =
            rollout::old_replica_set_targets(&self.deployment, self.fenceposts, &old_refs, &new);
        let mut scaled_down = false;
        for (rs, target) in old.iter().zip(targets) {
            if target != rollout::spec_replicas(rs) {
                self.scale(rs, target).await?;
                scaled_down = true;
            }
        }
        if !scaled_down {
            self.cleanup_if_complete(&new).await?;
        }
        self.finish(Some(new)).await
    }

    async fn recreate(mut self) -> Result<Action, Error> {
        let (new, old) = self.split();
        let mut scaled_down = false;
        for rs in old.iter().filter(|rs| rollout::spec_replicas(rs) > 0) {
            self.scale(rs, 0).await?;
            scaled_down = true;
        }
        if scaled_down {
            return self.finish(new).await;
        }
        if self.old_pods_running(new.as_ref(), &old).await? {
            self.finish(new).await?;
            return Ok(Action::requeue(OLD_PODS_POLL));
        }
        let Some(new) = self.ensure_new_replica_set(true).await? else {
            return self.finish(None).await;
        };
        let new = if rollout::spec_replicas(&new) != self.desired() {
            self.scale(&new, self.desired()).await?
        } else {
            self.cleanup_if_complete(&new).await?;
            new
        };
        self.finish(Some(new)).await
    }

    /// Whether any pod of an old ReplicaSet still exists and has not finished; a
    /// Recreate rollout starts new pods only after that.
    async fn old_pods_running(
        &self,
        new: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<bool, Error> {
        if old.iter().any(|rs| rollout::status_replicas(rs) > 0) {
            return Ok(true);
        }
        let new_uid = new.and_then(|rs| rs.metadata.uid.as_deref());
        let params = ListParams::default().labels(&self.selector.to_string());
        let pods = self.pods.list(&params).await?.items;
        Ok(pods.iter().any(|pod| {
            let owner = workload::controller_of(&pod.metadata).map(|o| o.uid.as_str());
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            let owned_by_old = owner.is_some_and(|uid| {
                Some(uid) != new_uid && old.iter().any(|rs| rs.metadata.uid.as_deref() == Some(uid))
            });
            owned_by_old && !matches!(phase, Some("Succeeded" | "Failed"))
        }))
    }

    /// Follows a change of `spec.replicas` without rolling out (upstream's `sync`):
    /// what a paused Deployment does, and any Deployment resized mid-rollout.
    async fn sync_scaling(mut self) -> Result<Action, Error> {
        let mut new = self.ensure_new_replica_set(false).await?;
        let (_, old) = self.split();
        let old_refs: Vec<&ReplicaSet> = old.iter().collect();
        let targets: Vec<(ReplicaSet, i32)> =
            rollout::scaling_targets(&self.deployment, self.fenceposts, new.as_ref(), &old_refs)
                .into_iter()
                .map(|(rs, target)| (rs.clone(), target))
                .collect();
        for (rs, target) in targets {
            let scaled = self.scale(&rs, target).await?;
            if new
                .as_ref()
                .is_some_and(|n| n.metadata.uid == scaled.metadata.uid)
            {
                new = Some(scaled);
            }
        }
        if self.is_paused()
            && let Some(new) = &new
        {
            self.cleanup(new).await?;
        }
        self.finish(new).await
    }

    /// The ReplicaSet for the current template, its revision and annotations brought
    /// up to date; created (when `create`) if there is none yet.
    async fn ensure_new_replica_set(&mut self, create: bool) -> Result<Option<ReplicaSet>, Error> {
        let (new, _) = self.split();
        let new = match new {
            Some(existing) => {
                if self.progress_condition_missing() {
                    let message = format!("Found new replica set {:?}", existing.name_any());
                    self.note_progress(status::FOUND_NEW_REPLICA_SET, &message);
                }
                self.sync_revision(existing).await?
            }
            None if create => self.create_new_replica_set().await?,
            None => return Ok(None),
        };
        self.set_deployment_revision(&new).await?;
        Ok(Some(new))
    }

    /// The revision the new ReplicaSet should carry: one past every old one's.
    fn next_revision(&self, new_uid: Option<&str>) -> i64 {
        self.owned
            .iter()
            .filter(|rs| rs.metadata.uid.as_deref() != new_uid || new_uid.is_none())
            .map(rollout::revision)
            .max()
            .unwrap_or(0)
            + 1
    }

    /// Gives an existing new ReplicaSet (a rollback or a returning template) the next
    /// revision, the Deployment's annotations and its `minReadySeconds`.
    async fn sync_revision(&mut self, rs: ReplicaSet) -> Result<ReplicaSet, Error> {
        let revision = self.next_revision(rs.metadata.uid.as_deref());
        let current = rs.annotations().clone();
        let mut wanted = current.clone();
        self.apply_new_annotations(&mut wanted, revision);
        let min_ready = self.min_ready_seconds();
        let spec_min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
        if wanted == current && spec_min_ready.unwrap_or(0) == min_ready.unwrap_or(0) {
            return Ok(rs);
        }
        let patch = json!({
            "metadata": {"annotations": wanted, "resourceVersion": rs.metadata.resource_version},
            "spec": {"minReadySeconds": min_ready},
        });
        let updated = self
            .replica_sets
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        self.remember(updated.clone());
        Ok(updated)
    }

    /// Upstream's `SetNewReplicaSetAnnotations`: copy the Deployment's annotations,
    /// and raise the revision, remembering the one it replaces.
    fn apply_new_annotations(&self, annotations: &mut BTreeMap<String, String>, revision: i64) {
        for (key, value) in self.deployment.annotations() {
            if !ANNOTATIONS_NOT_COPIED.contains(&key.as_str()) {
                annotations.insert(key.clone(), value.clone());
            }
        }
        let previous = annotations.get(REVISION_ANNOTATION).cloned();
        let previous_number = previous.as_deref().and_then(|r| r.parse::<i64>().ok());
        if previous_number.is_some_and(|p| p >= revision) {
            return;
        }
        if let Some(previous) = previous {
            let history = match annotations.get(REVISION_HISTORY_ANNOTATION) {
                Some(history) if !history.is_empty() => format!("{history},{previous}"),
                _ => previous,
            };
            annotations.insert(REVISION_HISTORY_ANNOTATION.into(), history);
        }
        annotations.insert(REVISION_ANNOTATION.into(), revision.to_string());
    }

    fn min_ready_seconds(&self) -> Option<i32> {
        self.deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.min_ready_seconds)
    }

    /// Creates `<deployment>-<hash>` for the current template with as many replicas
    /// as the strategy allows right now.
    async fn create_new_replica_set(&mut self) -> Result<ReplicaSet, Error> {
        let collision_count = self
            .deployment
            .status
            .as_ref()
            .and_then(|s| s.collision_count);
        let hash = pod_template_hash(&self.template(), collision_count);
        let mut rs = self.replica_set_for(&hash);
        let all: Vec<&ReplicaSet> = self.owned.iter().chain([&rs]).collect();
        let replicas =
            rollout::new_replica_set_replicas(&self.deployment, self.fenceposts, &all, 0);
        let revision = self.next_revision(None);
        let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
        self.apply_new_annotations(annotations, revision);
        self.apply_replicas_annotations(annotations);
        if let Some(spec) = rs.spec.as_mut() {
            spec.replicas = Some(replicas);
        }
        let name = rs.name_any();
        let created = match self.replica_sets.create(&PostParams::default(), &rs).await {
            Ok(created) => created,
            Err(kube::Error::Api(status)) if status.code == 409 => {
                return self.resolve_name_conflict(&name).await;
            }
            Err(err) => return Err(err.into()),
        };
        if replicas > 0 {
            let message = format!("Scaled up replica set {name} from 0 to {replicas}");
            self.record(EventType::Normal, "ScalingReplicaSet", &message)
                .await;
        }
        self.note_progress(
            status::NEW_REPLICA_SET_CREATED,
            &format!("Created new replica set {name:?}"),
        );
        self.remember(created.clone());
        Ok(created)
    }

    /// The ReplicaSet for this template hash, before its replicas and annotations are set.
    fn replica_set_for(&self, hash: &str) -> ReplicaSet {
        let mut template = self.template();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());
        let mut selector: LabelSelector = self
            .deployment
            .spec
            .as_ref()
            .map(|spec| spec.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.into());
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", self.deployment.name_any())),
                namespace: self.deployment.namespace(),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                owner_references: workload::controller_reference(&self.deployment).map(|r| vec![r]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: self.min_ready_seconds(),
                selector,
                template: Some(template),
            }),
            status: None,
        }
    }

    /// A ReplicaSet of the new name exists: ours with this template (a create whose
    /// answer was lost) is fine; anything else is a hash collision, resolved by
    /// bumping `status.collisionCount` so the next attempt hashes differently.
    async fn resolve_name_conflict(&mut self, name: &str) -> Result<ReplicaSet, Error> {
        let existing = self.replica_sets.get(name).await?;
        let same_template = existing
            .spec
            .as_ref()
            .and_then(|spec| spec.template.as_ref())
            .is_some_and(|t| workload::templates_equal_ignoring_hash(t, &self.template()));
        if workload::is_controlled_by(&existing.metadata, &self.uid) && same_template {
            self.remember(existing.clone());
            return Ok(existing);
        }
        let count = self
            .deployment
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0);
        let patch = json!({"status": {"collisionCount": count.saturating_add(1)}});
        self.deployments
            .patch_status(
                &self.deployment.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        Err(Error::HashCollision(name.to_string()))
    }

    /// Upstream's `SetReplicasAnnotations`: the Deployment's size and maximum when the
    /// ReplicaSet was last scaled, which proportional scaling reads.
    fn apply_replicas_annotations(&self, annotations: &mut BTreeMap<String, String>) {
        let desired = self.desired();
        annotations.insert(DESIRED_REPLICAS_ANNOTATION.into(), desired.to_string());
        annotations.insert(
            MAX_REPLICAS_ANNOTATION.into(),
            (desired + self.fenceposts.max_surge).to_string(),
        );
    }

    /// Records the new ReplicaSet's revision on the Deployment, where `kubectl rollout`
    /// and `kubectl describe` read it.
    async fn set_deployment_revision(&mut self, new: &ReplicaSet) -> Result<(), Error> {
        let Some(revision) = new.annotations().get(REVISION_ANNOTATION) else {
            return Ok(());
        };
        if self.deployment.annotations().get(REVISION_ANNOTATION) == Some(revision) {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {REVISION_ANNOTATION: revision}}});
        let patched = self
            .deployments
            .patch(
                &self.deployment.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        // Only the annotations: a spec changed meanwhile is the next reconcile's business,
        // and this one's status must describe the spec it acted on.
        self.deployment.metadata.annotations = patched.metadata.annotations;
        Ok(())
    }

    /// Sets a ReplicaSet's replicas (and its replicas annotations), recording a
    /// `ScalingReplicaSet` Event when the size changes.
    async fn scale(&mut self, rs: &ReplicaSet, replicas: i32) -> Result<ReplicaSet, Error> {
        let from = rollout::spec_replicas(rs);
        let mut annotations = rs.annotations().clone();
        self.apply_replicas_annotations(&mut annotations);
        if from == replicas && &annotations == rs.annotations() {
            return Ok(rs.clone());
        }
        let patch = json!({
            "metadata": {"annotations": annotations, "resourceVersion": rs.metadata.resource_version},
            "spec": {"replicas": replicas},
        });
        let scaled = self
            .replica_sets
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        if from != replicas {
            let direction = if replicas > from { "up" } else { "down" };
            let message = format!(
                "Scaled {direction} replica set {} from {from} to {replicas}",
                rs.name_any()
            );
            self.record(EventType::Normal, "ScalingReplicaSet", &message)
                .await;
        }
        self.remember(scaled.clone());
        Ok(scaled)
    }

    async fn cleanup_if_complete(&self, new: &ReplicaSet) -> Result<(), Error> {
        let all: Vec<&ReplicaSet> = self.owned.iter().collect();
        let now = Timestamp::now();
        let status =
            status::calculate_status(&self.deployment, &all, Some(new), self.fenceposts, now);
        if status::is_complete(&self.deployment, &status) {
            self.cleanup(new).await?;
        }
        Ok(())
    }

    /// Deletes the oldest scaled-down ReplicaSets beyond `revisionHistoryLimit`.
    async fn cleanup(&self, new: &ReplicaSet) -> Result<(), Error> {
        let Some(limit) = self
            .deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.revision_history_limit)
        else {
            return Ok(());
        };
        let mut candidates: Vec<&ReplicaSet> = self
            .owned
            .iter()
            .filter(|rs| rs.metadata.uid != new.metadata.uid)
            .filter(|rs| !workload::is_terminating(&rs.metadata))
            .collect();
        let mut excess = i64::try_from(candidates.len()).unwrap_or(i64::MAX) - i64::from(limit);
        candidates.sort_by_key(|rs| rollout::revision(rs));
        for rs in candidates {
            if excess <= 0 {
                break;
            }
            if rollout::is_active(rs) || !rollout::is_settled(rs) {
                continue;
            }
            let params = DeleteParams {
                preconditions: workload::uid_precondition(&rs.metadata),
                ..DeleteParams::background()
            };
            match self.replica_sets.delete(&rs.name_any(), &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(err) => return Err(err.into()),
            }
            excess -= 1;
        }
        Ok(())
    }

    fn progress_condition_missing(&self) -> bool {
        self.deployment
            .status
            .as_ref()
            .is_none_or(|s| status::get_condition(s, "Progressing").is_none())
    }

    fn note_progress(&mut self, reason: &str, message: &str) {
        self.progress_note = Some(status::condition(
            "Progressing",
            "True",
            reason,
            message,
            Timestamp::now(),
        ));
    }

    /// Writes the status this step leaves (if it changed) and decides when to look again.
    async fn finish(self, new: Option<ReplicaSet>) -> Result<Action, Error> {
        let all: Vec<&ReplicaSet> = self.owned.iter().collect();
        let now = Timestamp::now();
        let mut next =
            status::calculate_status(&self.deployment, &all, new.as_ref(), self.fenceposts, now);
        if let Some(note) = self.progress_note.clone() {
            status::set_condition(&mut next, note);
        }
        status::update_paused(&self.deployment, &mut next, now);
        let recheck = if self.is_paused() {
            None
        } else {
            status::update_progress(&self.deployment, &mut next, new.as_ref(), now)
        };
        if self.deployment.status.as_ref() != Some(&next) {
            self.deployments
                .patch_status(
                    &self.deployment.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": next})),
                )
                .await?;
        }
        Ok(workload::recheck_after(recheck))
    }

    async fn record(&self, event_type: EventType, reason: &str, message: &str) {
        self.context
            .recorder
            .record(
                &object_reference(&self.deployment),
                event_type,
                reason,
                message,
            )
            .await;
    }
}
