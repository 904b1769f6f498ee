//! NodePorts: two pods cannot bind the same host port (for overlapping addresses
//! and the same protocol) on one node.

use crate::framework::Rejection;
use crate::snapshot::{NodeInfo, PodInfo};

/// Upstream's `ErrReason`.
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// Rejects a node where one of the pod's host ports is taken.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    let conflict = pod.host_ports.iter().any(|wanted| {
        node.used_ports
            .iter()
            .any(|used| used.conflicts_with(wanted))
    });
    if conflict {
        Err(Rejection::unschedulable(REASON))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod};
    use std::sync::Arc;

    #[test]
    fn a_taken_host_port_rejects_the_node() {
        let mut info = NodeInfo::new(Arc::new(node("n", "1", "1Gi")));
        info.add_pod(Arc::new(PodInfo::new(Arc::new(
            pod("web", "0", "0").host_port(80).on("n").build(),
        ))));
        let same = PodInfo::new(Arc::new(pod("p", "0", "0").host_port(80).build()));
        let other = PodInfo::new(Arc::new(pod("q", "0", "0").host_port(8080).build()));
        assert_eq!(
            filter(&same, &info).expect_err("conflict").reasons,
            [REASON]
        );
        assert!(filter(&other, &info).is_ok());
    }
}
