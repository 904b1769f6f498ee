//! Schema definitions generated from the `k8s-openapi` types.
//!
//! `k8s-openapi` names every schema after its Kubernetes definition
//! (`io.k8s.api.apps.v1.Deployment`), so the generated definition map already
//! has Kubernetes' keys. On top of it this module adds what the types alone
//! cannot say: which definitions are top-level kinds
//! (`x-kubernetes-group-version-kind`), the `FooList` kinds (k8s-openapi
//! models lists as one generic type without a schema), and the strategic
//! merge patch directives kubectl reads when it builds `apply` patches.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::{
    apps, authentication, authorization, autoscaling, batch, coordination, core, discovery, policy,
    rbac, scheduling, storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::registry::{self, GroupVersion};

/// Prefix of the apimachinery definitions shared by every group.
const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

/// A Rust type whose schema becomes a definition.
struct Root {
    /// The definition name (`T::schema_name()`).
    name: fn() -> std::borrow::Cow<'static, str>,
    /// Registers the schema (and everything it references) in a generator.
    add: fn(&mut SchemaGenerator) -> Schema,
}

fn root<T: JsonSchema>() -> Root {
    Root {
        name: T::schema_name,
        add: SchemaGenerator::subschema_for::<T>,
    }
}

/// A kind with its group, version and the Rust type describing it.
struct Kind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    root: Root,
}

fn kind<T: JsonSchema>(group: &'static str, version: &'static str, kind: &'static str) -> Kind {
    Kind {
        group,
        version,
        kind,
        root: root::<T>(),
    }
}

/// Every kind with a schema: the kinds of [`registry::RESOURCES`] plus the
/// kinds their subresources and meta operations exchange.
fn kinds() -> Vec<Kind> {
    vec![
        kind::<core::v1::Namespace>("", "v1", "Namespace"),
        kind::<core::v1::Pod>("", "v1", "Pod"),
        kind::<core::v1::Binding>("", "v1", "Binding"),
        kind::<core::v1::Service>("", "v1", "Service"),
        kind::<core::v1::Endpoints>("", "v1", "Endpoints"),
        kind::<core::v1::ConfigMap>("", "v1", "ConfigMap"),
        kind::<core::v1::Secret>("", "v1", "Secret"),
        kind::<core::v1::ServiceAccount>("", "v1", "ServiceAccount"),
        kind::<core::v1::Node>("", "v1", "Node"),
        kind::<core::v1::Event>("", "v1", "Event"),
        kind::<core::v1::PersistentVolume>("", "v1", "PersistentVolume"),
        kind::<core::v1::PersistentVolumeClaim>("", "v1", "PersistentVolumeClaim"),
        kind::<apps::v1::Deployment>("apps", "v1", "Deployment"),
        kind::<apps::v1::ReplicaSet>("apps", "v1", "ReplicaSet"),
        kind::<apps::v1::StatefulSet>("apps", "v1", "StatefulSet"),
        kind::<apps::v1::DaemonSet>("apps", "v1", "DaemonSet"),
        kind::<apps::v1::ControllerRevision>("apps", "v1", "ControllerRevision"),
        kind::<coordination::v1::Lease>("coordination.k8s.io", "v1", "Lease"),
        kind::<discovery::v1::EndpointSlice>("discovery.k8s.io", "v1", "EndpointSlice"),
        kind::<batch::v1::Job>("batch", "v1", "Job"),
        kind::<batch::v1::CronJob>("batch", "v1", "CronJob"),
        kind::<storage::v1::StorageClass>("storage.k8s.io", "v1", "StorageClass"),
        kind::<scheduling::v1::PriorityClass>("scheduling.k8s.io", "v1", "PriorityClass"),
        kind::<rbac::v1::ClusterRoleBinding>(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
        ),
        kind::<rbac::v1::ClusterRole>("rbac.authorization.k8s.io", "v1", "ClusterRole"),
        kind::<rbac::v1::RoleBinding>("rbac.authorization.k8s.io", "v1", "RoleBinding"),
        kind::<rbac::v1::Role>("rbac.authorization.k8s.io", "v1", "Role"),
        kind::<authentication::v1::TokenRequest>("authentication.k8s.io", "v1", "TokenRequest"),
        kind::<authentication::v1::TokenReview>("authentication.k8s.io", "v1", "TokenReview"),
        kind::<authentication::v1::SelfSubjectReview>(
            "authentication.k8s.io",
            "v1",
            "SelfSubjectReview",
        ),
        kind::<authorization::v1::LocalSubjectAccessReview>(
            "authorization.k8s.io",
            "v1",
            "LocalSubjectAccessReview",
        ),
        kind::<authorization::v1::SelfSubjectAccessReview>(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectAccessReview",
        ),
        kind::<authorization::v1::SubjectAccessReview>(
            "authorization.k8s.io",
            "v1",
            "SubjectAccessReview",
        ),
        kind::<autoscaling::v1::Scale>("autoscaling", "v1", "Scale"),
        kind::<policy::v1::Eviction>("policy", "v1", "Eviction"),
        kind::<meta::Status>("", "v1", "Status"),
    ]
}

/// Meta types every group version document carries, beyond what its kinds
/// reference: request bodies and responses of the generic operations.
fn meta_roots() -> Vec<Root> {
    vec![
        root::<meta::ObjectMeta>(),
        root::<meta::ListMeta>(),
        root::<meta::Status>(),
        root::<meta::DeleteOptions>(),
        root::<meta::Patch>(),
        root::<meta::WatchEvent<k8s_openapi::apimachinery::pkg::runtime::RawExtension>>(),
        root::<meta::APIResourceList>(),
    ]
}

/// One field whose list (or struct) Kubernetes merges with a strategy
/// instead of replacing it, as declared by the `patchStrategy` and
/// `patchMergeKey` struct tags of the Kubernetes Go types.
struct PatchDirective {
    definition: &'static str,
    field: &'static str,
    merge_key: Option<&'static str>,
    strategy: &'static str,
}

const fn directive(
    definition: &'static str,
    field: &'static str,
    merge_key: Option<&'static str>,
    strategy: &'static str,
) -> PatchDirective {
    PatchDirective {
        definition,
        field,
        merge_key,
        strategy,
    }
}

const POD_SPEC: &str = "io.k8s.api.core.v1.PodSpec";
const CONTAINER: &str = "io.k8s.api.core.v1.Container";
const EPHEMERAL: &str = "io.k8s.api.core.v1.EphemeralContainer";

/// The patch directives of the fields of the served types.
static PATCH_DIRECTIVES: &[PatchDirective] = &[
    directive(POD_SPEC, "containers", Some("name"), "merge"),
    directive(POD_SPEC, "initContainers", Some("name"), "merge"),
    directive(POD_SPEC, "ephemeralContainers", Some("name"), "merge"),
    directive(POD_SPEC, "volumes", Some("name"), "merge,retainKeys"),
    directive(POD_SPEC, "imagePullSecrets", Some("name"), "merge"),
    directive(POD_SPEC, "hostAliases", Some("ip"), "merge"),
    directive(
        POD_SPEC,
        "topologySpreadConstraints",
        Some("topologyKey"),
        "merge",
    ),
    directive(POD_SPEC, "resourceClaims", Some("name"), "merge,retainKeys"),
    directive(POD_SPEC, "schedulingGates", Some("name"), "merge"),
    directive(CONTAINER, "env", Some("name"), "merge"),
    directive(CONTAINER, "ports", Some("containerPort"), "merge"),
    directive(CONTAINER, "volumeMounts", Some("mountPath"), "merge"),
    directive(CONTAINER, "volumeDevices", Some("devicePath"), "merge"),
    directive(EPHEMERAL, "env", Some("name"), "merge"),
    directive(EPHEMERAL, "ports", Some("containerPort"), "merge"),
    directive(EPHEMERAL, "volumeMounts", Some("mountPath"), "merge"),
    directive(EPHEMERAL, "volumeDevices", Some("devicePath"), "merge"),
    directive(
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        Some("type"),
        "merge",
    ),
    directive(
        "io.k8s.api.core.v1.PodStatus",
        "podIPs",
        Some("ip"),
        "merge",
    ),
    directive(
        "io.k8s.api.core.v1.PodStatus",
        "hostIPs",
        Some("ip"),
        "merge",
    ),
    directive(
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        Some("name"),
        "merge,retainKeys",
    ),
    directive(
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        Some("port"),
        "merge",
    ),
    directive(
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        Some("type"),
        "merge",
    ),
    directive(
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        Some("name"),
        "merge",
    ),
    directive("io.k8s.api.core.v1.NodeSpec", "podCIDRs", None, "merge"),
    directive(
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        Some("type"),
        "merge",
    ),
    directive(
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        Some("type"),
        "merge",
    ),
    directive(
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        Some("type"),
        "merge",
    ),
    directive(
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        Some("type"),
        "merge",
    ),
    directive(
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        None,
        "retainKeys",
    ),
    directive(
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        Some("type"),
        "merge",
    ),
    directive(
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        Some("type"),
        "merge",
    ),
    directive(
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        Some("type"),
        "merge",
    ),
    directive(
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        Some("type"),
        "merge",
    ),
    directive(
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        Some("type"),
        "merge",
    ),
    directive(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        None,
        "merge",
    ),
    directive(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        Some("uid"),
        "merge",
    ),
];

/// The definition name of a kind's list (`io.k8s.api.core.v1.PodList`).
pub(crate) fn list_definition_name(item_definition: &str) -> String {
    format!("{item_definition}List")
}

/// The definition name of the schema of `kind` in `group/version`, if it has one.
pub(crate) fn definition_name(group: &str, version: &str, kind: &str) -> Option<String> {
    KIND_NAMES
        .get(&(group.to_string(), version.to_string(), kind.to_string()))
        .cloned()
}

static KIND_NAMES: std::sync::LazyLock<BTreeMap<(String, String, String), String>> =
    std::sync::LazyLock::new(|| {
        kinds()
            .into_iter()
            .map(|k| {
                (
                    (k.group.into(), k.version.into(), k.kind.into()),
                    (k.root.name)().into_owned(),
                )
            })
            .collect()
    });

/// The definition name of the `Scale` subresource's kind.
pub(crate) const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
/// The definition name of the `pods/eviction` body.
pub(crate) const EVICTION: &str = "io.k8s.api.policy.v1.Eviction";

/// Definition names of the meta types the generic operations exchange.
pub(crate) fn meta_definition(short: &str) -> String {
    format!("{META}.{short}")
}

/// Builds every definition, with `$ref`s pointing at `ref_prefix`
/// (`#/definitions/` or `#/components/schemas/`).
pub(crate) fn all_definitions(ref_prefix: &str) -> Map<String, Value> {
    let settings = SchemaSettings::draft07().with(|s| {
        s.definitions_path = ref_prefix
            .trim_start_matches('#')
            .trim_end_matches('/')
            .to_string()
            .into();
        s.meta_schema = None;
        s.transforms = Vec::new();
    });
    let mut generator = settings.into_generator();
    let kinds = kinds();
    for k in &kinds {
        (k.root.add)(&mut generator);
    }
    for m in meta_roots() {
        (m.add)(&mut generator);
    }
    let mut definitions = generator.take_definitions(false);
    add_list_kinds(&mut definitions, &kinds, ref_prefix);
    add_group_version_kinds(&mut definitions, &kinds);
    add_patch_directives(&mut definitions);
    definitions
}

/// Adds a `FooList` definition for every stored resource's kind.
fn add_list_kinds(definitions: &mut Map<String, Value>, kinds: &[Kind], ref_prefix: &str) {
    for resource in registry::RESOURCES.iter().filter(|r| r.stored) {
        let gv = resource.group_version;
        let Some(item) = kinds
            .iter()
            .find(|k| k.group == gv.group && k.version == gv.version && k.kind == resource.kind)
        else {
            continue;
        };
        let item_name = (item.root.name)().into_owned();
        let type_meta = |field: &str| {
            definitions
                .get(&item_name)
                .and_then(|d| d.pointer(&format!("/properties/{field}")))
                .cloned()
                .unwrap_or_else(|| json!({"type": "string"}))
        };
        let list = json!({
            "description": format!("{} is a list of {}.", resource.list_kind(), resource.kind),
            "type": "object",
            "properties": {
                "apiVersion": type_meta("apiVersion"),
                "kind": type_meta("kind"),
                "items": {
                    "description": format!("List of {}.", resource.plural),
                    "type": "array",
                    "items": {"$ref": format!("{ref_prefix}{item_name}")},
                },
                "metadata": {
                    "$ref": format!("{ref_prefix}{META}.ListMeta"),
                    "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                },
            },
            "required": ["items"],
        });
        definitions.insert(list_definition_name(&item_name), list);
    }
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// Tags each kind (and list kind) with `x-kubernetes-group-version-kind`,
/// which kubectl uses to find a resource's schema. `DeleteOptions` and
/// `WatchEvent` are exchanged in every group version, so they carry one
/// entry per served group version, as in Kubernetes.
fn add_group_version_kinds(definitions: &mut Map<String, Value>, kinds: &[Kind]) {
    let mut tags: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for k in kinds {
        let name = (k.root.name)().into_owned();
        tags.entry(name.clone())
            .or_default()
            .push(gvk(k.group, k.version, k.kind));
        if definitions.contains_key(&list_definition_name(&name)) {
            tags.entry(list_definition_name(&name))
                .or_default()
                .push(gvk(k.group, k.version, &format!("{}List", k.kind)));
        }
    }
    let mut every_group_version: Vec<GroupVersion> = registry::group_versions();
    for extra in [
        GroupVersion {
            group: "autoscaling",
            version: "v1",
        },
        GroupVersion {
            group: "policy",
            version: "v1",
        },
    ] {
        if !every_group_version.contains(&extra) {
            every_group_version.push(extra);
        }
    }
    for shared in ["DeleteOptions", "WatchEvent"] {
        let entry = tags.entry(meta_definition(shared)).or_default();
        for gv in &every_group_version {
            entry.push(gvk(gv.group, gv.version, shared));
        }
    }
    for (name, gvks) in tags {
        if let Some(Value::Object(definition)) = definitions.get_mut(&name) {
            definition.insert("x-kubernetes-group-version-kind".into(), Value::Array(gvks));
        }
    }
}

fn add_patch_directives(definitions: &mut Map<String, Value>) {
    for d in PATCH_DIRECTIVES {
        let pointer = format!("/{}/properties/{}", d.definition, d.field);
        let Some(Value::Object(field)) = definitions_pointer_mut(definitions, &pointer) else {
            continue;
        };
        field.insert("x-kubernetes-patch-strategy".into(), d.strategy.into());
        if let Some(key) = d.merge_key {
            field.insert("x-kubernetes-patch-merge-key".into(), key.into());
        }
    }
}

fn definitions_pointer_mut<'a>(
    definitions: &'a mut Map<String, Value>,
    pointer: &str,
) -> Option<&'a mut Value> {
    let mut parts = pointer.trim_start_matches('/').splitn(2, '/');
    let name = parts.next()?;
    let rest = parts.next().map(|r| format!("/{r}")).unwrap_or_default();
    definitions.get_mut(name)?.pointer_mut(&rest)
}

/// Every `$ref` target (a definition name) found in `value`.
pub(crate) fn referenced_names(value: &Value, ref_prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "$ref" {
                    if let Some(name) = v.as_str().and_then(|r| r.strip_prefix(ref_prefix)) {
                        out.insert(name.to_string());
                    }
                } else {
                    referenced_names(v, ref_prefix, out);
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|v| referenced_names(v, ref_prefix, out)),
        _ => {}
    }
}

/// The definitions reachable from `roots`, following `$ref`s.
pub(crate) fn closure(
    definitions: &Map<String, Value>,
    roots: impl IntoIterator<Item = String>,
    ref_prefix: &str,
) -> Map<String, Value> {
    let mut pending: Vec<String> = roots.into_iter().collect();
    let mut out = Map::new();
    while let Some(name) = pending.pop() {
        if out.contains_key(&name) {
            continue;
        }
        let Some(definition) = definitions.get(&name) else {
            continue;
        };
        let mut refs = BTreeSet::new();
        referenced_names(definition, ref_prefix, &mut refs);
        pending.extend(refs.into_iter().filter(|r| !out.contains_key(r)));
        out.insert(name, definition.clone());
    }
    out
}

/// Rewrites `{"$ref": X, "description": ...}` (siblings of `$ref` are
/// ignored by OpenAPI 3.0) into `{"allOf": [{"$ref": X}], "description": ...}`,
/// the form Kubernetes serves and kubectl explain reads.
pub(crate) fn wrap_ref_siblings(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.len() > 1
                && let Some(reference) = map.remove("$ref")
            {
                map.insert("allOf".into(), json!([{"$ref": reference}]));
            }
            map.values_mut().for_each(wrap_ref_siblings);
        }
        Value::Array(items) => items.iter_mut().for_each(wrap_ref_siblings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = "#/definitions/";

    #[test]
    fn every_resource_kind_has_a_schema_and_list() {
        let definitions = all_definitions(V2);
        for r in registry::RESOURCES {
            let gv = r.group_version;
            let name = definition_name(gv.group, gv.version, r.kind)
                .unwrap_or_else(|| panic!("no schema for {}", r.kind));
            assert!(definitions.contains_key(&name), "{name} missing");
            if r.stored {
                assert!(
                    definitions.contains_key(&list_definition_name(&name)),
                    "{name}List missing"
                );
            }
        }
    }

    #[test]
    fn every_patch_directive_names_an_existing_field() {
        let definitions = all_definitions(V2);
        for d in PATCH_DIRECTIVES {
            let field = definitions
                .get(d.definition)
                .and_then(|def| def.pointer(&format!("/properties/{}", d.field)))
                .unwrap_or_else(|| panic!("{}.{} does not exist", d.definition, d.field));
            assert_eq!(field["x-kubernetes-patch-strategy"], d.strategy);
            if let Some(key) = d.merge_key {
                assert_eq!(
                    field["type"], "array",
                    "{}.{} keyed but not a list",
                    d.definition, d.field
                );
                let item_ref = field["items"]["$ref"]
                    .as_str()
                    .expect("keyed lists hold objects");
                let item = &definitions[item_ref.trim_start_matches(V2)];
                assert!(
                    item["properties"].get(key).is_some(),
                    "{item_ref} has no merge key {key}"
                );
            }
        }
    }

    #[test]
    fn wrap_ref_siblings_keeps_plain_refs() {
        let mut v = json!({"a": {"$ref": "#/x"}, "b": {"$ref": "#/y", "description": "d"}});
        wrap_ref_siblings(&mut v);
        assert_eq!(v["a"], json!({"$ref": "#/x"}));
        assert_eq!(
            v["b"],
            json!({"allOf": [{"$ref": "#/y"}], "description": "d"})
        );
    }
}
