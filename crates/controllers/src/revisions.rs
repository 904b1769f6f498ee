//! ControllerRevisions: the template history of StatefulSets and DaemonSets, kept
//! as upstream's `controller/history` package and the two controllers keep it.
//!
//! Every distinct pod template an owner has had is one ControllerRevision named
//! `<owner>-<hash>` whose `data` is the strategic merge patch that puts the
//! template back, `{"spec":{"template":{...,"$patch":"replace"}}}`.
//! `kubectl rollout undo` sends exactly that patch to the owner, so a rollback is
//! just a template change that equals an older revision: the older revision is
//! reused with the next revision number instead of a new one being created, and
//! `kubectl rollout history` lists the revisions by their numbers.

use std::cmp::Ordering;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::core::Selector;
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::deployment::pod_template_hash;
use crate::workload::{self, CONTROLLER_REVISION_HASH_LABEL, Error};

/// How many unused revisions are kept when `revisionHistoryLimit` is unset.
pub const DEFAULT_HISTORY_LIMIT: i32 = 10;

/// The label upstream's StatefulSet controller puts the revision hash under
/// (`history.ControllerRevisionHashLabel`); DaemonSet revisions use
/// [`CONTROLLER_REVISION_HASH_LABEL`], like their pods.
pub const STATEFUL_SET_HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// Upstream's `ControllerRevisionName` truncates the owner's name to this many
/// bytes so that `<prefix>-<hash>` stays a valid object name.
const MAX_NAME_PREFIX: usize = 223;

/// How many hash collisions one sync resolves before giving up; each needs a
/// foreign revision squatting on the name the template hashes to.
const MAX_COLLISIONS: usize = 8;

/// The revisions of one owner after [`History::sync`].
#[derive(Debug, Clone)]
pub struct Revisions {
    /// Every revision the owner controls, lowest revision number first; includes
    /// `update`.
    pub all: Vec<ControllerRevision>,
    /// The revision of the owner's template as it is now.
    pub update: ControllerRevision,
    /// The owner's `status.collisionCount`, bumped if this sync met a collision.
    pub collision_count: Option<i32>,
}

impl Revisions {
    /// The revision called `name`, if the owner controls one.
    pub fn named(&self, name: &str) -> Option<&ControllerRevision> {
        self.all.iter().find(|revision| revision.name_any() == name)
    }
}

/// The revision history of one StatefulSet or DaemonSet.
pub struct History<'a, K> {
    api: Api<ControllerRevision>,
    owner: &'a K,
    owner_uid: &'a str,
    template: &'a PodTemplateSpec,
    selector: &'a Selector,
    hash_label: &'static str,
}

impl<'a, K> History<'a, K>
where
    K: Resource<DynamicType = ()>,
{
    /// The history of `owner` (whose uid is `owner_uid`) in `namespace`, whose
    /// revisions carry the template hash under `hash_label`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        owner: &'a K,
        owner_uid: &'a str,
        template: &'a PodTemplateSpec,
        selector: &'a Selector,
        hash_label: &'static str,
    ) -> Self {
        History {
            api: Api::namespaced(client, namespace),
            owner,
            owner_uid,
            template,
            selector,
            hash_label,
        }
    }

    /// Makes sure the owner's current template has a revision with the highest
    /// revision number (upstream's `getStatefulSetRevisions` and DaemonSet
    /// `constructHistory`): kept if it already is the newest, renumbered if an
    /// older revision recorded the same template (a rollback), created otherwise.
    pub async fn sync(&self, collision_count: Option<i32>) -> Result<Revisions, Error> {
        let mut all = self.list().await?;
        let data = snapshot(self.template);
        let next = all.last().map_or(1, |newest| newest.revision + 1);
        let equal = all
            .iter()
            .rposition(|revision| data_of(revision) == Some(&data));
        let (update, collision_count) = match equal {
            Some(index) if index + 1 == all.len() => (all[index].clone(), collision_count),
            Some(index) => {
                let renumbered = self.renumber(all.remove(index), next).await?;
                all.push(renumbered.clone());
                (renumbered, collision_count)
            }
            None => {
                let (created, count) = self.create(data, next, collision_count).await?;
                if workload::is_controlled_by(&created.metadata, self.owner_uid) {
                    all.push(created.clone());
                    all.sort_by(by_revision);
                }
                (created, count)
            }
        };
        Ok(Revisions {
            all,
            update,
            collision_count,
        })
    }

    /// Deletes the oldest revisions beyond `limit` among those `in_use` does not
    /// keep (upstream's `truncateHistory`): the current and update revisions and
    /// the revisions pods still run must always be passed as in use.
    pub async fn trim(
        &self,
        revisions: &Revisions,
        in_use: impl Fn(&ControllerRevision) -> bool,
        limit: Option<i32>,
    ) -> Result<(), Error> {
        let limit = usize::try_from(limit.unwrap_or(DEFAULT_HISTORY_LIMIT)).unwrap_or(0);
        let unused: Vec<&ControllerRevision> = revisions
            .all
            .iter()
            .filter(|revision| !in_use(revision))
            .collect();
        let excess = unused.len().saturating_sub(limit);
        for revision in unused.into_iter().take(excess) {
            let params = DeleteParams {
                preconditions: workload::uid_precondition(&revision.metadata),
                ..DeleteParams::default()
            };
            match self.api.delete(&revision.name_any(), &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// The revisions the owner controls, straight from the API server, oldest
    /// revision first.
    async fn list(&self) -> Result<Vec<ControllerRevision>, Error> {
        let params = ListParams::default().labels(&self.selector.to_string());
        let mut owned: Vec<ControllerRevision> = self
            .api
            .list(&params)
            .await?
            .items
            .into_iter()
            .filter(|revision| workload::is_controlled_by(&revision.metadata, self.owner_uid))
            .collect();
        owned.sort_by(by_revision);
        Ok(owned)
    }

    /// Gives an existing revision a new number (a replace, so a concurrent change
    /// makes it fail and the reconcile retry).
    async fn renumber(
        &self,
        mut revision: ControllerRevision,
        number: i64,
    ) -> Result<ControllerRevision, Error> {
        revision.revision = number;
        let name = revision.name_any();
        Ok(self
            .api
            .replace(&name, &PostParams::default(), &revision)
            .await?)
    }

    /// Creates the revision numbered `number` holding `data` (upstream's
    /// `CreateControllerRevision`). A revision already holding the name with the
    /// same data is the one wanted; one with other data is a hash collision,
    /// resolved by bumping the collision count and hashing again.
    async fn create(
        &self,
        data: Value,
        number: i64,
        mut collision_count: Option<i32>,
    ) -> Result<(ControllerRevision, Option<i32>), Error> {
        let mut name = String::new();
        for _ in 0..MAX_COLLISIONS {
            let revision = self.new_revision(data.clone(), number, collision_count);
            name = revision.name_any();
            match self.api.create(&PostParams::default(), &revision).await {
                Ok(created) => return Ok((created, collision_count)),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    let existing = self.api.get(&name).await?;
                    if data_of(&existing) == Some(&data) {
                        return Ok((existing, collision_count));
                    }
                    collision_count = Some(collision_count.unwrap_or(0).saturating_add(1));
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(Error::HashCollision(name))
    }

    /// A revision of the owner's template: the template's labels (so the owner's
    /// selector finds it) plus the hash, the owner's annotations (kubectl shows
    /// `kubernetes.io/change-cause` from them), and the owner as controller.
    fn new_revision(
        &self,
        data: Value,
        number: i64,
        collision_count: Option<i32>,
    ) -> ControllerRevision {
        let hash = pod_template_hash(self.template, collision_count);
        let owner = self.owner.meta();
        let mut labels = self
            .template
            .metadata
            .as_ref()
            .and_then(|meta| meta.labels.clone())
            .unwrap_or_default();
        labels.insert(self.hash_label.into(), hash.clone());
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(revision_name(
                    owner.name.as_deref().unwrap_or_default(),
                    &hash,
                )),
                namespace: owner.namespace.clone(),
                labels: Some(labels),
                annotations: owner.annotations.clone(),
                owner_references: workload::controller_reference(self.owner).map(|r| vec![r]),
                ..ObjectMeta::default()
            },
            data: Some(RawExtension(data)),
            revision: number,
        }
    }
}

/// What a revision records for `template`: the strategic merge patch restoring it,
/// with the template in its canonical form so that equal templates give equal data
/// whichever client last wrote them.
pub fn snapshot(template: &PodTemplateSpec) -> Value {
    let mut template = workload::canonical_template(template);
    if let Some(map) = template.as_object_mut() {
        map.insert("$patch".into(), json!("replace"));
    }
    json!({ "spec": { "template": template } })
}

/// The template a revision recorded, if its data holds one.
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = data_of(revision)?.pointer("/spec/template")?.clone();
    template.as_object_mut()?.remove("$patch");
    match serde_json::from_value(template) {
        Ok(template) => Some(template),
        Err(err) => {
            let name = revision.name_any();
            tracing::warn!(%name, %err, "controller revision holds no valid pod template");
            None
        }
    }
}

/// The hash a DaemonSet revision (and its pods) carry under
/// [`CONTROLLER_REVISION_HASH_LABEL`].
pub fn daemon_hash_of(revision: &ControllerRevision) -> Option<&str> {
    revision
        .metadata
        .labels
        .as_ref()?
        .get(CONTROLLER_REVISION_HASH_LABEL)
        .map(String::as_str)
}

fn data_of(revision: &ControllerRevision) -> Option<&Value> {
    revision.data.as_ref().map(|data| &data.0)
}

/// `ControllerRevisionName`: `<prefix>-<hash>`, the prefix cut to fit a name.
fn revision_name(owner: &str, hash: &str) -> String {
    let mut end = owner.len().min(MAX_NAME_PREFIX);
    while !owner.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{hash}", &owner[..end])
}

/// Upstream's `byRevision`: by number, then creation time, then name.
fn by_revision(a: &ControllerRevision, b: &ControllerRevision) -> Ordering {
    let created = |r: &ControllerRevision| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
    a.revision
        .cmp(&b.revision)
        .then_with(|| created(a).cmp(&created(b)))
        .then_with(|| a.name_any().cmp(&b.name_any()))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    fn revision(name: &str, number: i64, image: &str) -> ControllerRevision {
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            data: Some(RawExtension(snapshot(&template(image)))),
            revision: number,
        }
    }

    #[test]
    fn snapshot_is_a_replacing_patch_of_the_template() {
        let data = snapshot(&template("nginx:1"));
        assert_eq!(
            data.pointer("/spec/template/$patch"),
            Some(&json!("replace"))
        );
        assert_eq!(
            data.pointer("/spec/template/spec/containers/0/image"),
            Some(&json!("nginx:1"))
        );
        assert_ne!(data, snapshot(&template("nginx:2")));
    }

    #[test]
    fn template_round_trips_through_a_revision() {
        let recorded = template_of(&revision("web-1", 1, "nginx:1")).expect("template");
        assert!(workload::templates_equal_ignoring_hash(
            &recorded,
            &template("nginx:1")
        ));
        let empty = ControllerRevision {
            data: Some(RawExtension(json!({"spec": {}}))),
            ..revision("web-2", 2, "x")
        };
        assert!(template_of(&empty).is_none());
    }

    #[test]
    fn revisions_sort_by_number_then_name() {
        let mut revisions = [
            revision("b", 2, "x"),
            revision("c", 1, "x"),
            revision("a", 2, "x"),
        ];
        revisions.sort_by(by_revision);
        let names: Vec<String> = revisions.iter().map(ResourceExt::name_any).collect();
        assert_eq!(names, ["c", "a", "b"]);
    }

    #[test]
    fn long_owner_names_are_cut_to_fit() {
        assert_eq!(revision_name("web", "5d8f"), "web-5d8f");
        let long = "a".repeat(300);
        assert_eq!(revision_name(&long, "h").len(), MAX_NAME_PREFIX + 2);
    }
}
