//! Object validation, as kube-apiserver's `ValidateX`/`ValidateXUpdate`
//! functions do it.
//!
//! Users learn what they got wrong from the `Invalid` status: every problem
//! is reported at once, each with the JSON path of its field, so
//! `kubectl apply` prints the same list a real cluster would.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::quantity::Quantity;
use crate::registry::ResourceInfo;
use crate::status::{ApiError, Cause};

/// Checks `object` (already defaulted) against the rules Kubernetes applies
/// to its kind; `old` is the stored object on update and patch.
///
/// Objects whose fields have the wrong JSON types are `BadRequest`, like
/// kube-apiserver's decoding errors; rule violations are `Invalid` (422) with
/// one cause per problem.
#[allow(
    clippy::result_large_err,
    reason = "ApiError is the API server's error type; validation is not a hot path"
)]
pub fn validate(
    resource: &ResourceInfo,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    check_structure(resource, object)?;
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut errors = Errors::default();
    validate_metadata(resource, object, &mut errors);
    if let Some(old) = old {
        validate_metadata_update(object, old, &mut errors);
    }
    validate_kind(resource.kind, object, old, &mut errors);
    if errors.0.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            resource.group_version.group,
            resource.kind,
            name,
            errors.0,
        ))
    }
}

/// The causes found so far.
#[derive(Default)]
struct Errors(Vec<Cause>);

impl Errors {
    fn push(&mut self, cause: Cause) {
        self.0.push(cause);
    }

    fn required(&mut self, field: impl Into<String>) {
        self.push(Cause::required(field));
    }

    /// `Required value: detail`, when Kubernetes explains what is missing.
    fn required_with(&mut self, field: impl Into<String>, detail: &str) {
        self.push(cause(
            "FieldValueRequired",
            field,
            format!("Required value: {detail}"),
        ));
    }

    /// `Invalid value: "value": detail`, for string values.
    fn invalid(
        &mut self,
        field: impl Into<String>,
        value: impl std::fmt::Display,
        detail: impl std::fmt::Display,
    ) {
        self.push(Cause::invalid(field, value, detail));
    }

    /// `Invalid value: rendered: detail`, for values Kubernetes prints unquoted
    /// (numbers, maps, selectors).
    fn invalid_raw(
        &mut self,
        field: impl Into<String>,
        rendered: impl std::fmt::Display,
        detail: impl std::fmt::Display,
    ) {
        self.push(cause(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {rendered}: {detail}"),
        ));
    }

    fn not_supported(&mut self, field: impl Into<String>, value: &str, supported: &[&str]) {
        self.push(Cause::not_supported(field, value, supported));
    }

    fn duplicate(&mut self, field: impl Into<String>, value: impl std::fmt::Display) {
        self.push(cause(
            "FieldValueDuplicate",
            field,
            format!("Duplicate value: \"{value}\""),
        ));
    }

    fn not_found(&mut self, field: impl Into<String>, value: impl std::fmt::Display) {
        self.push(cause(
            "FieldValueNotFound",
            field,
            format!("Not found: \"{value}\""),
        ));
    }

    fn forbidden(&mut self, field: impl Into<String>, detail: impl Into<String>) {
        self.push(cause(
            "FieldValueForbidden",
            field,
            format!("Forbidden: {}", detail.into()),
        ));
    }

    fn too_long(&mut self, field: impl Into<String>, max: usize) {
        self.push(cause(
            "FieldValueTooLong",
            field,
            format!("Too long: must have at most {max} bytes"),
        ));
    }

    fn immutable(&mut self, field: impl Into<String>, rendered: impl std::fmt::Display) {
        self.invalid_raw(field, rendered, "field is immutable");
    }
}

fn cause(reason: &str, field: impl Into<String>, message: String) -> Cause {
    Cause {
        reason: reason.into(),
        message,
        field: field.into(),
    }
}

// ---------------------------------------------------------------------------
// Structure: the object must decode into its k8s-openapi type.

#[allow(clippy::result_large_err, reason = "see validate")]
fn check_structure(resource: &ResourceInfo, object: &Value) -> Result<(), ApiError> {
    use k8s_openapi::api::{
        apps::v1 as apps, batch::v1 as batch, coordination::v1 as coordination, core::v1 as core,
        discovery::v1 as discovery, rbac::v1 as rbac, scheduling::v1 as scheduling,
        storage::v1 as storage,
    };
    let result = match resource.kind {
        "Namespace" => decode::<core::Namespace>(object),
        "Pod" => decode::<core::Pod>(object),
        "Binding" => decode::<core::Binding>(object),
        "Service" => decode::<core::Service>(object),
        "Endpoints" => decode::<core::Endpoints>(object),
        "ConfigMap" => decode::<core::ConfigMap>(object),
        "Secret" => decode::<core::Secret>(object),
        "ServiceAccount" => decode::<core::ServiceAccount>(object),
        "Node" => decode::<core::Node>(object),
        "Event" => decode::<core::Event>(object),
        "PersistentVolume" => decode::<core::PersistentVolume>(object),
        "PersistentVolumeClaim" => decode::<core::PersistentVolumeClaim>(object),
        "Deployment" => decode::<apps::Deployment>(object),
        "ReplicaSet" => decode::<apps::ReplicaSet>(object),
        "StatefulSet" => decode::<apps::StatefulSet>(object),
        "DaemonSet" => decode::<apps::DaemonSet>(object),
        "ControllerRevision" => decode::<apps::ControllerRevision>(object),
        "Lease" => decode::<coordination::Lease>(object),
        "EndpointSlice" => decode::<discovery::EndpointSlice>(object),
        "Job" => decode::<batch::Job>(object),
        "CronJob" => decode::<batch::CronJob>(object),
        "StorageClass" => decode::<storage::StorageClass>(object),
        "PriorityClass" => decode::<scheduling::PriorityClass>(object),
        "Role" => decode::<rbac::Role>(object),
        "ClusterRole" => decode::<rbac::ClusterRole>(object),
        "RoleBinding" => decode::<rbac::RoleBinding>(object),
        "ClusterRoleBinding" => decode::<rbac::ClusterRoleBinding>(object),
        _ => Ok(()),
    };
    result.map_err(|detail| {
        let kind = resource.kind;
        ApiError::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: {detail}",
            resource.group_version.version
        ))
    })
}

/// Decodes into `T`, naming the offending field on failure.
fn decode<T: DeserializeOwned>(object: &Value) -> Result<(), String> {
    if !object.is_object() {
        return Err("the body must be a JSON object".into());
    }
    // k8s-openapi accepts an absent `apiVersion`/`kind` but not a null one; the
    // server has already matched both to the URL, so drop nulls.
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        for key in ["apiVersion", "kind"] {
            if map.get(key).is_none_or(Value::is_null) {
                map.remove(key);
            }
        }
    }
    match serde_path_to_error::deserialize::<_, T>(&object) {
        Ok(_) => Ok(()),
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner().to_string();
            if path == "." || path.is_empty() {
                Err(inner)
            } else {
                Err(format!("{path}: {inner}"))
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Names, labels and annotations.

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const TOTAL_ANNOTATION_BYTES: usize = 256 * 1024;
const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// Which name rule a kind's `metadata.name` follows.
#[derive(Clone, Copy)]
enum NameRule {
    Dns1123Label,
    Dns1123Subdomain,
    Dns1035Label,
    /// RBAC objects only need names usable in a URL path (`system:node` is valid).
    PathSegment,
}

fn name_rule(kind: &str) -> NameRule {
    match kind {
        "Namespace" => NameRule::Dns1123Label,
        "Service" => NameRule::Dns1035Label,
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => NameRule::PathSegment,
        _ => NameRule::Dns1123Subdomain,
    }
}

/// The problems with `value` under `rule`, as Kubernetes words them.
fn name_problems(value: &str, rule: NameRule) -> Vec<String> {
    let (max, ok, msg) = match rule {
        NameRule::Dns1123Label => (63, is_dns1123_label(value), DNS1123_LABEL_MSG),
        NameRule::Dns1123Subdomain => (253, is_dns1123_subdomain(value), DNS1123_SUBDOMAIN_MSG),
        NameRule::Dns1035Label => (63, is_dns1035_label(value), DNS1035_LABEL_MSG),
        NameRule::PathSegment => return path_segment_problems(value),
    };
    let mut problems = Vec::new();
    if value.len() > max {
        problems.push(format!("must be no more than {max} characters"));
    }
    if !ok {
        problems.push(msg.to_string());
    }
    problems
}

/// apimachinery's `IsValidPathSegmentName`.
fn path_segment_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value == "." || value == ".." {
        problems.push(format!("may not be '{value}'"));
    }
    for bad in ["/", "%"] {
        if value.contains(bad) {
            problems.push(format!("may not contain '{bad}'"));
        }
    }
    problems
}

fn check_name(errors: &mut Errors, field: &str, value: &str, rule: NameRule) {
    for problem in name_problems(value, rule) {
        errors.invalid(field, value, problem);
    }
}

fn is_label_body(s: &str, first: fn(u8) -> bool) -> bool {
    let bytes = s.as_bytes();
    let (Some(&head), Some(&tail)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    first(head)
        && (tail.is_ascii_lowercase() || tail.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_label_body(s, |b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn is_dns1035_label(s: &str) -> bool {
    s.len() <= 63 && is_label_body(s, |b| b.is_ascii_lowercase())
}

/// Whether `s` is a valid object name for most kinds (RFC 1123 subdomain, at most 253 characters).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.')
            .all(|part| is_label_body(part, |b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    let (Some(head), Some(tail)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    head.is_ascii_alphanumeric()
        && tail.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Label and annotation keys: an optional DNS subdomain prefix and a name.
fn check_qualified_name(errors: &mut Errors, field: &str, key: &str) {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            errors.invalid(field, key, "prefix part must be non-empty");
        } else if !is_dns1123_subdomain(prefix) {
            errors.invalid(field, key, format!("prefix part {DNS1123_SUBDOMAIN_MSG}"));
        }
    }
    if name.is_empty() {
        errors.invalid(field, key, "name part must be non-empty");
    } else {
        if name.len() > 63 {
            errors.invalid(field, key, "name part must be no more than 63 characters");
        }
        if !is_qualified_name_part(name) {
            errors.invalid(field, key, QUALIFIED_NAME_MSG);
        }
    }
}

fn check_labels(errors: &mut Errors, field: &str, labels: Option<&Value>) {
    let Some(labels) = labels.and_then(Value::as_object) else {
        return;
    };
    for (key, value) in labels {
        check_qualified_name(errors, field, key);
        let value = value.as_str().unwrap_or("");
        if value.len() > 63 {
            errors.invalid(field, value, "must be no more than 63 characters");
        }
        if !value.is_empty() && !is_qualified_name_part(value) {
            errors.invalid(field, value, LABEL_VALUE_MSG);
        }
    }
}

fn check_annotations(errors: &mut Errors, field: &str, annotations: Option<&Value>) {
    let Some(annotations) = annotations.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0;
    for (key, value) in annotations {
        check_qualified_name(errors, field, &key.to_lowercase());
        total += key.len() + value.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_BYTES {
        errors.too_long(field, TOTAL_ANNOTATION_BYTES);
    }
}

fn validate_metadata(resource: &ResourceInfo, object: &Value, errors: &mut Errors) {
    let metadata = object.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        errors.push(cause(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required".into(),
        ));
    } else {
        check_name(errors, "metadata.name", name, name_rule(resource.kind));
    }
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if resource.namespaced {
        if namespace.is_empty() {
            errors.required("metadata.namespace");
        } else {
            check_name(
                errors,
                "metadata.namespace",
                namespace,
                NameRule::Dns1123Label,
            );
        }
    } else if !namespace.is_empty() {
        errors.forbidden("metadata.namespace", "not allowed on this type");
    }
    check_labels(
        errors,
        "metadata.labels",
        metadata.and_then(|m| m.get("labels")),
    );
    check_annotations(
        errors,
        "metadata.annotations",
        metadata.and_then(|m| m.get("annotations")),
    );
}

fn validate_metadata_update(object: &Value, old: &Value, errors: &mut Errors) {
    for field in ["name", "namespace", "uid"] {
        let pointer = format!("/metadata/{field}");
        let new_value = object
            .pointer(&pointer)
            .and_then(Value::as_str)
            .unwrap_or("");
        let old_value = old.pointer(&pointer).and_then(Value::as_str).unwrap_or("");
        // An empty uid on update means "not sent"; the server keeps the old one.
        if new_value != old_value && !(field == "uid" && new_value.is_empty()) {
            errors.immutable(format!("metadata.{field}"), quoted(new_value));
        }
    }
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

// ---------------------------------------------------------------------------
// Per-kind rules.

fn validate_kind(kind: &str, object: &Value, old: Option<&Value>, errors: &mut Errors) {
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let old_spec = old.map(|o| o.get("spec").unwrap_or(&Value::Null));
    match kind {
        "Pod" => {
            validate_pod_spec(spec, "spec", errors);
            if let Some(old_spec) = old_spec {
                validate_pod_spec_update(spec, old_spec, errors);
            }
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            validate_workload(kind, spec, errors);
            if let Some(old_spec) = old_spec {
                validate_workload_update(kind, spec, old_spec, errors);
            }
        }
        "Service" => {
            validate_service(spec, errors);
            if let Some(old_spec) = old_spec {
                validate_service_update(spec, old_spec, errors);
            }
        }
        "ConfigMap" => validate_config_map(object, old, errors),
        "Secret" => validate_secret(object, old, errors),
        "PersistentVolumeClaim" => validate_pvc(spec, old_spec, errors),
        "PersistentVolume" => validate_pv(spec, errors),
        "EndpointSlice" => validate_endpoint_slice(object, old, errors),
        "Lease" => validate_lease(spec, errors),
        "ControllerRevision" => validate_controller_revision(object, old, errors),
        "Job" => {
            validate_job_spec(spec, "spec", errors);
            if let Some(old_spec) = old_spec {
                validate_job_update(spec, old_spec, errors);
            }
        }
        "CronJob" => validate_cron_job(object, errors),
        "StorageClass" => validate_storage_class(object, old, errors),
        "PriorityClass" => validate_priority_class(object, old, errors),
        "Role" => validate_policy_rules(object, true, errors),
        "ClusterRole" => validate_policy_rules(object, false, errors),
        "RoleBinding" | "ClusterRoleBinding" => validate_role_binding(kind, object, old, errors),
        "Event" => validate_event(object, errors),
        "Binding" => validate_binding(object, errors),
        _ => {}
    }
}

fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn items<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = (usize, &'a Value)> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

fn check_port_number(errors: &mut Errors, field: String, port: i64) {
    if !(1..=65535).contains(&port) {
        errors.invalid_raw(field, port, "must be between 1 and 65535, inclusive");
    }
}

fn check_protocol(errors: &mut Errors, field: String, protocol: Option<&str>) {
    match protocol {
        None => errors.required(field),
        Some(p) if !PROTOCOLS.contains(&p) => errors.not_supported(field, p, PROTOCOLS),
        Some(_) => {}
    }
}

/// IANA service names as used for named ports: at most 15 lowercase
/// alphanumerics or '-', with a letter, no leading/trailing or double '-'.
fn check_port_name(errors: &mut Errors, field: String, name: &str) {
    let problem = if name.len() > 15 {
        Some("must be no more than 15 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    } else if name.contains("--") {
        Some("must not contain consecutive hyphens")
    } else if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        Some("must contain at least one letter (a-z)")
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("must not begin or end with a hyphen")
    } else {
        None
    };
    if let Some(problem) = problem {
        errors.invalid(field, name, problem);
    }
}

fn validate_pod_spec(spec: &Value, path: &str, errors: &mut Errors) {
    let mut volumes = BTreeSet::new();
    for (i, volume) in items(spec, "volumes") {
        let field = format!("{path}.volumes[{i}]");
        let name = str_at(volume, "name").unwrap_or("");
        if name.is_empty() {
            errors.required(format!("{field}.name"));
        } else {
            check_name(
                errors,
                &format!("{field}.name"),
                name,
                NameRule::Dns1123Label,
            );
            if !volumes.insert(name.to_string()) {
                errors.duplicate(format!("{field}.name"), name);
            }
        }
        let sources = volume
            .as_object()
            .map_or(0, |v| v.keys().filter(|k| *k != "name").count());
        if sources == 0 {
            errors.required_with(field.clone(), "must specify a volume type");
        } else if sources > 1 {
            errors.forbidden(field, "may not specify more than 1 volume type");
        }
    }

    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(|c| c.is_empty()) {
        errors.required(format!("{path}.containers"));
    }
    let mut names = BTreeSet::new();
    for key in ["initContainers", "containers"] {
        for (i, container) in items(spec, key) {
            validate_container(
                container,
                &format!("{path}.{key}[{i}]"),
                &volumes,
                &mut names,
                errors,
            );
        }
    }

    const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
    match str_at(spec, "restartPolicy") {
        None => errors.required(format!("{path}.restartPolicy")),
        Some(p) if !RESTART_POLICIES.contains(&p) => {
            errors.not_supported(format!("{path}.restartPolicy"), p, RESTART_POLICIES)
        }
        Some(_) => {}
    }
    const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
    if let Some(p) = str_at(spec, "dnsPolicy").filter(|p| !DNS_POLICIES.contains(p)) {
        errors.not_supported(format!("{path}.dnsPolicy"), p, DNS_POLICIES);
    }
    if let Some(seconds) = spec
        .get("activeDeadlineSeconds")
        .and_then(Value::as_i64)
        .filter(|s| *s <= 0)
    {
        errors.invalid_raw(
            format!("{path}.activeDeadlineSeconds"),
            seconds,
            "must be between 1 and 2147483647, inclusive",
        );
    }
    if let Some(seconds) = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .filter(|s| *s < 0)
    {
        errors.invalid_raw(
            format!("{path}.terminationGracePeriodSeconds"),
            seconds,
            "must be greater than or equal to 0",
        );
    }
    if let Some(host) = str_at(spec, "hostname").filter(|h| !h.is_empty()) {
        check_name(
            errors,
            &format!("{path}.hostname"),
            host,
            NameRule::Dns1123Label,
        );
    }
    if let Some(sub) = str_at(spec, "subdomain").filter(|h| !h.is_empty()) {
        check_name(
            errors,
            &format!("{path}.subdomain"),
            sub,
            NameRule::Dns1123Label,
        );
    }
}

fn validate_container(
    container: &Value,
    path: &str,
    volumes: &BTreeSet<String>,
    names: &mut BTreeSet<String>,
    errors: &mut Errors,
) {
    let name = str_at(container, "name").unwrap_or("");
    if name.is_empty() {
        errors.required(format!("{path}.name"));
    } else {
        check_name(
            errors,
            &format!("{path}.name"),
            name,
            NameRule::Dns1123Label,
        );
        if !names.insert(name.to_string()) {
            errors.duplicate(format!("{path}.name"), name);
        }
    }
    if str_at(container, "image").is_none_or(|i| i.trim().is_empty()) {
        errors.required(format!("{path}.image"));
    }
    const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
    if let Some(p) = str_at(container, "imagePullPolicy").filter(|p| !PULL_POLICIES.contains(p)) {
        errors.not_supported(format!("{path}.imagePullPolicy"), p, PULL_POLICIES);
    }
    let mut port_names = BTreeSet::new();
    for (i, port) in items(container, "ports") {
        let field = format!("{path}.ports[{i}]");
        match port.get("containerPort").and_then(Value::as_i64) {
            Some(n) => check_port_number(errors, format!("{field}.containerPort"), n),
            None => errors.required(format!("{field}.containerPort")),
        }
        if let Some(n) = port
            .get("hostPort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0)
        {
            check_port_number(errors, format!("{field}.hostPort"), n);
        }
        check_protocol(
            errors,
            format!("{field}.protocol"),
            str_at(port, "protocol"),
        );
        if let Some(port_name) = str_at(port, "name").filter(|n| !n.is_empty()) {
            check_port_name(errors, format!("{field}.name"), port_name);
            if !port_names.insert(port_name.to_string()) {
                errors.duplicate(format!("{field}.name"), port_name);
            }
        }
    }
    let mut mount_paths = BTreeSet::new();
    for (i, mount) in items(container, "volumeMounts") {
        let field = format!("{path}.volumeMounts[{i}]");
        match str_at(mount, "name").filter(|n| !n.is_empty()) {
            None => errors.required(format!("{field}.name")),
            Some(n) if !volumes.contains(n) => errors.not_found(format!("{field}.name"), n),
            Some(_) => {}
        }
        match str_at(mount, "mountPath").filter(|p| !p.is_empty()) {
            None => errors.required(format!("{field}.mountPath")),
            Some(p) if !mount_paths.insert(p.to_string()) => {
                errors.invalid(format!("{field}.mountPath"), p, "must be unique");
            }
            Some(_) => {}
        }
    }
    for (i, env) in items(container, "env") {
        if str_at(env, "name").is_none_or(str::is_empty) {
            errors.required(format!("{path}.env[{i}].name"));
        }
    }
    if let Some(resources) = container.get("resources") {
        validate_resources(resources, &format!("{path}.resources"), errors);
    }
}

fn validate_resources(resources: &Value, path: &str, errors: &mut Errors) {
    let mut parsed: [BTreeMap<String, f64>; 2] = Default::default();
    for (slot, key) in ["limits", "requests"].iter().enumerate() {
        let Some(map) = resources.get(*key).and_then(Value::as_object) else {
            continue;
        };
        for (resource, quantity) in map {
            let field = format!("{path}.{key}[{resource}]");
            let text = quantity
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| quantity.to_string());
            match parse_quantity(&text) {
                None => errors.invalid(field, &text, "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
                Some(v) if v < 0.0 => errors.invalid(field, &text, "must be greater than or equal to 0"),
                Some(v) => {
                    parsed[slot].insert(resource.clone(), v);
                }
            }
        }
    }
    let [limits, requests] = &parsed;
    for (resource, request) in requests {
        if limits.get(resource).is_some_and(|limit| request > limit) {
            let text = resources
                .pointer(&format!("/requests/{resource}"))
                .map(render_quantity)
                .unwrap_or_default();
            let limit_text = resources
                .pointer(&format!("/limits/{resource}"))
                .map(render_quantity)
                .unwrap_or_default();
            errors.invalid(
                format!("{path}.requests"),
                text,
                format!("must be less than or equal to {resource} limit of {limit_text}"),
            );
        }
    }
}

fn render_quantity(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// Parses a Kubernetes quantity (`100m`, `1.5Gi`, `2e3`) into its value.
fn parse_quantity(text: &str) -> Option<f64> {
    Quantity::parse(text.trim()).ok().map(Quantity::as_f64)
}

/// Pods may change only images, `activeDeadlineSeconds`, and add tolerations.
fn validate_pod_spec_update(spec: &Value, old_spec: &Value, errors: &mut Errors) {
    let mut allowed = old_spec.clone();
    for key in ["containers", "initContainers"] {
        let new_images: Vec<Option<Value>> = items(spec, key)
            .map(|(_, c)| c.get("image").cloned())
            .collect();
        if let Some(old_containers) = allowed.get_mut(key).and_then(Value::as_array_mut) {
            for (container, image) in old_containers.iter_mut().zip(new_images) {
                if let (Some(container), Some(image)) = (container.as_object_mut(), image) {
                    container.insert("image".into(), image);
                }
            }
        }
    }
    if let Some(allowed) = allowed.as_object_mut() {
        match spec.get("activeDeadlineSeconds") {
            Some(v) => allowed.insert("activeDeadlineSeconds".into(), v.clone()),
            None => allowed.remove("activeDeadlineSeconds"),
        };
        let old_tolerations = old_spec
            .get("tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let new_tolerations = spec
            .get("tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if old_tolerations.iter().all(|t| new_tolerations.contains(t)) {
            match spec.get("tolerations") {
                Some(v) => allowed.insert("tolerations".into(), v.clone()),
                None => allowed.remove("tolerations"),
            };
        }
        let old_grace = old_spec
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64);
        if old_grace.is_some_and(|g| g < 0)
            && spec
                .get("terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                == Some(1)
        {
            allowed.insert("terminationGracePeriodSeconds".into(), 1.into());
        }
    }
    if &allowed != spec {
        errors.forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        );
    }
}

// ---------------------------------------------------------------------------
// Workloads.

/// Renders labels the way Go's `%#v` prints `map[string]string`.
fn go_string_map(map: Option<&Value>) -> String {
    let entries = map
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{:?}:{:?}", k, v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    if map.and_then(Value::as_object).is_none() {
        "map[string]string(nil)".into()
    } else {
        format!("map[string]string{{{entries}}}")
    }
}

/// Renders a selector the way Go's `%#v` prints `v1.LabelSelector`.
fn go_label_selector(selector: &Value) -> String {
    let expressions = match selector.get("matchExpressions").and_then(Value::as_array) {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(list) => {
            let rendered = list
                .iter()
                .map(|e| {
                    let values = e
                        .get("values")
                        .and_then(Value::as_array)
                        .map(|v| {
                            let inner = v
                                .iter()
                                .map(|s| format!("{:?}", s.as_str().unwrap_or("")))
                                .collect::<Vec<_>>()
                                .join(", ");
                            format!("[]string{{{inner}}}")
                        })
                        .unwrap_or_else(|| "[]string(nil)".into());
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{:?}, Operator:{:?}, Values:{values}}}",
                        str_at(e, "key").unwrap_or(""),
                        str_at(e, "operator").unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!("[]v1.LabelSelectorRequirement{{{rendered}}}")
        }
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{expressions}}}",
        go_string_map(selector.get("matchLabels"))
    )
}

/// Whether `labels` satisfy `selector` (matchLabels and matchExpressions).
pub(crate) fn selector_matches(selector: &Value, labels: &Map<String, Value>) -> bool {
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    let match_labels_ok = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    let expressions_ok = items(selector, "matchExpressions").all(|(_, e)| {
        let key = str_at(e, "key").unwrap_or("");
        let values: Vec<&str> = items(e, "values").filter_map(|(_, v)| v.as_str()).collect();
        match str_at(e, "operator") {
            Some("In") => label(key).is_some_and(|l| values.contains(&l)),
            Some("NotIn") => label(key).is_none_or(|l| !values.contains(&l)),
            Some("Exists") => label(key).is_some(),
            Some("DoesNotExist") => label(key).is_none(),
            _ => false,
        }
    });
    match_labels_ok && expressions_ok
}

fn validate_selector(selector: &Value, path: &str, errors: &mut Errors) {
    check_labels(
        errors,
        &format!("{path}.matchLabels"),
        selector.get("matchLabels"),
    );
    const OPERATORS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist"];
    for (i, e) in items(selector, "matchExpressions") {
        let field = format!("{path}.matchExpressions[{i}]");
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        match str_at(e, "operator") {
            Some("In" | "NotIn") if values == 0 => {
                errors.required_with(
                    format!("{field}.values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                );
            }
            Some("Exists" | "DoesNotExist") if values > 0 => {
                errors.forbidden(
                    format!("{field}.values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                );
            }
            Some(op) if !OPERATORS.contains(&op) => {
                errors.not_supported(format!("{field}.operator"), op, OPERATORS)
            }
            None => errors.required(format!("{field}.operator")),
            _ => {}
        }
        check_qualified_name(
            errors,
            &format!("{field}.key"),
            str_at(e, "key").unwrap_or(""),
        );
    }
}

fn validate_workload(kind: &str, spec: &Value, errors: &mut Errors) {
    let lower = kind.to_lowercase();
    if let Some(replicas) = spec
        .get("replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r < 0)
    {
        errors.invalid_raw(
            "spec.replicas",
            replicas,
            "must be greater than or equal to 0",
        );
    }
    for key in ["minReadySeconds", "revisionHistoryLimit"] {
        if let Some(v) = spec.get(key).and_then(Value::as_i64).filter(|v| *v < 0) {
            errors.invalid_raw(
                format!("spec.{key}"),
                v,
                "must be greater than or equal to 0",
            );
        }
    }
    let template_labels = spec.pointer("/template/metadata/labels");
    match spec.get("selector").filter(|s| !s.is_null()) {
        None => errors.required("spec.selector"),
        Some(selector) => {
            let empty = selector
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty)
                && selector
                    .get("matchExpressions")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty);
            if empty {
                errors.invalid_raw(
                    "spec.selector",
                    go_label_selector(selector),
                    format!("empty selector is invalid for {lower}"),
                );
            } else {
                validate_selector(selector, "spec.selector", errors);
                let empty_labels = Map::new();
                let labels = template_labels
                    .and_then(Value::as_object)
                    .unwrap_or(&empty_labels);
                if !selector_matches(selector, labels) {
                    errors.invalid_raw(
                        "spec.template.metadata.labels",
                        go_string_map(template_labels),
                        "`selector` does not match template `labels`",
                    );
                }
            }
        }
    }
    let Some(template) = spec.get("template").filter(|t| !t.is_null()) else {
        errors.required("spec.template");
        return;
    };
    check_labels(errors, "spec.template.metadata.labels", template_labels);
    check_annotations(
        errors,
        "spec.template.metadata.annotations",
        template.pointer("/metadata/annotations"),
    );
    let pod_spec = template.get("spec").unwrap_or(&Value::Null);
    validate_pod_spec(pod_spec, "spec.template.spec", errors);
    if let Some(policy) = str_at(pod_spec, "restartPolicy").filter(|p| *p != "Always") {
        errors.not_supported("spec.template.spec.restartPolicy", policy, &["Always"]);
    }
    if pod_spec
        .get("activeDeadlineSeconds")
        .is_some_and(|v| !v.is_null())
    {
        errors.forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        );
    }
    match kind {
        "Deployment" => validate_deployment_strategy(spec, errors),
        "StatefulSet" => {
            const POLICIES: &[&str] = &["OrderedReady", "Parallel"];
            if let Some(p) = str_at(spec, "podManagementPolicy").filter(|p| !POLICIES.contains(p)) {
                errors.not_supported("spec.podManagementPolicy", p, POLICIES);
            }
            check_update_strategy(spec, &["OnDelete", "RollingUpdate"], errors);
        }
        "DaemonSet" => check_update_strategy(spec, &["OnDelete", "RollingUpdate"], errors),
        _ => {}
    }
}

fn check_update_strategy(spec: &Value, supported: &[&str], errors: &mut Errors) {
    if let Some(t) = spec
        .pointer("/updateStrategy/type")
        .and_then(Value::as_str)
        .filter(|t| !supported.contains(t))
    {
        errors.not_supported("spec.updateStrategy.type", t, supported);
    }
}

fn validate_deployment_strategy(spec: &Value, errors: &mut Errors) {
    const TYPES: &[&str] = &["Recreate", "RollingUpdate"];
    let strategy = spec.get("strategy").unwrap_or(&Value::Null);
    match str_at(strategy, "type") {
        Some("Recreate") if strategy.get("rollingUpdate").is_some_and(|r| !r.is_null()) => {
            errors.forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            );
        }
        Some("RollingUpdate") => {
            let surge = strategy.pointer("/rollingUpdate/maxSurge");
            let unavailable = strategy.pointer("/rollingUpdate/maxUnavailable");
            for (key, value) in [("maxSurge", surge), ("maxUnavailable", unavailable)] {
                check_int_or_percent(errors, &format!("spec.strategy.rollingUpdate.{key}"), value);
            }
            if is_zero(surge) && is_zero(unavailable) {
                errors.invalid_raw(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    render_int_or_string(unavailable),
                    "may not be 0 when `maxSurge` is 0",
                );
            }
        }
        Some(t) if !TYPES.contains(&t) => errors.not_supported("spec.strategy.type", t, TYPES),
        _ => {}
    }
    let deadline = spec.get("progressDeadlineSeconds").and_then(Value::as_i64);
    let min_ready = spec
        .get("minReadySeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Some(deadline) = deadline.filter(|d| *d <= min_ready) {
        errors.invalid_raw(
            "spec.progressDeadlineSeconds",
            deadline,
            "must be greater than minReadySeconds",
        );
    }
}

fn render_int_or_string(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => quoted(s),
        Some(v) => v.to_string(),
        None => "0".into(),
    }
}

fn is_zero(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        Some(Value::String(s)) => s == "0%" || s == "0",
        _ => false,
    }
}

fn check_int_or_percent(errors: &mut Errors, field: &str, value: Option<&Value>) {
    match value {
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n < 0) => {
            errors.invalid_raw(field, n, "must be greater than or equal to 0");
        }
        Some(Value::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            None => errors.invalid(field, s, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"),
            Some(p) if !(0..=100).contains(&p) => errors.invalid(field, s, "must not be greater than 100%"),
            Some(_) => {}
        },
        _ => {}
    }
}

fn validate_workload_update(kind: &str, spec: &Value, old_spec: &Value, errors: &mut Errors) {
    let selector = spec.get("selector").unwrap_or(&Value::Null);
    if Some(selector) != old_spec.get("selector").or(Some(&Value::Null)) {
        errors.immutable("spec.selector", go_label_selector(selector));
    }
    if kind == "StatefulSet" {
        const MUTABLE: &[&str] = &[
            "replicas",
            "ordinals",
            "template",
            "updateStrategy",
            "persistentVolumeClaimRetentionPolicy",
            "minReadySeconds",
        ];
        let strip = |s: &Value| {
            let mut s = s.as_object().cloned().unwrap_or_default();
            s.retain(|k, _| !MUTABLE.contains(&k.as_str()));
            s
        };
        if strip(spec) != strip(old_spec) {
            errors.forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            );
        }
    }
}

// ---------------------------------------------------------------------------
// batch/v1: Jobs and CronJobs.

const JOB_RESTART_POLICIES: &[&str] = &["OnFailure", "Never"];
const COMPLETION_MODES: &[&str] = &["NonIndexed", "Indexed"];
const CONCURRENCY_POLICIES: &[&str] = &["Allow", "Forbid", "Replace"];

/// Reports each of `keys` under `spec` that holds a negative number.
fn check_nonnegative(spec: &Value, path: &str, keys: &[&str], errors: &mut Errors) {
    for key in keys {
        if let Some(v) = spec.get(*key).and_then(Value::as_i64).filter(|v| *v < 0) {
            errors.invalid_raw(
                format!("{path}.{key}"),
                v,
                "must be greater than or equal to 0",
            );
        }
    }
}

/// `ValidateJobSpec`, for a Job's spec and a CronJob's `jobTemplate.spec`.
/// A template has no selector yet: the Job strategy generates it on create.
fn validate_job_spec(spec: &Value, path: &str, errors: &mut Errors) {
    check_nonnegative(
        spec,
        path,
        &[
            "parallelism",
            "completions",
            "backoffLimit",
            "ttlSecondsAfterFinished",
        ],
        errors,
    );
    if let Some(deadline) = spec
        .get("activeDeadlineSeconds")
        .and_then(Value::as_i64)
        .filter(|d| *d <= 0)
    {
        errors.invalid_raw(
            format!("{path}.activeDeadlineSeconds"),
            deadline,
            "must be greater than 0",
        );
    }
    let mode = str_at(spec, "completionMode").unwrap_or("NonIndexed");
    if !COMPLETION_MODES.contains(&mode) {
        errors.not_supported(format!("{path}.completionMode"), mode, COMPLETION_MODES);
    } else if mode == "Indexed" && spec.get("completions").is_none_or(Value::is_null) {
        errors.required_with(
            format!("{path}.completions"),
            "when completion mode is Indexed",
        );
    }
    let template_labels = spec.pointer("/template/metadata/labels");
    if let Some(selector) = spec.get("selector").filter(|s| !s.is_null()) {
        let selector_path = format!("{path}.selector");
        validate_selector(selector, &selector_path, errors);
        let empty_labels = Map::new();
        let labels = template_labels
            .and_then(Value::as_object)
            .unwrap_or(&empty_labels);
        if !selector_matches(selector, labels) {
            errors.invalid_raw(
                format!("{path}.template.metadata.labels"),
                go_string_map(template_labels),
                "`selector` does not match template `labels`",
            );
        }
    } else if path == "spec" {
        errors.required("spec.selector");
    }
    let Some(template) = spec.get("template").filter(|t| !t.is_null()) else {
        errors.required(format!("{path}.template"));
        return;
    };
    check_labels(
        errors,
        &format!("{path}.template.metadata.labels"),
        template_labels,
    );
    check_annotations(
        errors,
        &format!("{path}.template.metadata.annotations"),
        template.pointer("/metadata/annotations"),
    );
    let pod_spec_path = format!("{path}.template.spec");
    let pod_spec = template.get("spec").unwrap_or(&Value::Null);
    validate_pod_spec(pod_spec, &pod_spec_path, errors);
    let restart_policy = str_at(pod_spec, "restartPolicy").unwrap_or("");
    if !JOB_RESTART_POLICIES.contains(&restart_policy) {
        errors.not_supported(
            format!("{pod_spec_path}.restartPolicy"),
            restart_policy,
            JOB_RESTART_POLICIES,
        );
    }
}

/// `ValidateJobSpecUpdate`: what selects and shapes the pods is fixed once
/// the Job exists (parallelism, suspend and the deadline may change).
fn validate_job_update(spec: &Value, old_spec: &Value, errors: &mut Errors) {
    let selector = spec.get("selector").unwrap_or(&Value::Null);
    if Some(selector) != old_spec.get("selector").or(Some(&Value::Null)) {
        errors.immutable("spec.selector", go_label_selector(selector));
    }
    if spec.get("template") != old_spec.get("template") {
        errors.immutable("spec.template", "{...}");
    }
    for key in ["completionMode", "completions", "podFailurePolicy"] {
        if spec.get(key) != old_spec.get(key) {
            let rendered = spec.get(key).map_or("null".to_string(), Value::to_string);
            errors.immutable(format!("spec.{key}"), rendered);
        }
    }
}

/// `ValidateCronJob`: the schedule and time zone must resolve, and the Job
/// template must make a valid Job.
fn validate_cron_job(object: &Value, errors: &mut Errors) {
    // The controller appends an 11-character suffix to Job names, which
    // must stay valid label values (63 characters).
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.len() > 52 {
        errors.invalid("metadata.name", name, "must be no more than 52 characters");
    }
    let spec = object.get("spec").unwrap_or(&Value::Null);
    match str_at(spec, "schedule") {
        None | Some("") => errors.required("spec.schedule"),
        Some(schedule) => {
            if let Err(err) = schedule.parse::<crate::cron::CronSchedule>() {
                errors.invalid("spec.schedule", schedule, err);
            }
        }
    }
    if let Some(zone) = str_at(spec, "timeZone")
        && let Err(err) = crate::cron::time_zone(Some(zone))
    {
        errors.invalid("spec.timeZone", zone, err);
    }
    if let Some(policy) =
        str_at(spec, "concurrencyPolicy").filter(|p| !CONCURRENCY_POLICIES.contains(p))
    {
        errors.not_supported("spec.concurrencyPolicy", policy, CONCURRENCY_POLICIES);
    }
    check_nonnegative(
        spec,
        "spec",
        &[
            "startingDeadlineSeconds",
            "successfulJobsHistoryLimit",
            "failedJobsHistoryLimit",
        ],
        errors,
    );
    match spec.pointer("/jobTemplate/spec").filter(|s| !s.is_null()) {
        Some(job_spec) => validate_job_spec(job_spec, "spec.jobTemplate.spec", errors),
        None => errors.required("spec.jobTemplate.spec"),
    }
}

// ---------------------------------------------------------------------------
// rbac.authorization.k8s.io/v1 Roles, ClusterRoles and their bindings.

/// The API group of RBAC roles, the only one a `roleRef` may name.
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Upstream's `ValidatePolicyRule`: every rule names verbs, and a rule of a
/// namespaced Role names resources (with their groups), never non-resource URLs.
/// A ClusterRole with an `aggregationRule` has its rules filled in by a controller.
fn validate_policy_rules(object: &Value, namespaced: bool, errors: &mut Errors) {
    for (i, rule) in items(object, "rules") {
        let field = format!("rules[{i}]");
        let has = |key: &str| {
            rule.get(key)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        };
        if !has("verbs") {
            errors.required_with(
                format!("{field}.verbs"),
                "verbs must contain at least one value",
            );
        }
        if has("nonResourceURLs") {
            if namespaced {
                errors.invalid_raw(
                    format!("{field}.nonResourceURLs"),
                    rule["nonResourceURLs"].to_string(),
                    "namespaced rules cannot apply to non-resource URLs",
                );
            }
            if has("apiGroups") || has("resources") || has("resourceNames") {
                errors.invalid_raw(
                    format!("{field}.nonResourceURLs"),
                    rule["nonResourceURLs"].to_string(),
                    "rules cannot apply to both regular resources and non-resource URLs",
                );
            }
            continue;
        }
        if rule.get("apiGroups").and_then(Value::as_array).is_none() {
            errors.required_with(
                format!("{field}.apiGroups"),
                "resource rules must supply at least one api group",
            );
        }
        if !has("resources") {
            errors.required_with(
                format!("{field}.resources"),
                "resource rules must supply at least one resource",
            );
        }
    }
}

/// Upstream's binding rules: a `roleRef` to a Role (RoleBindings only) or ClusterRole of
/// the RBAC group, fixed once created, and subjects of a known kind.
fn validate_role_binding(kind: &str, object: &Value, old: Option<&Value>, errors: &mut Errors) {
    let role_ref = object.get("roleRef").unwrap_or(&Value::Null);
    let allowed_kinds: &[&str] = if kind == "RoleBinding" {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    match str_at(role_ref, "apiGroup") {
        Some(RBAC_GROUP) => {}
        other => errors.not_supported("roleRef.apiGroup", other.unwrap_or(""), &[RBAC_GROUP]),
    }
    match str_at(role_ref, "kind") {
        Some(k) if allowed_kinds.contains(&k) => {}
        other => errors.not_supported("roleRef.kind", other.unwrap_or(""), allowed_kinds),
    }
    if str_at(role_ref, "name").is_none_or(str::is_empty) {
        errors.required("roleRef.name");
    }
    if let Some(old) = old
        && old.get("roleRef") != object.get("roleRef")
    {
        errors.invalid_raw("roleRef", role_ref.to_string(), "cannot change roleRef");
    }
    for (i, subject) in items(object, "subjects") {
        let field = format!("subjects[{i}]");
        if str_at(subject, "name").is_none_or(str::is_empty) {
            errors.required(format!("{field}.name"));
        }
        match str_at(subject, "kind") {
            Some("ServiceAccount") => {
                if str_at(subject, "apiGroup").is_some_and(|g| !g.is_empty()) {
                    errors.not_supported(
                        format!("{field}.apiGroup"),
                        str_at(subject, "apiGroup").unwrap_or(""),
                        &[""],
                    );
                }
                if kind == "ClusterRoleBinding"
                    && str_at(subject, "namespace").is_none_or(str::is_empty)
                {
                    errors.required(format!("{field}.namespace"));
                }
            }
            Some("User" | "Group") => {
                if str_at(subject, "apiGroup") != Some(RBAC_GROUP) {
                    errors.not_supported(
                        format!("{field}.apiGroup"),
                        str_at(subject, "apiGroup").unwrap_or(""),
                        &[RBAC_GROUP],
                    );
                }
            }
            other => errors.not_supported(
                format!("{field}.kind"),
                other.unwrap_or(""),
                &["ServiceAccount", "User", "Group"],
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// storage.k8s.io/v1 StorageClass and scheduling.k8s.io/v1 PriorityClass.

const RECLAIM_POLICIES: &[&str] = &["Delete", "Retain"];
const BINDING_MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];
const PREEMPTION_POLICIES: &[&str] = &["Never", "PreemptLowerPriority"];

fn validate_storage_class(object: &Value, old: Option<&Value>, errors: &mut Errors) {
    match str_at(object, "provisioner") {
        None | Some("") => errors.required("provisioner"),
        Some(_) => {}
    }
    if let Some(policy) = str_at(object, "reclaimPolicy").filter(|p| !RECLAIM_POLICIES.contains(p))
    {
        errors.not_supported("reclaimPolicy", policy, RECLAIM_POLICIES);
    }
    if let Some(mode) = str_at(object, "volumeBindingMode").filter(|m| !BINDING_MODES.contains(m)) {
        errors.not_supported("volumeBindingMode", mode, BINDING_MODES);
    }
    let Some(old) = old else {
        return;
    };
    for key in [
        "parameters",
        "provisioner",
        "reclaimPolicy",
        "volumeBindingMode",
    ] {
        if object.get(key) != old.get(key) {
            errors.forbidden(key, format!("updates to {key} are forbidden."));
        }
    }
}

/// The PriorityClasses every cluster has, which alone may use the reserved
/// `system-` prefix and values above [`HIGHEST_USER_PRIORITY`].
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i64)] = &[
    ("system-cluster-critical", 2_000_000_000),
    ("system-node-critical", 2_000_001_000),
];

/// The highest `value` a user-defined PriorityClass may have.
pub const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;

fn validate_priority_class(object: &Value, old: Option<&Value>, errors: &mut Errors) {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let value = object.get("value").and_then(Value::as_i64);
    let is_system = SYSTEM_PRIORITY_CLASSES
        .iter()
        .any(|(n, v)| *n == name && Some(*v) == value);
    if !is_system {
        if name.starts_with("system-") {
            errors.forbidden(
                "metadata.name",
                "priority class names with 'system-' prefix are reserved for system use only",
            );
        }
        if let Some(value) = value.filter(|v| *v > HIGHEST_USER_PRIORITY) {
            errors.forbidden(
                "value",
                format!(
                    "maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}, got {value}"
                ),
            );
        }
    }
    if let Some(policy) =
        str_at(object, "preemptionPolicy").filter(|p| !PREEMPTION_POLICIES.contains(p))
    {
        errors.not_supported("preemptionPolicy", policy, PREEMPTION_POLICIES);
    }
    if let Some(old) = old {
        if object.get("value") != old.get("value") {
            errors.forbidden("value", "may not be changed in an update.");
        }
        if object.get("preemptionPolicy") != old.get("preemptionPolicy") {
            errors.immutable(
                "preemptionPolicy",
                quoted(str_at(object, "preemptionPolicy").unwrap_or("")),
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Services.

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const NODE_PORT_RANGE: std::ops::RangeInclusive<i64> = 30000..=32767;

fn validate_service(spec: &Value, errors: &mut Errors) {
    let service_type = str_at(spec, "type").unwrap_or("ClusterIP");
    if !SERVICE_TYPES.contains(&service_type) {
        errors.not_supported("spec.type", service_type, SERVICE_TYPES);
    }
    let cluster_ip = str_at(spec, "clusterIP").unwrap_or("");
    let headless = cluster_ip == "None";
    let ports: Vec<(usize, &Value)> = items(spec, "ports").collect();
    if ports.is_empty() && service_type != "ExternalName" && !headless {
        errors.required("spec.ports");
    }
    if service_type == "ExternalName" {
        match str_at(spec, "externalName").filter(|n| !n.is_empty()) {
            None => errors.required("spec.externalName"),
            Some(n) => check_name(
                errors,
                "spec.externalName",
                n.trim_end_matches('.'),
                NameRule::Dns1123Subdomain,
            ),
        }
    }
    if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<std::net::IpAddr>().is_err() {
        errors.invalid(
            "spec.clusterIPs[0]",
            cluster_ip,
            "must be empty, 'None', or a valid IP address",
        );
    }
    let mut names = BTreeSet::new();
    for (i, port) in &ports {
        let field = format!("spec.ports[{i}]");
        let name = str_at(port, "name").unwrap_or("");
        if name.is_empty() {
            if ports.len() > 1 {
                errors.required(format!("{field}.name"));
            }
        } else {
            check_name(
                errors,
                &format!("{field}.name"),
                name,
                NameRule::Dns1123Label,
            );
            if !names.insert(name.to_string()) {
                errors.duplicate(format!("{field}.name"), name);
            }
        }
        match port.get("port").and_then(Value::as_i64) {
            Some(n) => check_port_number(errors, format!("{field}.port"), n),
            None => errors.required(format!("{field}.port")),
        }
        check_protocol(
            errors,
            format!("{field}.protocol"),
            str_at(port, "protocol"),
        );
        match port.get("targetPort") {
            Some(Value::Number(n)) => check_port_number(
                errors,
                format!("{field}.targetPort"),
                n.as_i64().unwrap_or(0),
            ),
            Some(Value::String(s)) => check_port_name(errors, format!("{field}.targetPort"), s),
            _ => {}
        }
        if let Some(node_port) = port
            .get("nodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0)
        {
            if service_type == "ClusterIP" || service_type == "ExternalName" {
                errors.forbidden(
                    format!("{field}.nodePort"),
                    format!("may not be used when `type` is '{service_type}'"),
                );
            } else if !NODE_PORT_RANGE.contains(&node_port) {
                errors.invalid_raw(
                    format!("{field}.nodePort"),
                    node_port,
                    "provided port is not in the valid range. The range of valid ports is 30000-32767",
                );
            }
        }
    }
    const AFFINITIES: &[&str] = &["ClientIP", "None"];
    if let Some(a) = str_at(spec, "sessionAffinity").filter(|a| !AFFINITIES.contains(a)) {
        errors.not_supported("spec.sessionAffinity", a, AFFINITIES);
    }
    const TRAFFIC: &[&str] = &["Cluster", "Local"];
    for key in ["externalTrafficPolicy", "internalTrafficPolicy"] {
        if let Some(p) = str_at(spec, key).filter(|p| !TRAFFIC.contains(p)) {
            errors.not_supported(format!("spec.{key}"), p, TRAFFIC);
        }
    }
    if service_type == "ClusterIP" && str_at(spec, "externalTrafficPolicy").is_some() {
        errors.invalid(
            "spec.externalTrafficPolicy",
            str_at(spec, "externalTrafficPolicy").unwrap_or(""),
            "may only be set for externally-accessible services",
        );
    }
}

/// `clusterIP` may not change once allocated, except when the service
/// becomes or stops being an ExternalName service.
fn validate_service_update(spec: &Value, old_spec: &Value, errors: &mut Errors) {
    let old_ip = str_at(old_spec, "clusterIP").unwrap_or("");
    let new_ip = str_at(spec, "clusterIP").unwrap_or("");
    let involves_external_name = str_at(spec, "type") == Some("ExternalName")
        || str_at(old_spec, "type") == Some("ExternalName");
    if !old_ip.is_empty() && !new_ip.is_empty() && old_ip != new_ip && !involves_external_name {
        errors.immutable("spec.clusterIPs[0]", format!("[]string{{{:?}}}", new_ip));
    }
}

// ---------------------------------------------------------------------------
// ConfigMaps and Secrets.

fn check_config_key(errors: &mut Errors, field: &str, key: &str) {
    if key.len() > 253 {
        errors.invalid(field, key, "must be no more than 253 characters");
    }
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        errors.invalid(field, key, CONFIG_KEY_MSG);
    }
    if key == "." {
        errors.invalid(field, key, "must not be '.'");
    } else if key == ".." {
        errors.invalid(field, key, "must not be '..'");
    } else if key.starts_with("..") {
        errors.invalid(field, key, "must not start with '..'");
    }
}

fn validate_config_map(object: &Value, old: Option<&Value>, errors: &mut Errors) {
    let mut total = 0;
    let mut seen = BTreeSet::new();
    for section in ["data", "binaryData"] {
        let Some(map) = object.get(section).and_then(Value::as_object) else {
            continue;
        };
        for (key, value) in map {
            check_config_key(errors, &format!("{section}[{key}]"), key);
            if !seen.insert(key.clone()) {
                errors.invalid(
                    format!("{section}[{key}]"),
                    key,
                    "duplicate of key present in data",
                );
            }
            total += value.as_str().map_or(0, |v| {
                if section == "data" {
                    v.len()
                } else {
                    v.len() * 3 / 4
                }
            });
        }
    }
    if total > MAX_CONFIG_BYTES {
        errors.too_long("", MAX_CONFIG_BYTES);
    }
    check_immutable_data(object, old, &["data", "binaryData"], errors);
}

/// Once `immutable: true` is stored, the payload and the flag are frozen.
fn check_immutable_data(
    object: &Value,
    old: Option<&Value>,
    sections: &[&str],
    errors: &mut Errors,
) {
    let Some(old) = old else { return };
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    if object.get("immutable").and_then(Value::as_bool) != Some(true) {
        errors.forbidden("immutable", "field is immutable when `immutable` is set");
    }
    for section in sections {
        let empty = Value::Object(Map::new());
        let normalize = |v: Option<&Value>| {
            v.filter(|v| !v.is_null())
                .cloned()
                .unwrap_or_else(|| empty.clone())
        };
        if normalize(object.get(*section)) != normalize(old.get(*section)) {
            errors.forbidden(*section, "field is immutable when `immutable` is set");
        }
    }
}

fn validate_secret(object: &Value, old: Option<&Value>, errors: &mut Errors) {
    let secret: k8s_openapi::api::core::v1::Secret = match serde_json::from_value(object.clone()) {
        Ok(s) => s,
        Err(_) => return, // check_structure already reported it
    };
    let data = secret.data.unwrap_or_default();
    let string_data = secret.string_data.unwrap_or_default();
    let mut total = 0;
    for (key, value) in &data {
        check_config_key(errors, &format!("data[{key}]"), key);
        total += value.0.len();
    }
    for (key, value) in &string_data {
        check_config_key(errors, &format!("stringData[{key}]"), key);
        total += value.len();
    }
    if total > MAX_CONFIG_BYTES {
        errors.too_long("data", MAX_CONFIG_BYTES);
    }
    let has = |key: &str| data.contains_key(key) || string_data.contains_key(key);
    let secret_type = secret.type_.as_deref().unwrap_or("Opaque");
    let required_keys: &[&str] = match secret_type {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    };
    for key in required_keys {
        if !has(key) {
            errors.required(format!("data[{key}]"));
        }
    }
    if secret_type == "kubernetes.io/basic-auth" && !has("username") && !has("password") {
        errors.required_with(
            "data[username]",
            "either username or password must be supplied",
        );
    }
    if secret_type == "kubernetes.io/service-account-token"
        && object
            .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
            .is_none()
    {
        errors.required("metadata.annotations[kubernetes.io/service-account.name]");
    }
    if let Some(old) = old {
        let old_type = str_at(old, "type").unwrap_or("Opaque");
        if old_type != secret_type {
            errors.immutable("type", quoted(secret_type));
        }
    }
    check_immutable_data(object, old, &["data"], errors);
}

// ---------------------------------------------------------------------------
// Storage and discovery.

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn check_access_modes(spec: &Value, errors: &mut Errors) {
    let modes: Vec<&str> = items(spec, "accessModes")
        .filter_map(|(_, m)| m.as_str())
        .collect();
    if modes.is_empty() {
        errors.required_with("spec.accessModes", "at least 1 access mode is required");
    }
    for mode in modes.iter().filter(|m| !ACCESS_MODES.contains(m)) {
        errors.not_supported("spec.accessModes", mode, ACCESS_MODES);
    }
}

fn validate_pvc(spec: &Value, old_spec: Option<&Value>, errors: &mut Errors) {
    check_access_modes(spec, errors);
    if spec.pointer("/resources/requests/storage").is_none() {
        errors.required("spec.resources[storage]");
    }
    const MODES: &[&str] = &["Block", "Filesystem"];
    if let Some(m) = str_at(spec, "volumeMode").filter(|m| !MODES.contains(m)) {
        errors.not_supported("spec.volumeMode", m, MODES);
    }
    if let Some(old_spec) = old_spec {
        // Only the requested size (and, once, the volume binding) may change.
        let strip = |s: &Value| {
            let mut s = s.clone();
            if let Some(map) = s.as_object_mut() {
                map.remove("resources");
                map.remove("volumeName");
            }
            s
        };
        if strip(spec) != strip(old_spec) {
            errors.forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            );
        }
    }
}

fn validate_pv(spec: &Value, errors: &mut Errors) {
    check_access_modes(spec, errors);
    if spec.pointer("/capacity/storage").is_none() {
        errors.required("spec.capacity");
    }
    const POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];
    if let Some(p) = str_at(spec, "persistentVolumeReclaimPolicy").filter(|p| !POLICIES.contains(p))
    {
        errors.not_supported("spec.persistentVolumeReclaimPolicy", p, POLICIES);
    }
}

fn validate_endpoint_slice(object: &Value, old: Option<&Value>, errors: &mut Errors) {
    const TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
    match str_at(object, "addressType") {
        None => errors.required("addressType"),
        Some(t) if !TYPES.contains(&t) => errors.not_supported("addressType", t, TYPES),
        Some(_) => {}
    }
    for (i, endpoint) in items(object, "endpoints") {
        if items(endpoint, "addresses").next().is_none() {
            errors.required_with(
                format!("endpoints[{i}].addresses"),
                "must contain at least 1 address",
            );
        }
    }
    if let Some(old) = old
        && str_at(old, "addressType") != str_at(object, "addressType")
    {
        errors.immutable(
            "addressType",
            quoted(str_at(object, "addressType").unwrap_or("")),
        );
    }
}

fn validate_binding(binding: &Value, errors: &mut Errors) {
    let target = binding.pointer("/target/name").and_then(Value::as_str);
    if target.is_none_or(str::is_empty) {
        errors.required("target.name");
    }
}

/// Legacy (core/v1) events must live in their object's namespace, or in
/// `default` for cluster-scoped objects.
fn validate_event(event: &Value, errors: &mut Errors) {
    if event.get("eventTime").is_some_and(|t| !t.is_null()) {
        return;
    }
    let namespace = event
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let involved = event
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let matches = if involved.is_empty() {
        namespace.is_empty() || namespace == "default"
    } else {
        namespace == involved
    };
    if !matches {
        errors.invalid(
            "involvedObject.namespace",
            involved,
            "does not match event.namespace",
        );
    }
}

/// `ValidateControllerRevision(Update)`: a revision must carry data, its
/// number is never negative, and the data it recorded never changes (the
/// controllers bump `revision` to reuse one, which stays allowed).
fn validate_controller_revision(object: &Value, old: Option<&Value>, errors: &mut Errors) {
    let data = object.get("data").filter(|d| !d.is_null());
    if data.is_none() {
        errors.required_with("data", "data is mandatory");
    }
    if let Some(revision) = object
        .get("revision")
        .and_then(Value::as_i64)
        .filter(|r| *r < 0)
    {
        errors.invalid_raw("revision", revision, "must be greater than or equal to 0");
    }
    if let Some(old) = old
        && data != old.get("data").filter(|d| !d.is_null())
    {
        errors.immutable("data", data.unwrap_or(&Value::Null));
    }
}

fn validate_lease(spec: &Value, errors: &mut Errors) {
    if let Some(seconds) = spec
        .get("leaseDurationSeconds")
        .and_then(Value::as_i64)
        .filter(|s| *s <= 0)
    {
        errors.invalid_raw(
            "spec.leaseDurationSeconds",
            seconds,
            "must be greater than 0",
        );
    }
    if let Some(transitions) = spec
        .get("leaseTransitions")
        .and_then(Value::as_i64)
        .filter(|t| *t < 0)
    {
        errors.invalid_raw(
            "spec.leaseTransitions",
            transitions,
            "must be greater than or equal to 0",
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::defaulting::apply_defaults;
    use crate::registry::find_by_kind;

    #[allow(clippy::result_large_err)]
    fn check(
        api_version: &str,
        kind: &str,
        mut object: Value,
        old: Option<Value>,
    ) -> Result<(), ApiError> {
        let resource = find_by_kind(api_version, kind).expect("kind is served");
        apply_defaults(resource, &mut object);
        let old = old.map(|mut o| {
            apply_defaults(resource, &mut o);
            o
        });
        validate(resource, &object, old.as_ref())
    }

    /// The field paths of every cause, to compare against kube-apiserver's.
    fn fields(result: Result<(), ApiError>) -> Vec<String> {
        let err = result.expect_err("object should be rejected");
        assert_eq!(err.code(), 422, "{}", err.message);
        err.causes.into_iter().map(|c| c.field).collect()
    }

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn deployment(selector: Value, labels: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "selector": selector,
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
            },
        })
    }

    fn service(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn job(spec: Value) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi", "namespace": "default", "uid": "u-1"}, "spec": spec})
    }

    fn job_template(restart_policy: &str) -> Value {
        json!({"spec": {"restartPolicy": restart_policy, "containers": [{"name": "c", "image": "busybox"}]}})
    }

    fn cron_job(spec: Value) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn jobs_follow_upstream_rules() {
        check(
            "batch/v1",
            "Job",
            job(json!({"template": job_template("Never")})),
            None,
        )
        .expect("job is valid");
        assert_eq!(
            fields(check(
                "batch/v1",
                "Job",
                job(json!({"template": job_template("Always")})),
                None
            )),
            ["spec.template.spec.restartPolicy"]
        );
        assert_eq!(
            fields(check(
                "batch/v1",
                "Job",
                job(
                    json!({"completions": -1, "parallelism": -2, "backoffLimit": -3, "template": job_template("OnFailure")})
                ),
                None
            )),
            ["spec.parallelism", "spec.completions", "spec.backoffLimit"]
        );
        let old = job(json!({"template": job_template("Never")}));
        let mut moved = old.clone();
        moved["spec"]["selector"] =
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "other"}});
        moved["spec"]["template"]["metadata"] =
            json!({"labels": {"batch.kubernetes.io/controller-uid": "other"}});
        let causes = fields(check("batch/v1", "Job", moved, Some(old.clone())));
        assert!(causes.contains(&"spec.selector".to_string()), "{causes:?}");
        let mut scaled = old.clone();
        scaled["spec"]["parallelism"] = json!(4);
        scaled["spec"]["completions"] = json!(1);
        check("batch/v1", "Job", scaled, Some(old)).expect("parallelism may change");
    }

    #[test]
    fn cron_jobs_need_a_valid_schedule_and_zone() {
        let template = json!({"spec": {"template": job_template("OnFailure")}});
        check(
            "batch/v1",
            "CronJob",
            cron_job(
                json!({"schedule": "@hourly", "timeZone": "Europe/Paris", "jobTemplate": template}),
            ),
            None,
        )
        .expect("cron job is valid");
        assert_eq!(
            fields(check(
                "batch/v1",
                "CronJob",
                cron_job(
                    json!({"schedule": "every day", "timeZone": "Nowhere/Land", "concurrencyPolicy": "Sometimes", "jobTemplate": template})
                ),
                None
            )),
            ["spec.schedule", "spec.timeZone", "spec.concurrencyPolicy"]
        );
        assert_eq!(
            fields(check(
                "batch/v1",
                "CronJob",
                cron_job(
                    json!({"schedule": "* * * * *", "jobTemplate": {"spec": {"template": job_template("Always")}}})
                ),
                None
            )),
            ["spec.jobTemplate.spec.template.spec.restartPolicy"]
        );
    }

    #[test]
    fn storage_and_priority_classes() {
        let sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "local"}, "provisioner": "gantry.io/local"});
        check("storage.k8s.io/v1", "StorageClass", sc.clone(), None).expect("valid class");
        let mut changed = sc.clone();
        changed["provisioner"] = json!("other");
        assert_eq!(
            fields(check(
                "storage.k8s.io/v1",
                "StorageClass",
                changed,
                Some(sc)
            )),
            ["provisioner"]
        );
        let pc = |name: &str, value: i64| json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}, "value": value});
        check(
            "scheduling.k8s.io/v1",
            "PriorityClass",
            pc("high", 1000),
            None,
        )
        .expect("valid");
        check(
            "scheduling.k8s.io/v1",
            "PriorityClass",
            pc("system-node-critical", 2_000_001_000),
            None,
        )
        .expect("built-in is valid");
        assert_eq!(
            fields(check(
                "scheduling.k8s.io/v1",
                "PriorityClass",
                pc("system-mine", 2_000_000_001),
                None
            )),
            ["metadata.name", "value"]
        );
        assert_eq!(
            fields(check(
                "scheduling.k8s.io/v1",
                "PriorityClass",
                pc("high", 7),
                Some(pc("high", 1000))
            )),
            ["value"]
        );
    }

    #[test]
    fn rbac_roles_need_verbs_and_resources_and_names_may_hold_colons() {
        const RBAC: &str = "rbac.authorization.k8s.io/v1";
        let role = |name: &str, rules: Value| json!({"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules});
        check(RBAC, "ClusterRole", role("system:node", json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}])), None)
            .expect("valid");
        assert_eq!(
            fields(check(
                RBAC,
                "ClusterRole",
                role("a/b", json!([{"apiGroups": [""], "verbs": []}])),
                None
            )),
            ["metadata.name", "rules[0].verbs", "rules[0].resources"]
        );
        let namespaced = json!({"apiVersion": RBAC, "kind": "Role", "metadata": {"name": "r", "namespace": "default"}, "rules": [{"nonResourceURLs": ["/x"], "verbs": ["get"]}]});
        assert_eq!(
            fields(check(RBAC, "Role", namespaced, None)),
            ["rules[0].nonResourceURLs"]
        );
    }

    #[test]
    fn rbac_bindings_check_role_ref_and_subjects() {
        const RBAC: &str = "rbac.authorization.k8s.io/v1";
        let binding = |role_kind: &str, subjects: Value| {
            json!({
                "apiVersion": RBAC, "kind": "ClusterRoleBinding", "metadata": {"name": "b"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": "view"},
                "subjects": subjects,
            })
        };
        let user =
            json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "jane"}]);
        check(
            RBAC,
            "ClusterRoleBinding",
            binding("ClusterRole", user.clone()),
            None,
        )
        .expect("valid");
        assert_eq!(
            fields(check(
                RBAC,
                "ClusterRoleBinding",
                binding(
                    "Role",
                    json!([{"kind": "ServiceAccount", "name": "x"}, {"kind": "Robot", "name": "y"}])
                ),
                None
            )),
            ["roleRef.kind", "subjects[0].namespace", "subjects[1].kind"]
        );
        let mut changed = binding("ClusterRole", user.clone());
        changed["roleRef"]["name"] = json!("edit");
        assert_eq!(
            fields(check(
                RBAC,
                "ClusterRoleBinding",
                changed,
                Some(binding("ClusterRole", user))
            )),
            ["roleRef"]
        );
    }

    #[test]
    fn valid_objects_pass() {
        check("v1", "Pod", pod(json!({"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]})), None)
            .expect("pod is valid");
        check(
            "apps/v1",
            "Deployment",
            deployment(
                json!({"matchLabels": {"app": "web"}}),
                json!({"app": "web"}),
            ),
            None,
        )
        .expect("deployment is valid");
        check(
            "v1",
            "Service",
            service(json!({"ports": [{"port": 80}], "selector": {"app": "web"}})),
            None,
        )
        .expect("service is valid");
        check(
            "v1",
            "Namespace",
            json!({"metadata": {"name": "team-a"}}),
            None,
        )
        .expect("namespace is valid");
        check(
            "v1",
            "ConfigMap",
            json!({"metadata": {"name": "cfg", "namespace": "default"}, "data": {"a.b_c-d": "x"}}),
            None,
        )
        .expect("configmap is valid");
    }

    #[test]
    fn names_follow_the_per_kind_rule() {
        let bad_pod = json!({"metadata": {"name": "Web_1", "namespace": "default"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
        assert_eq!(fields(check("v1", "Pod", bad_pod, None)), ["metadata.name"]);
        // Dots are fine in subdomains (pods) but not in DNS-1035 labels (services).
        let dotted_pod = json!({"metadata": {"name": "a.b", "namespace": "default"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
        check("v1", "Pod", dotted_pod, None).expect("subdomain names are fine for pods");
        let mut svc = service(json!({"ports": [{"port": 80}]}));
        svc["metadata"]["name"] = json!("1web");
        assert_eq!(fields(check("v1", "Service", svc, None)), ["metadata.name"]);
        assert_eq!(
            fields(check(
                "v1",
                "Namespace",
                json!({"metadata": {"name": "a.b"}}),
                None
            )),
            ["metadata.name"]
        );
        let missing = check(
            "v1",
            "ConfigMap",
            json!({"metadata": {"namespace": "default"}}),
            None,
        );
        assert_eq!(fields(missing), ["metadata.name"]);
    }

    #[test]
    fn labels_and_annotations_are_checked() {
        let mut cm = json!({"metadata": {"name": "c", "namespace": "default",
            "labels": {"app": "ok", "bad key!": "x", "tier": "-bad"},
            "annotations": {"big": "x".repeat(TOTAL_ANNOTATION_BYTES)}}});
        let got = fields(check("v1", "ConfigMap", cm.clone(), None));
        assert_eq!(
            got,
            ["metadata.labels", "metadata.labels", "metadata.annotations"]
        );
        cm["metadata"]["labels"] = json!({"example.com/app": "v1.0"});
        cm["metadata"]["annotations"] = json!({"note": "ok"});
        check("v1", "ConfigMap", cm, None).expect("valid labels pass");
    }

    #[test]
    fn wrong_field_types_are_bad_requests_naming_the_field() {
        let mut dep = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
        );
        dep["spec"]["replicas"] = json!("three");
        let err =
            check("apps/v1", "Deployment", dep, None).expect_err("string replicas are rejected");
        assert_eq!(err.code(), 400);
        assert!(err.message.contains("spec.replicas"), "{}", err.message);
        assert!(
            err.message
                .starts_with("Deployment in version \"v1\" cannot be handled as a Deployment")
        );
    }

    #[test]
    fn pod_rules_report_every_field() {
        let spec = json!({
            "restartPolicy": "Sometimes",
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "data", "emptyDir": {}}],
            "containers": [
                {"name": "app", "image": "nginx", "ports": [{"containerPort": 70000}],
                 "volumeMounts": [{"name": "missing", "mountPath": "/m"}],
                 "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
                {"name": "app"},
            ],
        });
        let got = fields(check("v1", "Pod", pod(spec), None));
        assert_eq!(
            got,
            [
                "spec.volumes[1].name",
                "spec.containers[0].ports[0].containerPort",
                "spec.containers[0].volumeMounts[0].name",
                "spec.containers[0].resources.requests",
                "spec.containers[1].name",
                "spec.containers[1].image",
                "spec.restartPolicy",
            ]
        );
        assert_eq!(
            fields(check("v1", "Pod", pod(json!({"containers": []})), None)),
            ["spec.containers"]
        );
    }

    #[test]
    fn requests_above_limits_read_like_kubernetes() {
        let spec = json!({"containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1024Mi"}}}]});
        let err = check("v1", "Pod", pod(spec), None).expect_err("rejected");
        assert_eq!(
            err.causes[0].message,
            "Invalid value: \"2Gi\": must be less than or equal to memory limit of 1024Mi"
        );
        let ok = json!({"containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]});
        check("v1", "Pod", pod(ok), None).expect("requests within limits pass");
    }

    #[test]
    fn pod_updates_may_change_only_images_and_add_tolerations() {
        let old = pod(json!({"containers": [{"name": "c", "image": "nginx:1"}]}));
        let mut new_image = old.clone();
        new_image["spec"]["containers"][0]["image"] = json!("nginx:2");
        check("v1", "Pod", new_image, Some(old.clone())).expect("image updates are allowed");

        let mut new_policy = old.clone();
        new_policy["spec"]["restartPolicy"] = json!("Never");
        let err = check("v1", "Pod", new_policy, Some(old.clone()))
            .expect_err("restartPolicy is immutable");
        assert_eq!(err.causes[0].field, "spec");
        assert_eq!(err.causes[0].reason, "FieldValueForbidden");

        let mut renamed = old.clone();
        renamed["metadata"]["name"] = json!("other");
        assert_eq!(
            fields(check("v1", "Pod", renamed, Some(old))),
            ["metadata.name"]
        );
    }

    #[test]
    fn workload_selector_must_match_template() {
        let err = check(
            "apps/v1",
            "Deployment",
            deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "x"})),
            None,
        )
        .expect_err("mismatch is rejected");
        assert_eq!(
            err.message,
            "Deployment.apps \"web\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`"
        );
        let expressions = json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]});
        check(
            "apps/v1",
            "Deployment",
            deployment(expressions, json!({"tier": "be"})),
            None,
        )
        .expect("In matches");

        let mut no_selector = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
        );
        no_selector["spec"]
            .as_object_mut()
            .map(|s| s.remove("selector"));
        assert_eq!(
            fields(check("apps/v1", "Deployment", no_selector, None)),
            ["spec.selector"]
        );

        let mut negative = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
        );
        negative["spec"]["replicas"] = json!(-1);
        negative["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        let got = fields(check("apps/v1", "Deployment", negative, None));
        assert_eq!(got, ["spec.replicas", "spec.template.spec.restartPolicy"]);
    }

    #[test]
    fn workload_selector_is_immutable() {
        let old = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web", "v": "1"}),
        );
        let new = deployment(
            json!({"matchLabels": {"app": "web", "v": "1"}}),
            json!({"app": "web", "v": "1"}),
        );
        assert_eq!(
            fields(check("apps/v1", "Deployment", new, Some(old.clone()))),
            ["spec.selector"]
        );
        let mut scaled = old.clone();
        scaled["spec"]["replicas"] = json!(5);
        check("apps/v1", "Deployment", scaled, Some(old)).expect("scaling is allowed");
    }

    #[test]
    fn service_rules() {
        assert_eq!(
            fields(check("v1", "Service", service(json!({})), None)),
            ["spec.ports"]
        );
        check("v1", "Service", service(json!({"clusterIP": "None"})), None)
            .expect("headless needs no ports");
        check(
            "v1",
            "Service",
            service(json!({"type": "ExternalName", "externalName": "example.com"})),
            None,
        )
        .expect("external name needs no ports");
        let bad = service(json!({
            "type": "Magic",
            "ports": [{"port": 0}, {"name": "b", "port": 443, "nodePort": 80}],
        }));
        let got = fields(check("v1", "Service", bad, None));
        // targetPort defaults to port, so the bad port is reported for both, as Kubernetes does.
        assert_eq!(
            got,
            [
                "spec.type",
                "spec.ports[0].name",
                "spec.ports[0].port",
                "spec.ports[0].targetPort",
                "spec.ports[1].nodePort"
            ]
        );

        let old = service(json!({"ports": [{"port": 80}], "clusterIP": "10.43.0.10"}));
        let new = service(json!({"ports": [{"port": 80}], "clusterIP": "10.43.0.11"}));
        assert_eq!(
            fields(check("v1", "Service", new, Some(old))),
            ["spec.clusterIPs[0]"]
        );
    }

    #[test]
    fn config_and_secret_keys_sizes_and_immutability() {
        let cm = json!({"metadata": {"name": "c", "namespace": "default"}, "data": {"bad/key": "x", "..x": "y"}});
        let mut got = fields(check("v1", "ConfigMap", cm, None));
        got.sort();
        assert_eq!(got, ["data[..x]", "data[bad/key]"]);

        let big = base64_of(&vec![b'a'; MAX_CONFIG_BYTES + 1]);
        let secret = json!({"metadata": {"name": "s", "namespace": "default"}, "data": {"k": big}});
        assert_eq!(fields(check("v1", "Secret", secret, None)), ["data"]);

        let tls = json!({"metadata": {"name": "s", "namespace": "default"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
        assert_eq!(fields(check("v1", "Secret", tls, None)), ["data[tls.key]"]);

        let old = json!({"metadata": {"name": "c", "namespace": "default"}, "immutable": true, "data": {"a": "1"}});
        let mut changed = old.clone();
        changed["data"]["a"] = json!("2");
        assert_eq!(
            fields(check("v1", "ConfigMap", changed, Some(old.clone()))),
            ["data"]
        );
        let mut labelled = old.clone();
        labelled["metadata"]["labels"] = json!({"x": "y"});
        check("v1", "ConfigMap", labelled, Some(old))
            .expect("metadata of immutable configmaps may change");

        let old_secret =
            json!({"metadata": {"name": "s", "namespace": "default"}, "data": {"a": "eA=="}});
        let mut retyped = old_secret.clone();
        retyped["type"] = json!("kubernetes.io/basic-auth");
        retyped["data"] = json!({"username": "eA=="});
        assert_eq!(
            fields(check("v1", "Secret", retyped, Some(old_secret))),
            ["type"]
        );
    }

    #[test]
    fn events_live_in_their_objects_namespace() {
        let event = |involved: &str| {
            json!({"metadata": {"name": "e", "namespace": "default"}, "reason": "Started",
                "involvedObject": {"kind": "Pod", "name": "web", "namespace": involved}})
        };
        check("v1", "Event", event("default"), None).expect("same namespace");
        check("v1", "Event", event(""), None).expect("cluster-scoped object");
        assert_eq!(
            fields(check("v1", "Event", event("other"), None)),
            ["involvedObject.namespace"]
        );
    }

    #[test]
    fn leases_and_bindings() {
        let lease = |seconds: i64| {
            json!({"metadata": {"name": "n1", "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": "n1", "leaseDurationSeconds": seconds}})
        };
        check("coordination.k8s.io/v1", "Lease", lease(40), None).expect("valid lease");
        assert_eq!(
            fields(check("coordination.k8s.io/v1", "Lease", lease(0), None)),
            ["spec.leaseDurationSeconds"]
        );
        let binding = json!({"metadata": {"name": "web", "namespace": "default"}, "target": {"kind": "Node"}});
        assert_eq!(
            fields(check("v1", "Binding", binding, None)),
            ["target.name"]
        );
    }

    #[test]
    fn controller_revisions_keep_their_data() {
        let revision = |number: i64, image: &str| {
            json!({"metadata": {"name": "web-5d8f", "namespace": "default"}, "revision": number,
                "data": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}, "$patch": "replace"}}}})
        };
        let check_revision =
            |object: Value, old: Option<Value>| check("apps/v1", "ControllerRevision", object, old);
        check_revision(revision(1, "a"), None).expect("valid revision");
        check_revision(revision(3, "a"), Some(revision(1, "a")))
            .expect("the revision number may be bumped");
        assert_eq!(
            fields(check_revision(revision(1, "b"), Some(revision(1, "a")))),
            ["data"]
        );
        assert_eq!(
            fields(check_revision(revision(-1, "a"), None)),
            ["revision"]
        );
        let mut without_data = revision(1, "a");
        without_data.as_object_mut().expect("object").remove("data");
        assert_eq!(fields(check_revision(without_data, None)), ["data"]);
    }

    fn base64_of(bytes: &[u8]) -> String {
        let value = k8s_openapi::ByteString(bytes.to_vec());
        serde_json::to_value(value)
            .expect("encodes")
            .as_str()
            .expect("string")
            .to_string()
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("1Gi"), Some(1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("2e3"), Some(2000.0));
        assert_eq!(parse_quantity("1.5"), Some(1.5));
        assert_eq!(parse_quantity("abc"), None);
        assert_eq!(parse_quantity("1Xi"), None);
    }
}
