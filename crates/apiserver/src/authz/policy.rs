//! The bootstrap RBAC policy, as upstream's `bootstrappolicy`: the ClusterRoles and
//! ClusterRoleBindings every cluster starts with, created at server start and
//! reconciled (missing rules and subjects added back) on every start unless an object
//! is annotated `rbac.authorization.kubernetes.io/autoupdate: "false"`.
//!
//! The identities Gantry issues and what grants them access:
//!
//! | identity | how it authenticates | granted by |
//! |---|---|---|
//! | `admin` (`gantry server`'s admin kubeconfig), the API server's kubelet client | x509, group `system:masters` | bypasses RBAC (and `cluster-admin`) |
//! | `system:kube-scheduler` | x509 (`scheduler.kubeconfig`) | `system:kube-scheduler` |
//! | `system:kube-controller-manager` | x509 (`controller-manager.kubeconfig`) | `system:kube-controller-manager` |
//! | `system:node:<name>` | x509, group `system:nodes` (local agent, or joined with a token) | `system:node` and `system:node-proxier` (the agent also runs the service proxy and DNS) |
//! | `system:serviceaccount:<ns>:<name>` | bearer service-account token | whatever users bind; `system:basic-user`, `system:discovery` |
//! | any authenticated user | | `system:basic-user`, `system:discovery`, `system:public-info-viewer` |
//!
//! Upstream's Node authorizer (which limits a node to its own pods' secrets and
//! objects) is approximated by the `system:node` ClusterRole bound to `system:nodes`:
//! a node may read every secret and config map, as kubelets could before 1.8.

use gantry_api::{ApiError, Reason, registry};
use serde_json::{Value, json};

use crate::objects::{Objects, WriteOptions};

/// The group that bypasses authorization, like upstream's `system:masters`.
pub const MASTERS_GROUP: &str = "system:masters";

/// Objects annotated with this set to `"false"` are left as the administrator changed them.
const AUTOUPDATE_ANNOTATION: &str = "rbac.authorization.kubernetes.io/autoupdate";

const READ: &[&str] = &["get", "list", "watch"];
/// Recording Events: Gantry's recorder reads an Event back to count a repeat into it.
const EVENT_VERBS: &[&str] = &["create", "get", "patch", "update"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn urls(verbs: &[&str], paths: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": paths})
}

/// The resources users read and write in their namespaces (upstream's `view`/`edit`).
fn namespaced_workload_rules(verbs: &[&str]) -> Vec<Value> {
    vec![
        rule(
            verbs,
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
            ],
        ),
        rule(
            verbs,
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
        ),
        rule(verbs, &["autoscaling"], &["horizontalpodautoscalers"]),
        rule(verbs, &["batch"], &["cronjobs", "jobs"]),
        rule(verbs, &["policy"], &["poddisruptionbudgets"]),
        rule(
            verbs,
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
        ),
    ]
}

fn view_rules() -> Vec<Value> {
    let mut rules = namespaced_workload_rules(READ);
    rules.extend([
        rule(
            READ,
            &[""],
            &[
                "bindings",
                "events",
                "limitranges",
                "namespaces",
                "namespaces/status",
                "persistentvolumeclaims/status",
                "pods/log",
                "pods/status",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
                "services/status",
            ],
        ),
        rule(
            READ,
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets/status",
                "deployments/status",
                "replicasets/status",
                "statefulsets/status",
            ],
        ),
        rule(READ, &["batch"], &["cronjobs/status", "jobs/status"]),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
    ]);
    rules
}

fn edit_rules() -> Vec<Value> {
    let mut rules = view_rules();
    rules.extend(namespaced_workload_rules(WRITE));
    rules.extend([
        rule(
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
            &[""],
            &[
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "secrets",
                "services/proxy",
            ],
        ),
        rule(
            &["create"],
            &[""],
            &["pods/eviction", "serviceaccounts/token"],
        ),
        rule(&["impersonate"], &[""], &["serviceaccounts"]),
    ]);
    rules
}

fn admin_rules() -> Vec<Value> {
    let mut rules = edit_rules();
    rules.extend([
        rule(
            ALL_VERBS,
            &["rbac.authorization.k8s.io"],
            &["rolebindings", "roles"],
        ),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
        ),
    ]);
    rules
}

/// What the node agent (kubelet) does: its Node and Lease, its pods and their
/// volumes' sources, Events, and service-account tokens for its pods.
fn node_rules() -> Vec<Value> {
    vec![
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews", "subjectaccessreviews"],
        ),
        rule(READ, &[""], &["services", "endpoints", "namespaces"]),
        rule(
            &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ],
            &[""],
            &["nodes"],
        ),
        rule(&["patch", "update"], &[""], &["nodes/status"]),
        rule(EVENT_VERBS, &["", "events.k8s.io"], &["events"]),
        rule(
            &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ],
            &[""],
            &["pods"],
        ),
        rule(&["patch", "update"], &[""], &["pods/status"]),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(
            READ,
            &[""],
            &[
                "configmaps",
                "secrets",
                "persistentvolumeclaims",
                "persistentvolumes",
            ],
        ),
        // Gantry's agent reclaims the released local-path volumes on its node.
        rule(&["delete"], &[""], &["persistentvolumes"]),
        rule(
            &["get", "patch", "update"],
            &[""],
            &["persistentvolumeclaims/status"],
        ),
        rule(&["get"], &[""], &["serviceaccounts"]),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(
            &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        rule(
            READ,
            &["storage.k8s.io"],
            &[
                "storageclasses",
                "csidrivers",
                "csinodes",
                "volumeattachments",
            ],
        ),
        rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
    ]
}

/// kube-proxy's needs (and the agent's cluster DNS: pods for their records).
fn node_proxier_rules() -> Vec<Value> {
    vec![
        rule(
            &["list", "watch"],
            &[""],
            &["endpoints", "services", "pods"],
        ),
        rule(READ, &[""], &["nodes"]),
        rule(EVENT_VERBS, &["", "events.k8s.io"], &["events"]),
        rule(
            &["list", "watch"],
            &["discovery.k8s.io"],
            &["endpointslices"],
        ),
    ]
}

fn scheduler_rules() -> Vec<Value> {
    vec![
        rule(EVENT_VERBS, &["", "events.k8s.io"], &["events"]),
        rule(
            &["create", "get", "list", "patch", "update", "watch"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        rule(
            READ,
            &[""],
            &[
                "nodes",
                "namespaces",
                "services",
                "replicationcontrollers",
                "persistentvolumes",
            ],
        ),
        rule(&["delete", "get", "list", "watch"], &[""], &["pods"]),
        rule(&["create"], &[""], &["bindings", "pods/binding"]),
        rule(&["patch", "update"], &[""], &["pods/status"]),
        rule(
            &["get", "list", "patch", "update", "watch"],
            &[""],
            &["persistentvolumeclaims"],
        ),
        rule(READ, &["apps"], &["replicasets", "statefulsets"]),
        rule(READ, &["policy"], &["poddisruptionbudgets"]),
        rule(
            READ,
            &["storage.k8s.io"],
            &[
                "storageclasses",
                "csinodes",
                "csidrivers",
                "csistoragecapacities",
            ],
        ),
        rule(READ, &["scheduling.k8s.io"], &["priorityclasses"]),
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
        ),
    ]
}

/// Gantry's controller manager runs every controller under its own identity (upstream
/// can give each its own service account instead): the workload controllers, the
/// garbage collector (which deletes dependents of any kind), node IPAM and lifecycle,
/// endpoints and the volume binder.
fn controller_manager_rules() -> Vec<Value> {
    let core = [
        "configmaps",
        "endpoints",
        "events",
        "namespaces",
        "nodes",
        "nodes/status",
        "persistentvolumeclaims",
        "persistentvolumeclaims/status",
        "persistentvolumes",
        "persistentvolumes/status",
        "pods",
        "pods/eviction",
        "pods/status",
        "replicationcontrollers",
        "secrets",
        "serviceaccounts",
        "services",
        "services/status",
    ];
    vec![
        rule(ALL_VERBS, &[""], &core),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(ALL_VERBS, &["apps"], &["*"]),
        rule(ALL_VERBS, &["batch"], &["*"]),
        rule(ALL_VERBS, &["discovery.k8s.io"], &["endpointslices"]),
        rule(ALL_VERBS, &["coordination.k8s.io"], &["leases"]),
        rule(ALL_VERBS, &["events.k8s.io"], &["events"]),
        rule(
            ALL_VERBS,
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        ),
        rule(READ, &["storage.k8s.io"], &["*"]),
        rule(READ, &["scheduling.k8s.io"], &["priorityclasses"]),
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
        ),
    ]
}

/// Health and version, readable by anyone.
const PUBLIC_INFO_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version", "/version/"];

/// Every bootstrap ClusterRole, by name.
pub fn cluster_roles() -> Vec<(&'static str, Vec<Value>)> {
    let mut discovery_paths = vec![
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/openapi",
        "/openapi/*",
    ];
    discovery_paths.extend_from_slice(PUBLIC_INFO_PATHS);
    vec![
        (
            "cluster-admin",
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        ("admin", admin_rules()),
        ("edit", edit_rules()),
        ("view", view_rules()),
        ("system:discovery", vec![urls(&["get"], &discovery_paths)]),
        (
            "system:public-info-viewer",
            vec![urls(&["get"], PUBLIC_INFO_PATHS)],
        ),
        (
            "system:basic-user",
            vec![
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
            ],
        ),
        ("system:node", node_rules()),
        ("system:node-proxier", node_proxier_rules()),
        ("system:kube-scheduler", scheduler_rules()),
        ("system:kube-controller-manager", controller_manager_rules()),
    ]
}

/// Every bootstrap ClusterRoleBinding: its name (also its ClusterRole's) and subjects.
pub fn cluster_role_bindings() -> Vec<(&'static str, Vec<Value>)> {
    let group = |name: &str| json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": name});
    let user =
        |name: &str| json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name});
    vec![
        ("cluster-admin", vec![group(MASTERS_GROUP)]),
        ("system:discovery", vec![group("system:authenticated")]),
        ("system:basic-user", vec![group("system:authenticated")]),
        (
            "system:public-info-viewer",
            vec![
                group("system:authenticated"),
                group("system:unauthenticated"),
            ],
        ),
        ("system:node", vec![group("system:nodes")]),
        ("system:node-proxier", vec![group("system:nodes")]),
        ("system:kube-scheduler", vec![user("system:kube-scheduler")]),
        (
            "system:kube-controller-manager",
            vec![user("system:kube-controller-manager")],
        ),
    ]
}

/// Creates the bootstrap policy, or adds back what is missing from it.
pub async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    let roles = registry::find("rbac.authorization.k8s.io", "v1", "clusterroles")
        .expect("clusterroles are always registered");
    let bindings = registry::find("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
        .expect("clusterrolebindings are always registered");
    for (name, rules) in cluster_roles() {
        let role = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": bootstrap_metadata(name),
            "rules": rules,
        });
        ensure(objects, roles, name, role, "rules").await?;
    }
    for (name, subjects) in cluster_role_bindings() {
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": bootstrap_metadata(name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": subjects,
        });
        ensure(objects, bindings, name, binding, "subjects").await?;
    }
    Ok(())
}

fn bootstrap_metadata(name: &str) -> Value {
    json!({
        "name": name,
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {AUTOUPDATE_ANNOTATION: "true"},
    })
}

/// Creates `wanted`, or appends to the existing object's `list_field` the entries of
/// `wanted` it lacks (upstream's reconciliation keeps what administrators added).
async fn ensure(
    objects: &Objects,
    resource: &'static gantry_api::ResourceInfo,
    name: &str,
    wanted: Value,
    list_field: &str,
) -> Result<(), ApiError> {
    let current = match objects.get(resource, None, name).await {
        Ok(current) => current,
        Err(err) if err.reason == Reason::NotFound => {
            return match objects
                .create(resource, None, wanted, WriteOptions::default())
                .await
            {
                Ok(_) => {
                    tracing::debug!(name, kind = resource.kind, "created bootstrap RBAC object");
                    Ok(())
                }
                Err(err) if err.reason == Reason::AlreadyExists => Ok(()),
                Err(err) => Err(err),
            };
        }
        Err(err) => return Err(err),
    };
    let autoupdate = current
        .object
        .pointer(&format!(
            "/metadata/annotations/{}",
            AUTOUPDATE_ANNOTATION.replace('/', "~1")
        ))
        .and_then(Value::as_str);
    if autoupdate == Some("false") {
        return Ok(());
    }
    let mut updated = current.object.clone();
    let existing = updated[list_field].as_array().cloned().unwrap_or_default();
    let missing: Vec<Value> = wanted[list_field]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| !existing.contains(entry))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    updated[list_field] = Value::Array(existing.into_iter().chain(missing).collect());
    objects
        .replace(resource, &current, updated, WriteOptions::default())
        .await?;
    tracing::info!(
        name,
        kind = resource.kind,
        "reconciled bootstrap RBAC object"
    );
    Ok(())
}
