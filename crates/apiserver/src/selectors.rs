//! Label and field selectors, as `?labelSelector=` and `?fieldSelector=`
//! carry them.

use gantry_api::ApiError;
use serde_json::Value;

/// A request's `labelSelector` and `fieldSelector`, applied together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selection {
    /// Reads both selectors from a request's query parameters.
    pub fn from_query(query: &std::collections::HashMap<String, String>) -> Result<Self, ApiError> {
        let param = |name: &str| query.get(name).map(String::as_str).unwrap_or("");
        Ok(Selection {
            labels: LabelSelector::parse(param("labelSelector"))?,
            fields: FieldSelector::parse(param("fieldSelector"))?,
        })
    }

    /// Whether an object satisfies both selectors.
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelRequirement>);

impl LabelSelector {
    /// Parses Kubernetes' selector syntax: `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in split_terms(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(term).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unable to parse requirement: invalid label selector: {term:?}"
                ))
            })?);
        }
        Ok(LabelSelector(requirements))
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|req| match req {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::NotExists(k) => label(k).is_none(),
        })
    }
}

/// Splits on commas that are not inside `( )`.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn parse_requirement(term: &str) -> Option<LabelRequirement> {
    if let Some(key) = term.strip_prefix('!') {
        return valid_key(key.trim()).then(|| LabelRequirement::NotExists(key.trim().into()));
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Some(LabelRequirement::NotEquals(
            valid(key)?,
            value.trim().into(),
        ));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Some(LabelRequirement::Equals(valid(key)?, value.trim().into()));
    }
    for (word, negated) in [(" notin ", true), (" in ", false)] {
        if let Some((key, rest)) = term.split_once(word) {
            let values = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
            let values = values
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            let key = valid(key)?;
            return Some(if negated {
                LabelRequirement::NotIn(key, values)
            } else {
                LabelRequirement::In(key, values)
            });
        }
    }
    valid_key(term).then(|| LabelRequirement::Exists(term.into()))
}

fn valid(key: &str) -> Option<String> {
    let key = key.trim();
    valid_key(key).then(|| key.to_string())
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

/// A parsed field selector: `metadata.name=x,spec.nodeName!=`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                )));
            };
            terms.push((field.trim().to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    /// Whether the object's fields satisfy every term; an absent field reads
    /// as the empty string, so `spec.nodeName=` selects unscheduled pods.
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let actual = field_value(object, field);
            (actual == *value) == *equal
        })
    }
}

fn field_value(object: &Value, path: &str) -> String {
    let mut node = object;
    for part in path.split('.') {
        node = &node[part];
    }
    match node {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selectors_follow_kubernetes_syntax() {
        let object = pod(json!({"app": "web", "tier": "front"}));
        let matches = |s: &str| LabelSelector::parse(s).expect("parses").matches(&object);
        assert!(matches(""));
        assert!(matches("app=web"));
        assert!(matches("app==web,tier"));
        assert!(!matches("app!=web"));
        assert!(matches("tier in (front, back)"));
        assert!(!matches("tier notin (front)"));
        assert!(matches("!missing"));
        assert!(!matches("missing"));
        assert!(matches("env notin (prod)"));
        assert!(LabelSelector::parse("a in (x").is_err());
        assert!(LabelSelector::parse("bad key=1").is_err());
    }

    #[test]
    fn field_selectors_read_nested_fields() {
        let object = pod(json!({}));
        let matches = |s: &str| FieldSelector::parse(s).expect("parses").matches(&object);
        assert!(matches("metadata.name=p,metadata.namespace=ns"));
        assert!(matches("spec.nodeName!=n2"));
        assert!(matches("status.phase=Running"));
        assert!(!matches("spec.nodeName="));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
