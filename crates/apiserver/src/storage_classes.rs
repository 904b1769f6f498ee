//! The cluster's default StorageClass, as k3s ships it, and upstream's
//! `DefaultStorageClass` admission plugin that gives class-less claims its name.
//!
//! `local-path` is bootstrapped at start if absent: a claim that names no class
//! gets node-local storage provisioned by `gantry.dev/local-path` once its first
//! pod is scheduled (`WaitForFirstConsumer`), deleted with the claim (`Delete`).

use gantry_api::{ApiError, Reason, registry};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::objects::{Objects, WriteOptions};

/// The name of the StorageClass the server bootstraps.
pub const LOCAL_PATH_CLASS: &str = "local-path";
/// The provisioner of that class: Gantry's local-path provisioner controller.
pub const LOCAL_PATH_PROVISIONER: &str = "gantry.dev/local-path";
/// The annotation that marks the cluster's default class.
pub const IS_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// Its beta spelling, which upstream still honours.
const IS_DEFAULT_CLASS_BETA: &str = "storageclass.beta.kubernetes.io/is-default-class";
/// The beta annotation a claim could name its class with before `storageClassName`.
const CLAIM_CLASS_BETA: &str = "volume.beta.kubernetes.io/storage-class";

fn storage_classes() -> &'static gantry_api::registry::ResourceInfo {
    registry::find("storage.k8s.io", "v1", "storageclasses")
        .expect("storageclasses are always registered")
}

/// k3s's `local-path` class, under Gantry's provisioner name.
fn local_path_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": LOCAL_PATH_CLASS,
            "annotations": {IS_DEFAULT_CLASS: "true"},
        },
        "provisioner": LOCAL_PATH_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    })
}

/// Whether `class` carries either default-class annotation set to `"true"`.
fn is_default(class: &Value) -> bool {
    let annotations = &class["metadata"]["annotations"];
    [IS_DEFAULT_CLASS, IS_DEFAULT_CLASS_BETA]
        .iter()
        .any(|key| annotations[key] == "true")
}

fn created_at(class: &Value) -> Option<OffsetDateTime> {
    let text = class["metadata"]["creationTimestamp"].as_str()?;
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// The default class's name among `classes` (upstream's `GetDefaultClass`): of
/// several defaults the newest wins, then the first by name; none gives `None`.
pub fn default_class_name(classes: &[Value]) -> Option<String> {
    classes
        .iter()
        .filter(|class| is_default(class))
        .filter_map(|class| Some((class["metadata"]["name"].as_str()?, created_at(class))))
        .min_by(|(a_name, a_created), (b_name, b_created)| {
            b_created.cmp(a_created).then_with(|| a_name.cmp(b_name))
        })
        .map(|(name, _)| name.to_owned())
}

/// Whether a claim chose its class already: `storageClassName` set (even to `""`,
/// which asks for no class) or the beta annotation present.
fn claim_has_class(claim: &Value) -> bool {
    !claim["spec"]["storageClassName"].is_null()
        || !claim["metadata"]["annotations"][CLAIM_CLASS_BETA].is_null()
}

impl Objects {
    /// DefaultStorageClass admission: a new claim without a class gets the
    /// default class's name, so it is provisioned like k3s's claims are.
    pub(crate) async fn admit_default_storage_class(
        &self,
        claim: &mut Value,
    ) -> Result<(), ApiError> {
        if claim_has_class(claim) {
            return Ok(());
        }
        let classes = self
            .list(&storage_classes().key_prefix(), Default::default())
            .await?
            .items;
        if let Some(name) = default_class_name(&classes)
            && let Some(spec) = claim.get_mut("spec").and_then(Value::as_object_mut)
        {
            spec.insert("storageClassName".into(), json!(name));
        }
        Ok(())
    }

    /// Creates the `local-path` StorageClass if it is absent.
    pub(crate) async fn ensure_default_storage_class(&self) -> Result<(), ApiError> {
        let classes = storage_classes();
        if self.get(classes, None, LOCAL_PATH_CLASS).await.is_ok() {
            return Ok(());
        }
        match self
            .create(classes, None, local_path_class(), WriteOptions::default())
            .await
        {
            Ok(_) => {
                tracing::info!(name = LOCAL_PATH_CLASS, "created the default storage class");
                Ok(())
            }
            Err(err) if err.reason == Reason::AlreadyExists => Ok(()),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn class(name: &str, default: Option<&str>, created: &str) -> Value {
        let mut class = json!({"metadata": {"name": name, "creationTimestamp": created}});
        if let Some(value) = default {
            class["metadata"]["annotations"] = json!({IS_DEFAULT_CLASS: value});
        }
        class
    }

    #[test]
    fn the_newest_default_wins_then_the_first_by_name() {
        let classes = [
            class("old", Some("true"), "2026-01-01T00:00:00Z"),
            class("not-default", None, "2026-03-01T00:00:00Z"),
            class("off", Some("false"), "2026-03-01T00:00:00Z"),
            class("zeta", Some("true"), "2026-02-01T00:00:00Z"),
            class("alpha", Some("true"), "2026-02-01T00:00:00Z"),
        ];
        assert_eq!(default_class_name(&classes).as_deref(), Some("alpha"));
        assert_eq!(default_class_name(&classes[..2]).as_deref(), Some("old"));
        assert_eq!(default_class_name(&classes[1..3]), None);
    }

    #[test]
    fn the_beta_annotation_also_marks_a_default() {
        let mut beta = class("beta", None, "2026-01-01T00:00:00Z");
        beta["metadata"]["annotations"] = json!({IS_DEFAULT_CLASS_BETA: "true"});
        assert_eq!(default_class_name(&[beta]).as_deref(), Some("beta"));
    }

    async fn objects() -> (Objects, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("store.redb");
        let store = tokio::task::spawn_blocking(move || gantry_store::RedbStore::open(path))
            .await
            .expect("open task")
            .expect("store opens");
        let objects = Objects::new(Arc::new(store));
        let namespaces = registry::find("", "v1", "namespaces").expect("namespaces");
        let namespace =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        objects
            .create(namespaces, None, namespace, WriteOptions::default())
            .await
            .expect("namespace created");
        (objects, dir)
    }

    fn claim(name: &str, class: Option<&str>) -> Value {
        let mut claim = json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        });
        if let Some(class) = class {
            claim["spec"]["storageClassName"] = json!(class);
        }
        claim
    }

    #[tokio::test]
    async fn class_less_claims_get_the_bootstrapped_default() {
        let (objects, _dir) = objects().await;
        let claims = registry::find("", "v1", "persistentvolumeclaims").expect("pvcs");
        let create = async |claim: Value| {
            objects
                .create(claims, Some("default"), claim, WriteOptions::default())
                .await
                .expect("claim created")
        };
        let before = create(claim("before", None)).await;
        assert!(before["spec"]["storageClassName"].is_null(), "{before}");

        objects
            .ensure_default_storage_class()
            .await
            .expect("bootstrap");
        objects
            .ensure_default_storage_class()
            .await
            .expect("idempotent");
        let class = objects
            .get(storage_classes(), None, LOCAL_PATH_CLASS)
            .await
            .expect("local-path exists")
            .object;
        assert_eq!(class["provisioner"], LOCAL_PATH_PROVISIONER);
        assert_eq!(class["volumeBindingMode"], "WaitForFirstConsumer");
        assert_eq!(class["reclaimPolicy"], "Delete");

        let defaulted = create(claim("defaulted", None)).await;
        assert_eq!(defaulted["spec"]["storageClassName"], LOCAL_PATH_CLASS);
        let explicit_none = create(claim("static", Some(""))).await;
        assert_eq!(explicit_none["spec"]["storageClassName"], "");
        let named = create(claim("named", Some("fast"))).await;
        assert_eq!(named["spec"]["storageClassName"], "fast");
    }
}
