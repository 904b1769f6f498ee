//! Privilege-escalation prevention, as upstream's RBAC storage does: a user may only
//! write a Role or ClusterRole whose rules they hold themselves (or with the `escalate`
//! verb on it), and only bind a role whose rules they hold (or with `bind` on it).

use gantry_api::{ApiError, Reason, ResourceInfo};
use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef};
use serde_json::Value;

use super::attributes::{Attributes, ResourceAttributes};
use super::rules::covers;
use super::{Authorizer, MASTERS_GROUP};
use crate::auth::UserInfo;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Refuses to store `object` (a Role, ClusterRole or binding about to be created or
/// updated in `namespace`) when it would grant permissions `user` does not hold.
pub fn check_write(
    authorizer: &Authorizer,
    user: &UserInfo,
    resource: &ResourceInfo,
    namespace: Option<&str>,
    object: &Value,
) -> Result<(), ApiError> {
    if resource.group_version.group != RBAC_GROUP || user.groups.iter().any(|g| g == MASTERS_GROUP)
    {
        return Ok(());
    }
    let namespace = namespace.filter(|_| resource.namespaced);
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (granted, special_verb, checked_resource, checked_name) = match resource.kind {
        "Role" | "ClusterRole" => {
            let rules = decode_rules(object)?;
            (rules, "escalate", resource.plural, name.to_string())
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let role_ref: RoleRef = serde_json::from_value(object["roleRef"].clone())
                .map_err(|e| ApiError::bad_request(format!("invalid roleRef: {e}")))?;
            let plural = if role_ref.kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            let rules = authorizer.role_rules(&role_ref, namespace);
            (rules, "bind", plural, role_ref.name)
        }
        _ => return Ok(()),
    };
    let special = Attributes::Resource(ResourceAttributes {
        verb: special_verb.to_string(),
        api_group: RBAC_GROUP.to_string(),
        resource: checked_resource.to_string(),
        subresource: None,
        name: Some(checked_name),
        namespace: namespace.map(str::to_string),
    });
    if authorizer.allows(user, &special) {
        return Ok(());
    }
    let held = authorizer.rules_for(user, namespace);
    let missing: Vec<&PolicyRule> = granted.iter().filter(|rule| !covers(&held, rule)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(escalation_error(user, resource, name, &missing))
}

fn decode_rules(object: &Value) -> Result<Vec<PolicyRule>, ApiError> {
    match object.get("rules") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(rules) => serde_json::from_value(rules.clone())
            .map_err(|e| ApiError::bad_request(format!("invalid rules: {e}"))),
    }
}

/// Upstream's wording: `... is attempting to grant RBAC permissions not currently held:`
/// followed by the missing rules.
fn escalation_error(
    user: &UserInfo,
    resource: &ResourceInfo,
    name: &str,
    missing: &[&PolicyRule],
) -> ApiError {
    let groups = user
        .groups
        .iter()
        .map(|g| format!("{g:?}"))
        .collect::<Vec<_>>()
        .join(" ");
    let rules = missing
        .iter()
        .map(|rule| describe(rule))
        .collect::<Vec<_>>()
        .join("\n");
    ApiError::new(
        Reason::Forbidden,
        format!(
            "{}.{RBAC_GROUP} \"{name}\" is forbidden: user \"{}\" (groups=[{groups}]) is attempting to grant RBAC permissions not currently held:\n{rules}",
            resource.plural, user.name
        ),
    )
}

/// `{APIGroups:["apps"], Resources:["deployments"], Verbs:["get"]}`, as upstream prints a rule.
fn describe(rule: &PolicyRule) -> String {
    let list = |values: &[String]| {
        values
            .iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    for (label, values) in [
        ("APIGroups", rule.api_groups.as_deref()),
        ("Resources", rule.resources.as_deref()),
        ("ResourceNames", rule.resource_names.as_deref()),
        ("NonResourceURLs", rule.non_resource_urls.as_deref()),
    ] {
        if let Some(values) = values.filter(|v| !v.is_empty()) {
            parts.push(format!("{label}:[{}]", list(values)));
        }
    }
    parts.push(format!("Verbs:[{}]", list(&rule.verbs)));
    format!("{{{}}}", parts.join(", "))
}
