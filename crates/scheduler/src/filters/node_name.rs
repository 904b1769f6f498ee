//! NodeName: a pod that names its node (`spec.nodeName`) fits only that node.

use crate::framework::Rejection;
use crate::snapshot::{NodeInfo, PodInfo};

/// Upstream's `ErrReason`.
pub const REASON: &str = "node(s) didn't match the requested node name";

/// Rejects every node but the one the pod names, if it names one.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    let requested = pod
        .pod
        .spec
        .as_ref()
        .and_then(|spec| spec.node_name.as_deref());
    match requested {
        Some(name) if !name.is_empty() && name != node.name => Err(Rejection::unresolvable(REASON)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod};
    use std::sync::Arc;

    #[test]
    fn only_the_named_node_fits() {
        let named = PodInfo::new(Arc::new(pod("p", "0", "0").on("a").build()));
        let a = NodeInfo::new(Arc::new(node("a", "1", "1Gi")));
        let b = NodeInfo::new(Arc::new(node("b", "1", "1Gi")));
        assert!(filter(&named, &a).is_ok());
        assert_eq!(
            filter(&named, &b).expect_err("other node").reasons,
            [REASON]
        );
        let unnamed = PodInfo::new(Arc::new(pod("p", "0", "0").build()));
        assert!(filter(&unnamed, &b).is_ok());
    }
}
