//! NodeResourcesFit (filter half): the pod's requests must fit in the node's
//! allocatable minus what its pods already request, and the node must have
//! room for one more pod.

use crate::framework::{Code, Rejection};
use crate::snapshot::{NodeInfo, PodInfo};

/// Upstream's reason when the node is at its pod limit.
pub const TOO_MANY_PODS: &str = "Too many pods";

/// Rejects a node lacking room, listing every insufficient resource. When the pod
/// asks for more than the node's whole allocatable, evicting pods cannot help,
/// so the rejection is unresolvable (upstream's `InsufficientResource.Unresolvable`).
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    let wanted = &pod.requests.requests;
    let allocatable = &node.allocatable;
    let used = &node.requested;
    let mut reasons = Vec::new();
    if used.pods + 1 > allocatable.pods {
        reasons.push(TOO_MANY_PODS.to_string());
    }
    let mut unresolvable = false;
    let mut check = |name: &str, requested: i64, allocatable: i64, used: i64| {
        if requested > 0 && requested > allocatable - used {
            reasons.push(format!("Insufficient {name}"));
            unresolvable |= requested > allocatable;
        }
    };
    check(
        "cpu",
        wanted.milli_cpu,
        allocatable.milli_cpu,
        used.milli_cpu,
    );
    check("memory", wanted.memory, allocatable.memory, used.memory);
    check(
        "ephemeral-storage",
        wanted.ephemeral_storage,
        allocatable.ephemeral_storage,
        used.ephemeral_storage,
    );
    for (name, &requested) in &wanted.scalar {
        check(name, requested, allocatable.scalar(name), used.scalar(name));
    }
    if reasons.is_empty() {
        return Ok(());
    }
    let code = if unresolvable {
        Code::UnschedulableAndUnresolvable
    } else {
        Code::Unschedulable
    };
    Err(Rejection { code, reasons })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::sync::Arc;

    fn node_with(bound: &[(&str, &str)]) -> NodeInfo {
        let mut info = NodeInfo::new(Arc::new(node("n", "2", "4Gi")));
        for (index, (cpu, memory)) in bound.iter().enumerate() {
            let name = format!("bound-{index}");
            info.add_pod(Arc::new(PodInfo::new(Arc::new(
                pod(&name, cpu, memory).on("n").build(),
            ))));
        }
        info
    }

    fn wanting(cpu: &str, memory: &str) -> PodInfo {
        PodInfo::new(Arc::new(pod("p", cpu, memory).build()))
    }

    #[test]
    fn fits_in_what_is_left() {
        let node = node_with(&[("1", "2Gi")]);
        assert!(filter(&wanting("1", "2Gi"), &node).is_ok());
        let rejection = filter(&wanting("1500m", "3Gi"), &node).expect_err("too big");
        assert_eq!(
            rejection.reasons,
            ["Insufficient cpu", "Insufficient memory"]
        );
        assert_eq!(
            rejection.code,
            Code::Unschedulable,
            "evicting the bound pod would help"
        );
    }

    #[test]
    fn more_than_the_whole_node_is_unresolvable() {
        let rejection = filter(&wanting("3", "0"), &node_with(&[])).expect_err("too big");
        assert_eq!(rejection.reasons, ["Insufficient cpu"]);
        assert_eq!(rejection.code, Code::UnschedulableAndUnresolvable);
    }

    #[test]
    fn the_pod_count_is_limited() {
        let mut node = node_with(&[]);
        node.allocatable.pods = 1;
        assert!(filter(&wanting("0", "0"), &node).is_ok());
        node.add_pod(Arc::new(wanting("0", "0")));
        assert_eq!(
            filter(&wanting("0", "0"), &node).expect_err("full").reasons,
            [TOO_MANY_PODS]
        );
    }

    #[test]
    fn extended_resources_must_be_offered() {
        let gpu_pod = pod("p", "0", "0").with_spec(|spec| {
            let requests = spec.containers[0]
                .resources
                .get_or_insert_default()
                .requests
                .get_or_insert_default();
            requests.insert("example.com/gpu".into(), Quantity("1".into()));
        });
        let gpu_pod = PodInfo::new(Arc::new(gpu_pod.build()));
        let mut node = node_with(&[]);
        assert_eq!(
            filter(&gpu_pod, &node).expect_err("no gpus").reasons,
            ["Insufficient example.com/gpu"]
        );
        node.allocatable.scalar.insert("example.com/gpu".into(), 1);
        assert!(filter(&gpu_pod, &node).is_ok());
    }
}
