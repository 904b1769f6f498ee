//! The `paths` section: one operation per served verb of every resource and
//! subresource, in the shape Kubernetes publishes. kubectl reads the
//! `x-kubernetes-group-version-kind` of PATCH operations and looks for a
//! `fieldValidation` query parameter among their parameters to decide that
//! the server validates fields itself.

use serde_json::{Map, Value, json};

use super::schemas::{self, EVICTION, SCALE};
use crate::registry::{self, GroupVersion, ResourceInfo, Subresource};

/// Which OpenAPI dialect to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// Swagger 2.0 (`/openapi/v2`).
    V2,
    /// OpenAPI 3.0 (`/openapi/v3/...`).
    V3,
}

impl Flavor {
    pub(crate) fn ref_prefix(self) -> &'static str {
        match self {
            Flavor::V2 => "#/definitions/",
            Flavor::V3 => "#/components/schemas/",
        }
    }
}

#[derive(Clone, Copy)]
enum ParamType {
    String,
    Integer,
    Boolean,
}

impl ParamType {
    fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Boolean => "boolean",
        }
    }
}

#[derive(Clone, Copy)]
struct Param {
    name: &'static str,
    in_path: bool,
    ty: ParamType,
    description: &'static str,
}

const fn query(name: &'static str, ty: ParamType, description: &'static str) -> Param {
    Param { name, in_path: false, ty, description }
}

const NAME: Param = Param {
    name: "name",
    in_path: true,
    ty: ParamType::String,
    description: "name of the object",
};
const NAMESPACE: Param = Param {
    name: "namespace",
    in_path: true,
    ty: ParamType::String,
    description: "object name and auth scope, such as for teams and projects",
};
const PRETTY: Param = query("pretty", ParamType::String, "If 'true', then the output is pretty printed.");
const DRY_RUN: Param = query(
    "dryRun",
    ParamType::String,
    "When present, indicates that modifications should not be persisted. Valid values are: All (all dry run stages will be processed).",
);
const FIELD_MANAGER: Param = query(
    "fieldManager",
    ParamType::String,
    "fieldManager is a name associated with the actor or entity that is making these changes.",
);
const FIELD_VALIDATION: Param = query(
    "fieldValidation",
    ParamType::String,
    "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore (drop them silently), Warn (drop them and return a warning per field), Strict (fail the request).",
);
const FORCE: Param = query(
    "force",
    ParamType::Boolean,
    "Force is going to \"force\" Apply requests: the request re-acquires conflicting fields owned by other people. Must be unset for non-apply patch requests.",
);
const LIST_PARAMS: &[Param] = &[
    query("allowWatchBookmarks", ParamType::Boolean, "allowWatchBookmarks requests watch events with type \"BOOKMARK\"."),
    query("continue", ParamType::String, "The continue option should be set when retrieving more results from the server."),
    query("fieldSelector", ParamType::String, "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
    query("labelSelector", ParamType::String, "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
    query("limit", ParamType::Integer, "limit is a maximum number of responses to return for a list call."),
    query("resourceVersion", ParamType::String, "resourceVersion sets a constraint on what resource versions a request may be served from."),
    query("resourceVersionMatch", ParamType::String, "resourceVersionMatch determines how resourceVersion is applied to list calls."),
    query("sendInitialEvents", ParamType::Boolean, "`sendInitialEvents=true` may be set together with `watch=true`; the stream begins with synthetic events for existing objects."),
    query("timeoutSeconds", ParamType::Integer, "Timeout for the list/watch call."),
    query("watch", ParamType::Boolean, "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications."),
];
const DELETE_PARAMS: &[Param] = &[
    query("gracePeriodSeconds", ParamType::Integer, "The duration in seconds before the object should be deleted."),
    query("orphanDependents", ParamType::Boolean, "Deprecated: please use the PropagationPolicy."),
    query("propagationPolicy", ParamType::String, "Whether and how garbage collection will be performed: Orphan, Background or Foreground."),
];
const LOG_PARAMS: &[Param] = &[
    query("container", ParamType::String, "The container for which to stream logs. Defaults to only container if there is one container in the pod."),
    query("follow", ParamType::Boolean, "Follow the log stream of the pod."),
    query("limitBytes", ParamType::Integer, "If set, the number of bytes to read from the server before terminating the log output."),
    query("previous", ParamType::Boolean, "Return previous terminated container logs."),
    query("sinceSeconds", ParamType::Integer, "A relative time in seconds before the current time from which to show logs."),
    query("tailLines", ParamType::Integer, "If set, the number of lines from the end of the logs to show."),
    query("timestamps", ParamType::Boolean, "If true, add an RFC3339 timestamp at the beginning of every line of log output."),
];
const EXEC_PARAMS: &[Param] = &[
    query("command", ParamType::String, "Command is the remote command to execute. argv array."),
    query("container", ParamType::String, "Container in which to execute the command."),
    query("stderr", ParamType::Boolean, "Redirect the standard error stream of the pod for this call."),
    query("stdin", ParamType::Boolean, "Redirect the standard input stream of the pod for this call."),
    query("stdout", ParamType::Boolean, "Redirect the standard output stream of the pod for this call."),
    query("tty", ParamType::Boolean, "TTY if true indicates that a tty will be allocated for the exec call."),
];
const ATTACH_PARAMS: &[Param] = &[
    query("container", ParamType::String, "The container in which to execute the command."),
    query("stderr", ParamType::Boolean, "Stderr if true indicates that stderr is to be redirected for the attach call."),
    query("stdin", ParamType::Boolean, "Stdin if true, redirects the standard input stream of the pod for this call."),
    query("stdout", ParamType::Boolean, "Stdout if true indicates that stdout is to be redirected for the attach call."),
    query("tty", ParamType::Boolean, "TTY if true indicates that a tty will be allocated for the attach call."),
];
const PORTFORWARD_PARAMS: &[Param] = &[query("ports", ParamType::Integer, "List of ports to forward.")];

const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// What an operation returns.
enum Response {
    /// A JSON object described by a definition.
    Definition(String),
    /// Plain text (logs).
    Text,
    /// A protocol upgrade (exec, attach, port-forward).
    Upgrade,
}

struct Operation {
    method: &'static str,
    action: &'static str,
    operation_id: String,
    description: String,
    gvk: Option<(&'static str, &'static str, String)>,
    params: Vec<Param>,
    body: Option<(String, &'static [&'static str])>,
    response: Response,
    tag: String,
}

struct PathItem {
    path: String,
    params: Vec<Param>,
    operations: Vec<Operation>,
}

/// The group part of operation ids and tags: `coordination.k8s.io` ->
/// `Coordination`, core -> `Core`.
fn group_ident(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    group.trim_end_matches(".k8s.io").split(['.', '-']).map(capitalize).collect()
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The tag kubernetes files a group version's operations under
/// (`apps_v1`, `core_v1`, `coordination_v1`).
fn tag(gv: GroupVersion) -> String {
    let group = if gv.group.is_empty() { "core" } else { gv.group.trim_end_matches(".k8s.io") };
    format!("{}_{}", group.replace('.', "_"), gv.version)
}

/// Builds the paths of every resource in `gvs`.
pub(crate) fn paths(gvs: &[GroupVersion], flavor: Flavor) -> Map<String, Value> {
    let mut out = Map::new();
    for r in registry::RESOURCES.iter().filter(|r| gvs.contains(&r.group_version)) {
        for item in resource_paths(r) {
            out.insert(item.path.clone(), render_path_item(&item, flavor));
        }
    }
    out
}

/// Builds the paths of one resource and its subresources.
fn resource_paths(r: &'static ResourceInfo) -> Vec<PathItem> {
    let gv = r.group_version;
    let ident = format!("{}{}", group_ident(gv.group), capitalize(gv.version));
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let kind_def = schemas::definition_name(gv.group, gv.version, r.kind).unwrap_or_default();
    let own_gvk = || Some((gv.group, gv.version, r.kind.to_string()));
    let base = if r.namespaced {
        format!("{}/namespaces/{{namespace}}/{}", gv.url_prefix(), r.plural)
    } else {
        format!("{}/{}", gv.url_prefix(), r.plural)
    };
    let scope_params = if r.namespaced { vec![NAMESPACE, PRETTY] } else { vec![PRETTY] };
    let item_params = {
        let mut p = vec![NAME];
        p.extend(scope_params.iter().copied());
        p
    };
    let op = |method, action, verb: &str, sub: &str, description: String| Operation {
        method,
        action,
        operation_id: format!("{verb}{ident}{scope}{}{sub}", r.kind),
        description,
        gvk: own_gvk(),
        params: Vec::new(),
        body: None,
        response: Response::Definition(kind_def.clone()),
        tag: tag(gv),
    };
    let with = |mut o: Operation, params: &[Param]| {
        o.params.extend_from_slice(params);
        o
    };
    let write_params = [DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
    let patch_params = [DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, FORCE];
    let mut items = Vec::new();

    if !r.stored {
        // Virtual resources (bindings) only accept creation.
        let mut create = with(op("post", "post", "create", "", format!("create a {}", r.kind)), &write_params);
        create.body = Some((kind_def.clone(), &["application/json"]));
        items.push(PathItem { path: base, params: scope_params, operations: vec![create] });
        return items;
    }

    let list_def = schemas::list_definition_name(&kind_def);
    let mut list = with(op("get", "list", "list", "", format!("list or watch objects of kind {}", r.kind)), LIST_PARAMS);
    list.response = Response::Definition(list_def.clone());
    list.gvk = Some((gv.group, gv.version, r.list_kind()));
    let mut create = with(op("post", "post", "create", "", format!("create a {}", r.kind)), &write_params);
    create.body = Some((kind_def.clone(), &["application/json"]));
    let mut delete_collection = with(
        op("delete", "deletecollection", "deleteCollection", "", format!("delete collection of {}", r.kind)),
        &[LIST_PARAMS, DELETE_PARAMS, &[DRY_RUN]].concat(),
    );
    delete_collection.body = Some((schemas::meta_definition("DeleteOptions"), &["application/json"]));
    delete_collection.response = Response::Definition(schemas::meta_definition("Status"));
    items.push(PathItem { path: base.clone(), params: scope_params.clone(), operations: vec![list, create, delete_collection] });

    if r.namespaced {
        let mut list_all = with(
            op("get", "list", "list", "ForAllNamespaces", format!("list or watch objects of kind {}", r.kind)),
            LIST_PARAMS,
        );
        list_all.operation_id = format!("list{ident}{}ForAllNamespaces", r.kind);
        list_all.response = Response::Definition(list_def);
        list_all.gvk = Some((gv.group, gv.version, r.list_kind()));
        items.push(PathItem {
            path: format!("{}/{}", gv.url_prefix(), r.plural),
            params: vec![PRETTY],
            operations: vec![list_all],
        });
    }

    let item_path = format!("{base}/{{name}}");
    let read = op("get", "get", "read", "", format!("read the specified {}", r.kind));
    let mut replace = with(op("put", "put", "replace", "", format!("replace the specified {}", r.kind)), &write_params);
    replace.body = Some((kind_def.clone(), &["application/json"]));
    let mut patch = with(op("patch", "patch", "patch", "", format!("partially update the specified {}", r.kind)), &patch_params);
    patch.body = Some((schemas::meta_definition("Patch"), PATCH_TYPES));
    let mut delete = with(op("delete", "delete", "delete", "", format!("delete a {}", r.kind)), &[DELETE_PARAMS, &[DRY_RUN]].concat());
    delete.body = Some((schemas::meta_definition("DeleteOptions"), &["application/json"]));
    items.push(PathItem { path: item_path.clone(), params: item_params.clone(), operations: vec![read, replace, patch, delete] });

    for &sub in r.subresources {
        let sub_path = format!("{item_path}/{}", sub.name());
        let suffix = capitalize(sub.name());
        let operations = match sub {
            Subresource::Status | Subresource::Scale => {
                let (def, gvk) = if sub == Subresource::Scale {
                    (SCALE.to_string(), ("autoscaling", "v1", "Scale".to_string()))
                } else {
                    (kind_def.clone(), (gv.group, gv.version, r.kind.to_string()))
                };
                let what = format!("{} of the specified {}", sub.name(), r.kind);
                let mut read = op("get", "get", "read", &suffix, format!("read {what}"));
                let mut replace = with(op("put", "put", "replace", &suffix, format!("replace {what}")), &write_params);
                replace.body = Some((def.clone(), &["application/json"]));
                let mut patch = with(op("patch", "patch", "patch", &suffix, format!("partially update {what}")), &patch_params);
                patch.body = Some((schemas::meta_definition("Patch"), PATCH_TYPES));
                for o in [&mut read, &mut replace, &mut patch] {
                    o.response = Response::Definition(def.clone());
                    o.gvk = Some(gvk.clone());
                }
                vec![read, replace, patch]
            }
            Subresource::Binding | Subresource::Eviction => {
                let (def, gvk) = if sub == Subresource::Eviction {
                    (EVICTION.to_string(), ("policy", "v1", "Eviction".to_string()))
                } else {
                    (schemas::definition_name("", "v1", "Binding").unwrap_or_default(), ("", "v1", "Binding".to_string()))
                };
                let mut create = with(op("post", "post", "create", &suffix, format!("create {} of a {}", sub.name(), r.kind)), &write_params);
                create.body = Some((def.clone(), &["application/json"]));
                create.response = Response::Definition(def);
                create.gvk = Some(gvk);
                vec![create]
            }
            Subresource::Finalize => {
                let mut replace = with(op("put", "put", "replace", &suffix, format!("replace finalize of the specified {}", r.kind)), &write_params);
                replace.body = Some((kind_def.clone(), &["application/json"]));
                vec![replace]
            }
            Subresource::Log => {
                let mut read = with(op("get", "get", "read", &suffix, format!("read log of the specified {}", r.kind)), LOG_PARAMS);
                read.response = Response::Text;
                vec![read]
            }
            Subresource::Exec | Subresource::Attach | Subresource::PortForward => {
                let params = match sub {
                    Subresource::Exec => EXEC_PARAMS,
                    Subresource::Attach => ATTACH_PARAMS,
                    _ => PORTFORWARD_PARAMS,
                };
                ["get", "post"]
                    .into_iter()
                    .map(|method| {
                        let verb = format!("connect{}", capitalize(method));
                        let mut o = with(op(method, "connect", &verb, &suffix, format!("connect {method} requests to {} of {}", sub.name(), r.kind)), params);
                        o.response = Response::Upgrade;
                        o.gvk = None;
                        o
                    })
                    .collect()
            }
        };
        let mut params = item_params.clone();
        if matches!(sub, Subresource::Log | Subresource::Exec | Subresource::Attach | Subresource::PortForward) {
            params.retain(|p| p.name != PRETTY.name);
        }
        items.push(PathItem { path: sub_path, params, operations });
    }
    items
}

fn render_param(p: &Param, flavor: Flavor) -> Value {
    let location = if p.in_path { "path" } else { "query" };
    let mut v = json!({"name": p.name, "in": location, "description": p.description});
    if p.in_path {
        v["required"] = true.into();
    }
    match flavor {
        Flavor::V2 => {
            v["type"] = p.ty.name().into();
            v["uniqueItems"] = true.into();
        }
        Flavor::V3 => {
            v["schema"] = json!({"type": p.ty.name(), "uniqueItems": true});
        }
    }
    v
}

fn render_path_item(item: &PathItem, flavor: Flavor) -> Value {
    let mut out = Map::new();
    for o in &item.operations {
        out.insert(o.method.into(), render_operation(o, flavor));
    }
    out.insert("parameters".into(), item.params.iter().map(|p| render_param(p, flavor)).collect());
    Value::Object(out)
}

fn render_operation(o: &Operation, flavor: Flavor) -> Value {
    let prefix = flavor.ref_prefix();
    let (produces, schema): (&[&str], Value) = match &o.response {
        Response::Definition(def) => (&["application/json"], json!({"$ref": format!("{prefix}{def}")})),
        Response::Text => (&["text/plain", "application/json"], json!({"type": "string"})),
        Response::Upgrade => (&["*/*"], json!({"type": "string"})),
    };
    let success = if o.method == "post" { "201" } else { "200" };
    let mut v = json!({
        "description": o.description,
        "operationId": o.operation_id,
        "tags": [o.tag],
        "x-kubernetes-action": o.action,
    });
    if let Some((group, version, kind)) = &o.gvk {
        v["x-kubernetes-group-version-kind"] = json!({"group": group, "version": version, "kind": kind});
    }
    let mut params: Vec<Value> = o.params.iter().map(|p| render_param(p, flavor)).collect();
    match flavor {
        Flavor::V2 => {
            if let Some((def, consumes)) = &o.body {
                params.push(json!({
                    "name": "body", "in": "body", "required": true,
                    "schema": {"$ref": format!("{prefix}{def}")},
                }));
                v["consumes"] = json!(consumes);
            } else {
                v["consumes"] = json!(["*/*"]);
            }
            v["produces"] = json!(produces);
            v["schemes"] = json!(["https"]);
            v["responses"] = json!({
                success: {"description": "OK", "schema": schema},
                "401": {"description": "Unauthorized"},
            });
        }
        Flavor::V3 => {
            if let Some((def, consumes)) = &o.body {
                let content: Map<String, Value> = consumes
                    .iter()
                    .map(|mt| (mt.to_string(), json!({"schema": {"$ref": format!("{prefix}{def}")}})))
                    .collect();
                v["requestBody"] = json!({"content": content, "required": true});
            }
            let content: Map<String, Value> =
                produces.iter().map(|mt| (mt.to_string(), json!({"schema": schema}))).collect();
            v["responses"] = json!({
                success: {"description": "OK", "content": content},
                "401": {"description": "Unauthorized"},
            });
        }
    }
    v["parameters"] = Value::Array(params);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_idents_follow_kubernetes_operation_ids() {
        assert_eq!(group_ident(""), "Core");
        assert_eq!(group_ident("apps"), "Apps");
        assert_eq!(group_ident("coordination.k8s.io"), "Coordination");
        assert_eq!(group_ident("rbac.authorization.k8s.io"), "RbacAuthorization");
    }

    #[test]
    fn every_patch_and_write_operation_offers_field_validation() {
        let gvs = registry::group_versions();
        for flavor in [Flavor::V2, Flavor::V3] {
            let paths = paths(&gvs, flavor);
            for (path, item) in &paths {
                for method in ["patch", "put", "post"] {
                    let Some(op) = item.get(method) else { continue };
                    if op["x-kubernetes-action"] == "connect" {
                        continue;
                    }
                    let has = op["parameters"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
                    assert!(has, "{method} {path} lacks fieldValidation ({flavor:?})");
                }
            }
        }
    }

    #[test]
    fn deployment_paths_carry_actions_and_kinds() {
        let paths = paths(&[GroupVersion { group: "apps", version: "v1" }], Flavor::V3);
        let item = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        assert_eq!(item["patch"]["x-kubernetes-action"], "patch");
        assert_eq!(item["patch"]["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert_eq!(item["patch"]["operationId"], "patchAppsV1NamespacedDeployment");
        let scale = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(scale["get"]["x-kubernetes-group-version-kind"]["group"], "autoscaling");
        let list_all = &paths["/apis/apps/v1/deployments"];
        assert_eq!(list_all["get"]["x-kubernetes-group-version-kind"]["kind"], "DeploymentList");
        assert!(!paths.contains_key("/api/v1/namespaces/{namespace}/pods"));
    }
}
