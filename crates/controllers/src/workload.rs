//! What the ReplicaSet and Deployment controllers share: the error type, label
//! selectors, controller references, and when a pod counts as ready or available.
//!
//! Both controllers follow kube-controller-manager's rules for these, so that
//! `kubectl` and anything written against upstream see the same ownership and the
//! same counts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gantry_client::{EventRecorder, EventType, object_reference};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::core::{ParseExpressionError, Selector, SelectorExt};
use kube::runtime::controller::Action;

/// The label the Deployment controller adds to a ReplicaSet's selector and template so
/// that ReplicaSets of one Deployment never select each other's pods.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// The label on StatefulSet and DaemonSet pods naming the template revision they
/// were made from; rollouts compare it with the current template's hash.
pub const CONTROLLER_REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// How long a failed reconcile waits before it is retried; conflicts and brief
/// API-server outages are the usual causes, and both clear quickly.
pub const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// Why one reconcile of a ReplicaSet or Deployment did not finish; the controller logs
/// it and retries the object later.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API request failed.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// The object's selector cannot be turned into a label selector.
    #[error("invalid selector: {0}")]
    Selector(#[from] ParseExpressionError),
    /// The object's selector is missing or selects everything, which upstream rejects.
    #[error("{0} has an empty selector")]
    EmptySelector(String),
    /// A field the controller needs (name, namespace, uid) is missing.
    #[error("{0} has no metadata.{1}")]
    MissingMetadata(String, &'static str),
    /// A `maxSurge`/`maxUnavailable` value is neither an integer nor a percentage.
    #[error("invalid rolling update value {0:?}")]
    InvalidIntOrPercent(String),
    /// A ReplicaSet named for this Deployment's template hash already exists with
    /// another template; the collision count was bumped and the next attempt uses a new hash.
    #[error("replica set {0} exists with a different template (hash collision)")]
    HashCollision(String),
}

/// Turns a workload's selector into a label selector, refusing an empty one: a
/// controller with an empty selector would claim every pod in its namespace.
pub fn selector_of(owner: &str, selector: Option<&LabelSelector>) -> Result<Selector, Error> {
    let selector: Selector = selector.cloned().unwrap_or_default().try_into()?;
    if selector.selects_all() {
        return Err(Error::EmptySelector(owner.to_string()));
    }
    Ok(selector)
}

/// Whether `selector` selects an object with these labels.
pub fn selects(selector: &Selector, labels: Option<&BTreeMap<String, String>>) -> bool {
    selector.matches(labels.unwrap_or(&BTreeMap::new()))
}

/// The owner reference marked `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|reference| reference.controller == Some(true))
}

/// Whether `meta` is controlled by the object with this uid.
pub fn is_controlled_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    controller_of(meta).is_some_and(|reference| reference.uid == owner_uid)
}

/// The controller reference a workload puts on what it creates or adopts; deletion of
/// the child blocks the owner's foreground deletion, as upstream sets it.
pub fn controller_reference<K>(owner: &K) -> Option<OwnerReference>
where
    K: Resource<DynamicType = ()>,
{
    let mut reference = owner.controller_owner_ref(&())?;
    reference.block_owner_deletion = Some(true);
    Some(reference)
}

/// Whether deletion of the object has begun.
/// Deletes only the object this UID names, never a namesake created since it was read.
pub fn uid_precondition(meta: &ObjectMeta) -> Option<kube::api::Preconditions> {
    meta.uid.clone().map(|uid| kube::api::Preconditions {
        uid: Some(uid),
        resource_version: None,
    })
}

pub fn is_terminating(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// The name and namespace of an object, or why it has none.
pub fn name_and_namespace<K: Resource<DynamicType = ()>>(
    object: &K,
) -> Result<(String, String), Error> {
    let meta = object.meta();
    let name = meta
        .name
        .clone()
        .ok_or_else(|| Error::MissingMetadata(K::kind(&()).into(), "name"))?;
    let namespace = meta
        .namespace
        .clone()
        .ok_or_else(|| Error::MissingMetadata(name.clone(), "namespace"))?;
    Ok((name, namespace))
}

/// The uid of an object about to own what a controller creates.
pub fn uid_of<K: Resource<DynamicType = ()>>(object: &K) -> Result<String, Error> {
    let meta = object.meta();
    meta.uid.clone().ok_or_else(|| {
        let name = meta.name.clone().unwrap_or_default();
        Error::MissingMetadata(name, "uid")
    })
}

/// The pods `selector` selects that the object with `owner_uid` controls, straight
/// from the API server (a cache could miss pods created a moment ago).
pub async fn owned_pods(
    pods: &kube::Api<Pod>,
    selector: &Selector,
    owner_uid: &str,
) -> Result<Vec<Pod>, Error> {
    let params = kube::api::ListParams::default().labels(&selector.to_string());
    let listed = pods.list(&params).await?.items;
    Ok(listed
        .into_iter()
        .filter(|pod| is_controlled_by(&pod.metadata, owner_uid))
        .collect())
}

/// A pod of `owner` made from a template's metadata and a (completed) pod spec:
/// the template's annotations and finalizers, `labels`, and `owner` as controller.
/// The caller names it.
pub fn owned_pod<K>(
    owner: &K,
    template_meta: ObjectMeta,
    labels: BTreeMap<String, String>,
    spec: k8s_openapi::api::core::v1::PodSpec,
) -> Pod
where
    K: Resource<DynamicType = ()>,
{
    Pod {
        metadata: ObjectMeta {
            namespace: owner.meta().namespace.clone(),
            labels: Some(labels),
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: controller_reference(owner).map(|r| vec![r]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Whether a pod still counts towards its owner's replicas: not terminating and not
/// finished (upstream's `FilterActivePods`).
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !is_terminating(&pod.metadata) && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// When the pod last became Ready, if it is Ready now.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|condition| condition.type_ == "Ready")?;
    if condition.status != "True" {
        return None;
    }
    Some(
        condition
            .last_transition_time
            .as_ref()
            .map(|time| time.0)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

/// Whether the pod is Ready.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// How long until a Ready pod has been Ready for `min_ready_seconds` and so counts as
/// available: `Some(ZERO)` when it already is, `None` when it is not Ready at all.
pub fn time_until_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<Duration> {
    let since = ready_since(pod)?;
    let needed = jiff::SignedDuration::from_secs(i64::from(min_ready_seconds.max(0)));
    let elapsed = now.duration_since(since);
    Some(
        needed
            .checked_sub(elapsed)
            .and_then(|remaining| Duration::try_from(remaining).ok())
            .unwrap_or(Duration::ZERO),
    )
}

/// An int-or-percent of `total`: `"25%"` of 5 is 2 rounding up, 1 rounding down.
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, Error> {
    let percent = match value {
        IntOrString::Int(n) => return Ok((*n).max(0)),
        IntOrString::String(text) => text
            .strip_suffix('%')
            .and_then(|digits| digits.parse::<i64>().ok())
            .filter(|percent| *percent >= 0)
            .ok_or_else(|| Error::InvalidIntOrPercent(text.clone()))?,
    };
    let scaled = percent * i64::from(total);
    let value = if round_up {
        (scaled + 99) / 100
    } else {
        scaled / 100
    };
    Ok(i32::try_from(value).unwrap_or(i32::MAX))
}

/// Whether the pod has been Ready for `min_ready_seconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    time_until_available(pod, min_ready_seconds, now) == Some(Duration::ZERO)
}

/// How long until the next Ready pod becomes available under `min_ready_seconds`,
/// so that a status counting available pods can be refreshed then.
pub fn next_availability_change<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<Duration> {
    if min_ready_seconds <= 0 {
        return None;
    }
    pods.into_iter()
        .filter(|pod| is_active(pod))
        .filter_map(|pod| time_until_available(pod, min_ready_seconds, now))
        .filter(|wait| !wait.is_zero())
        .min()
}

/// The revision-hash label of a pod, if it has one.
pub fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(CONTROLLER_REVISION_HASH_LABEL)
        .map(String::as_str)
}

/// Drives a kube-runtime controller until its stream ends at shutdown. Failed
/// reconciles were already logged by the controller's error policy, so they are
/// only traced here.
pub async fn drive<T, E: std::fmt::Display>(
    results: impl futures::Stream<Item = Result<T, E>>,
    controller: &'static str,
) {
    use futures::StreamExt;
    results
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, controller);
            }
        })
        .await;
}

/// What every reconcile of a pod-owning workload (StatefulSet, DaemonSet) needs: the
/// client and the Event recorder of its component.
pub struct Context {
    /// The controller's API client.
    pub client: kube::Client,
    recorder: EventRecorder,
}

impl Context {
    /// A context whose Events name `component` as their source.
    pub fn new(client: kube::Client, component: &str) -> Arc<Context> {
        Arc::new(Context {
            recorder: EventRecorder::new(client.clone(), component, None),
            client,
        })
    }

    /// The object as the API server has it now, and its namespace; `None` once it is
    /// gone. Reconciles act on this rather than on the watch cache, which may lag
    /// behind the controller's own writes.
    pub async fn latest<K>(&self, cached: &K) -> Result<Option<(K, String)>, Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let (name, namespace) = name_and_namespace(cached)?;
        let api: kube::Api<K> = kube::Api::namespaced(self.client.clone(), &namespace);
        Ok(api.get_opt(&name).await?.map(|object| (object, namespace)))
    }

    /// Records an Event about `object`.
    pub async fn record<K>(&self, object: &K, event_type: EventType, reason: &str, message: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        self.recorder
            .record(&object_reference(object), event_type, reason, message)
            .await;
    }

    /// Creates a pod for `owner`, recording SuccessfulCreate or FailedCreate with the
    /// message `describe` makes from the pod's name and the error, if any.
    pub async fn create_pod<K>(
        &self,
        owner: &K,
        pods: &kube::Api<Pod>,
        pod: &Pod,
        describe: impl Fn(&str, Option<&kube::Error>) -> String,
    ) -> Result<Pod, Error>
    where
        K: Resource<DynamicType = ()>,
    {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        match pods.create(&kube::api::PostParams::default(), pod).await {
            Ok(created) => {
                let message = describe(created.metadata.name.as_deref().unwrap_or(name), None);
                self.record(owner, EventType::Normal, "SuccessfulCreate", &message)
                    .await;
                Ok(created)
            }
            Err(err) => {
                let message = describe(name, Some(&err));
                self.record(owner, EventType::Warning, "FailedCreate", &message)
                    .await;
                Err(err.into())
            }
        }
    }

    /// Deletes a pod of `owner`, recording SuccessfulDelete or FailedDelete with the
    /// message `describe` makes from the error, if any; a pod already gone is deleted.
    pub async fn delete_pod<K>(
        &self,
        owner: &K,
        pods: &kube::Api<Pod>,
        name: &str,
        describe: impl Fn(Option<&kube::Error>) -> String,
    ) -> Result<(), Error>
    where
        K: Resource<DynamicType = ()>,
    {
        match pods.delete(name, &kube::api::DeleteParams::default()).await {
            Ok(_) => {
                let message = describe(None);
                self.record(owner, EventType::Normal, "SuccessfulDelete", &message)
                    .await;
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(err) => {
                let message = describe(Some(&err));
                self.record(owner, EventType::Warning, "FailedDelete", &message)
                    .await;
                Err(err.into())
            }
        }
    }

    /// Writes `status` through the object's status subresource (a merge patch).
    pub async fn write_status<K>(
        &self,
        object: &K,
        status: &impl serde::Serialize,
    ) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let (name, namespace) = name_and_namespace(object)?;
        let api: kube::Api<K> = kube::Api::namespaced(self.client.clone(), &namespace);
        let patch = kube::api::Patch::Merge(serde_json::json!({ "status": status }));
        api.patch_status(&name, &kube::api::PatchParams::default(), &patch)
            .await?;
        Ok(())
    }
}

/// The error policy of a workload controller: log, and retry after
/// [`RETRY_AFTER_ERROR`].
pub fn retry_on_error<K>(object: Arc<K>, err: &Error, _: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let kind = K::kind(&());
    let name = object.meta().name.as_deref().unwrap_or_default();
    tracing::warn!(%kind, %name, %err, "reconcile failed; retrying");
    Action::requeue(RETRY_AFTER_ERROR)
}

/// Whether two pod templates are the same once the `pod-template-hash` label, which
/// the Deployment controller adds to its ReplicaSets' copies, is ignored. Templates
/// are compared as [`canonical_template`]s, so that a template that went through
/// another client (`kubectl rollout undo` sends `"resources": {}` and
/// `"creationTimestamp": null`) still equals the one it came from.
pub fn templates_equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    canonical_template(a) == canonical_template(b)
}

/// A template as JSON without the `pod-template-hash` label and without nulls, empty
/// objects and empty lists: what Go's `omitempty` round trip leaves, and therefore
/// what upstream compares and hashes.
pub fn canonical_template(template: &PodTemplateSpec) -> serde_json::Value {
    let mut template = template.clone();
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    // A typed template always serializes; Null (equal to nothing else) is unreachable.
    let mut value = serde_json::to_value(&template).unwrap_or_default();
    prune_empty(&mut value);
    value
}

/// Removes nulls, empty objects and empty arrays, innermost first.
fn prune_empty(value: &mut serde_json::Value) {
    use serde_json::Value;
    let is_empty = |v: &Value| match v {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    };
    match value {
        Value::Object(map) => {
            map.values_mut().for_each(prune_empty);
            map.retain(|_, v| !is_empty(v));
        }
        Value::Array(items) => items.iter_mut().for_each(prune_empty),
        _ => {}
    }
}

/// The action after a reconcile that must look again after `wait` (or when anything
/// changes, whichever comes first).
pub fn recheck_after(wait: Option<Duration>) -> Action {
    match wait {
        Some(wait) => Action::requeue(wait.max(Duration::from_millis(100))),
        None => Action::await_change(),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn ready_pod(since: Timestamp) -> Pod {
        Pod {
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(since)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let now = Timestamp::from_second(1_000_000).expect("valid time");
        let pod = ready_pod(now - jiff::SignedDuration::from_secs(3));
        assert_eq!(time_until_available(&pod, 0, now), Some(Duration::ZERO));
        assert_eq!(time_until_available(&pod, 3, now), Some(Duration::ZERO));
        assert_eq!(
            time_until_available(&pod, 10, now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(time_until_available(&Pod::default(), 0, now), None);
    }

    #[test]
    fn empty_selectors_are_refused() {
        assert!(matches!(
            selector_of("rs", Some(&LabelSelector::default())),
            Err(Error::EmptySelector(_))
        ));
        let selector = selector_of(
            "rs",
            Some(&LabelSelector {
                match_labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
        )
        .expect("valid selector");
        let labels: BTreeMap<_, _> = [("app".to_string(), "web".to_string())].into();
        assert!(selects(&selector, Some(&labels)));
        assert!(!selects(&selector, None));
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let mut a = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let b = a.clone();
        if let Some(labels) = a.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.insert(POD_TEMPLATE_HASH_LABEL.into(), "abc".into());
        }
        assert!(templates_equal_ignoring_hash(&a, &b));
        a.metadata.as_mut().expect("metadata").creation_timestamp = None;
        a.spec = Some(Default::default());
        assert!(
            templates_equal_ignoring_hash(&a, &b),
            "an empty spec is no spec"
        );
        if let Some(labels) = a.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.insert("tier".into(), "front".into());
        }
        assert!(!templates_equal_ignoring_hash(&a, &b));
    }
}
