//! TaintToleration (filter half): a node's `NoSchedule` and `NoExecute` taints
//! keep off every pod that does not tolerate them. `PreferNoSchedule` only scores.

use crate::framework::Rejection;
use crate::labels;
use crate::snapshot::{NodeInfo, PodInfo};

/// Rejects a node with a `NoSchedule`/`NoExecute` taint the pod does not tolerate,
/// naming the first such taint as upstream does.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    let untolerated = node.taints.iter().find(|taint| {
        matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            && !labels::tolerated(&pod.tolerations, taint)
    });
    match untolerated {
        None => Ok(()),
        Some(taint) => Err(Rejection::unresolvable(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            taint.key,
            taint.value.as_deref().unwrap_or_default()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod, with_taint};
    use k8s_openapi::api::core::v1::Toleration;
    use std::sync::Arc;

    #[test]
    fn an_untolerated_taint_rejects_with_upstreams_message() {
        let tainted = NodeInfo::new(Arc::new(with_taint(
            node("n", "1", "1Gi"),
            "dedicated",
            "gpu",
            "NoSchedule",
        )));
        let pod = PodInfo::new(Arc::new(pod("p", "0", "0").build()));
        let rejection = filter(&pod, &tainted).expect_err("untolerated");
        assert_eq!(
            rejection.reasons,
            ["node(s) had untolerated taint {dedicated: gpu}"]
        );
    }

    #[test]
    fn tolerated_and_prefer_no_schedule_taints_pass() {
        let tainted = with_taint(node("n", "1", "1Gi"), "dedicated", "gpu", "NoExecute");
        let tainted = NodeInfo::new(Arc::new(with_taint(
            tainted,
            "soft",
            "x",
            "PreferNoSchedule",
        )));
        let tolerating = pod("p", "0", "0").toleration(Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("gpu".into()),
            ..Default::default()
        });
        assert!(filter(&PodInfo::new(Arc::new(tolerating.build())), &tainted).is_ok());
    }
}
