//! The OpenAPI documents clients download to learn the shape of every
//! resource: Swagger 2.0 at `/openapi/v2` and OpenAPI 3.0, one document per
//! group version, under `/openapi/v3`.
//!
//! kubectl uses them for `explain`, for building strategic merge patches in
//! `apply`, and to decide whether the server validates fields itself. The
//! schemas come from `k8s-openapi` (see [`schemas`]); the operations from
//! [`registry::RESOURCES`](crate::registry::RESOURCES) (see [`paths`]).
//! Documents are built once, on first use, and then served from memory.

mod paths;
mod protobuf;
mod schemas;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};

use crate::discovery;
use crate::registry::{self, GroupVersion};
use paths::Flavor;
pub(crate) use schemas::definition_name;

/// Returns the Swagger 2.0 document served at `GET /openapi/v2`, as JSON.
pub fn v2_document() -> &'static [u8] {
    static DOCUMENT: LazyLock<Vec<u8>> = LazyLock::new(|| to_bytes(&build_v2()));
    &DOCUMENT
}

/// The media type kubectl sends in `Accept` when it fetches `/openapi/v2`.
pub const V2_PROTOBUF_MEDIA_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The `Content-Type` of the protobuf response. Kubernetes answers with this
/// generic type: Go's MIME parser, which kubectl runs on the response,
/// rejects the `@` in [`V2_PROTOBUF_MEDIA_TYPE`].
pub const V2_PROTOBUF_CONTENT_TYPE: &str = "application/octet-stream";

/// Returns the document of [`v2_document`] encoded as gnostic's
/// `openapi.v2.Document` protobuf message, served at `GET /openapi/v2` when
/// the client accepts [`V2_PROTOBUF_MEDIA_TYPE`] (labelled
/// [`V2_PROTOBUF_CONTENT_TYPE`]). kubectl only reads this
/// form: it asks for protobuf and fails to parse JSON.
pub fn v2_document_protobuf() -> &'static [u8] {
    static DOCUMENT: LazyLock<Vec<u8>> = LazyLock::new(|| {
        let json: Value = serde_json::from_slice(v2_document()).unwrap_or(Value::Null);
        protobuf::encode_document(&json)
    });
    &DOCUMENT
}

/// Returns the index served at `GET /openapi/v3`: for every group version,
/// the URL of its document, carrying a content hash so clients can cache it.
pub fn v3_root() -> Value {
    static ROOT: LazyLock<Value> = LazyLock::new(|| {
        let paths: Map<String, Value> = V3_DOCUMENTS
            .iter()
            .map(|(path, document)| {
                let url = format!("/openapi/v3/{path}?hash={}", content_hash(document));
                (path.clone(), json!({"serverRelativeURL": url}))
            })
            .collect();
        json!({"paths": paths})
    });
    ROOT.clone()
}

/// Returns the OpenAPI 3.0 document of one group version, as JSON. `path` is
/// the part after `/openapi/v3/`: `api/v1` or `apis/apps/v1` (a leading `/`
/// is tolerated).
pub fn v3_group_version(path: &str) -> Option<&'static [u8]> {
    V3_DOCUMENTS.get(path.trim_matches('/')).map(Vec::as_slice)
}

/// The OpenAPI 3.0 documents keyed by `api/v1`, `apis/{group}/{version}`.
static V3_DOCUMENTS: LazyLock<BTreeMap<String, Vec<u8>>> = LazyLock::new(|| {
    let definitions = schemas::all_definitions(Flavor::V3.ref_prefix());
    registry::group_versions()
        .into_iter()
        .map(|gv| {
            let key = gv.url_prefix().trim_start_matches('/').to_string();
            (key, to_bytes(&build_v3(gv, &definitions)))
        })
        .collect()
});

fn to_bytes(document: &Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail: its keys are strings.
    serde_json::to_vec(document).unwrap_or_default()
}

/// The upper-case hex SHA-512 of a document, as Kubernetes computes it.
fn content_hash(document: &[u8]) -> String {
    Sha512::digest(document)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

fn info() -> Value {
    let version = discovery::version_info();
    json!({"title": "Kubernetes", "version": version["gitVersion"]})
}

fn build_v2() -> Value {
    let definitions = schemas::all_definitions(Flavor::V2.ref_prefix());
    let paths = paths::paths(&registry::group_versions(), Flavor::V2);
    json!({
        "swagger": "2.0",
        "info": info(),
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "type": "apiKey",
                "name": "authorization",
                "in": "header",
            },
        },
        "security": [{"BearerToken": []}],
    })
}

/// One group version's document: its paths and every schema they reach.
fn build_v3(gv: GroupVersion, definitions: &Map<String, Value>) -> Value {
    let prefix = Flavor::V3.ref_prefix();
    let paths = paths::paths(&[gv], Flavor::V3);
    let mut roots = BTreeSet::new();
    schemas::referenced_names(&Value::Object(paths.clone()), prefix, &mut roots);
    for r in registry::resources_in(gv) {
        if let Some(name) = schemas::definition_name(gv.group, gv.version, r.kind) {
            roots.insert(schemas::list_definition_name(&name));
            roots.insert(name);
        }
    }
    for shared in [
        "Status",
        "DeleteOptions",
        "WatchEvent",
        "Patch",
        "APIResourceList",
    ] {
        roots.insert(schemas::meta_definition(shared));
    }
    let mut reachable = Value::Object(schemas::closure(definitions, roots, prefix));
    schemas::wrap_ref_siblings(&mut reachable);
    json!({
        "openapi": "3.0.0",
        "info": info(),
        "paths": paths,
        "components": {
            "schemas": reachable,
            "securitySchemes": {
                "BearerToken": {
                    "description": "Bearer Token authentication",
                    "type": "apiKey",
                    "name": "authorization",
                    "in": "header",
                },
            },
        },
        "security": [{"BearerToken": []}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("documents are JSON")
    }

    /// Asserts every `$ref` in `document` names an entry of `definitions`.
    fn assert_refs_resolve(document: &Value, definitions: &Value, prefix: &str) {
        let mut refs = BTreeSet::new();
        let mut all_refs = BTreeSet::new();
        schemas::referenced_names(document, prefix, &mut refs);
        collect_all_refs(document, &mut all_refs);
        assert!(!refs.is_empty());
        for r in &all_refs {
            assert!(r.starts_with(prefix), "foreign $ref {r}");
        }
        for name in refs {
            assert!(definitions.get(&name).is_some(), "$ref to missing {name}");
        }
    }

    fn collect_all_refs(value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(s)) => {
                            out.insert(s.clone());
                        }
                        _ => collect_all_refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_all_refs(v, out)),
            _ => {}
        }
    }

    /// Finds the definition tagged with `group/version, kind`.
    fn find_by_gvk<'a>(
        definitions: &'a Value,
        group: &str,
        version: &str,
        kind: &str,
    ) -> &'a Value {
        let wanted = json!({"group": group, "version": version, "kind": kind});
        definitions
            .as_object()
            .and_then(|defs| {
                defs.values().find(|d| {
                    d["x-kubernetes-group-version-kind"]
                        .as_array()
                        .is_some_and(|gvks| gvks.contains(&wanted))
                })
            })
            .unwrap_or_else(|| panic!("no definition for {group}/{version} {kind}"))
    }

    fn resolve<'a>(definitions: &'a Value, schema: &'a Value, prefix: &str) -> &'a Value {
        let reference = schema["$ref"]
            .as_str()
            .or_else(|| schema["allOf"][0]["$ref"].as_str());
        match reference {
            Some(r) => &definitions[r.trim_start_matches(prefix)],
            None => schema,
        }
    }

    fn assert_deployment_described(definitions: &Value, prefix: &str) {
        let deployment = find_by_gvk(definitions, "apps", "v1", "Deployment");
        assert!(
            deployment["description"]
                .as_str()
                .is_some_and(|d| d.contains("Deployment"))
        );
        let spec = resolve(definitions, &deployment["properties"]["spec"], prefix);
        let replicas = &spec["properties"]["replicas"];
        assert_eq!(replicas["type"], "integer");
        assert!(
            replicas["description"]
                .as_str()
                .is_some_and(|d| d.contains("desired pods"))
        );
        let template_field = &spec["properties"]["template"];
        assert!(
            template_field["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        );
        let template = resolve(definitions, template_field, prefix);
        let pod_spec = resolve(definitions, &template["properties"]["spec"], prefix);
        let containers = &pod_spec["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    }

    #[test]
    fn v2_parses_and_every_ref_resolves() {
        let doc = parse(v2_document());
        assert_eq!(doc["swagger"], "2.0");
        assert_refs_resolve(&doc, &doc["definitions"], "#/definitions/");
    }

    #[test]
    fn v2_describes_deployment_by_its_gvk() {
        let doc = parse(v2_document());
        assert_deployment_described(&doc["definitions"], "#/definitions/");
        find_by_gvk(&doc["definitions"], "", "v1", "PodList");
        find_by_gvk(&doc["definitions"], "autoscaling", "v1", "Scale");
        find_by_gvk(&doc["definitions"], "apps", "v1", "DeleteOptions");
    }

    #[test]
    fn every_group_version_has_a_v3_document_whose_refs_resolve() {
        let root = v3_root();
        let paths = root["paths"].as_object().expect("paths");
        assert_eq!(paths.len(), registry::group_versions().len());
        for (path, entry) in paths {
            let url = entry["serverRelativeURL"].as_str().expect("url");
            assert!(
                url.starts_with(&format!("/openapi/v3/{path}?hash=")),
                "{url}"
            );
            let doc = parse(v3_group_version(path).expect("listed documents exist"));
            assert_eq!(doc["openapi"], "3.0.0");
            assert_refs_resolve(&doc, &doc["components"]["schemas"], "#/components/schemas/");
        }
        assert!(v3_group_version("/apis/apps/v1/").is_some());
        assert!(v3_group_version("apis/nope/v1").is_none());
    }

    #[test]
    fn v3_apps_describes_deployment_by_its_gvk() {
        let doc = parse(v3_group_version("apis/apps/v1").expect("apps/v1 is served"));
        let schemas = &doc["components"]["schemas"];
        assert_deployment_described(schemas, "#/components/schemas/");
        // Kinds of other group versions live in their own documents.
        assert!(schemas.get("io.k8s.api.core.v1.Pod").is_none());
        assert!(schemas.get("io.k8s.api.core.v1.PodSpec").is_some());
    }

    #[test]
    fn v3_hash_changes_with_content() {
        assert_ne!(content_hash(b"a"), content_hash(b"b"));
        assert_eq!(content_hash(b"a").len(), 128);
    }
}
