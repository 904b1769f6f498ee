//! NodeUnschedulable: cordoned nodes (`spec.unschedulable`) take only pods that
//! tolerate the `node.kubernetes.io/unschedulable:NoSchedule` taint.

use k8s_openapi::api::core::v1::Taint;

use crate::framework::Rejection;
use crate::labels;
use crate::snapshot::{NodeInfo, PodInfo};

/// Upstream's `ErrReasonUnschedulable`.
pub const REASON: &str = "node(s) were unschedulable";

/// The taint a cordoned node is treated as having.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Rejects a cordoned node unless the pod tolerates it.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    if !node.unschedulable {
        return Ok(());
    }
    let taint = Taint {
        key: TAINT_UNSCHEDULABLE.into(),
        effect: "NoSchedule".into(),
        value: None,
        time_added: None,
    };
    if labels::tolerated(&pod.tolerations, &taint) {
        Ok(())
    } else {
        Err(Rejection::unresolvable(REASON))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod};
    use k8s_openapi::api::core::v1::Toleration;
    use std::sync::Arc;

    fn cordoned() -> NodeInfo {
        let mut node = node("n", "1", "1Gi");
        node.spec.get_or_insert_default().unschedulable = Some(true);
        NodeInfo::new(Arc::new(node))
    }

    #[test]
    fn cordoned_nodes_reject_pods() {
        let pod = PodInfo::new(Arc::new(pod("p", "0", "0").build()));
        let rejection = filter(&pod, &cordoned()).expect_err("cordoned");
        assert_eq!(rejection.reasons, [REASON]);
        assert!(filter(&pod, &NodeInfo::new(Arc::new(node("n", "1", "1Gi")))).is_ok());
    }

    #[test]
    fn the_unschedulable_toleration_admits_a_pod() {
        let tolerating = pod("p", "0", "0").toleration(Toleration {
            key: Some(TAINT_UNSCHEDULABLE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        });
        assert!(filter(&PodInfo::new(Arc::new(tolerating.build())), &cordoned()).is_ok());
    }
}
