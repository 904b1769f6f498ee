//! Pod QoS classes, computed exactly as upstream's `qos.GetPodQOS` does: they
//! decide the pod's cgroup (`/kubepods[/burstable|/besteffort]`), its CPU shares
//! and its containers' `oom_score_adj`, so the kernel reclaims from BestEffort
//! pods first and from Guaranteed pods last.

use std::collections::BTreeMap;

use gantry_api::quantity::Quantity;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

/// `oom_score_adj` of Guaranteed (and node-critical) containers.
pub const GUARANTEED_OOM_SCORE_ADJ: i32 = -997;
/// `oom_score_adj` of BestEffort containers: killed first.
pub const BEST_EFFORT_OOM_SCORE_ADJ: i32 = 1000;

/// The three Kubernetes QoS classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QosClass {
    /// Every container's CPU and memory requests equal its limits.
    Guaranteed,
    /// Something is requested or limited, but not Guaranteed.
    Burstable,
    /// Nothing requested, nothing limited.
    BestEffort,
}

impl QosClass {
    /// The name `status.qosClass` carries.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// The compute resources QoS looks at.
const QOS_RESOURCES: [&str; 2] = ["cpu", "memory"];

/// A container's CPU and memory requests and limits in milli-units, with
/// upstream's API defaulting applied (a limit without a request requests the
/// limit), so pods written by any client classify as they would upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerRequirements {
    /// `cpu`/`memory` requests, positive values only.
    pub requests: BTreeMap<&'static str, i64>,
    /// `cpu`/`memory` limits, positive values only.
    pub limits: BTreeMap<&'static str, i64>,
}

impl ContainerRequirements {
    /// Reads `container.resources`; quantities that do not parse count as unset
    /// (the API server has validated them).
    pub fn of(container: &Container) -> ContainerRequirements {
        let resources = container.resources.as_ref();
        let read = |map: Option<&BTreeMap<String, ApiQuantity>>| -> BTreeMap<&'static str, i64> {
            QOS_RESOURCES
                .iter()
                .filter_map(|name| {
                    let quantity = Quantity::parse(map?.get(*name)?.0.trim()).ok()?;
                    let millis = quantity.milli_value();
                    (millis > 0).then_some((*name, millis))
                })
                .collect()
        };
        let limits = read(resources.and_then(|r| r.limits.as_ref()));
        let mut requests = read(resources.and_then(|r| r.requests.as_ref()));
        let explicit = resources.and_then(|r| r.requests.as_ref());
        for (name, limit) in &limits {
            if explicit.is_none_or(|r| !r.contains_key(*name)) {
                requests.insert(name, *limit);
            }
        }
        ContainerRequirements { requests, limits }
    }
}

/// Every container QoS considers: app containers then init containers
/// (ephemeral containers cannot declare resources).
pub fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
}

/// The pod's QoS class (upstream `ComputePodQOS`): BestEffort when nothing is
/// requested or limited; Guaranteed when every container limits both CPU and
/// memory and the pod's summed requests equal its summed limits; else Burstable.
pub fn pod_qos(spec: &PodSpec) -> QosClass {
    let mut requests: BTreeMap<&str, i64> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i64> = BTreeMap::new();
    let mut guaranteed = true;
    for container in all_containers(spec) {
        let own = ContainerRequirements::of(container);
        for (name, value) in &own.requests {
            *requests.entry(name).or_default() += value;
        }
        for (name, value) in &own.limits {
            *limits.entry(name).or_default() += value;
        }
        if !QOS_RESOURCES
            .iter()
            .all(|name| own.limits.contains_key(name))
        {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    let requests_match_limits = requests
        .iter()
        .all(|(name, request)| limits.get(name) == Some(request));
    if guaranteed && requests_match_limits && requests.len() == limits.len() {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// The container's `oom_score_adj` (upstream `GetContainerOOMScoreAdjust`):
/// -997 for Guaranteed, 1000 for BestEffort, and for Burstable
/// `1000 - 1000 * memoryRequest / nodeMemory`, kept within 3..=999 so Burstable
/// containers always die after BestEffort and before Guaranteed ones.
pub fn oom_score_adj(qos: QosClass, container: &Container, node_memory_bytes: i64) -> i32 {
    match qos {
        QosClass::Guaranteed => GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => BEST_EFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {
            let request_bytes = ContainerRequirements::of(container)
                .requests
                .get("memory")
                .map_or(0, |millis| millis / 1000) as i128;
            let capacity = i128::from(node_memory_bytes.max(1));
            let score = 1000 - (1000 * request_bytes) / capacity;
            let floor = i128::from(1000 + GUARANTEED_OOM_SCORE_ADJ);
            if score < floor {
                floor as i32
            } else if score == i128::from(BEST_EFFORT_OOM_SCORE_ADJ) {
                BEST_EFFORT_OOM_SCORE_ADJ - 1
            } else {
                score as i32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn container(resources: Value) -> Value {
        json!({"name": "c", "resources": resources})
    }

    fn spec(containers: Vec<Value>, init: Vec<Value>) -> PodSpec {
        serde_json::from_value(json!({"containers": containers, "initContainers": init})).unwrap()
    }

    fn both(cpu: &str, memory: &str) -> Value {
        json!({"cpu": cpu, "memory": memory})
    }

    /// The cases of upstream's `TestComputePodQOS` (pkg/apis/core/v1/helper/qos).
    #[test]
    fn classes_match_upstream_cases() {
        let cases: Vec<(&str, Vec<Value>, Vec<Value>, QosClass)> = vec![
            (
                "no resources",
                vec![container(json!({}))],
                vec![],
                QosClass::BestEffort,
            ),
            (
                "two empty containers",
                vec![container(json!({})), container(json!({}))],
                vec![],
                QosClass::BestEffort,
            ),
            (
                "requests equal limits",
                vec![container(
                    json!({"requests": both("100m", "100Mi"), "limits": both("100m", "100Mi")}),
                )],
                vec![],
                QosClass::Guaranteed,
            ),
            (
                "limits only default the requests",
                vec![container(json!({"limits": both("100m", "100Mi")}))],
                vec![],
                QosClass::Guaranteed,
            ),
            (
                "two guaranteed containers",
                vec![
                    container(json!({"limits": both("100m", "100Mi")})),
                    container(json!({"limits": both("200m", "1Gi")})),
                ],
                vec![],
                QosClass::Guaranteed,
            ),
            (
                "equal in other units",
                vec![container(
                    json!({"requests": both("0.1", "104857600"), "limits": both("100m", "100Mi")}),
                )],
                vec![],
                QosClass::Guaranteed,
            ),
            (
                "one best-effort container",
                vec![
                    container(json!({"limits": both("100m", "100Mi")})),
                    container(json!({})),
                ],
                vec![],
                QosClass::Burstable,
            ),
            (
                "cpu limit only",
                vec![container(json!({"limits": {"cpu": "100m"}}))],
                vec![],
                QosClass::Burstable,
            ),
            (
                "request below limit",
                vec![container(
                    json!({"requests": both("10m", "100Mi"), "limits": both("100m", "100Mi")}),
                )],
                vec![],
                QosClass::Burstable,
            ),
            (
                "requests only",
                vec![container(json!({"requests": {"memory": "10Mi"}}))],
                vec![],
                QosClass::Burstable,
            ),
            (
                "zero quantities count as unset",
                vec![container(json!({"requests": both("0", "0")}))],
                vec![],
                QosClass::BestEffort,
            ),
            (
                "other resources do not count",
                vec![container(json!({"limits": {"nvidia.com/gpu": "1"}}))],
                vec![],
                QosClass::BestEffort,
            ),
            (
                "init container without limits",
                vec![container(json!({"limits": both("100m", "100Mi")}))],
                vec![container(json!({}))],
                QosClass::Burstable,
            ),
            (
                "init container guaranteed too",
                vec![container(json!({"limits": both("100m", "100Mi")}))],
                vec![container(json!({"limits": both("1", "1Gi")}))],
                QosClass::Guaranteed,
            ),
            (
                "best-effort app with a burstable init",
                vec![container(json!({}))],
                vec![container(json!({"requests": {"cpu": "1"}}))],
                QosClass::Burstable,
            ),
        ];
        for (name, containers, init, want) in cases {
            assert_eq!(pod_qos(&spec(containers, init)), want, "{name}");
        }
    }

    #[test]
    fn oom_scores_order_the_classes() {
        let none: Container = serde_json::from_value(json!({"name": "c"})).unwrap();
        assert_eq!(oom_score_adj(QosClass::Guaranteed, &none, 1 << 30), -997);
        assert_eq!(oom_score_adj(QosClass::BestEffort, &none, 1 << 30), 1000);
        // No memory request: as close to BestEffort as Burstable gets.
        assert_eq!(oom_score_adj(QosClass::Burstable, &none, 1 << 30), 999);
        let half: Container = serde_json::from_value(
            json!({"name": "c", "resources": {"requests": {"memory": "512Mi"}}}),
        )
        .unwrap();
        assert_eq!(oom_score_adj(QosClass::Burstable, &half, 1 << 30), 500);
        let all: Container = serde_json::from_value(
            json!({"name": "c", "resources": {"requests": {"memory": "2Gi"}}}),
        )
        .unwrap();
        assert_eq!(oom_score_adj(QosClass::Burstable, &all, 1 << 30), 3);
    }
}
