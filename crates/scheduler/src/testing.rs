//! Builders for the nodes and pods the unit tests schedule.

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodSpec,
    ResourceRequirements, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// A Ready node with `cpu`/`memory` allocatable, room for 110 pods and the hostname label.
pub fn node(name: &str, cpu: &str, memory: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("kubernetes.io/hostname".to_string(), name.to_string())].into()),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: Some(
                [("cpu", cpu), ("memory", memory), ("pods", "110")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect(),
            ),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// Adds a label to a node.
pub fn with_label(mut node: Node, key: &str, value: &str) -> Node {
    node.metadata
        .labels
        .get_or_insert_default()
        .insert(key.into(), value.into());
    node
}

/// Adds a taint to a node.
pub fn with_taint(mut node: Node, key: &str, value: &str, effect: &str) -> Node {
    let spec = node.spec.get_or_insert_default();
    spec.taints.get_or_insert_default().push(Taint {
        key: key.into(),
        value: Some(value.into()),
        effect: effect.into(),
        time_added: None,
    });
    node
}

/// Starts a pod in namespace `default` with one container requesting `cpu` and
/// `memory` (`"0"` leaves the request out).
pub fn pod(name: &str, cpu: &str, memory: &str) -> PodBuilder {
    let requests = [("cpu", cpu), ("memory", memory)]
        .into_iter()
        .filter(|(_, amount)| *amount != "0")
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect();
    PodBuilder(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                resources: Some(ResourceRequirements {
                    requests: Some(requests),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    })
}

/// Fluent changes to a test pod.
pub struct PodBuilder(Pod);

impl PodBuilder {
    fn spec(&mut self) -> &mut PodSpec {
        self.0.spec.get_or_insert_default()
    }

    /// Binds it to `node`.
    pub fn on(mut self, node: &str) -> Self {
        self.spec().node_name = Some(node.into());
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0
            .metadata
            .labels
            .get_or_insert_default()
            .insert(key.into(), value.into());
        self
    }

    /// Sets the namespace.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.0.metadata.namespace = Some(namespace.into());
        self
    }

    /// Adds a nodeSelector entry.
    pub fn node_selector(mut self, key: &str, value: &str) -> Self {
        self.spec()
            .node_selector
            .get_or_insert_default()
            .insert(key.into(), value.into());
        self
    }

    /// Adds a toleration.
    pub fn toleration(mut self, toleration: Toleration) -> Self {
        self.spec()
            .tolerations
            .get_or_insert_default()
            .push(toleration);
        self
    }

    /// Sets the affinity.
    pub fn affinity(mut self, affinity: Affinity) -> Self {
        self.spec().affinity = Some(affinity);
        self
    }

    /// Adds a container port bound on the host.
    pub fn host_port(mut self, port: i32) -> Self {
        self.spec().containers[0]
            .ports
            .get_or_insert_default()
            .push(ContainerPort {
                container_port: port,
                host_port: Some(port),
                ..Default::default()
            });
        self
    }

    /// Changes the pod spec arbitrarily.
    pub fn with_spec(mut self, change: impl FnOnce(&mut PodSpec)) -> Self {
        change(self.spec());
        self
    }

    /// The pod.
    pub fn build(self) -> Pod {
        self.0
    }
}
