//! Field defaulting, as kube-apiserver's generated defaulters (and the
//! admission plugins every cluster runs) apply it.
//!
//! Clients compare what they sent with what comes back (`kubectl apply`,
//! `kubectl diff`, controllers reading `spec.replicas`), so stored objects
//! must carry the same defaults a real cluster would write. Defaulting works
//! on the JSON form and only fills fields that are absent, so it is
//! idempotent and safe to run again on updates.

use serde_json::{Map, Value, json};

use crate::registry::ResourceInfo;

/// Fills in every field Kubernetes defaults for `resource`'s kind.
///
/// Objects that are not JSON objects are left alone; validation rejects them.
pub fn apply_defaults(resource: &ResourceInfo, object: &mut Value) {
    let Some(obj) = object.as_object_mut() else {
        return;
    };
    if !resource.namespaced {
        clear_namespace(obj);
    }
    match resource.kind {
        "Pod" => default_pod(obj),
        "Deployment" => default_deployment(obj),
        "ReplicaSet" => default_replica_set(obj),
        "StatefulSet" => default_stateful_set(obj),
        "DaemonSet" => default_daemon_set(obj),
        "Service" => default_service(obj),
        "Secret" => default_secret(obj),
        "Namespace" => default_namespace(obj),
        "PersistentVolumeClaim" => default_pvc(obj),
        "PersistentVolume" => default_pv(obj),
        "Node" => default_node(obj),
        "Endpoints" => default_endpoints(obj),
        "EndpointSlice" => default_endpoint_slice(obj),
        "Job" => default_job(obj),
        "CronJob" => default_cron_job(obj),
        "StorageClass" => default_storage_class(obj),
        "PriorityClass" => default_priority_class(obj),
        "RoleBinding" | "ClusterRoleBinding" => default_role_binding_subjects(obj),
        // Lease, Event, ServiceAccount, ConfigMap and Binding have no
        // defaulted fields in Kubernetes.
        _ => {}
    }
}

/// `SetDefaults_Subject`: Users and Groups belong to the RBAC group, ServiceAccounts to
/// the core group, when the subject does not say.
fn default_role_binding_subjects(obj: &mut Map<String, Value>) {
    let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) else {
        return;
    };
    for subject in subjects.iter_mut().filter_map(Value::as_object_mut) {
        let group = match subject.get("kind").and_then(Value::as_str) {
            Some("User" | "Group") => "rbac.authorization.k8s.io",
            Some("ServiceAccount") => "",
            _ => continue,
        };
        let unset = subject
            .get("apiGroup")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if unset {
            subject.insert("apiGroup".into(), Value::from(group));
        }
    }
}

/// kube-apiserver silently drops `metadata.namespace` from cluster-scoped
/// objects (`EnsureObjectNamespaceMatchesRequestNamespace`), so a manifest
/// that sets one for a Namespace or Node still applies.
fn clear_namespace(obj: &mut Map<String, Value>) {
    if let Some(metadata) = existing(obj, "metadata") {
        metadata.remove("namespace");
    }
}

/// Inserts `value` under `key` unless the key is present and non-null.
fn set_default(obj: &mut Map<String, Value>, key: &str, value: Value) {
    match obj.get(key) {
        Some(v) if !v.is_null() => {}
        _ => {
            obj.insert(key.to_string(), value);
        }
    }
}

/// The object under `key`, created empty if absent; `None` if it holds a
/// non-object (left for validation to report).
fn child<'a>(obj: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    set_default(obj, key, json!({}));
    obj.get_mut(key).and_then(Value::as_object_mut)
}

/// The existing object under `key`, if any.
fn existing<'a>(obj: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    obj.get_mut(key).and_then(Value::as_object_mut)
}

/// Each object element of the array under `key`.
fn each_item<'a>(
    obj: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    obj.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|items| items.iter_mut().filter_map(Value::as_object_mut))
}

fn default_pod(obj: &mut Map<String, Value>) {
    if let Some(spec) = child(obj, "spec") {
        default_pod_spec(spec);
        default_pod_admission(spec);
    }
    let qos = existing(obj, "spec")
        .map(|spec| qos_class(spec))
        .unwrap_or("BestEffort");
    if let Some(status) = child(obj, "status") {
        set_default(status, "phase", json!("Pending"));
        set_default(status, "qosClass", json!(qos));
    }
}

/// What the ServiceAccount, Priority and DefaultTolerationSeconds admission
/// plugins add to every created pod (not to pod templates).
fn default_pod_admission(spec: &mut Map<String, Value>) {
    let account = spec
        .get("serviceAccountName")
        .or_else(|| spec.get("serviceAccount"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    set_default(spec, "serviceAccountName", json!(account));
    set_default(spec, "serviceAccount", json!(account));
    set_default(spec, "priority", json!(0));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    set_default(spec, "tolerations", json!([]));
    if let Some(tolerations) = spec.get_mut("tolerations").and_then(Value::as_array_mut) {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let tolerated = tolerations.iter().any(|t| {
                let t_key = t.get("key").and_then(Value::as_str);
                let effect = t.get("effect").and_then(Value::as_str);
                (t_key == Some(key)
                    || t_key.is_none()
                        && t.get("operator").and_then(Value::as_str) == Some("Exists"))
                    && (effect.is_none() || effect == Some("NoExecute"))
            });
            if !tolerated {
                tolerations.push(json!({
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }));
            }
        }
    }
}

/// The QoS class the pod strategy records in `status.qosClass`.
fn qos_class(spec: &Map<String, Value>) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any_set = false;
    let mut guaranteed = !containers.is_empty();
    for container in containers {
        let resources = container.get("resources");
        let requests = resources
            .and_then(|r| r.get("requests"))
            .and_then(Value::as_object);
        let limits = resources
            .and_then(|r| r.get("limits"))
            .and_then(Value::as_object);
        if requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty()) {
            any_set = true;
        }
        for name in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(name));
            let request = requests.and_then(|r| r.get(name)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (any_set, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// `SetDefaults_PodSpec` and its children, shared by pods and templates.
fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for container in each_item(spec, key) {
            default_container(container);
            if host_network {
                // With the host's network the container port is the host port.
                for port in each_item(container, "ports") {
                    if port.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0
                        && let Some(container_port) = port.get("containerPort").cloned()
                    {
                        port.insert("hostPort".into(), container_port);
                    }
                }
            }
        }
    }
    for volume in each_item(spec, "volumes") {
        default_volume(volume);
    }
}

fn default_container(container: &mut Map<String, Value>) {
    set_default(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    set_default(container, "terminationMessagePolicy", json!("File"));
    let policy = image_pull_policy(container.get("image").and_then(Value::as_str).unwrap_or(""));
    set_default(container, "imagePullPolicy", json!(policy));
    set_default(container, "resources", json!({}));
    for port in each_item(container, "ports") {
        set_default(port, "protocol", json!("TCP"));
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = existing(container, probe) {
            default_probe(probe);
        }
    }
    for env in each_item(container, "env") {
        if let Some(field_ref) =
            existing(env, "valueFrom").and_then(|from| existing(from, "fieldRef"))
        {
            set_default(field_ref, "apiVersion", json!("v1"));
        }
    }
}

/// `Always` for `:latest` or untagged images, else `IfNotPresent`.
fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    match last_segment.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_probe(probe: &mut Map<String, Value>) {
    set_default(probe, "timeoutSeconds", json!(1));
    set_default(probe, "periodSeconds", json!(10));
    set_default(probe, "successThreshold", json!(1));
    set_default(probe, "failureThreshold", json!(3));
    if let Some(http) = existing(probe, "httpGet") {
        set_default(http, "path", json!("/"));
        set_default(http, "scheme", json!("HTTP"));
    }
    if let Some(grpc) = existing(probe, "grpc") {
        set_default(grpc, "service", json!(""));
    }
}

fn default_volume(volume: &mut Map<String, Value>) {
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(source) = existing(volume, source) {
            set_default(source, "defaultMode", json!(420));
        }
    }
    if let Some(host_path) = existing(volume, "hostPath") {
        set_default(host_path, "type", json!(""));
    }
    if let Some(downward) = existing(volume, "downwardAPI") {
        for item in each_item(downward, "items") {
            if let Some(field_ref) = existing(item, "fieldRef") {
                set_default(field_ref, "apiVersion", json!("v1"));
            }
        }
    }
}

/// Defaults the pod template under `spec.template`.
fn default_template(spec: &mut Map<String, Value>) {
    if let Some(template) = existing(spec, "template")
        && let Some(pod_spec) = existing(template, "spec")
    {
        default_pod_spec(pod_spec);
    }
}

fn default_deployment(obj: &mut Map<String, Value>) {
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    if let Some(strategy) = child(spec, "strategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
            && let Some(rolling) = child(strategy, "rollingUpdate")
        {
            set_default(rolling, "maxUnavailable", json!("25%"));
            set_default(rolling, "maxSurge", json!("25%"));
        }
    }
    default_template(spec);
}

fn default_replica_set(obj: &mut Map<String, Value>) {
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    default_template(spec);
}

fn default_stateful_set(obj: &mut Map<String, Value>) {
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
    set_default(spec, "revisionHistoryLimit", json!(10));
    if let Some(strategy) = child(spec, "updateStrategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
            && let Some(rolling) = child(strategy, "rollingUpdate")
        {
            set_default(rolling, "partition", json!(0));
        }
    }
    if let Some(retention) = child(spec, "persistentVolumeClaimRetentionPolicy") {
        set_default(retention, "whenDeleted", json!("Retain"));
        set_default(retention, "whenScaled", json!("Retain"));
    }
    for claim in each_item(spec, "volumeClaimTemplates") {
        set_default(claim, "apiVersion", json!("v1"));
        set_default(claim, "kind", json!("PersistentVolumeClaim"));
        if let Some(claim_spec) = child(claim, "spec") {
            set_default(claim_spec, "volumeMode", json!("Filesystem"));
        }
        if let Some(status) = child(claim, "status") {
            set_default(status, "phase", json!("Pending"));
        }
    }
    default_template(spec);
}

fn default_daemon_set(obj: &mut Map<String, Value>) {
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    set_default(spec, "revisionHistoryLimit", json!(10));
    if let Some(strategy) = child(spec, "updateStrategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
            && let Some(rolling) = child(strategy, "rollingUpdate")
        {
            set_default(rolling, "maxUnavailable", json!(1));
            set_default(rolling, "maxSurge", json!(0));
        }
    }
    default_template(spec);
}

/// `SetDefaults_Job` plus the selector the Job strategy generates on create
/// when `manualSelector` is not true: pods are selected by the Job's uid, and
/// carry both the current and the legacy name and uid labels.
fn default_job(obj: &mut Map<String, Value>) {
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let uid = obj
        .get("metadata")
        .and_then(|m| m.get("uid"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    let unset = |spec: &Map<String, Value>, key: &str| spec.get(key).is_none_or(Value::is_null);
    if unset(spec, "completions") && unset(spec, "parallelism") {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    let backoff_limit = if unset(spec, "backoffLimitPerIndex") {
        6
    } else {
        i64::from(i32::MAX)
    };
    set_default(spec, "backoffLimit", json!(backoff_limit));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    let replacement = if unset(spec, "podFailurePolicy") {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    set_default(spec, "podReplacementPolicy", json!(replacement));
    set_default(spec, "manualSelector", json!(false));
    if spec.get("manualSelector").and_then(Value::as_bool) != Some(true) && !uid.is_empty() {
        generate_job_selector(spec, &name, &uid);
    }
    default_template(spec);
}

/// The Job strategy's `generateSelector`: labels the user did not set are
/// added; a conflicting one is left for validation to reject.
fn generate_job_selector(spec: &mut Map<String, Value>, name: &str, uid: &str) {
    if let Some(template) = child(spec, "template")
        && let Some(metadata) = child(template, "metadata")
        && let Some(labels) = child(metadata, "labels")
    {
        for key in ["job-name", "batch.kubernetes.io/job-name"] {
            set_default(labels, key, json!(name));
        }
        for key in ["controller-uid", "batch.kubernetes.io/controller-uid"] {
            set_default(labels, key, json!(uid));
        }
    }
    if let Some(selector) = child(spec, "selector")
        && let Some(match_labels) = child(selector, "matchLabels")
    {
        set_default(
            match_labels,
            "batch.kubernetes.io/controller-uid",
            json!(uid),
        );
    }
}

/// `SetDefaults_CronJob`; the Job template's pod template gets the pod spec
/// defaults, but not the Job defaults (those apply when the Job is created).
fn default_cron_job(obj: &mut Map<String, Value>) {
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    set_default(spec, "concurrencyPolicy", json!("Allow"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "successfulJobsHistoryLimit", json!(3));
    set_default(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(job_template) = existing(spec, "jobTemplate")
        && let Some(job_spec) = existing(job_template, "spec")
    {
        default_template(job_spec);
    }
}

fn default_storage_class(obj: &mut Map<String, Value>) {
    set_default(obj, "reclaimPolicy", json!("Delete"));
    set_default(obj, "volumeBindingMode", json!("Immediate"));
}

fn default_priority_class(obj: &mut Map<String, Value>) {
    set_default(obj, "preemptionPolicy", json!("PreemptLowerPriority"));
}

fn default_service(obj: &mut Map<String, Value>) {
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    for port in each_item(spec, "ports") {
        set_default(port, "protocol", json!("TCP"));
        // `SetDefaults_Service`: an unset, zero or empty targetPort means "same as port".
        let unset = matches!(port.get("targetPort"), None | Some(Value::Null))
            || port.get("targetPort") == Some(&json!(0))
            || port.get("targetPort") == Some(&json!(""));
        if unset && let Some(number) = port.get("port").cloned() {
            port.insert("targetPort".into(), number);
        }
    }
    if service_type == "ExternalName" {
        return;
    }
    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
    set_default(spec, "ipFamilies", json!(["IPv4"]));
    set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    if service_type == "NodePort" || service_type == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if service_type == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if let Some(status) = child(obj, "status") {
        set_default(status, "loadBalancer", json!({}));
    }
}

/// Sets the type and folds write-only `stringData` into `data`, as the v1 to
/// internal conversion does: stored secrets only ever carry `data`.
fn default_secret(obj: &mut Map<String, Value>) {
    set_default(obj, "type", json!("Opaque"));
    let Some(Value::Object(string_data)) = obj.remove("stringData") else {
        return;
    };
    if string_data.is_empty() {
        return;
    }
    let Some(data) = child(obj, "data") else {
        return;
    };
    for (key, value) in string_data {
        let bytes = value.as_str().unwrap_or_default().as_bytes().to_vec();
        if let Ok(encoded) = serde_json::to_value(k8s_openapi::ByteString(bytes)) {
            data.insert(key, encoded);
        }
    }
}

fn default_namespace(obj: &mut Map<String, Value>) {
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if let (Some(name), Some(metadata)) = (name, child(obj, "metadata"))
        && let Some(labels) = child(metadata, "labels")
    {
        // The NamespaceDefaultLabelName defaulter always (re)sets it.
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
    if let Some(spec) = child(obj, "spec") {
        set_default(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = child(obj, "status") {
        set_default(status, "phase", json!("Active"));
    }
}

fn default_pvc(obj: &mut Map<String, Value>) {
    if let Some(spec) = child(obj, "spec") {
        set_default(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = child(obj, "status") {
        set_default(status, "phase", json!("Pending"));
    }
}

fn default_pv(obj: &mut Map<String, Value>) {
    if let Some(spec) = child(obj, "spec") {
        set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        set_default(spec, "volumeMode", json!("Filesystem"));
        if let Some(host_path) = existing(spec, "hostPath") {
            set_default(host_path, "type", json!(""));
        }
    }
    if let Some(status) = child(obj, "status") {
        set_default(status, "phase", json!("Pending"));
    }
}

fn default_node(obj: &mut Map<String, Value>) {
    let Some(status) = existing(obj, "status") else {
        return;
    };
    // `SetDefaults_NodeStatus`: allocatable defaults to capacity.
    if let Some(capacity) = status.get("capacity").cloned() {
        set_default(status, "allocatable", capacity);
    }
}

fn default_endpoints(obj: &mut Map<String, Value>) {
    for subset in each_item(obj, "subsets") {
        for port in each_item(subset, "ports") {
            set_default(port, "protocol", json!("TCP"));
        }
    }
}

fn default_endpoint_slice(obj: &mut Map<String, Value>) {
    for port in each_item(obj, "ports") {
        set_default(port, "protocol", json!("TCP"));
        set_default(port, "name", json!(""));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find_by_kind;

    fn defaulted(api_version: &str, kind: &str, mut object: Value) -> Value {
        let resource = find_by_kind(api_version, kind).expect("kind is served");
        apply_defaults(resource, &mut object);
        object
    }

    /// The container a v1.33 cluster stores for `{name: web, image: nginx}`.
    fn defaulted_container() -> Value {
        json!({
            "name": "web",
            "image": "nginx",
            "imagePullPolicy": "Always",
            "ports": [{"containerPort": 80, "protocol": "TCP"}],
            "resources": {},
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
        })
    }

    fn minimal_container() -> Value {
        json!({"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]})
    }

    #[test]
    fn minimal_deployment_matches_kubernetes() {
        let got = defaulted(
            "apps/v1",
            "Deployment",
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [minimal_container()]}},
                },
            }),
        );
        let want = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "progressDeadlineSeconds": 600,
                "replicas": 1,
                "revisionHistoryLimit": 10,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [defaulted_container()],
                        "dnsPolicy": "ClusterFirst",
                        "enableServiceLinks": true,
                        "restartPolicy": "Always",
                        "schedulerName": "default-scheduler",
                        "securityContext": {},
                        "terminationGracePeriodSeconds": 30,
                    },
                },
            },
        });
        assert_eq!(got, want);
    }

    #[test]
    fn job_gets_upstream_defaults_and_a_generated_selector() {
        let got = defaulted(
            "batch/v1",
            "Job",
            json!({
                "metadata": {"name": "pi", "namespace": "default", "uid": "u-1"},
                "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [minimal_container()]}}},
            }),
        );
        let spec = &got["spec"];
        assert_eq!(spec["completions"], 1);
        assert_eq!(spec["parallelism"], 1);
        assert_eq!(spec["backoffLimit"], 6);
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["manualSelector"], false);
        assert_eq!(
            spec["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        assert_eq!(
            spec["template"]["metadata"]["labels"],
            json!({
                "batch.kubernetes.io/controller-uid": "u-1",
                "batch.kubernetes.io/job-name": "pi",
                "controller-uid": "u-1",
                "job-name": "pi",
            })
        );
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(spec["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    }

    #[test]
    fn job_with_parallelism_only_keeps_completions_unset() {
        let got = defaulted(
            "batch/v1",
            "Job",
            json!({"metadata": {"name": "w", "uid": "u"}, "spec": {"parallelism": 3, "template": {}}}),
        );
        assert!(got["spec"].get("completions").is_none());
        assert_eq!(got["spec"]["parallelism"], 3);
    }

    #[test]
    fn manual_selector_is_left_alone() {
        let got = defaulted(
            "batch/v1",
            "Job",
            json!({"metadata": {"name": "m", "uid": "u"}, "spec": {
                "manualSelector": true,
                "selector": {"matchLabels": {"app": "m"}},
                "template": {"metadata": {"labels": {"app": "m"}}},
            }}),
        );
        assert_eq!(
            got["spec"]["selector"],
            json!({"matchLabels": {"app": "m"}})
        );
        assert_eq!(
            got["spec"]["template"]["metadata"]["labels"],
            json!({"app": "m"})
        );
    }

    #[test]
    fn cron_job_storage_class_and_priority_class_defaults() {
        let cron = defaulted(
            "batch/v1",
            "CronJob",
            json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": [minimal_container()]}}}}}}),
        );
        assert_eq!(cron["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(cron["spec"]["suspend"], false);
        assert_eq!(cron["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(cron["spec"]["failedJobsHistoryLimit"], 1);
        assert!(
            cron["spec"]["jobTemplate"]["spec"]
                .get("backoffLimit")
                .is_none()
        );
        assert_eq!(
            cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["schedulerName"],
            "default-scheduler"
        );
        let sc = defaulted(
            "storage.k8s.io/v1",
            "StorageClass",
            json!({"provisioner": "x"}),
        );
        assert_eq!(sc["reclaimPolicy"], "Delete");
        assert_eq!(sc["volumeBindingMode"], "Immediate");
        let pc = defaulted("scheduling.k8s.io/v1", "PriorityClass", json!({"value": 5}));
        assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");
    }

    #[test]
    fn minimal_pod_matches_kubernetes() {
        let got = defaulted(
            "v1",
            "Pod",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [minimal_container()]}}),
        );
        let want = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {
                "containers": [defaulted_container()],
                "dnsPolicy": "ClusterFirst",
                "enableServiceLinks": true,
                "preemptionPolicy": "PreemptLowerPriority",
                "priority": 0,
                "restartPolicy": "Always",
                "schedulerName": "default-scheduler",
                "securityContext": {},
                "serviceAccount": "default",
                "serviceAccountName": "default",
                "terminationGracePeriodSeconds": 30,
                "tolerations": [
                    {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
                    {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300},
                ],
            },
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        });
        assert_eq!(got, want);
    }

    #[test]
    fn minimal_service_matches_kubernetes() {
        let got = defaulted(
            "v1",
            "Service",
            json!({"metadata": {"name": "s"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}, {"port": 81, "targetPort": 0}]}}),
        );
        let want = json!({
            "metadata": {"name": "s"},
            "spec": {
                "internalTrafficPolicy": "Cluster",
                "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack",
                "ports": [
                    {"port": 80, "protocol": "TCP", "targetPort": 80},
                    {"port": 81, "protocol": "TCP", "targetPort": 81},
                ],
                "selector": {"app": "web"},
                "sessionAffinity": "None",
                "type": "ClusterIP",
            },
            "status": {"loadBalancer": {}},
        });
        assert_eq!(got, want);
    }

    #[test]
    fn explicit_values_are_kept_and_defaulting_is_idempotent() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": "builder",
            "containers": [{"name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never"}],
        }});
        let once = defaulted("v1", "Pod", pod);
        assert_eq!(once["spec"]["restartPolicy"], "Never");
        assert_eq!(once["spec"]["serviceAccount"], "builder");
        assert_eq!(once["spec"]["containers"][0]["imagePullPolicy"], "Never");
        assert_eq!(defaulted("v1", "Pod", once.clone()), once);
    }

    #[test]
    fn secret_string_data_is_folded_into_data() {
        let secret = defaulted(
            "v1",
            "Secret",
            json!({"metadata": {"name": "s"}, "data": {"a": "eA==", "b": "eA=="}, "stringData": {"b": "hello"}}),
        );
        assert_eq!(
            secret,
            json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "eA==", "b": "aGVsbG8="}})
        );
    }

    #[test]
    fn host_network_pods_get_host_ports() {
        let pod = defaulted(
            "v1",
            "Pod",
            json!({"spec": {"hostNetwork": true,
            "containers": [{"name": "c", "image": "x:1", "ports": [{"containerPort": 8080}]}]}}),
        );
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["hostPort"], 8080);
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        assert_eq!(image_pull_policy("nginx"), "Always");
        assert_eq!(image_pull_policy("nginx:latest"), "Always");
        assert_eq!(image_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(image_pull_policy("localhost:5000/app"), "Always");
        assert_eq!(image_pull_policy("localhost:5000/app:v1"), "IfNotPresent");
        assert_eq!(image_pull_policy("nginx@sha256:abcd"), "IfNotPresent");
    }

    #[test]
    fn qos_class_reflects_resources() {
        let pod = |resources: Value| {
            defaulted(
                "v1",
                "Pod",
                json!({"spec": {"containers": [{"name": "c", "image": "x", "resources": resources}]}}),
            )
        };
        let both = json!({"cpu": "1", "memory": "1Gi"});
        assert_eq!(
            pod(json!({"limits": both}))["status"]["qosClass"],
            "Guaranteed"
        );
        assert_eq!(
            pod(json!({"requests": {"cpu": "1"}}))["status"]["qosClass"],
            "Burstable"
        );
        assert_eq!(pod(json!({}))["status"]["qosClass"], "BestEffort");
    }

    #[test]
    fn probes_and_volumes_get_defaults() {
        let pod = defaulted(
            "v1",
            "Pod",
            json!({"spec": {
                "containers": [{"name": "c", "image": "x:1", "livenessProbe": {"httpGet": {"port": 80}}}],
                "volumes": [{"name": "s", "secret": {"secretName": "s"}}, {"name": "h", "hostPath": {"path": "/tmp"}}],
            }}),
        );
        let probe = &pod["spec"]["containers"][0]["livenessProbe"];
        assert_eq!(probe["httpGet"]["scheme"], "HTTP");
        assert_eq!(probe["httpGet"]["path"], "/");
        assert_eq!(probe["failureThreshold"], 3);
        assert_eq!(pod["spec"]["volumes"][0]["secret"]["defaultMode"], 420);
        assert_eq!(pod["spec"]["volumes"][1]["hostPath"]["type"], "");
    }

    #[test]
    fn other_kinds_get_their_defaults() {
        let ns = defaulted(
            "v1",
            "Namespace",
            json!({"metadata": {"name": "team", "namespace": "default"}}),
        );
        assert!(ns["metadata"].get("namespace").is_none());
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team"
        );

        assert_eq!(
            defaulted("v1", "Secret", json!({"metadata": {"name": "s"}}))["type"],
            "Opaque"
        );
        let pvc = defaulted("v1", "PersistentVolumeClaim", json!({"spec": {}}));
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");

        let sts = defaulted("apps/v1", "StatefulSet", json!({"spec": {}}));
        assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            sts["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );

        let ds = defaulted("apps/v1", "DaemonSet", json!({"spec": {}}));
        assert_eq!(
            ds["spec"]["updateStrategy"]["rollingUpdate"],
            json!({"maxUnavailable": 1, "maxSurge": 0})
        );

        let external = defaulted(
            "v1",
            "Service",
            json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}),
        );
        assert!(external["spec"].get("ipFamilies").is_none());

        let node = defaulted("v1", "Node", json!({"status": {"capacity": {"cpu": "2"}}}));
        assert_eq!(node["status"]["allocatable"], json!({"cpu": "2"}));
    }
}
