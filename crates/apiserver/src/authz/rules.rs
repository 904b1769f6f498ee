//! RBAC rule matching, as upstream's `rbac/validation` package: whether one
//! `PolicyRule` grants one request.

use k8s_openapi::api::rbac::v1::PolicyRule;

use super::attributes::Attributes;

/// The wildcard RBAC rules use for "every verb / group / resource / URL".
const ALL: &str = "*";

/// Whether `rule` grants the request `attributes` describe.
pub fn rule_allows(rule: &PolicyRule, attributes: &Attributes) -> bool {
    match attributes {
        Attributes::Resource(request) => {
            verb_matches(rule, &request.verb)
                && api_group_matches(rule, &request.api_group)
                && resource_matches(rule, &request.resource, request.subresource.as_deref())
                && resource_name_matches(rule, request.name.as_deref())
        }
        Attributes::NonResource { verb, path } => {
            verb_matches(rule, verb) && non_resource_url_matches(rule, path)
        }
    }
}

fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == ALL || v == verb)
}

fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    listed(&rule.api_groups).any(|g| g == ALL || g == group)
}

/// `pods` grants only `pods`; `pods/log` and `*/log` grant the subresource; `*` grants all.
fn resource_matches(rule: &PolicyRule, resource: &str, subresource: Option<&str>) -> bool {
    listed(&rule.resources).any(|r| match subresource {
        _ if r == ALL => true,
        None => r == resource,
        Some(sub) => {
            r.strip_prefix(resource)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|rest| rest == sub)
                || r.strip_prefix("*/").is_some_and(|rest| rest == sub)
        }
    })
}

/// A rule without `resourceNames` covers every object; one with them covers only requests
/// naming one of those objects (so never a list or a create without a name).
fn resource_name_matches(rule: &PolicyRule, name: Option<&str>) -> bool {
    let names = rule.resource_names.as_deref().unwrap_or_default();
    if names.is_empty() {
        return true;
    }
    name.is_some_and(|name| names.iter().any(|n| n == name))
}

/// Exact paths, `*`, or a prefix ending in `*` (`/apis/*`, `/healthz/*`).
fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    listed(&rule.non_resource_urls).any(|url| {
        url == ALL
            || url == path
            || url
                .strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

fn listed(values: &Option<Vec<String>>) -> impl Iterator<Item = &str> {
    values.iter().flatten().map(String::as_str)
}

/// Whether every request `wanted` grants is also granted by one of `held` (upstream's
/// `Covers`, used to stop users from granting permissions they lack). A rule is split
/// into its single-verb, single-resource parts, each of which must be covered.
pub fn covers(held: &[PolicyRule], wanted: &PolicyRule) -> bool {
    breakdown(wanted)
        .iter()
        .all(|part| held.iter().any(|rule| part_covered(rule, part)))
}

/// One verb of one resource (or name, or URL) of a rule.
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let single = |v: &str| Some(vec![v.to_string()]);
    let mut parts = Vec::new();
    for verb in &rule.verbs {
        for url in listed(&rule.non_resource_urls) {
            parts.push(PolicyRule {
                verbs: vec![verb.clone()],
                non_resource_urls: single(url),
                ..Default::default()
            });
        }
        for group in listed(&rule.api_groups) {
            for resource in listed(&rule.resources) {
                let names = rule.resource_names.as_deref().unwrap_or_default();
                let base = PolicyRule {
                    verbs: vec![verb.clone()],
                    api_groups: single(group),
                    resources: single(resource),
                    ..Default::default()
                };
                if names.is_empty() {
                    parts.push(base);
                    continue;
                }
                for name in names {
                    parts.push(PolicyRule {
                        resource_names: single(name),
                        ..base.clone()
                    });
                }
            }
        }
    }
    parts
}

/// Whether `rule` grants everything the single-valued `part` does: each of its
/// dimensions is a wildcard or names the part's value.
fn part_covered(rule: &PolicyRule, part: &PolicyRule) -> bool {
    let has = |values: &[String], wanted: &str| values.iter().any(|v| v == ALL || v == wanted);
    let first = |values: &Option<Vec<String>>| listed(values).next().map(str::to_string);
    let Some(verb) = part.verbs.first() else {
        return true;
    };
    if !has(&rule.verbs, verb) {
        return false;
    }
    if let Some(url) = first(&part.non_resource_urls) {
        return listed(&rule.non_resource_urls).any(|held| {
            held == ALL
                || held == url
                || held
                    .strip_suffix('*')
                    .is_some_and(|prefix| url.starts_with(prefix))
        });
    }
    let (Some(group), Some(resource)) = (first(&part.api_groups), first(&part.resources)) else {
        return true;
    };
    let groups = rule.api_groups.as_deref().unwrap_or_default();
    let resources = rule.resources.as_deref().unwrap_or_default();
    let resource_held = has(resources, &resource)
        || resource
            .split_once('/')
            .is_some_and(|(_, sub)| resources.iter().any(|r| r == &format!("*/{sub}")));
    let names = rule.resource_names.as_deref().unwrap_or_default();
    let name_held =
        names.is_empty() || first(&part.resource_names).is_some_and(|name| names.contains(&name));
    has(groups, &group) && resource_held && name_held
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::attributes::ResourceAttributes;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
        let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect());
        PolicyRule {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            api_groups: strings(groups),
            resources: strings(resources),
            resource_names: (!names.is_empty()).then(|| strings(names)).flatten(),
            non_resource_urls: None,
        }
    }

    fn url_rule(verbs: &[&str], urls: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            non_resource_urls: Some(urls.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    fn request(
        verb: &str,
        group: &str,
        resource: &str,
        sub: Option<&str>,
        name: Option<&str>,
    ) -> Attributes {
        Attributes::Resource(ResourceAttributes {
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.map(str::to_string),
            name: name.map(str::to_string),
            namespace: Some("default".into()),
        })
    }

    #[test]
    fn verbs_groups_and_resources_must_all_match() {
        let pods = rule(&["get", "list"], &[""], &["pods"], &[]);
        assert!(rule_allows(&pods, &request("list", "", "pods", None, None)));
        assert!(rule_allows(
            &pods,
            &request("get", "", "pods", None, Some("web"))
        ));
        assert!(!rule_allows(
            &pods,
            &request("delete", "", "pods", None, Some("web"))
        ));
        assert!(!rule_allows(
            &pods,
            &request("list", "apps", "pods", None, None)
        ));
        assert!(!rule_allows(
            &pods,
            &request("list", "", "services", None, None)
        ));
        let everything = rule(&["*"], &["*"], &["*"], &[]);
        assert!(rule_allows(
            &everything,
            &request("deletecollection", "apps", "deployments", None, None)
        ));
        assert!(rule_allows(
            &everything,
            &request("create", "", "pods", Some("exec"), Some("web"))
        ));
    }

    #[test]
    fn subresources_need_their_own_grant() {
        let pods = rule(&["get"], &[""], &["pods"], &[]);
        assert!(!rule_allows(
            &pods,
            &request("get", "", "pods", Some("log"), Some("web"))
        ));
        let logs = rule(&["get"], &[""], &["pods/log"], &[]);
        assert!(rule_allows(
            &logs,
            &request("get", "", "pods", Some("log"), Some("web"))
        ));
        assert!(!rule_allows(
            &logs,
            &request("get", "", "pods", None, Some("web"))
        ));
        let any_status = rule(&["update"], &["apps"], &["*/status"], &[]);
        assert!(rule_allows(
            &any_status,
            &request("update", "apps", "deployments", Some("status"), Some("d"))
        ));
        assert!(!rule_allows(
            &any_status,
            &request("update", "apps", "deployments", Some("scale"), Some("d"))
        ));
    }

    #[test]
    fn resource_names_restrict_to_named_requests() {
        let one = rule(&["get", "list"], &[""], &["configmaps"], &["settings"]);
        assert!(rule_allows(
            &one,
            &request("get", "", "configmaps", None, Some("settings"))
        ));
        assert!(!rule_allows(
            &one,
            &request("get", "", "configmaps", None, Some("other"))
        ));
        assert!(!rule_allows(
            &one,
            &request("list", "", "configmaps", None, None)
        ));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_star_prefix() {
        let discovery = url_rule(&["get"], &["/api", "/api/*", "/healthz"]);
        let get = |path: &str| Attributes::NonResource {
            verb: "get".into(),
            path: path.into(),
        };
        assert!(rule_allows(&discovery, &get("/api")));
        assert!(rule_allows(&discovery, &get("/api/v1")));
        assert!(rule_allows(&discovery, &get("/healthz")));
        assert!(!rule_allows(&discovery, &get("/healthz/etcd")));
        assert!(!rule_allows(&discovery, &get("/apis")));
        let post = Attributes::NonResource {
            verb: "post".into(),
            path: "/api".into(),
        };
        assert!(!rule_allows(&discovery, &post));
        assert!(!rule_allows(
            &rule(&["*"], &["*"], &["*"], &[]),
            &get("/api")
        ));
        assert!(rule_allows(&url_rule(&["*"], &["*"]), &get("/anything")));
    }

    #[test]
    fn covers_splits_rules_into_single_grants() {
        let held = [
            rule(&["get", "list"], &[""], &["pods", "services"], &[]),
            rule(&["*"], &["apps"], &["deployments"], &[]),
        ];
        assert!(covers(&held, &rule(&["get"], &[""], &["pods"], &[])));
        assert!(covers(
            &held,
            &rule(&["list"], &[""], &["services", "pods"], &["a"])
        ));
        assert!(covers(
            &held,
            &rule(&["delete", "patch"], &["apps"], &["deployments"], &[])
        ));
        assert!(!covers(&held, &rule(&["delete"], &[""], &["pods"], &[])));
        assert!(!covers(
            &held,
            &rule(&["get"], &["", "apps"], &["pods"], &[])
        ));
        assert!(!covers(&held, &rule(&["*"], &[""], &["pods"], &[])));
        let named = [rule(&["get"], &[""], &["secrets"], &["a"])];
        assert!(covers(&named, &rule(&["get"], &[""], &["secrets"], &["a"])));
        assert!(!covers(&named, &rule(&["get"], &[""], &["secrets"], &[])));
        let admin = [rule(&["*"], &["*"], &["*"], &[]), url_rule(&["*"], &["*"])];
        assert!(covers(&admin, &url_rule(&["get"], &["/healthz"])));
        assert!(covers(&admin, &rule(&["*"], &["*"], &["*"], &[])));
    }
}
