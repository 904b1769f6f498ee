//! The patch formats of the Kubernetes API.
//!
//! JSON patch (RFC 6902) and JSON merge patch (RFC 7386) come from the
//! `json-patch` crate. Strategic merge patch, the format kubectl sends for
//! `apply`, `edit`, `label` and friends on built-in types, has no Rust
//! implementation, so it lives here. Its per-field behaviour (which lists
//! merge by which key) is read from the same OpenAPI definitions the server
//! publishes, exactly as kube-apiserver reads it from its Go struct tags, so
//! the two can never disagree.

use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::openapi;
use crate::registry::ResourceInfo;
use crate::status::ApiError;

/// Which patch format a PATCH request's Content-Type selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    StrategicMerge,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchType {
    /// Parses a Content-Type header, ignoring parameters such as `charset`.
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        Some(match media_type.to_ascii_lowercase().as_str() {
            "application/json-patch+json" => PatchType::Json,
            "application/merge-patch+json" => PatchType::Merge,
            "application/strategic-merge-patch+json" => PatchType::StrategicMerge,
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => PatchType::Apply,
            _ => return None,
        })
    }
}

/// Applies `patch` (the raw request body) to `original` (the stored object).
pub fn apply_patch(
    patch_type: PatchType,
    original: &Value,
    patch: &[u8],
    resource: &ResourceInfo,
) -> Result<Value, ApiError> {
    match patch_type {
        PatchType::Json => apply_json_patch(original, patch),
        PatchType::Merge => {
            let patch = decode(patch)?;
            let mut result = original.clone();
            json_patch::merge(&mut result, &patch);
            Ok(result)
        }
        PatchType::StrategicMerge => {
            let patch = decode(patch)?;
            strategic_merge(original, &patch, resource)
        }
        PatchType::Apply => Err(ApiError::new(
            crate::status::Reason::UnsupportedMediaType,
            "server-side apply (application/apply-patch+yaml) is not supported by this server; \
             use client-side `kubectl apply` (without --server-side)",
        )),
    }
}

fn decode(patch: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(patch)
        .map_err(|err| ApiError::bad_request(format!("error decoding patch: {err}")))
}

fn apply_json_patch(original: &Value, patch: &[u8]) -> Result<Value, ApiError> {
    let operations: json_patch::Patch = serde_json::from_slice(patch)
        .map_err(|err| ApiError::bad_request(format!("error decoding patch: {err}")))?;
    let mut result = original.clone();
    json_patch::patch(&mut result, &operations).map_err(|err| {
        ApiError::new(
            crate::status::Reason::Invalid,
            format!("the server rejected our request due to an error in our request: {err}"),
        )
    })?;
    Ok(result)
}

/// Applies a strategic merge patch to `original`, with the merge keys and
/// strategies of `resource`'s schema.
pub fn strategic_merge(
    original: &Value,
    patch: &Value,
    resource: &ResourceInfo,
) -> Result<Value, ApiError> {
    let Value::Object(patch) = patch else {
        return Err(ApiError::bad_request(
            "error decoding patch: a strategic merge patch must be a JSON object",
        ));
    };
    let schema = Schema::for_kind(resource);
    let mut result = match original {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    match merge_map(&mut result, patch, schema)? {
        MapOutcome::Keep => Ok(Value::Object(result)),
        MapOutcome::Delete => Err(ApiError::bad_request(
            "a strategic merge patch cannot delete the whole object",
        )),
    }
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// What a map-level `$patch` asks the parent to do with the map.
enum MapOutcome {
    Keep,
    Delete,
}

/// Merges `patch` into `original` in place.
fn merge_map(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    schema: Schema,
) -> Result<MapOutcome, ApiError> {
    match patch.get(DIRECTIVE).map(directive_name).transpose()? {
        Some("delete") => return Ok(MapOutcome::Delete),
        Some("replace") => {
            *original = strip_directives(patch);
            return Ok(MapOutcome::Keep);
        }
        Some("merge") | None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown patch type: {other:?} in map"
            )));
        }
    }

    for (key, values) in patch
        .iter()
        .filter(|(k, _)| k.starts_with(DELETE_FROM_PRIMITIVE_LIST))
    {
        let field = &key[DELETE_FROM_PRIMITIVE_LIST.len()..];
        let Value::Array(doomed) = values else {
            return Err(ApiError::bad_request(format!("{key} must be a list")));
        };
        if let Some(Value::Array(list)) = original.get_mut(field) {
            list.retain(|v| !doomed.contains(v));
        }
    }

    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        let field = schema.field(key);
        if value.is_null() {
            original.remove(key);
            continue;
        }
        let merged = match original.remove(key) {
            Some(existing) => merge_value(existing, value, &field)?,
            None => merge_value(empty_like(value), value, &field)?,
        };
        if let Some(merged) = merged {
            original.insert(key.clone(), merged);
        }
    }

    for (key, order) in patch
        .iter()
        .filter(|(k, _)| k.starts_with(SET_ELEMENT_ORDER))
    {
        let field_name = &key[SET_ELEMENT_ORDER.len()..];
        let Value::Array(order) = order else {
            return Err(ApiError::bad_request(format!("{key} must be a list")));
        };
        if let Some(Value::Array(list)) = original.get_mut(field_name) {
            reorder(list, order, schema.field(field_name).merge_key.as_deref());
        }
    }

    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let Value::Array(retain) = retain else {
            return Err(ApiError::bad_request(format!(
                "{RETAIN_KEYS} must be a list"
            )));
        };
        original.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
    Ok(MapOutcome::Keep)
}

/// Merges one patch value into the existing one. `None` means "remove the field".
fn merge_value(existing: Value, patch: &Value, field: &Field) -> Result<Option<Value>, ApiError> {
    Ok(match (existing, patch) {
        (Value::Object(mut map), Value::Object(patch_map)) => {
            match merge_map(&mut map, patch_map, field.schema)? {
                MapOutcome::Keep => Some(Value::Object(map)),
                MapOutcome::Delete => None,
            }
        }
        (Value::Array(list), Value::Array(patch_list)) if field.merges() => {
            Some(Value::Array(merge_list(list, patch_list, field)?))
        }
        (_, patch) => Some(clean(patch, field)?),
    })
}

/// A value taken from the patch as a whole still has its directives
/// processed (against an empty original), as Kubernetes does.
fn clean(patch: &Value, field: &Field) -> Result<Value, ApiError> {
    Ok(match patch {
        Value::Object(_) | Value::Array(_) => {
            let empty = empty_like(patch);
            match patch {
                Value::Array(items) if !field.merges() => Value::Array(
                    items
                        .iter()
                        .map(|item| clean(item, &field.items()))
                        .collect::<Result<_, _>>()?,
                ),
                _ => merge_value(empty.clone(), patch, field)?.unwrap_or(empty),
            }
        }
        other => other.clone(),
    })
}

fn merge_list(
    mut list: Vec<Value>,
    patch: &[Value],
    field: &Field,
) -> Result<Vec<Value>, ApiError> {
    let element = field.items();
    let Some(merge_key) = field.merge_key.as_deref() else {
        // A set of primitives: union, keeping the original order.
        for value in patch {
            if !list.contains(value) {
                list.push(value.clone());
            }
        }
        return Ok(list);
    };

    if patch.iter().any(|p| directive_of(p) == Some("replace")) {
        return patch
            .iter()
            .filter(|p| directive_of(p) != Some("replace"))
            .map(|p| clean(p, &element))
            .collect();
    }

    for item in patch {
        let Value::Object(item_map) = item else {
            // Lists of primitives with a merge key do not exist in the
            // Kubernetes schema; treat a scalar as a set member.
            if !list.contains(item) {
                list.push(item.clone());
            }
            continue;
        };
        let Some(key_value) = item_map.get(merge_key) else {
            return Err(ApiError::bad_request(format!(
                "map: {item} does not contain declared merge key: {merge_key}"
            )));
        };
        let position = list
            .iter()
            .position(|e| e.get(merge_key) == Some(key_value));
        match (directive_of(item), position) {
            (Some("delete"), Some(index)) => {
                list.remove(index);
            }
            (Some("delete"), None) => {}
            (_, Some(index)) => {
                let existing = std::mem::take(&mut list[index]);
                match merge_value(existing, item, &element)? {
                    Some(merged) => list[index] = merged,
                    None => {
                        list.remove(index);
                    }
                }
            }
            (_, None) => list.push(clean(item, &element)?),
        }
    }
    Ok(list)
}

/// Orders `list` as `$setElementOrder` says; elements it does not mention
/// keep their relative order after the ones it does.
fn reorder(list: &mut Vec<Value>, order: &[Value], merge_key: Option<&str>) {
    let identity = |value: &Value| -> Value {
        match merge_key {
            Some(key) => value.get(key).cloned().unwrap_or(Value::Null),
            None => value.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(identity).collect();
    let mut remaining = std::mem::take(list);
    for key in &wanted {
        if let Some(index) = remaining.iter().position(|e| &identity(e) == key) {
            list.push(remaining.remove(index));
        }
    }
    list.extend(remaining);
}

fn directive_name(value: &Value) -> Result<&str, ApiError> {
    value
        .as_str()
        .ok_or_else(|| ApiError::bad_request(format!("{DIRECTIVE} must be a string")))
}

fn directive_of(value: &Value) -> Option<&str> {
    value.get(DIRECTIVE).and_then(Value::as_str)
}

fn strip_directives(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn empty_like(value: &Value) -> Value {
    match value {
        Value::Object(_) => Value::Object(Map::new()),
        Value::Array(_) => Value::Array(Vec::new()),
        other => other.clone(),
    }
}

/// The OpenAPI v2 definitions, which carry the patch directives.
static DEFINITIONS: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    serde_json::from_slice::<Value>(openapi::v2_document())
        .ok()
        .and_then(|doc| doc.get("definitions").and_then(Value::as_object).cloned())
        .unwrap_or_default()
});

/// A position in the schema: the schema node describing a value, or nothing
/// when the value is free-form (then every list is replaced and every map
/// merged, which is what Kubernetes does for unknown fields too).
#[derive(Clone, Copy)]
struct Schema(Option<&'static Value>);

/// What the schema says about one field.
struct Field {
    schema: Schema,
    merge_key: Option<String>,
    merge_strategy: bool,
}

impl Field {
    fn merges(&self) -> bool {
        self.merge_strategy
    }

    /// The schema of the list's elements.
    fn items(&self) -> Field {
        Field {
            schema: self.schema.items(),
            merge_key: None,
            merge_strategy: false,
        }
    }
}

impl Schema {
    fn for_kind(resource: &ResourceInfo) -> Schema {
        let gv = resource.group_version;
        let name = openapi::definition_name(gv.group, gv.version, resource.kind);
        Schema(name.and_then(|n| DEFINITIONS.get(&n)))
    }

    /// Follows `$ref`, `allOf` and nullable `anyOf`/`oneOf` wrappers.
    fn resolved(node: &'static Value) -> &'static Value {
        let mut node = node;
        for _ in 0..16 {
            if let Some(target) = node.get("$ref").and_then(Value::as_str) {
                let name = target.rsplit('/').next().unwrap_or(target);
                match DEFINITIONS.get(name) {
                    Some(def) => node = def,
                    None => return node,
                }
                continue;
            }
            let wrapped = ["allOf", "anyOf", "oneOf"].iter().find_map(|k| {
                node.get(*k)?
                    .as_array()?
                    .iter()
                    .find(|s| s.get("type") != Some(&Value::from("null")))
            });
            match wrapped {
                Some(inner) => node = inner,
                None => return node,
            }
        }
        node
    }

    fn field(&self, name: &str) -> Field {
        let Some(node) = self.0 else {
            return Field {
                schema: Schema(None),
                merge_key: None,
                merge_strategy: false,
            };
        };
        let node = Self::resolved(node);
        let property = node
            .get("properties")
            .and_then(|p| p.get(name))
            .or_else(|| {
                // Maps (labels, data) describe their values under additionalProperties.
                node.get("additionalProperties").filter(|v| v.is_object())
            });
        let Some(property) = property else {
            return Field {
                schema: Schema(None),
                merge_key: None,
                merge_strategy: false,
            };
        };
        let strategy = property
            .get("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
            .unwrap_or("");
        Field {
            schema: Schema(Some(property)),
            merge_key: property
                .get("x-kubernetes-patch-merge-key")
                .and_then(Value::as_str)
                .map(str::to_string),
            merge_strategy: strategy.split(',').any(|s| s == "merge"),
        }
    }

    fn items(&self) -> Schema {
        Schema(self.0.map(Self::resolved).and_then(|n| n.get("items")))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry;

    fn deployments() -> &'static ResourceInfo {
        registry::find("apps", "v1", "deployments").expect("deployments are served")
    }

    fn pods() -> &'static ResourceInfo {
        registry::find("", "v1", "pods").expect("pods are served")
    }

    fn smp(original: Value, patch: Value, resource: &ResourceInfo) -> Value {
        apply_patch(
            PatchType::StrategicMerge,
            &original,
            patch.to_string().as_bytes(),
            resource,
        )
        .expect("patch applies")
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                    {"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                    {"name": "sidecar", "image": "busybox"}
                ]}}}
        })
    }

    #[test]
    fn content_types_select_formats() {
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"),
            Some(PatchType::StrategicMerge)
        );
        assert_eq!(
            PatchType::from_content_type("application/json-patch+json"),
            Some(PatchType::Json)
        );
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json"),
            Some(PatchType::Merge)
        );
        assert_eq!(PatchType::from_content_type("text/plain"), None);
    }

    #[test]
    fn containers_merge_by_name() {
        let patched = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}}),
            deployments(),
        );
        let containers = &patched["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            containers.as_array().map(Vec::len),
            Some(2),
            "sidecar kept: {containers}"
        );
        assert_eq!(containers[0]["image"], "nginx:2");
        assert_eq!(
            containers[0]["env"][1]["value"], "2",
            "untouched fields survive"
        );
        assert_eq!(containers[1]["name"], "sidecar");
    }

    #[test]
    fn kubectl_apply_patch_changes_image_and_env() {
        // What kubectl 1.32's apply sends when the image and one env var change.
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}\n"}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                "containers": [{
                    "$setElementOrder/env": [{"name": "A"}, {"name": "B"}],
                    "env": [{"name": "B", "value": "3"}],
                    "image": "nginx:3",
                    "name": "web"
                }]
            }}}
        });
        let patched = smp(deployment(), patch, deployments());
        let web = &patched["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(web["image"], "nginx:3");
        assert_eq!(
            web["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}])
        );
        assert_eq!(
            patched["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            "{}\n"
        );
        assert!(
            patched.to_string().find("$setElementOrder").is_none(),
            "directives never stored"
        );
    }

    #[test]
    fn delete_directive_removes_list_element() {
        let patched = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}),
            deployments(),
        );
        let containers = patched["spec"]["template"]["spec"]["containers"]
            .as_array()
            .cloned();
        assert_eq!(containers.map(|c| c.len()), Some(1));
    }

    #[test]
    fn replace_directive_replaces_list() {
        let patched = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "only", "image": "x"}, {"$patch": "replace"}
            ]}}}}),
            deployments(),
        );
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "x"}])
        );
    }

    #[test]
    fn replace_directive_in_map_replaces_map() {
        let patched = smp(
            deployment(),
            json!({"metadata": {"labels": {"tier": "front", "$patch": "replace"}}}),
            deployments(),
        );
        assert_eq!(patched["metadata"]["labels"], json!({"tier": "front"}));
    }

    #[test]
    fn null_deletes_map_keys_and_labels_merge() {
        let patched = smp(
            deployment(),
            json!({"metadata": {"labels": {"app": null, "env": "prod"}}}),
            deployments(),
        );
        assert_eq!(patched["metadata"]["labels"], json!({"env": "prod"}));
    }

    #[test]
    fn scale_style_patch_sets_a_scalar() {
        let patched = smp(
            deployment(),
            json!({"spec": {"replicas": 3}}),
            deployments(),
        );
        assert_eq!(patched["spec"]["replicas"], 3);
    }

    #[test]
    fn lists_without_strategy_are_replaced() {
        let pod =
            json!({"spec": {"containers": [{"name": "c", "image": "i", "args": ["a", "b"]}]}});
        let patched = smp(
            pod,
            json!({"spec": {"containers": [{"name": "c", "args": ["z"]}]}}),
            pods(),
        );
        assert_eq!(patched["spec"]["containers"][0]["args"], json!(["z"]));
    }

    #[test]
    fn primitive_merge_lists_union_and_delete_from_primitive_list() {
        let resource = pods();
        let pod = json!({"metadata": {"finalizers": ["a", "b"]}});
        let patched = smp(
            pod.clone(),
            json!({"metadata": {"finalizers": ["c", "a"]}}),
            resource,
        );
        assert_eq!(patched["metadata"]["finalizers"], json!(["a", "b", "c"]));
        let patched = smp(
            pod,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
            resource,
        );
        assert_eq!(patched["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn retain_keys_clears_other_fields() {
        let deploy = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patched = smp(
            deploy,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
            deployments(),
        );
        assert_eq!(patched["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn set_element_order_reorders() {
        let patched = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}]}}}}),
            deployments(),
        );
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"][0]["name"],
            "sidecar"
        );
    }

    #[test]
    fn missing_merge_key_is_a_bad_request() {
        let err = apply_patch(
            PatchType::StrategicMerge,
            &deployment(),
            br#"{"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}"#,
            deployments(),
        )
        .expect_err("no merge key");
        assert_eq!(err.code(), 400);
        assert!(err.message.contains("merge key: name"), "{}", err.message);
    }

    #[test]
    fn json_patch_and_merge_patch() {
        let original =
            json!({"metadata": {"name": "x", "labels": {"a": "1"}}, "spec": {"replicas": 1}});
        let patched = apply_patch(
            PatchType::Json,
            &original,
            br#"[{"op":"replace","path":"/spec/replicas","value":4},{"op":"add","path":"/metadata/labels/b","value":"2"}]"#,
            deployments(),
        )
        .expect("json patch applies");
        assert_eq!(patched["spec"]["replicas"], 4);
        assert_eq!(patched["metadata"]["labels"]["b"], "2");

        let patched = apply_patch(
            PatchType::Merge,
            &original,
            br#"{"metadata":{"labels":{"a":null}}}"#,
            deployments(),
        )
        .expect("merge patch applies");
        assert_eq!(patched["metadata"]["labels"], json!({}));
    }

    #[test]
    fn bad_patches_are_rejected_clearly() {
        let original = json!({"spec": {}});
        let err = apply_patch(PatchType::Merge, &original, b"{not json", deployments())
            .expect_err("malformed");
        assert_eq!(err.code(), 400);
        assert!(err.message.starts_with("error decoding patch"));
        let err = apply_patch(
            PatchType::Json,
            &original,
            br#"[{"op":"test","path":"/spec","value":1}]"#,
            deployments(),
        )
        .expect_err("failed test op");
        assert_eq!(err.code(), 422);
        let err =
            apply_patch(PatchType::Apply, &original, b"{}", deployments()).expect_err("no SSA");
        assert_eq!(err.code(), 415);
    }
}
