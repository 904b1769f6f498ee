//! API objects over the store: the semantics every write shares, whichever
//! door it comes through (a REST request or the server's own controllers).
//!
//! Objects are kept as JSON documents; `metadata.resourceVersion` is never
//! stored but set on every read from the key's modification revision, so it
//! cannot drift from the store's truth.

use std::sync::Arc;

use bytes::Bytes;
use gantry_api::{ApiError, Cause, Reason, ResourceInfo, defaulting, registry, validation};
use gantry_store::{KeyValue, ListOptions, Revision, Store, StoreError};
use serde_json::{Map, Value, json};

use crate::allocators;

/// The namespaces every cluster starts with.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Shared access to API objects in the store.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn Store>,
    /// Serialises Service creation, so two Services never get one address.
    allocation: Arc<tokio::sync::Mutex<()>>,
}

/// An object as read, with the revision a compare-and-swap must name.
#[derive(Debug, Clone)]
pub struct Stored {
    pub object: Value,
    pub revision: Revision,
}

/// One page of a list.
pub struct Page {
    pub items: Vec<Value>,
    pub revision: Revision,
    /// The last key read, when more remain.
    pub next_key: Option<String>,
}

/// How a write is carried out.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: run every check, store nothing.
    pub dry_run: bool,
}

impl Objects {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Objects {
            store,
            allocation: Arc::default(),
        }
    }

    /// The store, for watches.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reads one object.
    pub async fn get(
        &self,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Stored, ApiError> {
        let key = resource.key(namespace, name);
        match self.store.get(&key).await.map_err(store_error)? {
            Some(kv) => decode(&kv),
            None => Err(not_found(resource, name)),
        }
    }

    /// Reads a page of objects under `prefix` (a resource's or a namespace's).
    pub async fn list(&self, prefix: &str, options: ListOptions) -> Result<Page, ApiError> {
        let page = self
            .store
            .list(prefix, options)
            .await
            .map_err(store_error)?;
        let next_key = page
            .more
            .then(|| page.items.last().map(|kv| kv.key.clone()))
            .flatten();
        let items = page
            .items
            .iter()
            .map(|kv| decode(kv).map(|s| s.object))
            .collect::<Result<_, _>>()?;
        Ok(Page {
            items,
            revision: page.revision,
            next_key,
        })
    }

    /// Creates an object after defaulting, validation and admission.
    pub async fn create(
        &self,
        resource: &'static ResourceInfo,
        namespace: Option<&str>,
        mut object: Value,
        options: WriteOptions,
    ) -> Result<Value, ApiError> {
        prepare_for_create(resource, namespace, &mut object)?;
        if resource.kind == "Pod" && resource.group_version.group.is_empty() {
            self.admit_priority(&mut object).await?;
        }
        if resource.kind == "PersistentVolumeClaim" && resource.group_version.group.is_empty() {
            self.admit_default_storage_class(&mut object).await?;
        }
        defaulting::apply_defaults(resource, &mut object);
        validation::validate(resource, &object, None)?;
        let name = object_name(&object).to_string();
        if let Some(ns) = namespace.filter(|_| resource.namespaced) {
            self.admit_namespace(resource, ns, &name).await?;
        }
        let _allocation = if resource.kind == "Service" {
            let guard = self.allocation.lock().await;
            let services = self
                .list(&resource.key_prefix(), ListOptions::default())
                .await?
                .items;
            allocators::allocate(&mut object, &allocators::InUse::from_services(&services))?;
            Some(guard)
        } else {
            None
        };
        if options.dry_run {
            return Ok(object);
        }
        let key = resource.key(namespace, &name);
        let result = self
            .store
            .create(&key, encode(&object)?)
            .await
            .map_err(|err| match err {
                StoreError::AlreadyExists(_) => {
                    ApiError::already_exists(resource.group_version.group, resource.plural, &name)
                }
                other => store_error(other),
            })?;
        set_resource_version(&mut object, result.revision);
        if resource.kind == "Namespace" {
            self.ensure_default_service_account(&name).await?;
        }
        Ok(object)
    }

    /// Every namespace has a `default` ServiceAccount, which pods use unless
    /// they name another.
    async fn ensure_default_service_account(&self, namespace: &str) -> Result<(), ApiError> {
        let accounts = registry::find("", "v1", "serviceaccounts")
            .expect("serviceaccounts are always registered");
        let account = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": namespace}});
        match Box::pin(self.create(accounts, Some(namespace), account, WriteOptions::default()))
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.reason == Reason::AlreadyExists => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Replaces an object, checked against `expected` (the revision the
    /// caller's copy came from). Finishes a deletion whose finalizers are gone.
    pub async fn replace(
        &self,
        resource: &'static ResourceInfo,
        current: &Stored,
        mut object: Value,
        options: WriteOptions,
    ) -> Result<Value, ApiError> {
        defaulting::apply_defaults(resource, &mut object);
        validation::validate(resource, &object, Some(&current.object))?;
        bump_generation(&current.object, &mut object);
        if options.dry_run {
            return Ok(object);
        }
        let name = object_name(&object).to_string();
        let namespace = object_namespace(&object).map(str::to_string);
        let key = resource.key(namespace.as_deref(), &name);
        if is_terminating(&object) && finalizers(&object).is_empty() {
            return self.remove(resource, &key, &name, current.revision).await;
        }
        let result = self
            .store
            .update(&key, encode(&object)?, Some(current.revision))
            .await
            .map_err(|err| write_error(resource, &name, err))?;
        set_resource_version(&mut object, result.revision);
        Ok(object)
    }

    /// Deletes an object: at once, or, when finalizers or a grace period
    /// hold it, by marking it with a deletion timestamp.
    ///
    /// The propagation policy becomes a finalizer the garbage collector acts
    /// on: `Foreground` keeps the object until its blocking dependents are
    /// gone, `Orphan` until its dependents no longer point at it; `Background`
    /// (the default) deletes at once and leaves the dependents to the
    /// collector.
    pub async fn delete(
        &self,
        resource: &'static ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let policy = options.propagation()?;
        let current = self.get(resource, namespace, name).await?;
        options.check_preconditions(resource, &current.object)?;
        let mut object = current.object.clone();
        let changed_finalizers = policy.and_then(|p| finalizers_for_propagation(&object, p));
        let graceful = needs_graceful_deletion(resource, &object, options);
        let held = match &changed_finalizers {
            Some(list) => !list.is_empty(),
            None => !finalizers(&object).is_empty(),
        };
        if !graceful && !held {
            if options.dry_run {
                return Ok(object);
            }
            let key = resource.key(namespace, name);
            return self.remove(resource, &key, name, current.revision).await;
        }
        if let Some(list) = changed_finalizers {
            object["metadata"]["finalizers"] = json!(list);
        } else if is_terminating(&object) {
            return Ok(object);
        }
        if !is_terminating(&object) {
            mark_terminating(resource, &mut object, options);
        }
        if options.dry_run {
            return Ok(object);
        }
        let key = resource.key(namespace, name);
        let result = self
            .store
            .update(&key, encode(&object)?, Some(current.revision))
            .await
            .map_err(|err| write_error(resource, name, err))?;
        set_resource_version(&mut object, result.revision);
        Ok(object)
    }

    /// Writes a pod's node assignment (`pods/binding`), the one change of
    /// `spec.nodeName` that pod-update validation must not see.
    pub async fn bind_pod(
        &self,
        current: &Stored,
        bound: Value,
        options: WriteOptions,
    ) -> Result<Value, ApiError> {
        let pods = registry::find("", "v1", "pods").expect("pods are always registered");
        let name = object_name(&bound).to_string();
        if options.dry_run {
            return Ok(bound);
        }
        let key = pods.key(object_namespace(&bound), &name);
        let result = self
            .store
            .update(&key, encode(&bound)?, Some(current.revision))
            .await
            .map_err(|err| write_error(pods, &name, err))?;
        let mut bound = bound;
        set_resource_version(&mut bound, result.revision);
        Ok(bound)
    }

    /// Removes a terminating namespace once its content is gone.
    pub async fn finalize_namespace(&self, current: &Stored) -> Result<(), ApiError> {
        let name = object_name(&current.object).to_string();
        let key = namespaces().key(None, &name);
        self.remove(namespaces(), &key, &name, current.revision)
            .await
            .map(|_| ())
    }

    async fn remove(
        &self,
        resource: &ResourceInfo,
        key: &str,
        name: &str,
        revision: Revision,
    ) -> Result<Value, ApiError> {
        let (previous, result) = self
            .store
            .delete(key, Some(revision))
            .await
            .map_err(|err| write_error(resource, name, err))?;
        let mut object = decode(&previous)?.object;
        set_resource_version(&mut object, result.revision);
        Ok(object)
    }

    /// Priority admission: a pod's `priorityClassName` (or the global default
    /// class) decides its `priority` and `preemptionPolicy`, which the scheduler
    /// uses for ordering and preemption.
    async fn admit_priority(&self, pod: &mut Value) -> Result<(), ApiError> {
        let classes = registry::find("scheduling.k8s.io", "v1", "priorityclasses")
            .expect("priorityclasses are always registered");
        let name = object_name(pod).to_string();
        let forbidden = |message: String| {
            ApiError::new(
                Reason::Forbidden,
                format!("pods \"{name}\" is forbidden: {message}"),
            )
        };
        let requested = pod["spec"]["priorityClassName"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        let class = match &requested {
            Some(class_name) => match self.get(classes, None, class_name).await {
                Ok(found) => Some(found.object),
                Err(err) if err.reason == Reason::NotFound => {
                    return Err(forbidden(format!(
                        "no PriorityClass with name {class_name} was found"
                    )));
                }
                Err(err) => return Err(err),
            },
            None => self
                .list(&classes.key_prefix(), ListOptions::default())
                .await?
                .items
                .into_iter()
                .find(|class| class["globalDefault"] == json!(true)),
        };
        let Some(class) = class else {
            return Ok(());
        };
        let value = class["value"].as_i64().unwrap_or(0);
        let spec = &mut pod["spec"];
        if let Some(given) = spec["priority"].as_i64().filter(|given| *given != value) {
            return Err(forbidden(format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
            )));
        }
        spec["priorityClassName"] = class["metadata"]["name"].clone();
        spec["priority"] = json!(value);
        if spec["preemptionPolicy"].is_null() {
            spec["preemptionPolicy"] = class
                .get("preemptionPolicy")
                .cloned()
                .unwrap_or_else(|| json!("PreemptLowerPriority"));
        }
        Ok(())
    }

    /// Namespace lifecycle admission: no new content in a namespace that is
    /// missing or being deleted.
    async fn admit_namespace(
        &self,
        resource: &ResourceInfo,
        namespace: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let namespaces = namespaces();
        let ns = match self.get(namespaces, None, namespace).await {
            Ok(ns) => ns,
            Err(err) if err.reason == Reason::NotFound => {
                return Err(ApiError::not_found("", "namespaces", namespace));
            }
            Err(err) => return Err(err),
        };
        if is_terminating(&ns.object) {
            let mut err = ApiError::new(
                Reason::Forbidden,
                format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                    qualified(resource)
                ),
            );
            err.details = Some(Box::new(gantry_api::status::Details {
                group: resource.group_version.group.into(),
                kind: resource.plural.into(),
                name: name.into(),
            }));
            return Err(err);
        }
        Ok(())
    }

    /// Creates what every cluster has, if missing: the system namespaces,
    /// the `kubernetes` Service holding the first service address, and the
    /// `kube-system/kube-dns` Service of the node-local cluster DNS, and the
    /// default `local-path` StorageClass.
    pub async fn bootstrap(&self, https_port: u16) -> Result<(), ApiError> {
        self.ensure_system_namespaces().await?;
        let kubernetes = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {
                "clusterIP": allocators::first_service_ip().to_string(),
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": https_port}],
            },
        });
        self.ensure_service("default", "kubernetes", kubernetes)
            .await?;
        // A cluster whose 10.43.0.10 went to another Service still serves;
        // only its pods' DNS is broken, which the log says.
        if let Err(err) = self
            .ensure_service("kube-system", "kube-dns", cluster_dns_service())
            .await
        {
            tracing::error!(%err, "cannot create the kube-system/kube-dns Service");
        }
        self.ensure_default_storage_class().await
    }

    /// Creates Service `namespace/name` from `service` unless it exists.
    async fn ensure_service(
        &self,
        namespace: &str,
        name: &str,
        service: Value,
    ) -> Result<(), ApiError> {
        let services =
            registry::find("", "v1", "services").expect("services are always registered");
        if self.get(services, Some(namespace), name).await.is_ok() {
            return Ok(());
        }
        match self
            .create(services, Some(namespace), service, WriteOptions::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.reason == Reason::AlreadyExists => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Creates the namespaces every cluster has, if missing.
    async fn ensure_system_namespaces(&self) -> Result<(), ApiError> {
        for name in SYSTEM_NAMESPACES {
            let namespace =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            match self
                .create(namespaces(), None, namespace, WriteOptions::default())
                .await
            {
                Ok(_) => tracing::info!(namespace = name, "created system namespace"),
                Err(err) if err.reason == Reason::AlreadyExists => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// The cluster DNS Service: k3s's address, CoreDNS's names and ports, no
/// selector (every node agent answers on the address itself), and the
/// annotation telling the service proxy to leave it alone.
fn cluster_dns_service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": "kube-dns", "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
            "annotations": {"gantry.dev/node-local-dns": "true"},
        },
        "spec": {
            "clusterIP": allocators::CLUSTER_DNS_IP.to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    })
}

/// Options of a delete, from the `DeleteOptions` body or the query.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub dry_run: bool,
}

/// How a delete treats the objects whose ownerReferences name the deleted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the owner now; the garbage collector deletes the dependents.
    Background,
    /// Keep the owner (finalizer `foregroundDeletion`) until the garbage
    /// collector has deleted its blocking dependents.
    Foreground,
    /// Keep the owner (finalizer `orphan`) until the garbage collector has
    /// removed the owner's references from its dependents.
    Orphan,
}

/// The finalizer of a `Foreground` deletion.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The finalizer of an `Orphan` deletion.
pub const ORPHAN_FINALIZER: &str = "orphan";

impl Propagation {
    const SUPPORTED: &[&str] = &["Foreground", "Background", "Orphan"];

    /// Reads `propagationPolicy` as the API spells it.
    pub fn parse(value: &str) -> Result<Propagation, ApiError> {
        match value {
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            "Orphan" => Ok(Propagation::Orphan),
            other => Err(invalid_delete_options(Cause::not_supported(
                "propagationPolicy",
                other,
                Self::SUPPORTED,
            ))),
        }
    }

    /// The garbage-collection finalizer this policy adds, if any.
    fn finalizer(self) -> Option<&'static str> {
        match self {
            Propagation::Background => None,
            Propagation::Foreground => Some(FOREGROUND_FINALIZER),
            Propagation::Orphan => Some(ORPHAN_FINALIZER),
        }
    }
}

/// A `DeleteOptions` validation failure, as the API server words it.
pub fn invalid_delete_options(cause: Cause) -> ApiError {
    ApiError::invalid("meta.k8s.io", "DeleteOptions", "", vec![cause])
}

/// The object's finalizers once an explicit propagation policy is applied
/// (the policy's own finalizer added, the other policies' removed), or
/// `None` when the policy changes nothing.
fn finalizers_for_propagation(object: &Value, policy: Propagation) -> Option<Vec<String>> {
    let current = finalizers(object);
    let mut wanted: Vec<String> = current
        .iter()
        .filter(|f| *f != FOREGROUND_FINALIZER && *f != ORPHAN_FINALIZER)
        .cloned()
        .collect();
    wanted.extend(policy.finalizer().map(str::to_string));
    let unchanged = wanted.len() == current.len() && wanted.iter().all(|f| current.contains(f));
    (!unchanged).then_some(wanted)
}

impl DeleteOptions {
    /// The requested propagation policy; `None` leaves the object's
    /// garbage-collection finalizers as they are.
    pub fn propagation(&self) -> Result<Option<Propagation>, ApiError> {
        self.propagation_policy
            .as_deref()
            .map(Propagation::parse)
            .transpose()
    }

    fn check_preconditions(&self, resource: &ResourceInfo, object: &Value) -> Result<(), ApiError> {
        let meta = &object["metadata"];
        let name = meta["name"].as_str().unwrap_or_default();
        if let Some(uid) = &self.precondition_uid
            && meta["uid"].as_str() != Some(uid)
        {
            let mut err = ApiError::conflict(resource.group_version.group, resource.plural, name);
            err.message = format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta["uid"].as_str().unwrap_or_default()
            );
            return Err(err);
        }
        if let Some(rv) = &self.precondition_resource_version
            && meta["resourceVersion"].as_str() != Some(rv)
        {
            let mut err = ApiError::conflict(resource.group_version.group, resource.plural, name);
            err.message = format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                meta["resourceVersion"].as_str().unwrap_or_default()
            );
            return Err(err);
        }
        Ok(())
    }
}

/// The Namespace resource.
pub fn namespaces() -> &'static ResourceInfo {
    registry::find("", "v1", "namespaces").expect("namespaces are always registered")
}

/// Whether an object is being deleted.
pub fn is_terminating(object: &Value) -> bool {
    object["metadata"]["deletionTimestamp"].is_string()
}

/// The object's finalizers.
pub fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn object_name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

pub fn object_namespace(object: &Value) -> Option<&str> {
    object["metadata"]["namespace"].as_str()
}

/// `pods`, `deployments.apps`: how Kubernetes names a resource in messages.
pub fn qualified(resource: &ResourceInfo) -> String {
    if resource.group_version.group.is_empty() {
        resource.plural.to_string()
    } else {
        format!("{}.{}", resource.plural, resource.group_version.group)
    }
}

pub fn not_found(resource: &ResourceInfo, name: &str) -> ApiError {
    ApiError::not_found(resource.group_version.group, resource.plural, name)
}

/// The current time as Kubernetes writes timestamps.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Server-set metadata of a new object.
fn prepare_for_create(
    resource: &ResourceInfo,
    namespace: Option<&str>,
    object: &mut Value,
) -> Result<(), ApiError> {
    let Value::Object(map) = object else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    check_type(resource, map)?;
    map.insert(
        "apiVersion".into(),
        resource.group_version.api_version().into(),
    );
    map.insert("kind".into(), resource.kind.into());
    if resource.has_subresource(gantry_api::Subresource::Status) && resource.kind != "Namespace" {
        map.remove("status");
    }
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(meta) = meta else {
        return Err(ApiError::bad_request("metadata must be an object"));
    };
    if resource.namespaced {
        let url_namespace = namespace.unwrap_or("default");
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != url_namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), url_namespace.into());
            }
        }
    } else {
        meta.remove("namespace");
    }
    let has_name = meta
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !has_name && let Some(prefix) = meta.get("generateName").and_then(Value::as_str) {
        let name = format!("{prefix}{}", random_suffix());
        meta.insert("name".into(), name.into());
    }
    for server_owned in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    ] {
        meta.remove(server_owned);
    }
    meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
    meta.insert("creationTimestamp".into(), now_rfc3339().into());
    if tracks_generation(resource) {
        meta.insert("generation".into(), 1.into());
    } else {
        meta.remove("generation");
    }
    Ok(())
}

/// Objects whose desired state is a spec count its changes in `generation`.
fn tracks_generation(resource: &ResourceInfo) -> bool {
    matches!(resource.group_version.group, "apps" | "batch")
        || matches!(
            resource.kind,
            "Pod" | "Service" | "PersistentVolumeClaim" | "PersistentVolume"
        )
}

fn check_type(resource: &ResourceInfo, map: &Map<String, Value>) -> Result<(), ApiError> {
    let kind = map.get("kind").and_then(Value::as_str);
    let api_version = map.get("apiVersion").and_then(Value::as_str);
    let expected_version = resource.group_version.api_version();
    if kind.is_some_and(|k| k != resource.kind)
        || api_version.is_some_and(|v| v != expected_version)
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({expected_version}) or the kind ({}) is not {}",
            api_version.unwrap_or_default(),
            kind.unwrap_or_default(),
            resource.kind
        )));
    }
    Ok(())
}

/// `generation` counts changes to anything but metadata and status.
fn bump_generation(old: &Value, new: &mut Value) {
    let Some(generation) = old["metadata"]["generation"].as_i64() else {
        return;
    };
    let desired = |v: &Value| -> Map<String, Value> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| {
                        !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let next = if desired(old) != desired(new) {
        generation + 1
    } else {
        generation
    };
    new["metadata"]["generation"] = next.into();
}

fn needs_graceful_deletion(
    resource: &ResourceInfo,
    object: &Value,
    options: &DeleteOptions,
) -> bool {
    match resource.kind {
        "Namespace" => true,
        "Pod" => {
            let bound = object["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
            let grace = options
                .grace_period_seconds
                .or_else(|| object["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30);
            bound && grace > 0
        }
        _ => false,
    }
}

fn mark_terminating(resource: &ResourceInfo, object: &mut Value, options: &DeleteOptions) {
    let grace = match resource.kind {
        "Pod" => options
            .grace_period_seconds
            .or_else(|| object["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30),
        _ => 0,
    };
    object["metadata"]["deletionTimestamp"] = now_rfc3339().into();
    object["metadata"]["deletionGracePeriodSeconds"] = grace.into();
    if resource.kind == "Namespace" {
        object["status"]["phase"] = "Terminating".into();
    }
}

fn random_suffix() -> String {
    // Kubernetes' alphabet: no vowels (no words) and no look-alike characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn decode(kv: &KeyValue) -> Result<Stored, ApiError> {
    let mut object: Value = serde_json::from_slice(&kv.value)
        .map_err(|err| ApiError::internal(format!("stored object {} is corrupt: {err}", kv.key)))?;
    set_resource_version(&mut object, kv.mod_revision);
    Ok(Stored {
        object,
        revision: kv.mod_revision,
    })
}

fn encode(object: &Value) -> Result<Bytes, ApiError> {
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&object)
        .map(Bytes::from)
        .map_err(|err| ApiError::internal(err.to_string()))
}

pub fn set_resource_version(object: &mut Value, revision: Revision) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), revision.to_string().into());
    }
}

fn write_error(resource: &ResourceInfo, name: &str, err: StoreError) -> ApiError {
    match err {
        StoreError::Conflict { .. } => {
            ApiError::conflict(resource.group_version.group, resource.plural, name)
        }
        StoreError::NotFound(_) => not_found(resource, name),
        other => store_error(other),
    }
}

/// Maps store failures that are not about one object.
pub fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiError::expired(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        StoreError::FutureRevision { requested, current } => {
            let mut err = ApiError::new(
                Reason::Timeout,
                format!(
                    "Too large resource version: {requested}, current resource version: {current}"
                ),
            );
            err.retry_after_seconds = Some(1);
            err
        }
        other => ApiError::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Objects over a fresh store with the `default` namespace.
    async fn objects() -> (Objects, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("store.redb");
        let store = tokio::task::spawn_blocking(move || gantry_store::RedbStore::open(path))
            .await
            .expect("open task")
            .expect("store opens");
        let objects = Objects::new(Arc::new(store));
        let namespace =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        objects
            .create(namespaces(), None, namespace, WriteOptions::default())
            .await
            .expect("namespace created");
        (objects, dir)
    }

    fn configmaps() -> &'static ResourceInfo {
        registry::find("", "v1", "configmaps").expect("configmaps are registered")
    }

    async fn create_configmap(objects: &Objects, name: &str) {
        let map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
        objects
            .create(configmaps(), Some("default"), map, WriteOptions::default())
            .await
            .expect("configmap created");
    }

    fn with_policy(policy: &str) -> DeleteOptions {
        DeleteOptions {
            propagation_policy: Some(policy.into()),
            ..DeleteOptions::default()
        }
    }

    #[tokio::test]
    async fn background_deletion_removes_the_object_at_once() {
        let (objects, _dir) = objects().await;
        create_configmap(&objects, "owner").await;
        objects
            .delete(
                configmaps(),
                Some("default"),
                "owner",
                &with_policy("Background"),
            )
            .await
            .expect("deleted");
        let gone = objects.get(configmaps(), Some("default"), "owner").await;
        assert_eq!(
            gone.map(|_| ()).map_err(|e| e.reason),
            Err(Reason::NotFound)
        );
    }

    #[tokio::test]
    async fn foreground_deletion_waits_for_the_finalizer() {
        let (objects, _dir) = objects().await;
        create_configmap(&objects, "owner").await;
        let deleted = objects
            .delete(
                configmaps(),
                Some("default"),
                "owner",
                &with_policy("Foreground"),
            )
            .await
            .expect("marked");
        assert!(is_terminating(&deleted));
        assert_eq!(finalizers(&deleted), vec![FOREGROUND_FINALIZER]);

        let current = objects
            .get(configmaps(), Some("default"), "owner")
            .await
            .expect("still there");
        let mut finalized = current.object.clone();
        finalized["metadata"]["finalizers"] = json!([]);
        objects
            .replace(configmaps(), &current, finalized, WriteOptions::default())
            .await
            .expect("finalizer removed");
        let gone = objects.get(configmaps(), Some("default"), "owner").await;
        assert_eq!(
            gone.map(|_| ()).map_err(|e| e.reason),
            Err(Reason::NotFound)
        );
    }

    #[tokio::test]
    async fn orphan_deletion_adds_the_orphan_finalizer_and_keeps_others() {
        let (objects, _dir) = objects().await;
        let map = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "owner", "finalizers": ["example.com/keep"]}});
        objects
            .create(configmaps(), Some("default"), map, WriteOptions::default())
            .await
            .expect("created");
        let deleted = objects
            .delete(
                configmaps(),
                Some("default"),
                "owner",
                &with_policy("Orphan"),
            )
            .await
            .expect("marked");
        assert_eq!(
            finalizers(&deleted),
            vec!["example.com/keep", ORPHAN_FINALIZER]
        );
        let stored = objects
            .get(configmaps(), Some("default"), "owner")
            .await
            .expect("still there");
        assert_eq!(finalizers(&stored.object), finalizers(&deleted));
    }

    #[tokio::test]
    async fn a_later_background_delete_overrides_a_pending_foreground_one() {
        let (objects, _dir) = objects().await;
        create_configmap(&objects, "owner").await;
        objects
            .delete(
                configmaps(),
                Some("default"),
                "owner",
                &with_policy("Foreground"),
            )
            .await
            .expect("marked");
        let again = objects
            .delete(
                configmaps(),
                Some("default"),
                "owner",
                &DeleteOptions::default(),
            )
            .await
            .expect("second delete without a policy");
        assert_eq!(finalizers(&again), vec![FOREGROUND_FINALIZER]);
        objects
            .delete(
                configmaps(),
                Some("default"),
                "owner",
                &with_policy("Background"),
            )
            .await
            .expect("background delete");
        let gone = objects.get(configmaps(), Some("default"), "owner").await;
        assert_eq!(
            gone.map(|_| ()).map_err(|e| e.reason),
            Err(Reason::NotFound)
        );
    }

    #[tokio::test]
    async fn an_unknown_policy_is_invalid() {
        let (objects, _dir) = objects().await;
        create_configmap(&objects, "owner").await;
        let err = objects
            .delete(
                configmaps(),
                Some("default"),
                "owner",
                &with_policy("Sideways"),
            )
            .await
            .expect_err("refused");
        assert_eq!(err.reason, Reason::Invalid);
        assert!(
            err.message.contains("Unsupported value: \"Sideways\""),
            "{}",
            err.message
        );
        objects
            .get(configmaps(), Some("default"), "owner")
            .await
            .expect("untouched");
    }

    fn pod(name: &str, spec: Value) -> Value {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c", "image": "busybox"}]);
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
    }

    #[tokio::test]
    async fn priority_comes_from_the_named_or_the_global_default_class() {
        let (objects, _dir) = objects().await;
        let pods = registry::find("", "v1", "pods").expect("pods");
        let classes = registry::find("scheduling.k8s.io", "v1", "priorityclasses").expect("pc");
        let create_pod = async |name: &str, spec: Value| {
            objects
                .create(
                    pods,
                    Some("default"),
                    pod(name, spec),
                    WriteOptions::default(),
                )
                .await
        };
        let plain = create_pod("plain", json!({})).await.expect("created");
        assert_eq!(plain["spec"]["priority"], 0);
        for (name, value, default) in [("high", 1000, false), ("everyday", 10, true)] {
            let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value, "globalDefault": default,
                "preemptionPolicy": "Never"});
            objects
                .create(classes, None, class, WriteOptions::default())
                .await
                .expect("class created");
        }
        let high = create_pod("high", json!({"priorityClassName": "high"}))
            .await
            .expect("created");
        assert_eq!(high["spec"]["priority"], 1000);
        assert_eq!(high["spec"]["preemptionPolicy"], "Never");
        let defaulted = create_pod("defaulted", json!({})).await.expect("created");
        assert_eq!(defaulted["spec"]["priority"], 10);
        assert_eq!(defaulted["spec"]["priorityClassName"], "everyday");

        let missing = create_pod("missing", json!({"priorityClassName": "nope"}))
            .await
            .expect_err("unknown class");
        assert_eq!(missing.reason, Reason::Forbidden);
        assert!(
            missing
                .message
                .contains("no PriorityClass with name nope was found")
        );
        let mismatch = create_pod(
            "mismatch",
            json!({"priorityClassName": "high", "priority": 5}),
        )
        .await
        .expect_err("priority given");
        assert!(
            mismatch.message.contains("computed 1000"),
            "{}",
            mismatch.message
        );
    }
}
