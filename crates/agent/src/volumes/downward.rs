//! The downward API in volumes: a pod's own metadata and its containers' resource
//! values as file contents, formatted exactly as the kubelet writes them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, Node, ObjectFieldSelector, Pod, ResourceFieldSelector,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use super::VolumeError;
use gantry_api::quantity::Quantity;

/// The value of a `fieldRef` that volumes may use: `metadata.name`, `.namespace`,
/// `.uid`, `.labels`, `.annotations` and single entries `metadata.labels['key']`.
pub fn field_value(pod: &Pod, selector: &ObjectFieldSelector) -> Result<String, VolumeError> {
    let metadata = &pod.metadata;
    let path = selector.field_path.as_str();
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let empty = BTreeMap::new();
    let labels = metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = metadata.annotations.as_ref().unwrap_or(&empty);
    if let Some(key) = subscript(path, "metadata.labels") {
        return Ok(labels.get(key).cloned().unwrap_or_default());
    }
    if let Some(key) = subscript(path, "metadata.annotations") {
        return Ok(annotations.get(key).cloned().unwrap_or_default());
    }
    match path {
        "metadata.name" => Ok(text(&metadata.name)),
        "metadata.namespace" => Ok(text(&metadata.namespace)),
        "metadata.uid" => Ok(text(&metadata.uid)),
        "metadata.labels" => Ok(format_map(labels)),
        "metadata.annotations" => Ok(format_map(annotations)),
        other => Err(VolumeError::UnsupportedField(other.to_owned())),
    }
}

/// `metadata.labels['key']` -> `key`.
fn subscript<'a>(path: &'a str, field: &str) -> Option<&'a str> {
    path.strip_prefix(field)?
        .strip_prefix("['")?
        .strip_suffix("']")
}

/// The kubelet's `FormatMap`: sorted `key="value"` lines, values quoted like Go's `%q`.
pub fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(key, value)| format!("{key}={}", go_quote(value)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `strconv.Quote`: printable characters as they are, the rest escaped.
fn go_quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\u{7}' => quoted.push_str("\\a"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{c}' => quoted.push_str("\\f"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{b}' => quoted.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                quoted.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    quoted.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    quoted.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The value of a `resourceFieldRef` (`limits.cpu`, `requests.memory`, ...) divided by
/// its divisor and rounded up. An unset limit is the node's allocatable amount, as
/// with the kubelet; `node` is only consulted then.
pub fn resource_value(
    pod: &Pod,
    selector: &ResourceFieldSelector,
    node: Option<&Node>,
) -> Result<String, VolumeError> {
    let container_name = selector.container_name.as_deref().unwrap_or_default();
    let container = find_container(pod, container_name)
        .ok_or_else(|| VolumeError::UnknownContainer(container_name.to_owned()))?;
    let (kind, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| VolumeError::UnsupportedField(selector.resource.clone()))?;
    let resources = container.resources.as_ref();
    let amount = match kind {
        "limits" => match resources.and_then(|r| r.limits.as_ref()?.get(resource)) {
            Some(limit) => parse(limit)?,
            None => node_allocatable(node, resource)?,
        },
        "requests" => match resources.and_then(|r| r.requests.as_ref()?.get(resource)) {
            Some(request) => parse(request)?,
            None => Quantity::zero(),
        },
        _ => return Err(VolumeError::UnsupportedField(selector.resource.clone())),
    };
    let divisor = match &selector.divisor {
        Some(divisor) => parse(divisor)?,
        None => Quantity::zero(),
    };
    Ok(amount.ceil_div(divisor).to_string())
}

/// Whether any item needs the node's allocatable resources (an unset limit).
pub fn needs_node(pod: &Pod, selector: &ResourceFieldSelector) -> bool {
    let Some(resource) = selector.resource.strip_prefix("limits.") else {
        return false;
    };
    let container_name = selector.container_name.as_deref().unwrap_or_default();
    find_container(pod, container_name)
        .and_then(|c| c.resources.as_ref()?.limits.as_ref()?.get(resource))
        .is_none()
}

fn node_allocatable(node: Option<&Node>, resource: &str) -> Result<Quantity, VolumeError> {
    let allocatable = node
        .and_then(|n| n.status.as_ref()?.allocatable.as_ref()?.get(resource))
        .ok_or_else(|| VolumeError::NoAllocatable(resource.to_owned()))?;
    parse(allocatable)
}

fn parse(quantity: &ApiQuantity) -> Result<Quantity, VolumeError> {
    Ok(Quantity::parse(&quantity.0)?)
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeStatus, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some("u-1".into()),
                labels: Some(BTreeMap::from([
                    ("tier".into(), "front".into()),
                    ("app".into(), "say \"hi\"\n".into()),
                ])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    resources: Some(ResourceRequirements {
                        limits: Some(BTreeMap::from([(
                            "memory".into(),
                            ApiQuantity("64Mi".into()),
                        )])),
                        requests: Some(BTreeMap::from([(
                            "cpu".into(),
                            ApiQuantity("250m".into()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn field(path: &str) -> Result<String, VolumeError> {
        field_value(
            &pod(),
            &ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            },
        )
    }

    fn resource(name: &str, divisor: Option<&str>, node: Option<&Node>) -> String {
        let selector = ResourceFieldSelector {
            container_name: Some("main".into()),
            resource: name.into(),
            divisor: divisor.map(|d| ApiQuantity(d.into())),
        };
        resource_value(&pod(), &selector, node).unwrap()
    }

    #[test]
    fn labels_are_sorted_and_go_quoted() {
        assert_eq!(
            field("metadata.labels").unwrap(),
            "app=\"say \\\"hi\\\"\\n\"\ntier=\"front\""
        );
        assert_eq!(field("metadata.labels['tier']").unwrap(), "front");
        assert_eq!(field("metadata.annotations").unwrap(), "");
    }

    #[test]
    fn identity_fields_and_unsupported_ones() {
        assert_eq!(field("metadata.name").unwrap(), "web");
        assert_eq!(field("metadata.namespace").unwrap(), "prod");
        assert_eq!(field("metadata.uid").unwrap(), "u-1");
        assert!(matches!(
            field("spec.nodeName"),
            Err(VolumeError::UnsupportedField(_))
        ));
    }

    #[test]
    fn resources_use_divisors_and_node_allocatable() {
        assert_eq!(
            resource("limits.memory", None, None),
            (64 << 20).to_string()
        );
        assert_eq!(resource("limits.memory", Some("1Mi"), None), "64");
        assert_eq!(resource("requests.cpu", Some("1m"), None), "250");
        assert_eq!(resource("requests.cpu", None, None), "1");
        assert_eq!(resource("requests.memory", None, None), "0");
        let node = Node {
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([("cpu".into(), ApiQuantity("4".into()))])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(resource("limits.cpu", None, Some(&node)), "4");
        assert!(needs_node(
            &pod(),
            &ResourceFieldSelector {
                container_name: Some("main".into()),
                resource: "limits.cpu".into(),
                divisor: None
            }
        ));
    }
}
