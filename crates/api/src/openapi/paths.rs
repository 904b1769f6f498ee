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
    Param {
        name,
        in_path: false,
        ty,
        description,
    }
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
const PRETTY: Param = query(
    "pretty",
    ParamType::String,
    "If 'true', then the output is pretty printed.",
);
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
    query(
        "allowWatchBookmarks",
        ParamType::Boolean,
        "allowWatchBookmarks requests watch events with type \"BOOKMARK\".",
    ),
    query(
        "continue",
        ParamType::String,
        "The continue option should be set when retrieving more results from the server.",
    ),
    query(
        "fieldSelector",
        ParamType::String,
        "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
    ),
    query(
        "labelSelector",
        ParamType::String,
        "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
    ),
    query(
        "limit",
        ParamType::Integer,
        "limit is a maximum number of responses to return for a list call.",
    ),
    query(
        "resourceVersion",
        ParamType::String,
        "resourceVersion sets a constraint on what resource versions a request may be served from.",
    ),
    query(
        "resourceVersionMatch",
        ParamType::String,
        "resourceVersionMatch determines how resourceVersion is applied to list calls.",
    ),
    query(
        "sendInitialEvents",
        ParamType::Boolean,
        "`sendInitialEvents=true` may be set together with `watch=true`; the stream begins with synthetic events for existing objects.",
    ),
    query(
        "timeoutSeconds",
        ParamType::Integer,
        "Timeout for the list/watch call.",
    ),
    query(
        "watch",
        ParamType::Boolean,
        "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
    ),
];
const DELETE_PARAMS: &[Param] = &[
    query(
        "gracePeriodSeconds",
        ParamType::Integer,
        "The duration in seconds before the object should be deleted.",
    ),
    query(
        "orphanDependents",
        ParamType::Boolean,
        "Deprecated: please use the PropagationPolicy.",
    ),
    query(
        "propagationPolicy",
        ParamType::String,
        "Whether and how garbage collection will be performed: Orphan, Background or Foreground.",
    ),
];
const LOG_PARAMS: &[Param] = &[
    query(
        "container",
        ParamType::String,
        "The container for which to stream logs. Defaults to only container if there is one container in the pod.",
    ),
    query(
        "follow",
        ParamType::Boolean,
        "Follow the log stream of the pod.",
    ),
    query(
        "limitBytes",
        ParamType::Integer,
        "If set, the number of bytes to read from the server before terminating the log output.",
    ),
    query(
        "previous",
        ParamType::Boolean,
        "Return previous terminated container logs.",
    ),
    query(
        "sinceSeconds",
        ParamType::Integer,
        "A relative time in seconds before the current time from which to show logs.",
    ),
    query(
        "tailLines",
        ParamType::Integer,
        "If set, the number of lines from the end of the logs to show.",
    ),
    query(
        "timestamps",
        ParamType::Boolean,
        "If true, add an RFC3339 timestamp at the beginning of every line of log output.",
    ),
];
const EXEC_PARAMS: &[Param] = &[
    query(
        "command",
        ParamType::String,
        "Command is the remote command to execute. argv array.",
    ),
    query(
        "container",
        ParamType::String,
        "Container in which to execute the command.",
    ),
    query(
        "stderr",
        ParamType::Boolean,
        "Redirect the standard error stream of the pod for this call.",
    ),
    query(
        "stdin",
        ParamType::Boolean,
        "Redirect the standard input stream of the pod for this call.",
    ),
    query(
        "stdout",
        ParamType::Boolean,
        "Redirect the standard output stream of the pod for this call.",
    ),
    query(
        "tty",
        ParamType::Boolean,
        "TTY if true indicates that a tty will be allocated for the exec call.",
    ),
];
const ATTACH_PARAMS: &[Param] = &[
    query(
        "container",
        ParamType::String,
        "The container in which to execute the command.",
    ),
    query(
        "stderr",
        ParamType::Boolean,
        "Stderr if true indicates that stderr is to be redirected for the attach call.",
    ),
    query(
        "stdin",
        ParamType::Boolean,
        "Stdin if true, redirects the standard input stream of the pod for this call.",
    ),
    query(
        "stdout",
        ParamType::Boolean,
        "Stdout if true indicates that stdout is to be redirected for the attach call.",
    ),
    query(
        "tty",
        ParamType::Boolean,
        "TTY if true indicates that a tty will be allocated for the attach call.",
    ),
];
const PORTFORWARD_PARAMS: &[Param] = &[query(
    "ports",
    ParamType::Integer,
    "List of ports to forward.",
)];

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
    group
        .trim_end_matches(".k8s.io")
        .split(['.', '-'])
        .map(capitalize)
        .collect()
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
    let group = if gv.group.is_empty() {
        "core"
    } else {
        gv.group.trim_end_matches(".k8s.io")
    };
    format!("{}_{}", group.replace('.', "_"), gv.version)
}

/// Builds the paths of every resource in `gvs`.
pub(crate) fn paths(gvs: &[GroupVersion], flavor: Flavor) -> Map<String, Value> {
    let mut out = Map::new();
    for r in registry::RESOURCES
        .iter()
        .filter(|r| gvs.contains(&r.group_version))
    {
        for item in resource_paths(r) {
            out.insert(item.path.clone(), render_path_item(&item, flavor));
        }
    }
    out
}

/// The group, version and kind an operation exchanges.
type Gvk = (&'static str, &'static str, String);

const WRITE_PARAMS: &[Param] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
const PATCH_PARAMS: &[Param] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, FORCE];
const JSON_BODY: &[&str] = &["application/json"];

/// Builds the operations of one resource, holding what they all share.
struct ResourceOps {
    resource: &'static ResourceInfo,
    /// The operation id stem: `AppsV1Namespaced`, `CoreV1`.
    ident: String,
    /// The definition name of the resource's kind.
    kind_def: String,
}

impl ResourceOps {
    fn new(resource: &'static ResourceInfo) -> Self {
        let gv = resource.group_version;
        let scope = if resource.namespaced {
            "Namespaced"
        } else {
            ""
        };
        ResourceOps {
            resource,
            ident: format!("{}{}{scope}", group_ident(gv.group), capitalize(gv.version)),
            kind_def: schemas::definition_name(gv.group, gv.version, resource.kind)
                .unwrap_or_default(),
        }
    }

    fn own_gvk(&self) -> Gvk {
        let gv = self.resource.group_version;
        (gv.group, gv.version, self.resource.kind.to_string())
    }

    /// An operation on the resource's own kind; callers adjust the rest.
    fn op(
        &self,
        method: &'static str,
        action: &'static str,
        verb: &str,
        suffix: &str,
        params: &[Param],
    ) -> Operation {
        let kind = self.resource.kind;
        Operation {
            method,
            action,
            operation_id: format!("{verb}{}{kind}{suffix}", self.ident),
            description: String::new(),
            gvk: Some(self.own_gvk()),
            params: params.to_vec(),
            body: None,
            response: Response::Definition(self.kind_def.clone()),
            tag: tag(self.resource.group_version),
        }
    }

    fn collection_path(&self) -> String {
        let r = self.resource;
        let prefix = r.group_version.url_prefix();
        if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{prefix}/{}", r.plural)
        }
    }

    fn scope_params(&self) -> Vec<Param> {
        if self.resource.namespaced {
            vec![NAMESPACE, PRETTY]
        } else {
            vec![PRETTY]
        }
    }

    fn item_params(&self) -> Vec<Param> {
        let mut params = vec![NAME];
        params.extend(self.scope_params());
        params
    }

    /// `POST` creating an object described by `def` (tagged `gvk`).
    fn create(&self, suffix: &str, def: &str, gvk: Gvk, description: String) -> Operation {
        let mut create = self.op("post", "post", "create", suffix, WRITE_PARAMS);
        create.description = description;
        create.body = Some((def.to_string(), JSON_BODY));
        create.response = Response::Definition(def.to_string());
        create.gvk = Some(gvk);
        create
    }

    /// `GET`, `PUT` and `PATCH` of the object, or of a subresource that
    /// exchanges `def` (tagged `gvk`).
    fn read_replace_patch(&self, suffix: &str, def: &str, gvk: Gvk, what: &str) -> Vec<Operation> {
        let mut read = self.op("get", "get", "read", suffix, &[]);
        read.description = format!("read {what}");
        let mut replace = self.op("put", "put", "replace", suffix, WRITE_PARAMS);
        replace.description = format!("replace {what}");
        replace.body = Some((def.to_string(), JSON_BODY));
        let mut patch = self.op("patch", "patch", "patch", suffix, PATCH_PARAMS);
        patch.description = format!("partially update {what}");
        patch.body = Some((schemas::meta_definition("Patch"), PATCH_TYPES));
        let mut operations = vec![read, replace, patch];
        for o in &mut operations {
            o.response = Response::Definition(def.to_string());
            o.gvk = Some(gvk.clone());
        }
        operations
    }

    /// Virtual resources (bindings) only accept creation.
    fn create_only_item(&self) -> PathItem {
        let create = self.create(
            "",
            &self.kind_def,
            self.own_gvk(),
            format!("create a {}", self.resource.kind),
        );
        PathItem {
            path: self.collection_path(),
            params: self.scope_params(),
            operations: vec![create],
        }
    }

    fn list(&self, suffix: &str) -> Operation {
        let r = self.resource;
        let gv = r.group_version;
        let mut list = self.op("get", "list", "list", suffix, LIST_PARAMS);
        list.description = format!("list or watch objects of kind {}", r.kind);
        list.response = Response::Definition(schemas::list_definition_name(&self.kind_def));
        list.gvk = Some((gv.group, gv.version, r.list_kind()));
        list
    }

    fn collection_item(&self) -> PathItem {
        let kind = self.resource.kind;
        let create = self.create(
            "",
            &self.kind_def,
            self.own_gvk(),
            format!("create a {kind}"),
        );
        let mut delete_collection = self.op(
            "delete",
            "deletecollection",
            "deleteCollection",
            "",
            &[LIST_PARAMS, DELETE_PARAMS, &[DRY_RUN]].concat(),
        );
        delete_collection.description = format!("delete collection of {kind}");
        delete_collection.body = Some((schemas::meta_definition("DeleteOptions"), JSON_BODY));
        delete_collection.response = Response::Definition(schemas::meta_definition("Status"));
        PathItem {
            path: self.collection_path(),
            params: self.scope_params(),
            operations: vec![self.list(""), create, delete_collection],
        }
    }

    /// `GET /apis/{g}/{v}/{plural}`: a namespaced resource listed across
    /// every namespace.
    fn all_namespaces_item(&self) -> Option<PathItem> {
        let r = self.resource;
        if !r.namespaced {
            return None;
        }
        let mut list = self.list("ForAllNamespaces");
        list.operation_id = list.operation_id.replacen("Namespaced", "", 1);
        Some(PathItem {
            path: format!("{}/{}", r.group_version.url_prefix(), r.plural),
            params: vec![PRETTY],
            operations: vec![list],
        })
    }

    fn object_item(&self) -> PathItem {
        let kind = self.resource.kind;
        let mut operations = self.read_replace_patch(
            "",
            &self.kind_def,
            self.own_gvk(),
            &format!("the specified {kind}"),
        );
        let mut delete = self.op(
            "delete",
            "delete",
            "delete",
            "",
            &[DELETE_PARAMS, &[DRY_RUN]].concat(),
        );
        delete.description = format!("delete a {kind}");
        delete.body = Some((schemas::meta_definition("DeleteOptions"), JSON_BODY));
        operations.push(delete);
        PathItem {
            path: format!("{}/{{name}}", self.collection_path()),
            params: self.item_params(),
            operations,
        }
    }

    fn subresource_item(&self, sub: Subresource) -> PathItem {
        let kind = self.resource.kind;
        let suffix = capitalize(sub.name());
        let what = format!("{} of the specified {kind}", sub.name());
        let operations = match sub {
            Subresource::Status => {
                self.read_replace_patch(&suffix, &self.kind_def, self.own_gvk(), &what)
            }
            Subresource::Scale => self.read_replace_patch(
                &suffix,
                SCALE,
                ("autoscaling", "v1", "Scale".into()),
                &what,
            ),
            Subresource::Eviction => {
                vec![self.create(
                    &suffix,
                    EVICTION,
                    ("policy", "v1", "Eviction".into()),
                    format!("create {what}"),
                )]
            }
            Subresource::Binding => {
                let binding = schemas::definition_name("", "v1", "Binding").unwrap_or_default();
                vec![self.create(
                    &suffix,
                    &binding,
                    ("", "v1", "Binding".into()),
                    format!("create {what}"),
                )]
            }
            Subresource::Token => {
                let token_request =
                    schemas::definition_name("authentication.k8s.io", "v1", "TokenRequest")
                        .unwrap_or_default();
                vec![self.create(
                    &suffix,
                    &token_request,
                    ("authentication.k8s.io", "v1", "TokenRequest".into()),
                    format!("create {what}"),
                )]
            }
            Subresource::Finalize => {
                let mut replace = self.op("put", "put", "replace", &suffix, WRITE_PARAMS);
                replace.description = format!("replace {what}");
                replace.body = Some((self.kind_def.clone(), JSON_BODY));
                vec![replace]
            }
            Subresource::Log => {
                let mut read = self.op("get", "get", "read", &suffix, LOG_PARAMS);
                read.description = format!("read {what}");
                read.response = Response::Text;
                vec![read]
            }
            Subresource::Exec => self.connect(sub, EXEC_PARAMS),
            Subresource::Attach => self.connect(sub, ATTACH_PARAMS),
            Subresource::PortForward => self.connect(sub, PORTFORWARD_PARAMS),
        };
        let mut params = self.item_params();
        if matches!(
            sub,
            Subresource::Log | Subresource::Exec | Subresource::Attach | Subresource::PortForward
        ) {
            params.retain(|p| p.name != PRETTY.name);
        }
        PathItem {
            path: format!("{}/{{name}}/{}", self.collection_path(), sub.name()),
            params,
            operations,
        }
    }

    /// `GET` and `POST` upgrading to a streaming protocol.
    fn connect(&self, sub: Subresource, params: &[Param]) -> Vec<Operation> {
        let suffix = capitalize(sub.name());
        ["get", "post"]
            .into_iter()
            .map(|method| {
                let verb = format!("connect{}", capitalize(method));
                let mut o = self.op(method, "connect", &verb, &suffix, params);
                o.description = format!(
                    "connect {method} requests to {} of {}",
                    sub.name(),
                    self.resource.kind
                );
                o.response = Response::Upgrade;
                o.gvk = None;
                o
            })
            .collect()
    }
}

/// Builds the paths of one resource and its subresources.
fn resource_paths(resource: &'static ResourceInfo) -> Vec<PathItem> {
    let ops = ResourceOps::new(resource);
    if !resource.stored {
        return vec![ops.create_only_item()];
    }
    let mut items = vec![ops.collection_item()];
    items.extend(ops.all_namespaces_item());
    items.push(ops.object_item());
    items.extend(
        resource
            .subresources
            .iter()
            .map(|&sub| ops.subresource_item(sub)),
    );
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
    out.insert(
        "parameters".into(),
        item.params
            .iter()
            .map(|p| render_param(p, flavor))
            .collect(),
    );
    Value::Object(out)
}

fn render_operation(o: &Operation, flavor: Flavor) -> Value {
    let prefix = flavor.ref_prefix();
    let (produces, schema): (&[&str], Value) = match &o.response {
        Response::Definition(def) => (
            &["application/json"],
            json!({"$ref": format!("{prefix}{def}")}),
        ),
        Response::Text => (
            &["text/plain", "application/json"],
            json!({"type": "string"}),
        ),
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
        v["x-kubernetes-group-version-kind"] =
            json!({"group": group, "version": version, "kind": kind});
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
                    .map(|mt| {
                        (
                            mt.to_string(),
                            json!({"schema": {"$ref": format!("{prefix}{def}")}}),
                        )
                    })
                    .collect();
                v["requestBody"] = json!({"content": content, "required": true});
            }
            let content: Map<String, Value> = produces
                .iter()
                .map(|mt| (mt.to_string(), json!({"schema": schema})))
                .collect();
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
        assert_eq!(
            group_ident("rbac.authorization.k8s.io"),
            "RbacAuthorization"
        );
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
                    let has = op["parameters"].as_array().is_some_and(|ps| {
                        ps.iter()
                            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
                    });
                    assert!(has, "{method} {path} lacks fieldValidation ({flavor:?})");
                }
            }
        }
    }

    #[test]
    fn deployment_paths_carry_actions_and_kinds() {
        let paths = paths(
            &[GroupVersion {
                group: "apps",
                version: "v1",
            }],
            Flavor::V3,
        );
        let item = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        assert_eq!(item["patch"]["x-kubernetes-action"], "patch");
        assert_eq!(
            item["patch"]["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert_eq!(
            item["patch"]["operationId"],
            "patchAppsV1NamespacedDeployment"
        );
        let scale = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale["get"]["x-kubernetes-group-version-kind"]["group"],
            "autoscaling"
        );
        let list_all = &paths["/apis/apps/v1/deployments"];
        assert_eq!(
            list_all["get"]["x-kubernetes-group-version-kind"]["kind"],
            "DeploymentList"
        );
        assert_eq!(
            list_all["get"]["operationId"],
            "listAppsV1DeploymentForAllNamespaces"
        );
        let collection = &paths["/apis/apps/v1/namespaces/{namespace}/deployments"];
        assert_eq!(
            collection["delete"]["x-kubernetes-action"],
            "deletecollection"
        );
        assert_eq!(
            collection["post"]["operationId"],
            "createAppsV1NamespacedDeployment"
        );
        assert!(!paths.contains_key("/api/v1/namespaces/{namespace}/pods"));
    }
}
