//! Label selectors, node selector terms and tolerations: the matching rules that
//! several plugins share, written once with upstream's edge cases.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Labels of an object; absent labels are an empty map.
pub type Labels = BTreeMap<String, String>;

/// Whether `labels` match a metav1 `LabelSelector`. An empty selector matches
/// everything; callers treat an absent (`None`) selector as matching nothing, as
/// `metav1.LabelSelectorAsSelector(nil)` does.
pub fn selector_matches(selector: &LabelSelector, labels: &Labels) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    labels_match
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|requirement| label_requirement_matches(requirement, labels))
}

fn label_requirement_matches(requirement: &LabelSelectorRequirement, labels: &Labels) -> bool {
    let value = labels.get(&requirement.key);
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|value| values.contains(value)),
        "NotIn" => value.is_none_or(|value| !values.contains(value)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

/// Whether a node with `labels` and `name` matches a required `NodeSelector`: the
/// terms are ORed; a term with neither expressions nor fields matches nothing.
pub fn node_selector_matches(selector: &NodeSelector, labels: &Labels, name: &str) -> bool {
    selector
        .node_selector_terms
        .iter()
        .any(|term| node_selector_term_matches(term, labels, name))
}

/// Whether a node matches one `NodeSelectorTerm` (its requirements are ANDed).
pub fn node_selector_term_matches(term: &NodeSelectorTerm, labels: &Labels, name: &str) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    let expressions_match = expressions.iter().all(|requirement| {
        node_requirement_matches(
            requirement,
            labels.get(&requirement.key).map(String::as_str),
        )
    });
    let fields_match = fields.iter().all(|requirement| {
        requirement.key == "metadata.name" && node_requirement_matches(requirement, Some(name))
    });
    expressions_match && fields_match
}

fn node_requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let compare = |ordering: std::cmp::Ordering| {
        let (Some(value), [bound]) = (value, values) else {
            return false;
        };
        match (value.parse::<i64>(), bound.parse::<i64>()) {
            (Ok(value), Ok(bound)) => value.cmp(&bound) == ordering,
            _ => false,
        }
    };
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|value| values.iter().any(|v| v == value)),
        "NotIn" => value.is_none_or(|value| !values.iter().any(|v| v == value)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => compare(std::cmp::Ordering::Greater),
        "Lt" => compare(std::cmp::Ordering::Less),
        _ => false,
    }
}

/// Whether `toleration` tolerates `taint` (`v1.Toleration.ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration
        .effect
        .as_deref()
        .filter(|effect| !effect.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = toleration.key.as_deref().filter(|key| !key.is_empty())
        && key != taint.key
    {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations
        .iter()
        .any(|toleration| tolerates(toleration, taint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn label_selectors_follow_metav1_semantics() {
        let node = labels(&[("app", "web"), ("tier", "front")]);
        assert!(
            selector_matches(&LabelSelector::default(), &node),
            "empty matches all"
        );
        let selector = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["back".into()]),
            }]),
        };
        assert!(selector_matches(&selector, &node));
        assert!(!selector_matches(&selector, &labels(&[("app", "db")])));
        let absent = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "gpu".into(),
                operator: "DoesNotExist".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(selector_matches(&absent, &node));
    }

    #[test]
    fn node_selector_operators() {
        let node = labels(&[("zone", "a"), ("cores", "8")]);
        let term = |requirements: Vec<NodeSelectorRequirement>| NodeSelectorTerm {
            match_expressions: Some(requirements),
            match_fields: None,
        };
        let matches =
            |r: NodeSelectorRequirement| node_selector_term_matches(&term(vec![r]), &node, "n1");
        assert!(matches(requirement("zone", "In", &["a", "b"])));
        assert!(!matches(requirement("zone", "NotIn", &["a"])));
        assert!(matches(requirement("missing", "NotIn", &["a"])));
        assert!(matches(requirement("zone", "Exists", &[])));
        assert!(matches(requirement("missing", "DoesNotExist", &[])));
        assert!(matches(requirement("cores", "Gt", &["4"])));
        assert!(!matches(requirement("cores", "Lt", &["4"])));
        assert!(
            !matches(requirement("zone", "Gt", &["4"])),
            "non-integers never compare"
        );
        assert!(!node_selector_term_matches(
            &NodeSelectorTerm::default(),
            &node,
            "n1"
        ));
    }

    #[test]
    fn match_fields_select_the_node_name() {
        let term = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![requirement("metadata.name", "In", &["n1"])]),
        };
        assert!(node_selector_term_matches(&term, &Labels::new(), "n1"));
        assert!(!node_selector_term_matches(&term, &Labels::new(), "n2"));
    }

    #[test]
    fn tolerations_match_taints() {
        let taint = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let toleration = |key: Option<&str>,
                          operator: &str,
                          value: Option<&str>,
                          effect: Option<&str>| Toleration {
            key: key.map(Into::into),
            operator: Some(operator.into()),
            value: value.map(Into::into),
            effect: effect.map(Into::into),
            toleration_seconds: None,
        };
        assert!(tolerates(
            &toleration(Some("dedicated"), "Equal", Some("gpu"), None),
            &taint
        ));
        assert!(!tolerates(
            &toleration(Some("dedicated"), "Equal", Some("cpu"), None),
            &taint
        ));
        assert!(tolerates(
            &toleration(Some("dedicated"), "Exists", None, Some("NoSchedule")),
            &taint
        ));
        assert!(!tolerates(
            &toleration(Some("dedicated"), "Exists", None, Some("NoExecute")),
            &taint
        ));
        assert!(
            tolerates(&toleration(None, "Exists", None, None), &taint),
            "tolerates everything"
        );
    }
}
