//! Server-side printing: the `meta.k8s.io/v1` `Table` kubectl asks for.
//!
//! kubectl v1.32 does not print objects itself; it requests
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints the
//! cells it gets back. So the columns and cell values here follow
//! kube-apiserver's printers (`pkg/printers/internalversion`) closely: the
//! same column names, the same wide-only columns (priority 1), the same
//! status logic for pods and the same human durations for ages.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::registry::ResourceInfo;

/// Builds the `Table` for `objects`, all of `resource`'s kind; ages are
/// measured against `now`.
///
/// Every column is emitted (like kube-apiserver, which always prints wide);
/// kubectl hides priority-1 columns unless `-o wide` is given.
pub fn to_table(resource: &ResourceInfo, objects: &[Value], now: SystemTime) -> Value {
    let printer = printer_for(resource.kind);
    let columns: Vec<Value> = printer.columns.iter().map(Column::to_json).collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut row = json!({
                "cells": (printer.cells)(object, now),
                "object": partial_object_metadata(object),
            });
            if let Some(conditions) = (printer.conditions)(object) {
                row["conditions"] = conditions;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// What kubectl needs of each object: its metadata (for `-A`'s NAMESPACE
/// column and `--show-labels`).
fn partial_object_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// One `TableColumnDefinition`.
struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    description: &'static str,
    /// 0 for default columns, 1 for `-o wide` only.
    priority: u8,
}

impl Column {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

const fn col(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 1,
    }
}

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    priority: 0,
};
const AGE: Column = col(
    "Age",
    "string",
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
);
const CONTAINERS: Column = wide(
    "Containers",
    "string",
    "Names of each container in the template.",
);
const IMAGES: Column = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);
const SELECTOR: Column = wide(
    "Selector",
    "string",
    "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
);

type Cells = fn(&Value, SystemTime) -> Vec<Value>;
type Conditions = fn(&Value) -> Option<Value>;

/// The columns and row printer of one kind.
struct Printer {
    columns: &'static [Column],
    cells: Cells,
    conditions: Conditions,
}

fn no_conditions(_: &Value) -> Option<Value> {
    None
}

fn printer_for(kind: &str) -> Printer {
    let (columns, cells): (&'static [Column], Cells) = match kind {
        "Pod" => (POD_COLUMNS, pod_cells),
        "Deployment" => (DEPLOYMENT_COLUMNS, deployment_cells),
        "ReplicaSet" => (REPLICA_SET_COLUMNS, replica_set_cells),
        "StatefulSet" => (STATEFUL_SET_COLUMNS, stateful_set_cells),
        "DaemonSet" => (DAEMON_SET_COLUMNS, daemon_set_cells),
        "ControllerRevision" => (CONTROLLER_REVISION_COLUMNS, controller_revision_cells),
        "Service" => (SERVICE_COLUMNS, service_cells),
        "Namespace" => (NAMESPACE_COLUMNS, namespace_cells),
        "Node" => (NODE_COLUMNS, node_cells),
        "ConfigMap" => (CONFIG_MAP_COLUMNS, config_map_cells),
        "Secret" => (SECRET_COLUMNS, secret_cells),
        "ServiceAccount" => (SERVICE_ACCOUNT_COLUMNS, service_account_cells),
        "Event" => (EVENT_COLUMNS, event_cells),
        "Endpoints" => (ENDPOINTS_COLUMNS, endpoints_cells),
        "EndpointSlice" => (ENDPOINT_SLICE_COLUMNS, endpoint_slice_cells),
        "PersistentVolume" => (PV_COLUMNS, pv_cells),
        "PersistentVolumeClaim" => (PVC_COLUMNS, pvc_cells),
        "Lease" => (LEASE_COLUMNS, lease_cells),
        "Job" => (JOB_COLUMNS, job_cells),
        "CronJob" => (CRON_JOB_COLUMNS, cron_job_cells),
        "StorageClass" => (STORAGE_CLASS_COLUMNS, storage_class_cells),
        "PriorityClass" => (PRIORITY_CLASS_COLUMNS, priority_class_cells),
        "Role" | "ClusterRole" => (ROLE_COLUMNS, role_cells),
        "RoleBinding" | "ClusterRoleBinding" => (ROLE_BINDING_COLUMNS, role_binding_cells),
        _ => (DEFAULT_COLUMNS, default_cells),
    };
    let conditions: Conditions = if kind == "Pod" {
        pod_conditions
    } else {
        no_conditions
    };
    Printer {
        columns,
        cells,
        conditions,
    }
}

// ---------------------------------------------------------------------------
// Small accessors over JSON objects.

fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn int_at(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn array_at<'a>(object: &'a Value, pointer: &str) -> &'a [Value] {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.into()
    }
}

fn name(object: &Value) -> Value {
    json!(str_at(object, "/metadata/name"))
}

fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse::<Timestamp>().ok()
}

/// `translateTimestampSince`: the human age of an RFC 3339 timestamp.
fn age_of(timestamp: Option<&Value>, now: SystemTime) -> String {
    match timestamp.and_then(Value::as_str).and_then(parse_time) {
        Some(then) => since(then, now),
        None => "<unknown>".into(),
    }
}

fn since(then: Timestamp, now: SystemTime) -> String {
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let then_secs = then.as_second() as f64 + f64::from(then.subsec_nanosecond()) / 1e9;
    let delta = now_secs - then_secs;
    if delta < 0.0 {
        // Clock skew: HumanDuration tolerates up to two seconds.
        if delta <= -2.0 {
            "<invalid>".into()
        } else {
            "0s".into()
        }
    } else {
        human_duration(Duration::from_secs_f64(delta))
    }
}

fn creation_age(object: &Value, now: SystemTime) -> Value {
    json!(age_of(object.pointer("/metadata/creationTimestamp"), now))
}

/// `duration.HumanDuration` from k8s.io/apimachinery: coarser the older it is.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let dy = days % 365;
        return if dy == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{dy}d")
        };
    }
    format!("{years}y")
}

/// `labels.FormatLabels`: `k=v,k2=v2` sorted, or `<none>`.
fn format_labels(labels: Option<&Value>) -> String {
    let pairs: Vec<String> = labels
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    let mut pairs = pairs;
    pairs.sort();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

/// `metav1.LabelSelectorAsSelector(...).String()`: requirements sorted by key.
fn format_selector(selector: Option<&Value>) -> String {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return String::new();
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            requirements.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for expression in array_at(selector, "/matchExpressions") {
        let key = str_at(expression, "/key").to_string();
        let mut values: Vec<&str> = array_at(expression, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort();
        let values = values.join(",");
        let text = match str_at(expression, "/operator") {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.clone(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        };
        requirements.push((key, text));
    }
    requirements.sort();
    requirements
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(",")
}

/// Container names and images of a pod template, comma-joined.
fn containers_and_images(object: &Value) -> (Value, Value) {
    let containers = array_at(object, "/spec/template/spec/containers");
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    (json!(names.join(",")), json!(images.join(",")))
}

// ---------------------------------------------------------------------------
// Pods.

const POD_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    col(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
    ),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide(
        "IP",
        "string",
        "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
    ),
    wide(
        "Node",
        "string",
        "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
    ),
    wide(
        "Nominated Node",
        "string",
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.",
    ),
    wide(
        "Readiness Gates",
        "string",
        "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
    ),
];

/// What `kubectl get pods` shows in READY, STATUS and RESTARTS.
#[derive(Debug, PartialEq, Eq)]
struct PodSummary {
    ready: usize,
    total: usize,
    reason: String,
    restarts: i64,
    last_restart: Option<Timestamp>,
}

fn later(current: Option<Timestamp>, candidate: Option<Timestamp>) -> Option<Timestamp> {
    match (current, candidate) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn last_termination(status: &Value) -> Option<Timestamp> {
    parse_time(str_at(status, "/lastState/terminated/finishedAt"))
}

/// Sidecars: init containers with `restartPolicy: Always`.
fn restartable_init_containers(pod: &Value) -> BTreeSet<&str> {
    array_at(pod, "/spec/initContainers")
        .iter()
        .filter(|c| str_at(c, "/restartPolicy") == "Always")
        .map(|c| str_at(c, "/name"))
        .collect()
}

fn has_condition(pod: &Value, kind: &str) -> bool {
    array_at(pod, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == kind && str_at(c, "/status") == "True")
}

/// `printPod`'s status logic from kubectl's printers.
fn summarize_pod(pod: &Value) -> PodSummary {
    let phase = str_at(pod, "/status/phase");
    let mut reason = match str_at(pod, "/status/reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if array_at(pod, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let sidecars = restartable_init_containers(pod);
    let init_count = array_at(pod, "/spec/initContainers").len();
    let total = array_at(pod, "/spec/containers").len() + sidecars.len();
    let mut ready = 0;
    let mut restarts = 0;
    let mut last_restart = None;
    let mut sidecar_restarts = 0;
    let mut sidecar_last_restart = None;

    let mut initializing = false;
    for (i, status) in array_at(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        let count = int_at(status, "/restartCount");
        restarts += count;
        last_restart = later(last_restart, last_termination(status));
        let is_sidecar = sidecars.contains(str_at(status, "/name"));
        if is_sidecar {
            sidecar_restarts += count;
            sidecar_last_restart = later(sidecar_last_restart, last_termination(status));
        }
        let terminated = status.pointer("/state/terminated").filter(|t| !t.is_null());
        let waiting_reason = str_at(status, "/state/waiting/reason");
        if terminated.is_some_and(|t| int_at(t, "/exitCode") == 0) {
            continue;
        }
        if is_sidecar && status.get("started").and_then(Value::as_bool) == Some(true) {
            if status.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(t) = terminated {
            match (str_at(t, "/reason"), int_at(t, "/signal")) {
                ("", 0) => format!("Init:ExitCode:{}", int_at(t, "/exitCode")),
                ("", signal) => format!("Init:Signal:{signal}"),
                (r, _) => format!("Init:{r}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{init_count}")
        };
        initializing = true;
        break;
    }

    if !initializing || has_condition(pod, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = sidecar_last_restart;
        let mut has_running = false;
        for status in array_at(pod, "/status/containerStatuses").iter().rev() {
            restarts += int_at(status, "/restartCount");
            last_restart = later(last_restart, last_termination(status));
            let waiting = str_at(status, "/state/waiting/reason");
            let terminated = status.pointer("/state/terminated").filter(|t| !t.is_null());
            let running = status
                .pointer("/state/running")
                .is_some_and(|r| !r.is_null());
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = terminated {
                reason = match (str_at(t, "/reason"), int_at(t, "/signal")) {
                    ("", 0) => format!("ExitCode:{}", int_at(t, "/exitCode")),
                    ("", signal) => format!("Signal:{signal}"),
                    (r, _) => r.to_string(),
                };
            } else if running && status.get("ready").and_then(Value::as_bool) == Some(true) {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if has_condition(pod, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null());
    if deleting && str_at(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }
    PodSummary {
        ready,
        total,
        reason,
        restarts,
        last_restart,
    }
}

fn pod_cells(pod: &Value, now: SystemTime) -> Vec<Value> {
    let summary = summarize_pod(pod);
    let restarts = match summary.last_restart {
        Some(at) if summary.restarts != 0 => {
            format!("{} ({} ago)", summary.restarts, since(at, now))
        }
        _ => summary.restarts.to_string(),
    };
    let ip = array_at(pod, "/status/podIPs")
        .first()
        .map(|ip| str_at(ip, "/ip"))
        .unwrap_or("");
    let ip = if ip.is_empty() {
        str_at(pod, "/status/podIP")
    } else {
        ip
    };
    let gates = array_at(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let passed = gates
            .iter()
            .filter(|g| has_condition(pod, str_at(g, "/conditionType")))
            .count();
        format!("{passed}/{}", gates.len())
    };
    vec![
        name(pod),
        json!(format!("{}/{}", summary.ready, summary.total)),
        json!(summary.reason),
        json!(restarts),
        creation_age(pod, now),
        json!(or_none(ip)),
        json!(or_none(str_at(pod, "/spec/nodeName"))),
        json!(or_none(str_at(pod, "/status/nominatedNodeName"))),
        json!(readiness_gates),
    ]
}

/// Finished pods carry a `Completed` row condition, as kube-apiserver sets.
fn pod_conditions(pod: &Value) -> Option<Value> {
    match str_at(pod, "/status/phase") {
        "Succeeded" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}]),
        ),
        "Failed" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]),
        ),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Workloads.

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col(
        "Up-to-date",
        "integer",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
    ),
    col(
        "Available",
        "integer",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn deployment_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    let (containers, images) = containers_and_images(object);
    vec![
        name(object),
        json!(format!(
            "{}/{}",
            int_at(object, "/status/readyReplicas"),
            int_at(object, "/spec/replicas")
        )),
        json!(int_at(object, "/status/updatedReplicas")),
        json!(int_at(object, "/status/availableReplicas")),
        creation_age(object, now),
        containers,
        images,
        json!(format_selector(object.pointer("/spec/selector"))),
    ]
}

const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset",
    ),
    col(
        "Current",
        "integer",
        "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset",
    ),
    col(
        "Ready",
        "integer",
        "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn replica_set_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    let (containers, images) = containers_and_images(object);
    vec![
        name(object),
        json!(int_at(object, "/spec/replicas")),
        json!(int_at(object, "/status/replicas")),
        json!(int_at(object, "/status/readyReplicas")),
        creation_age(object, now),
        containers,
        images,
        json!(format_selector(object.pointer("/spec/selector"))),
    ]
}

const STATEFUL_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    AGE,
    CONTAINERS,
    IMAGES,
];

fn stateful_set_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    let (containers, images) = containers_and_images(object);
    vec![
        name(object),
        json!(format!(
            "{}/{}",
            int_at(object, "/status/readyReplicas"),
            int_at(object, "/spec/replicas")
        )),
        creation_age(object, now),
        containers,
        images,
    ]
}

const DAEMON_SET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
    ),
    col(
        "Current",
        "integer",
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
    ),
    col(
        "Ready",
        "integer",
        "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
    ),
    col(
        "Up-to-date",
        "integer",
        "The total number of nodes that are running updated daemon pod",
    ),
    col(
        "Available",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
    ),
    col(
        "Node Selector",
        "string",
        "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn daemon_set_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    let (containers, images) = containers_and_images(object);
    vec![
        name(object),
        json!(int_at(object, "/status/desiredNumberScheduled")),
        json!(int_at(object, "/status/currentNumberScheduled")),
        json!(int_at(object, "/status/numberReady")),
        json!(int_at(object, "/status/updatedNumberScheduled")),
        json!(int_at(object, "/status/numberAvailable")),
        json!(format_labels(
            object.pointer("/spec/template/spec/nodeSelector")
        )),
        creation_age(object, now),
        containers,
        images,
        json!(format_selector(object.pointer("/spec/selector"))),
    ]
}

// ---------------------------------------------------------------------------
// Jobs and CronJobs.

const JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the job."),
    col(
        "Completions",
        "string",
        "The desired number of successfully finished pods the job should be run with. More info: https://kubernetes.io/docs/concepts/workloads/controllers/job/",
    ),
    col("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

/// Whether `object` has a condition of `kind` with status `True`.
fn has_true_condition(object: &Value, kind: &str) -> bool {
    array_at(object, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == kind && str_at(c, "/status") == "True")
}

/// kubectl 1.32's job STATUS: terminal conditions first, then deletion,
/// suspension and the conditions that precede a terminal one.
fn job_status(object: &Value) -> &'static str {
    if has_true_condition(object, "Complete") {
        "Complete"
    } else if has_true_condition(object, "Failed") {
        "Failed"
    } else if object.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if has_true_condition(object, "Suspended") {
        "Suspended"
    } else if has_true_condition(object, "FailureTarget") {
        "FailureTarget"
    } else if has_true_condition(object, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
}

fn job_completions(object: &Value) -> String {
    let succeeded = int_at(object, "/status/succeeded");
    let parallelism = object.pointer("/spec/parallelism").and_then(Value::as_i64);
    match object.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(completions) => format!("{succeeded}/{completions}"),
        None => match parallelism {
            Some(p) if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    }
}

fn job_duration(object: &Value, now: SystemTime) -> String {
    let time = |pointer| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .and_then(parse_time)
    };
    match (time("/status/startTime"), time("/status/completionTime")) {
        (None, _) => String::new(),
        (Some(start), None) => since(start, now),
        (Some(start), Some(end)) => {
            let seconds = end.duration_since(start).as_secs_f64().max(0.0);
            human_duration(Duration::from_secs_f64(seconds))
        }
    }
}

fn job_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    let (containers, images) = containers_and_images(object);
    vec![
        name(object),
        json!(job_status(object)),
        json!(job_completions(object)),
        json!(job_duration(object, now)),
        creation_age(object, now),
        containers,
        images,
        json!(format_selector(object.pointer("/spec/selector"))),
    ]
}

const CRON_JOB_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Schedule",
        "string",
        "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
    ),
    col(
        "Timezone",
        "string",
        "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones. If not specified, this will default to the time zone of the kube-controller-manager process. The set of valid time zone names and the time zone offset is loaded from the system-wide time zone database by the API server during CronJob validation and the controller manager during execution. If no system-wide time zone database can be found a bundled version of the database is used instead. If the time zone name becomes invalid during the lifetime of a CronJob or due to a change in host configuration, the controller will stop creating new new Jobs and will create a system event with the reason UnknownTimeZone. More information can be found in https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/#time-zones",
    ),
    col(
        "Suspend",
        "boolean",
        "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false.",
    ),
    col(
        "Active",
        "integer",
        "A list of pointers to currently running jobs.",
    ),
    col(
        "Last Schedule",
        "string",
        "Information when was the last time the job was successfully scheduled.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn cron_job_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    let template = object.pointer("/spec/jobTemplate").unwrap_or(&Value::Null);
    let (containers, images) = containers_and_images(template);
    let suspend = match object.pointer("/spec/suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let last_schedule = match object.pointer("/status/lastScheduleTime") {
        Some(time) if !time.is_null() => age_of(Some(time), now),
        _ => "<none>".into(),
    };
    vec![
        name(object),
        json!(str_at(object, "/spec/schedule")),
        json!(or_none(str_at(object, "/spec/timeZone"))),
        json!(suspend),
        json!(array_at(object, "/status/active").len()),
        json!(last_schedule),
        creation_age(object, now),
        containers,
        images,
        json!(or_none(&format_selector(
            template.pointer("/spec/selector")
        ))),
    ]
}

// ---------------------------------------------------------------------------
// rbac.authorization.k8s.io/v1 Roles, ClusterRoles and their bindings.

const ROLE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Created At",
        "date",
        "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
    ),
];

/// Roles print their creation time as an RFC 3339 date, not an age, as upstream does.
fn role_cells(object: &Value, _now: SystemTime) -> Vec<Value> {
    vec![
        name(object),
        json!(str_at(object, "/metadata/creationTimestamp")),
    ]
}

const ROLE_BINDING_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Role",
        "string",
        "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
    ),
    AGE,
    wide("Users", "string", "Users in the roleBinding"),
    wide("Groups", "string", "Groups in the roleBinding"),
    wide(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the roleBinding",
    ),
];

fn role_binding_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    let subjects = array_at(object, "/subjects");
    let of_kind = |kind: &str| -> String {
        subjects
            .iter()
            .filter(|s| str_at(s, "/kind") == kind)
            .map(|s| match kind {
                "ServiceAccount" => {
                    format!("{}:{}", str_at(s, "/namespace"), str_at(s, "/name"))
                }
                _ => str_at(s, "/name").to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        name(object),
        json!(format!(
            "{}/{}",
            str_at(object, "/roleRef/kind"),
            str_at(object, "/roleRef/name")
        )),
        creation_age(object, now),
        json!(of_kind("User")),
        json!(of_kind("Group")),
        json!(of_kind("ServiceAccount")),
    ]
}

// ---------------------------------------------------------------------------
// StorageClasses and PriorityClasses.

const STORAGE_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Provisioner",
        "string",
        "provisioner indicates the type of the provisioner.",
    ),
    col(
        "ReclaimPolicy",
        "string",
        "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete.",
    ),
    col(
        "VolumeBindingMode",
        "string",
        "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable the VolumeScheduling feature.",
    ),
    col(
        "AllowVolumeExpansion",
        "string",
        "allowVolumeExpansion shows whether the storage class allow volume expand.",
    ),
    AGE,
];

/// The annotations that make a StorageClass the cluster default.
const DEFAULT_CLASS_ANNOTATIONS: &[&str] = &[
    "/metadata/annotations/storageclass.kubernetes.io~1is-default-class",
    "/metadata/annotations/storageclass.beta.kubernetes.io~1is-default-class",
];

fn storage_class_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    let is_default = DEFAULT_CLASS_ANNOTATIONS
        .iter()
        .any(|pointer| str_at(object, pointer) == "true");
    let name = str_at(object, "/metadata/name");
    let name = if is_default {
        format!("{name} (default)")
    } else {
        name.to_string()
    };
    let reclaim = match str_at(object, "/reclaimPolicy") {
        "" => "Delete",
        policy => policy,
    };
    let binding = match str_at(object, "/volumeBindingMode") {
        "" => "Immediate",
        mode => mode,
    };
    let expansion = object
        .pointer("/allowVolumeExpansion")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    vec![
        json!(name),
        json!(str_at(object, "/provisioner")),
        json!(reclaim),
        json!(binding),
        json!(expansion),
        creation_age(object, now),
    ]
}

const PRIORITY_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Value",
        "integer",
        "value represents the integer value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec.",
    ),
    col(
        "Global-Default",
        "boolean",
        "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class. Only one PriorityClass can be marked as `globalDefault`. However, if more than one PriorityClasses exists with their `globalDefault` field set to true, the smallest value of such global default PriorityClasses will be used as the default priority.",
    ),
    AGE,
    col(
        "PreemptionPolicy",
        "string",
        "preemptionPolicy is the Policy for preempting pods with lower priority. One of Never, PreemptLowerPriority. Defaults to PreemptLowerPriority if unset.",
    ),
];

fn priority_class_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    vec![
        name(object),
        json!(int_at(object, "/value")),
        json!(
            object
                .pointer("/globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        ),
        creation_age(object, now),
        json!(str_at(object, "/preemptionPolicy")),
    ]
}

// ---------------------------------------------------------------------------
// Services and endpoints.

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer.",
    ),
    col(
        "Cluster-IP",
        "string",
        "clusterIP is the IP address of the service and is usually assigned randomly.",
    ),
    col(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
    ),
    col(
        "Port(s)",
        "string",
        "The list of ports that are exposed by this service.",
    ),
    AGE,
    wide(
        "Selector",
        "string",
        "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify.",
    ),
];

/// `makePortString`: `80/TCP,443:30443/TCP`.
fn service_ports(service: &Value) -> String {
    let ports: Vec<String> = array_at(service, "/spec/ports")
        .iter()
        .map(|p| {
            let (port, protocol) = (int_at(p, "/port"), str_at(p, "/protocol"));
            match int_at(p, "/nodePort") {
                0 => format!("{port}/{protocol}"),
                node_port => format!("{port}:{node_port}/{protocol}"),
            }
        })
        .collect();
    or_none(&ports.join(","))
}

/// `getServiceExternalIP`.
fn service_external_ip(service: &Value) -> String {
    let external: Vec<&str> = array_at(service, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match str_at(service, "/spec/type") {
        "" | "ClusterIP" | "NodePort" => or_none(&external.join(",")),
        "LoadBalancer" => {
            let ingress: Vec<&str> = array_at(service, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| {
                    if str_at(i, "/ip").is_empty() {
                        str_at(i, "/hostname")
                    } else {
                        str_at(i, "/ip")
                    }
                })
                .filter(|s| !s.is_empty())
                .collect();
            let mut all = external;
            if !ingress.is_empty() {
                all.extend(ingress);
            }
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => str_at(service, "/spec/externalName").to_string(),
        _ => "<unknown>".into(),
    }
}

fn service_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    vec![
        name(object),
        json!(str_at(object, "/spec/type")),
        json!(or_none(str_at(object, "/spec/clusterIP"))),
        json!(service_external_ip(object)),
        json!(service_ports(object)),
        creation_age(object, now),
        json!(format_labels(object.pointer("/spec/selector"))),
    ]
}

const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    col("Endpoints", "string", "Endpoints of the endpoints object."),
    AGE,
];

/// `list + N more...` once `max` entries are shown, like kubectl.
fn list_with_more(list: &[String], count: usize, max: usize, empty: &str) -> String {
    let text = list.join(",");
    if count > max {
        format!("{text} + {} more...", count - max)
    } else if text.is_empty() {
        empty.into()
    } else {
        text
    }
}

fn join_host_port(ip: &str, port: i64) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// `formatEndpoints`: up to three ready `ip:port` pairs.
fn format_endpoints(endpoints: &Value) -> String {
    const MAX: usize = 3;
    let subsets = array_at(endpoints, "/subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut list = Vec::new();
    let mut count = 0;
    for subset in subsets {
        let addresses: Vec<&str> = array_at(subset, "/addresses")
            .iter()
            .map(|a| str_at(a, "/ip"))
            .collect();
        let ports = array_at(subset, "/ports");
        if ports.is_empty() {
            count += addresses.len();
            list.extend(
                addresses
                    .iter()
                    .take(MAX.saturating_sub(list.len()))
                    .map(|a| a.to_string()),
            );
        } else {
            for port in ports {
                count += addresses.len();
                let room = MAX.saturating_sub(list.len());
                list.extend(
                    addresses
                        .iter()
                        .take(room)
                        .map(|a| join_host_port(a, int_at(port, "/port"))),
                );
            }
        }
    }
    list_with_more(&list, count, MAX, "")
}

fn endpoints_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    vec![
        name(object),
        json!(format_endpoints(object)),
        creation_age(object, now),
    ]
}

const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation.",
    ),
    col(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
    ),
    col(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice.",
    ),
    AGE,
];

fn endpoint_slice_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    const MAX: usize = 3;
    let ports: Vec<String> = array_at(object, "/ports")
        .iter()
        .map(|p| match p.get("port").and_then(Value::as_i64) {
            Some(n) => n.to_string(),
            None => "*".to_string(),
        })
        .collect();
    let addresses: Vec<String> = array_at(object, "/endpoints")
        .iter()
        .flat_map(|e| {
            array_at(e, "/addresses")
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    let shown_ports: Vec<String> = ports.iter().take(MAX).cloned().collect();
    let shown_addresses: Vec<String> = addresses.iter().take(MAX).cloned().collect();
    vec![
        name(object),
        json!(str_at(object, "/addressType")),
        json!(list_with_more(&shown_ports, ports.len(), MAX, "<unset>")),
        json!(list_with_more(
            &shown_addresses,
            addresses.len(),
            MAX,
            "<unset>"
        )),
        creation_age(object, now),
    ]
}

// ---------------------------------------------------------------------------
// Cluster objects.

const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the namespace"),
    AGE,
];

fn namespace_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    vec![
        name(object),
        json!(str_at(object, "/status/phase")),
        creation_age(object, now),
    ]
}

const NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet Version reported by the node."),
    wide(
        "Internal-IP",
        "string",
        "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).",
    ),
    wide(
        "External-IP",
        "string",
        "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses",
    ),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    ),
];

fn node_status(node: &Value) -> String {
    let mut status = Vec::new();
    if let Some(ready) = array_at(node, "/status/conditions")
        .iter()
        .find(|c| str_at(c, "/type") == "Ready")
    {
        status.push(if str_at(ready, "/status") == "True" {
            "Ready"
        } else {
            "NotReady"
        });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }
    status.join(",")
}

/// `findNodeRoles`: `node-role.kubernetes.io/<role>` labels and `kubernetes.io/role`.
fn node_roles(node: &Value) -> String {
    let mut roles = BTreeSet::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(role) = key
                .strip_prefix("node-role.kubernetes.io/")
                .filter(|r| !r.is_empty())
            {
                roles.insert(role.to_string());
            } else if key == "kubernetes.io/role"
                && let Some(role) = value.as_str().filter(|v| !v.is_empty())
            {
                roles.insert(role.to_string());
            }
        }
    }
    or_none(&roles.into_iter().collect::<Vec<_>>().join(","))
}

fn node_address(node: &Value, kind: &str) -> String {
    let address = array_at(node, "/status/addresses")
        .iter()
        .find(|a| str_at(a, "/type") == kind);
    or_none(address.map_or("", |a| str_at(a, "/address")))
}

fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        "<unknown>".into()
    } else {
        s.into()
    }
}

fn node_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    vec![
        name(object),
        json!(node_status(object)),
        json!(node_roles(object)),
        creation_age(object, now),
        json!(str_at(object, "/status/nodeInfo/kubeletVersion")),
        json!(node_address(object, "InternalIP")),
        json!(node_address(object, "ExternalIP")),
        json!(or_unknown(str_at(object, "/status/nodeInfo/osImage"))),
        json!(or_unknown(str_at(object, "/status/nodeInfo/kernelVersion"))),
        json!(str_at(object, "/status/nodeInfo/containerRuntimeVersion")),
    ]
}

const CONTROLLER_REVISION_COLUMNS: &[Column] = &[
    NAME,
    col("Controller", "string", "Controller of the object"),
    col(
        "Revision",
        "string",
        "Revision indicates the revision of the state represented by Data.",
    ),
    AGE,
];

/// `printControllerRevision`: the owning controller as `kind.group/name`.
fn controller_revision_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    let controller = array_at(object, "/metadata/ownerReferences")
        .iter()
        .find(|owner| owner.get("controller").and_then(Value::as_bool) == Some(true))
        .map_or_else(|| "<none>".to_string(), controller_name);
    vec![
        name(object),
        json!(controller),
        json!(int_at(object, "/revision")),
        creation_age(object, now),
    ]
}

/// `formatResourceName` of an owner reference: `statefulset.apps/web`.
fn controller_name(owner: &Value) -> String {
    let kind = str_at(owner, "/kind").to_lowercase();
    let group = str_at(owner, "/apiVersion")
        .rsplit_once('/')
        .map_or("", |(group, _)| group);
    let name = str_at(owner, "/name");
    if group.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}.{group}/{name}")
    }
}

const LEASE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.",
    ),
    AGE,
];

fn lease_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    vec![
        name(object),
        json!(str_at(object, "/spec/holderIdentity")),
        creation_age(object, now),
    ]
}

// ---------------------------------------------------------------------------
// Configuration objects.

fn object_len(object: &Value, pointer: &str) -> usize {
    object
        .pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, serde_json::Map::len)
}

const CONFIG_MAP_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Data",
        "integer",
        "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.",
    ),
    AGE,
];

fn config_map_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    let count = object_len(object, "/data") + object_len(object, "/binaryData");
    vec![name(object), json!(count), creation_age(object, now)]
}

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
    ),
    col(
        "Data",
        "integer",
        "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
    ),
    AGE,
];

fn secret_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    vec![
        name(object),
        json!(str_at(object, "/type")),
        json!(object_len(object, "/data")),
        creation_age(object, now),
    ]
}

const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Secrets",
        "integer",
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret",
    ),
    AGE,
];

fn service_account_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    vec![
        name(object),
        json!(array_at(object, "/secrets").len()),
        creation_age(object, now),
    ]
}

// ---------------------------------------------------------------------------
// Events.

const EVENT_COLUMNS: &[Column] = &[
    col(
        "Last Seen",
        "string",
        "lastTimestamp is the time when this Event was last observed. It is deprecated in the v1 Events API; use series.lastObservedTime instead.",
    ),
    col(
        "Type",
        "string",
        "Type of this event (Normal, Warning), new types could be added in the future",
    ),
    col(
        "Reason",
        "string",
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    col("Object", "string", "The object that this event is about."),
    wide(
        "Subobject",
        "string",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
    ),
    wide(
        "Source",
        "string",
        "The component reporting this event. Should be a short machine understandable string.",
    ),
    col(
        "Message",
        "string",
        "A human-readable description of the status of this operation.",
    ),
    wide(
        "First Seen",
        "string",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    ),
    wide(
        "Count",
        "string",
        "The number of times this event has occurred.",
    ),
    Column {
        priority: 1,
        ..NAME
    },
];

/// `formatEventSource`: `component, host`, falling back to the reporting fields.
fn event_source(event: &Value) -> String {
    let component = match str_at(event, "/source/component") {
        "" => str_at(event, "/reportingComponent"),
        c => c,
    };
    let host = match str_at(event, "/source/host") {
        "" => str_at(event, "/reportingInstance"),
        h => h,
    };
    if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    }
}

fn event_cells(event: &Value, now: SystemTime) -> Vec<Value> {
    let present = |pointer: &str| {
        event
            .pointer(pointer)
            .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
    };
    let first_seen = match present("/firstTimestamp") {
        Some(t) => age_of(Some(t), now),
        None => age_of(present("/eventTime"), now),
    };
    let mut last_seen = match present("/lastTimestamp") {
        Some(t) => age_of(Some(t), now),
        None => first_seen.clone(),
    };
    let mut count = int_at(event, "/count");
    if event.get("series").is_some_and(|s| !s.is_null()) {
        last_seen = age_of(event.pointer("/series/lastObservedTime"), now);
        count = int_at(event, "/series/count");
    } else if count == 0 {
        count = 1;
    }
    let kind = str_at(event, "/involvedObject/kind").to_lowercase();
    let target = match str_at(event, "/involvedObject/name") {
        "" => kind,
        object_name => format!("{kind}/{object_name}"),
    };
    vec![
        json!(last_seen),
        json!(str_at(event, "/type")),
        json!(str_at(event, "/reason")),
        json!(target),
        json!(str_at(event, "/involvedObject/fieldPath")),
        json!(event_source(event)),
        json!(str_at(event, "/message").trim()),
        json!(first_seen),
        json!(count),
        name(event),
    ]
}

// ---------------------------------------------------------------------------
// Storage.

/// `GetAccessModesAsString`: `RWO,ROX,RWX,RWOP` in that order.
fn access_modes(modes: &[Value]) -> String {
    let has = |mode: &str| modes.iter().any(|m| m.as_str() == Some(mode));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

fn storage_class(object: &Value) -> String {
    match str_at(object, "/spec/storageClassName") {
        "" => str_at(
            object,
            "/metadata/annotations/volume.beta.kubernetes.io~1storage-class",
        )
        .to_string(),
        class => class.to_string(),
    }
}

fn attributes_class(object: &Value) -> String {
    match object
        .pointer("/spec/volumeAttributesClassName")
        .and_then(Value::as_str)
    {
        Some(class) if !class.is_empty() => class.to_string(),
        _ => "<unset>".into(),
    }
}

fn volume_mode(object: &Value) -> String {
    match str_at(object, "/spec/volumeMode") {
        "" => "<unset>".into(),
        mode => mode.to_string(),
    }
}

fn quantity_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

const PV_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Capacity",
        "string",
        "capacity is the description of the persistent volume's resources and capacity. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#capacity",
    ),
    col(
        "Access Modes",
        "string",
        "accessModes contains all ways the volume can be mounted. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes",
    ),
    col(
        "Reclaim Policy",
        "string",
        "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete (default for dynamically provisioned PersistentVolumes), and Recycle (deprecated). Recycle must be supported by the volume plugin underlying this PersistentVolume. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#reclaiming",
    ),
    col(
        "Status",
        "string",
        "phase indicates if a volume is available, bound to a claim, or released by a claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#phase",
    ),
    col(
        "Claim",
        "string",
        "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim. Expected to be non-nil when bound. claim.VolumeName is the authoritative bind between PV and PVC. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#binding",
    ),
    col(
        "StorageClass",
        "string",
        "storageClassName is the name of StorageClass to which this persistent volume belongs. Empty value means that this volume does not belong to any StorageClass.",
    ),
    col(
        "VolumeAttributesClass",
        "string",
        "Name of VolumeAttributesClass to which this persistent volume belongs. Empty value is not allowed. When this field is not set, it indicates that this volume does not belong to any VolumeAttributesClass.",
    ),
    col(
        "Reason",
        "string",
        "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.",
    ),
    AGE,
    wide(
        "VolumeMode",
        "string",
        "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not included in spec.",
    ),
];

fn pv_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    let claim = match (
        str_at(object, "/spec/claimRef/namespace"),
        str_at(object, "/spec/claimRef/name"),
    ) {
        (_, "") => String::new(),
        (namespace, claim) => format!("{namespace}/{claim}"),
    };
    vec![
        name(object),
        json!(quantity_text(object.pointer("/spec/capacity/storage"))),
        json!(access_modes(array_at(object, "/spec/accessModes"))),
        json!(str_at(object, "/spec/persistentVolumeReclaimPolicy")),
        json!(str_at(object, "/status/phase")),
        json!(claim),
        json!(storage_class(object)),
        json!(attributes_class(object)),
        json!(str_at(object, "/status/reason")),
        creation_age(object, now),
        json!(volume_mode(object)),
    ]
}

const PVC_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Status",
        "string",
        "phase represents the current phase of PersistentVolumeClaim.",
    ),
    col(
        "Volume",
        "string",
        "volumeName is the binding reference to the PersistentVolume backing this claim.",
    ),
    col(
        "Capacity",
        "string",
        "capacity represents the actual resources of the underlying volume.",
    ),
    col(
        "Access Modes",
        "string",
        "accessModes contains the actual access modes the volume backing the PVC has. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes-1",
    ),
    col(
        "StorageClass",
        "string",
        "storageClassName is the name of the StorageClass required by the claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#class-1",
    ),
    col(
        "VolumeAttributesClass",
        "string",
        "volumeAttributesClassName may be used to set the VolumeAttributesClass used by this claim.",
    ),
    AGE,
    wide(
        "VolumeMode",
        "string",
        "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec.",
    ),
];

fn pvc_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    let volume = str_at(object, "/spec/volumeName");
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity_text(object.pointer("/status/capacity/storage")),
            access_modes(array_at(object, "/status/accessModes")),
        )
    };
    let phase = if object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        "Terminating"
    } else {
        str_at(object, "/status/phase")
    };
    vec![
        name(object),
        json!(phase),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(storage_class(object)),
        json!(attributes_class(object)),
        creation_age(object, now),
        json!(volume_mode(object)),
    ]
}

// ---------------------------------------------------------------------------
// Anything else.

const DEFAULT_COLUMNS: &[Column] = &[NAME, AGE];

fn default_cells(object: &Value, now: SystemTime) -> Vec<Value> {
    vec![name(object), creation_age(object, now)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find_by_kind;

    /// 2026-01-01T00:00:00Z.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    }

    /// An RFC 3339 timestamp `ago` before [`now`].
    fn ago(ago: Duration) -> String {
        let t = now() - ago;
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after epoch")
            .as_secs();
        let ts = Timestamp::from_second(i64::try_from(secs).expect("fits")).expect("in range");
        ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    fn table(api_version: &str, kind: &str, objects: &[Value]) -> Value {
        to_table(
            find_by_kind(api_version, kind).expect("kind is served"),
            objects,
            now(),
        )
    }

    fn cells(api_version: &str, kind: &str, object: Value) -> Vec<Value> {
        let t = table(api_version, kind, &[object]);
        t["rows"][0]["cells"].as_array().expect("cells").clone()
    }

    fn column_names(t: &Value) -> Vec<(String, u64)> {
        t["columnDefinitions"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().expect("name").to_string(),
                    c["priority"].as_u64().expect("priority"),
                )
            })
            .collect()
    }

    #[test]
    fn job_columns_status_completions_and_duration() {
        let t = table("batch/v1", "Job", &[]);
        let names: Vec<String> = column_names(&t).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "Name",
                "Status",
                "Completions",
                "Duration",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let running = json!({
            "metadata": {"name": "pi", "creationTimestamp": ago(Duration::from_secs(300))},
            "spec": {"completions": 3, "parallelism": 2},
            "status": {"succeeded": 1, "startTime": ago(Duration::from_secs(90))},
        });
        let row = cells("batch/v1", "Job", running);
        assert_eq!(
            row[1..5],
            [json!("Running"), json!("1/3"), json!("90s"), json!("5m")]
        );
        let done = json!({
            "metadata": {"name": "pi"},
            "spec": {"completions": 1, "parallelism": 1},
            "status": {
                "succeeded": 1,
                "startTime": ago(Duration::from_secs(100)),
                "completionTime": ago(Duration::from_secs(40)),
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True"},
                    {"type": "Complete", "status": "True"},
                ],
            },
        });
        let row = cells("batch/v1", "Job", done);
        assert_eq!(row[1..4], [json!("Complete"), json!("1/1"), json!("60s")]);
        let queue = json!({"metadata": {"name": "q"}, "spec": {"parallelism": 4}, "status": {
            "conditions": [{"type": "Failed", "status": "True"}],
        }});
        let row = cells("batch/v1", "Job", queue);
        assert_eq!(row[1..4], [json!("Failed"), json!("0/1 of 4"), json!("")]);
    }

    #[test]
    fn cron_job_storage_class_and_priority_class_rows() {
        let cron = json!({
            "metadata": {"name": "tick", "creationTimestamp": ago(Duration::from_secs(600))},
            "spec": {"schedule": "*/5 * * * *", "suspend": false, "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "tick-1"}], "lastScheduleTime": ago(Duration::from_secs(30))},
        });
        assert_eq!(
            cells("batch/v1", "CronJob", cron),
            [
                json!("tick"),
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("30s"),
                json!("10m"),
                json!("c"),
                json!("busybox"),
                json!("<none>"),
            ]
        );
        let sc = json!({
            "metadata": {"name": "local", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "gantry.io/local-path", "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer",
        });
        assert_eq!(
            cells("storage.k8s.io/v1", "StorageClass", sc)[..5],
            [
                json!("local (default)"),
                json!("gantry.io/local-path"),
                json!("Delete"),
                json!("WaitForFirstConsumer"),
                json!(false)
            ]
        );
        let revision = json!({"metadata": {"name": "web-7c9d", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "u", "controller": true}]},
            "revision": 3});
        assert_eq!(
            cells("apps/v1", "ControllerRevision", revision)[..3],
            [json!("web-7c9d"), json!("statefulset.apps/web"), json!(3)]
        );
        let orphan = json!({"metadata": {"name": "web-7c9d"}, "revision": 1});
        assert_eq!(
            cells("apps/v1", "ControllerRevision", orphan)[1],
            json!("<none>")
        );
        let pc = json!({"metadata": {"name": "system-node-critical"}, "value": 2_000_001_000, "preemptionPolicy": "PreemptLowerPriority"});
        let row = cells("scheduling.k8s.io/v1", "PriorityClass", pc);
        assert_eq!(
            row[..3],
            [
                json!("system-node-critical"),
                json!(2_000_001_000),
                json!(false)
            ]
        );
        assert_eq!(row[4], "PreemptLowerPriority");
    }

    #[test]
    fn role_bindings_show_their_role_and_subjects_by_kind() {
        let binding = json!({
            "metadata": {"name": "read-pods", "namespace": "dev", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [
                {"kind": "User", "name": "jane"},
                {"kind": "Group", "name": "devs"},
                {"kind": "ServiceAccount", "name": "ci", "namespace": "dev"},
                {"kind": "User", "name": "joe"},
            ],
        });
        let t = table("rbac.authorization.k8s.io/v1", "RoleBinding", &[binding]);
        let names: Vec<_> = column_names(&t).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"]
        );
        let row = t["rows"][0]["cells"].as_array().expect("cells");
        assert_eq!(row[1], "Role/pod-reader");
        assert_eq!(row[3], "jane, joe");
        assert_eq!(row[4], "devs");
        assert_eq!(row[5], "dev:ci");
        let role =
            json!({"metadata": {"name": "view", "creationTimestamp": "2024-01-01T00:00:00Z"}});
        let row = cells("rbac.authorization.k8s.io/v1", "ClusterRole", role);
        assert_eq!(row, [json!("view"), json!("2024-01-01T00:00:00Z")]);
    }

    #[test]
    fn human_durations_match_apimachinery() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (182, "3m2s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 25 * 60, "3h25m"),
            (8 * 3600 + 59, "8h"),
            (47 * 3600, "47h"),
            (2 * 86400 + 3 * 3600, "2d3h"),
            (3 * 86400, "3d"),
            (30 * 86400, "30d"),
            (2 * 365 * 86400 + 10 * 86400, "2y10d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(Duration::from_secs(secs)), want, "{secs}s");
        }
    }

    fn pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": ago(Duration::from_secs(600)), "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "nginx"}], "nodeName": "node1"},
            "status": status,
        })
    }

    #[test]
    fn pod_columns_and_running_row() {
        let running = pod(json!({
            "phase": "Running",
            "podIP": "10.42.0.5",
            "podIPs": [{"ip": "10.42.0.5"}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": ago(Duration::from_secs(590))}}}],
        }));
        let t = table("v1", "Pod", std::slice::from_ref(&running));
        let names: Vec<(String, u64)> = column_names(&t);
        let expected = [
            ("Name", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
            ("Nominated Node", 1),
            ("Readiness Gates", 1),
        ];
        assert_eq!(names, expected.map(|(n, p)| (n.to_string(), p)));
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web",
                "1/1",
                "Running",
                "0",
                "10m",
                "10.42.0.5",
                "node1",
                "<none>",
                "<none>"
            ])
        );
        assert_eq!(
            t["rows"][0]["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": running["metadata"]})
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    }

    #[test]
    fn pod_status_crash_loop_with_restart_age() {
        let crashing = pod(json!({
            "phase": "Running",
            "containerStatuses": [{
                "name": "app", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(Duration::from_secs(300))}},
            }],
        }));
        let row = cells("v1", "Pod", crashing);
        assert_eq!(row[1], "0/1");
        assert_eq!(row[2], "CrashLoopBackOff");
        assert_eq!(row[3], "4 (5m ago)");
    }

    #[test]
    fn pod_status_completed_pending_creating_and_terminating() {
        let completed = pod(json!({
            "phase": "Succeeded",
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
        }));
        let t = table("v1", "Pod", &[completed]);
        assert_eq!(t["rows"][0]["cells"][2], "Completed");
        assert_eq!(t["rows"][0]["conditions"][0]["type"], "Completed");

        assert_eq!(
            cells("v1", "Pod", pod(json!({"phase": "Pending"})))[2],
            "Pending"
        );

        let creating = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "app", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(cells("v1", "Pod", creating)[2], "ContainerCreating");

        let failed = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "app", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": 137}}}]}),
        );
        assert_eq!(cells("v1", "Pod", failed)[2], "ExitCode:137");

        let mut terminating = pod(json!({"phase": "Running"}));
        terminating["metadata"]["deletionTimestamp"] = json!(ago(Duration::from_secs(1)));
        assert_eq!(cells("v1", "Pod", terminating)[2], "Terminating");
    }

    #[test]
    fn pod_status_init_containers() {
        let mut init = pod(json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "setup", "ready": false, "restartCount": 0, "state": {"running": {}}},
        ]}));
        init["spec"]["initContainers"] =
            json!([{"name": "setup", "image": "busybox"}, {"name": "more", "image": "busybox"}]);
        assert_eq!(cells("v1", "Pod", init.clone())[2], "Init:0/2");
        init["status"]["initContainerStatuses"][0]["state"] =
            json!({"terminated": {"exitCode": 2}});
        assert_eq!(cells("v1", "Pod", init.clone())[2], "Init:ExitCode:2");
        init["status"]["initContainerStatuses"][0]["state"] =
            json!({"waiting": {"reason": "CrashLoopBackOff"}});
        assert_eq!(cells("v1", "Pod", init)[2], "Init:CrashLoopBackOff");
    }

    #[test]
    fn deployment_row_counts_ready_replicas() {
        let deployment = json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": ago(Duration::from_secs(182))},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}, {"name": "side", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
        });
        let t = table("apps/v1", "Deployment", &[deployment]);
        let names: Vec<String> = column_names(&t).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web",
                "2/3",
                3,
                2,
                "3m2s",
                "nginx,side",
                "nginx:1.27,busybox",
                "app=web"
            ])
        );
    }

    #[test]
    fn selectors_print_like_labels_selector_strings() {
        let selector = json!({"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["web", "api"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ]});
        assert_eq!(
            format_selector(Some(&selector)),
            "a=1,b=2,!canary,tier in (api,web)"
        );
    }

    #[test]
    fn service_rows_show_ports_and_external_ips() {
        let service = |spec: Value, status: Value| json!({"metadata": {"name": "web", "creationTimestamp": ago(Duration::from_secs(7200))}, "spec": spec, "status": status});
        let node_port = service(
            json!({"type": "NodePort", "clusterIP": "10.43.0.10", "selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443, "protocol": "TCP"}]}),
            json!({}),
        );
        assert_eq!(
            cells("v1", "Service", node_port),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.43.0.10"),
                json!("<none>"),
                json!("80/TCP,443:30443/TCP"),
                json!("120m"),
                json!("app=web")
            ]
        );
        let pending = service(
            json!({"type": "LoadBalancer", "clusterIP": "10.43.0.11", "ports": [{"port": 80, "nodePort": 31000, "protocol": "TCP"}]}),
            json!({}),
        );
        assert_eq!(cells("v1", "Service", pending)[3], "<pending>");
        let assigned = service(
            json!({"type": "LoadBalancer", "clusterIP": "10.43.0.11", "ports": [{"port": 80, "protocol": "TCP"}]}),
            json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}),
        );
        assert_eq!(cells("v1", "Service", assigned)[3], "192.0.2.10");
        let headless = service(json!({"type": "ClusterIP", "clusterIP": "None"}), json!({}));
        let row = cells("v1", "Service", headless);
        assert_eq!(
            (row[2].clone(), row[4].clone(), row[6].clone()),
            (json!("None"), json!("<none>"), json!("<none>"))
        );
        let external = service(
            json!({"type": "ExternalName", "externalName": "example.com"}),
            json!({}),
        );
        assert_eq!(cells("v1", "Service", external)[3], "example.com");
    }

    #[test]
    fn node_rows_show_status_roles_and_addresses() {
        let node = json!({
            "metadata": {"name": "n1", "creationTimestamp": ago(Duration::from_secs(3 * 86400)),
                "labels": {"node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/master": ""}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n1"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.1.0", "containerRuntimeVersion": "gantry://0.1.0"},
            },
        });
        assert_eq!(
            cells("v1", "Node", node),
            [
                "n1",
                "Ready,SchedulingDisabled",
                "control-plane,master",
                "3d",
                "v1.33.0",
                "10.0.0.2",
                "<none>",
                "Debian GNU/Linux 12 (bookworm)",
                "6.1.0",
                "gantry://0.1.0"
            ]
            .map(|s| json!(s))
            .to_vec()
        );
        assert_eq!(
            cells("v1", "Node", json!({"metadata": {"name": "n2"}}))[1],
            "Unknown"
        );
    }

    #[test]
    fn config_objects_count_their_data() {
        let created = ago(Duration::from_secs(5));
        let cm = json!({"metadata": {"name": "cfg", "creationTimestamp": created}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(
            cells("v1", "ConfigMap", cm),
            vec![json!("cfg"), json!(3), json!("5s")]
        );
        let secret = json!({"metadata": {"name": "s", "creationTimestamp": created}, "type": "Opaque", "data": {"k": "dg=="}});
        assert_eq!(
            cells("v1", "Secret", secret),
            vec![json!("s"), json!("Opaque"), json!(1), json!("5s")]
        );
        let sa = json!({"metadata": {"name": "default", "creationTimestamp": created}});
        assert_eq!(
            cells("v1", "ServiceAccount", sa),
            vec![json!("default"), json!(0), json!("5s")]
        );
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": created}, "status": {"phase": "Active"}});
        assert_eq!(
            cells("v1", "Namespace", ns),
            vec![json!("default"), json!("Active"), json!("5s")]
        );
    }

    #[test]
    fn event_rows_name_the_object() {
        let event = json!({
            "metadata": {"name": "web.17a", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
            "reason": "Pulled", "type": "Normal", "message": "Successfully pulled image \"nginx\"\n",
            "source": {"component": "kubelet", "host": "node1"},
            "firstTimestamp": ago(Duration::from_secs(120)), "lastTimestamp": ago(Duration::from_secs(30)), "count": 2,
        });
        let t = table("v1", "Event", &[event]);
        let names: Vec<(String, u64)> = column_names(&t);
        assert_eq!(names[0], ("Last Seen".to_string(), 0));
        assert_eq!(names[4], ("Subobject".to_string(), 1));
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "30s",
                "Normal",
                "Pulled",
                "pod/web",
                "spec.containers{app}",
                "kubelet, node1",
                "Successfully pulled image \"nginx\"",
                "2m",
                2,
                "web.17a"
            ])
        );
    }

    #[test]
    fn endpoints_and_slices_list_addresses() {
        let endpoints = json!({"metadata": {"name": "web"}, "subsets": [{
            "addresses": [{"ip": "10.42.0.1"}, {"ip": "10.42.0.2"}, {"ip": "10.42.0.3"}, {"ip": "10.42.0.4"}],
            "ports": [{"port": 80, "protocol": "TCP"}],
        }]});
        assert_eq!(
            cells("v1", "Endpoints", endpoints)[1],
            "10.42.0.1:80,10.42.0.2:80,10.42.0.3:80 + 1 more..."
        );
        assert_eq!(
            cells("v1", "Endpoints", json!({"metadata": {"name": "e"}}))[1],
            "<none>"
        );
        let slice = json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4",
            "ports": [{"port": 80, "protocol": "TCP"}], "endpoints": [{"addresses": ["10.42.0.1"]}, {"addresses": ["10.42.0.2"]}]});
        let row = cells("discovery.k8s.io/v1", "EndpointSlice", slice);
        assert_eq!(
            row[1..4],
            [json!("IPv4"), json!("80"), json!("10.42.0.1,10.42.0.2")]
        );
    }

    #[test]
    fn storage_and_lease_rows() {
        let pvc = json!({"metadata": {"name": "data"}, "spec": {"volumeName": "pv1", "storageClassName": "local", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}});
        let row = cells("v1", "PersistentVolumeClaim", pvc);
        assert_eq!(
            row[1..7],
            ["Bound", "pv1", "1Gi", "RWO", "local", "<unset>"].map(|s| json!(s))
        );
        let pv = json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
            "persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": "default", "name": "data"}}, "status": {"phase": "Bound"}});
        let row = cells("v1", "PersistentVolume", pv);
        assert_eq!(
            row[1..6],
            ["1Gi", "RWO,ROX", "Retain", "Bound", "default/data"].map(|s| json!(s))
        );
        let lease = json!({"metadata": {"name": "node1"}, "spec": {"holderIdentity": "node1"}});
        assert_eq!(cells("coordination.k8s.io/v1", "Lease", lease)[1], "node1");
    }

    #[test]
    fn every_row_has_one_cell_per_column() {
        for resource in crate::registry::RESOURCES {
            let t = to_table(resource, &[json!({"metadata": {"name": "x"}})], now());
            let columns = t["columnDefinitions"].as_array().map(Vec::len);
            let cells = t["rows"][0]["cells"].as_array().map(Vec::len);
            assert_eq!(columns, cells, "{}", resource.kind);
            assert_eq!(
                t["rows"][0]["cells"]
                    .as_array()
                    .and_then(|c| c.iter().find(|v| v == &&json!("x"))),
                Some(&json!("x"))
            );
        }
    }
}
