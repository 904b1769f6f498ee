//! The filter plugins of kube-scheduler's default profile, in its order. Each
//! takes the pod and one node and either passes or rejects with upstream's reasons.

pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_unschedulable;
pub mod resources_fit;
pub mod taint_toleration;
pub mod topology_spread;
pub mod volume_binding;

use crate::framework::Rejection;
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

/// What the filters precompute once per pod (upstream's PreFilter results).
#[derive(Debug, Default)]
pub struct PreFilterState {
    volumes: volume_binding::State,
    spread: topology_spread::State,
    affinity: inter_pod_affinity::State,
}

impl PreFilterState {
    /// Runs the pre-filter passes for `pod`; a rejection here rejects every node.
    pub fn compute(pod: &PodInfo, snapshot: &Snapshot) -> Result<PreFilterState, Rejection> {
        Ok(PreFilterState {
            volumes: volume_binding::State::compute(pod, &snapshot.volumes)?,
            spread: topology_spread::State::compute(pod, snapshot),
            affinity: inter_pod_affinity::State::compute(pod, snapshot),
        })
    }

    /// Runs every filter on `node`, stopping at the first rejection as upstream does.
    pub fn filter(
        &self,
        pod: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) -> Result<(), Rejection> {
        node_unschedulable::filter(pod, node)?;
        node_name::filter(pod, node)?;
        taint_toleration::filter(pod, node)?;
        node_affinity::filter(pod, node)?;
        node_ports::filter(pod, node)?;
        resources_fit::filter(pod, node)?;
        self.volumes.filter(node)?;
        self.spread.filter(pod, node)?;
        self.affinity.filter(pod, node, snapshot)
    }
}
