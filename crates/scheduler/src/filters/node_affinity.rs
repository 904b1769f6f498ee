//! NodeAffinity (filter half): `spec.nodeSelector` and the required node affinity
//! terms must both match the node.

use k8s_openapi::api::core::v1::Pod;

use crate::framework::Rejection;
use crate::labels::{self, Labels};
use crate::snapshot::{NodeInfo, PodInfo};

/// Upstream's `ErrReasonPod`.
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// Whether a node with `node_labels` called `node_name` satisfies the pod's
/// nodeSelector and required node affinity (`GetRequiredNodeAffinity(pod).Match`).
pub fn required_matches(pod: &Pod, node_labels: &Labels, node_name: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let selector_matches = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(key, value)| node_labels.get(key) == Some(value));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|affinity| affinity.node_affinity.as_ref())
        .and_then(|affinity| {
            affinity
                .required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    selector_matches
        && required
            .is_none_or(|selector| labels::node_selector_matches(selector, node_labels, node_name))
}

/// Rejects a node the pod's node selection does not match.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    if required_matches(&pod.pod, &node.labels, &node.name) {
        Ok(())
    } else {
        Err(Rejection::unresolvable(REASON))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod, with_label};
    use k8s_openapi::api::core::v1::{
        Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    };
    use std::sync::Arc;

    fn required(terms: Vec<NodeSelectorTerm>) -> Affinity {
        Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: terms,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn term(key: &str, operator: &str, values: &[&str]) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: key.into(),
                operator: operator.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            match_fields: None,
        }
    }

    #[test]
    fn node_selector_must_match() {
        let ssd = NodeInfo::new(Arc::new(with_label(node("a", "1", "1Gi"), "disk", "ssd")));
        let plain = NodeInfo::new(Arc::new(node("b", "1", "1Gi")));
        let pod = PodInfo::new(Arc::new(
            pod("p", "0", "0").node_selector("disk", "ssd").build(),
        ));
        assert!(filter(&pod, &ssd).is_ok());
        assert_eq!(
            filter(&pod, &plain).expect_err("no label").reasons,
            [REASON]
        );
    }

    #[test]
    fn required_terms_are_ored() {
        let zone_b = NodeInfo::new(Arc::new(with_label(node("a", "1", "1Gi"), "zone", "b")));
        let pod = pod("p", "0", "0")
            .affinity(required(vec![
                term("zone", "In", &["a"]),
                term("zone", "In", &["b"]),
            ]))
            .build();
        assert!(filter(&PodInfo::new(Arc::new(pod)), &zone_b).is_ok());
        let pod = pod_with(required(vec![term("zone", "NotIn", &["b"])]));
        assert!(filter(&pod, &zone_b).is_err());
    }

    fn pod_with(affinity: Affinity) -> PodInfo {
        PodInfo::new(Arc::new(pod("p", "0", "0").affinity(affinity).build()))
    }

    #[test]
    fn match_fields_select_by_node_name() {
        let field_term = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec!["a".into()]),
            }]),
        };
        let pod = pod_with(required(vec![field_term]));
        assert!(filter(&pod, &NodeInfo::new(Arc::new(node("a", "1", "1Gi")))).is_ok());
        assert!(filter(&pod, &NodeInfo::new(Arc::new(node("b", "1", "1Gi")))).is_err());
    }
}
