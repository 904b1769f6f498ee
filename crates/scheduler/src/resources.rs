//! Amounts of resources, and what a pod requests of them.
//!
//! kube-scheduler accounts in requests, never limits or usage: a node fits a pod
//! when the pod's effective request fits in the node's allocatable minus what the
//! pods already bound there request.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use gantry_api::quantity::Quantity as Amount;

/// The CPU a container without a CPU request is counted as using when scoring
/// (kube-scheduler's `DefaultMilliCPURequest`), so request-less pods still spread.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory a container without a memory request is counted as using when
/// scoring (kube-scheduler's `DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// An amount of each resource: the shape of both requests and allocatable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in milli-cores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Local ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Number of pods (meaningful for allocatable only).
    pub pods: i64,
    /// Extended and other named resources (`nvidia.com/gpu`, `hugepages-2Mi`), in units.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Reads a resource list (`requests`, `allocatable`); unparsable quantities count as zero,
    /// since the API server validates them and the scheduler must not stop on one bad object.
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        let mut resources = Resources::default();
        for (name, amount) in list {
            match name.as_str() {
                "cpu" => resources.milli_cpu = parse(&amount.0).map_or(0, Amount::milli_value),
                "memory" => resources.memory = parse(&amount.0).map_or(0, Amount::value),
                "ephemeral-storage" => {
                    resources.ephemeral_storage = parse(&amount.0).map_or(0, Amount::value)
                }
                "pods" => resources.pods = parse(&amount.0).map_or(0, Amount::value),
                other => {
                    let amount = parse(&amount.0).map_or(0, Amount::value);
                    resources.scalar.insert(other.to_string(), amount);
                }
            }
        }
        resources
    }

    /// A node's allocatable resources (capacity when allocatable is absent, as the kubelet reports both).
    pub fn allocatable(node: &Node) -> Resources {
        let status = node.status.as_ref();
        status
            .and_then(|status| status.allocatable.as_ref().or(status.capacity.as_ref()))
            .map(Resources::from_list)
            .unwrap_or_default()
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.pods += other.pods;
        for (name, amount) in &other.scalar {
            *self.scalar.entry(name.clone()).or_default() += amount;
        }
    }

    /// Subtracts `other` from `self`.
    pub fn subtract(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.pods -= other.pods;
        for (name, amount) in &other.scalar {
            *self.scalar.entry(name.clone()).or_default() -= amount;
        }
    }

    /// Raises each resource of `self` to at least its amount in `other`.
    pub fn raise_to(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.pods = self.pods.max(other.pods);
        for (name, amount) in &other.scalar {
            let entry = self.scalar.entry(name.clone()).or_default();
            *entry = (*entry).max(*amount);
        }
    }

    /// The amount of a named extended resource (zero when absent).
    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar.get(name).copied().unwrap_or(0)
    }
}

/// What a pod requests: the effective request the fit check uses, and the
/// "non-zero" CPU and memory the scores use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRequests {
    /// `max(sum of containers (+ sidecars), max init container) + overhead`.
    pub requests: Resources,
    /// CPU for scoring: like `requests`, but a container without a CPU request counts as 100m.
    pub non_zero_milli_cpu: i64,
    /// Memory for scoring: like `requests`, but a container without a memory request counts as 200Mi.
    pub non_zero_memory: i64,
}

impl PodRequests {
    /// Computes a pod's requests the way kube-scheduler's `PodRequests` does, including
    /// restartable init containers (sidecars), which run alongside the app containers.
    pub fn of(pod: &Pod) -> PodRequests {
        let Some(spec) = pod.spec.as_ref() else {
            return PodRequests::default();
        };
        let overhead = spec
            .overhead
            .as_ref()
            .map(Resources::from_list)
            .unwrap_or_default();
        let requests = effective(
            spec.containers.iter(),
            spec.init_containers.iter().flatten(),
            &overhead,
            |container| Resources::from_list(requests_of(container)),
        );
        let non_zero = effective(
            spec.containers.iter(),
            spec.init_containers.iter().flatten(),
            &overhead,
            non_zero_requests,
        );
        PodRequests {
            requests,
            non_zero_milli_cpu: non_zero.milli_cpu,
            non_zero_memory: non_zero.memory,
        }
    }
}

fn requests_of(container: &Container) -> &BTreeMap<String, Quantity> {
    static EMPTY: BTreeMap<String, Quantity> = BTreeMap::new();
    container
        .resources
        .as_ref()
        .and_then(|resources| resources.requests.as_ref())
        .unwrap_or(&EMPTY)
}

fn non_zero_requests(container: &Container) -> Resources {
    let list = requests_of(container);
    let mut resources = Resources::from_list(list);
    if !list.contains_key("cpu") {
        resources.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
    }
    if !list.contains_key("memory") {
        resources.memory = DEFAULT_MEMORY_REQUEST;
    }
    resources
}

/// Upstream's algorithm: app containers and sidecars add up; each ordinary init
/// container runs alone next to the sidecars started before it; the pod needs the
/// larger of the two phases, plus its overhead.
fn effective<'a>(
    containers: impl Iterator<Item = &'a Container>,
    init_containers: impl Iterator<Item = &'a Container>,
    overhead: &Resources,
    request: impl Fn(&Container) -> Resources,
) -> Resources {
    let mut total = Resources::default();
    for container in containers {
        total.add(&request(container));
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for init in init_containers {
        let own = request(init);
        let phase = if init.restart_policy.as_deref() == Some("Always") {
            total.add(&own);
            sidecars.add(&own);
            sidecars.clone()
        } else {
            let mut phase = own;
            phase.add(&sidecars);
            phase
        };
        init_peak.raise_to(&phase);
    }
    total.raise_to(&init_peak);
    total.add(overhead);
    total
}

/// A quantity from the API; an unparsable one counts as absent, as it cannot have passed
/// the API server's validation.
fn parse(text: &str) -> Option<Amount> {
    Amount::parse(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    fn container(requests: &[(&str, &str)]) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(
                    requests
                        .iter()
                        .map(|(name, amount)| (name.to_string(), Quantity(amount.to_string())))
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>, init: Vec<Container>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers,
                init_containers: Some(init),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn containers_add_up() {
        let pod = pod(
            vec![
                container(&[("cpu", "100m"), ("memory", "1Gi")]),
                container(&[("cpu", "200m"), ("nvidia.com/gpu", "1")]),
            ],
            vec![],
        );
        let requests = PodRequests::of(&pod);
        assert_eq!(requests.requests.milli_cpu, 300);
        assert_eq!(requests.requests.memory, 1 << 30);
        assert_eq!(requests.requests.scalar("nvidia.com/gpu"), 1);
        assert_eq!(requests.non_zero_memory, (1 << 30) + DEFAULT_MEMORY_REQUEST);
    }

    #[test]
    fn the_largest_init_container_wins_when_larger_than_the_sum() {
        let pod = pod(
            vec![container(&[("cpu", "100m")])],
            vec![container(&[("cpu", "500m")]), container(&[("cpu", "300m")])],
        );
        assert_eq!(PodRequests::of(&pod).requests.milli_cpu, 500);
    }

    #[test]
    fn sidecars_add_to_the_app_containers_and_to_later_init_containers() {
        let mut sidecar = container(&[("cpu", "200m")]);
        sidecar.restart_policy = Some("Always".into());
        let pod = pod(
            vec![container(&[("cpu", "100m")])],
            vec![sidecar, container(&[("cpu", "250m")])],
        );
        // app phase: 100 + 200 = 300; init phase: 250 + 200 = 450.
        assert_eq!(PodRequests::of(&pod).requests.milli_cpu, 450);
    }

    #[test]
    fn overhead_is_added() {
        let mut pod = pod(vec![container(&[("cpu", "100m")])], vec![]);
        if let Some(spec) = pod.spec.as_mut() {
            spec.overhead = Some([("cpu".to_string(), Quantity("50m".into()))].into());
        }
        assert_eq!(PodRequests::of(&pod).requests.milli_cpu, 150);
    }

    #[test]
    fn request_less_containers_count_as_defaults_for_scoring() {
        let pod = pod(vec![container(&[]), container(&[("cpu", "1")])], vec![]);
        let requests = PodRequests::of(&pod);
        assert_eq!(requests.requests.milli_cpu, 1000);
        assert_eq!(
            requests.non_zero_milli_cpu,
            1000 + DEFAULT_MILLI_CPU_REQUEST
        );
        assert_eq!(requests.non_zero_memory, 2 * DEFAULT_MEMORY_REQUEST);
    }
}
