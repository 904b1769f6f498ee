//! What a request asks to do, in RBAC's terms: upstream's `RequestInfoFactory`.

use axum::http::Method;

/// A request as the authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    /// A request for an API resource (`/api/...` or `/apis/...` with a resource).
    Resource(ResourceAttributes),
    /// Any other path (`/healthz`, `/version`, `/api`, `/openapi/v2`); the verb is the
    /// lower-cased HTTP method.
    NonResource { verb: String, path: String },
}

/// The parts of a resource request RBAC rules match on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceAttributes {
    /// get, list, watch, create, update, patch, delete or deletecollection.
    pub verb: String,
    pub api_group: String,
    /// The plural, e.g. `pods`.
    pub resource: String,
    pub subresource: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

/// Namespace subresources, which upstream's parser must not read as a resource in the
/// namespace (`/api/v1/namespaces/x/status` is the status of namespace `x`).
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// The pod subresources that open a stream into a container. Upstream requires `create`
/// on them for the WebSocket (GET) upgrade as well as for SPDY (POST), since 1.30.
const STREAM_SUBRESOURCES: &[&str] = &["exec", "attach", "portforward"];

impl Attributes {
    /// Parses a request's method, path and query the way kube-apiserver does.
    pub fn from_request(method: &Method, path: &str, query: Option<&str>) -> Attributes {
        resource_request(method, path, query).map_or_else(
            || Attributes::NonResource {
                verb: method.as_str().to_ascii_lowercase(),
                path: path.to_string(),
            },
            Attributes::Resource,
        )
    }

    /// The verb being authorized.
    pub fn verb(&self) -> &str {
        match self {
            Attributes::Resource(r) => &r.verb,
            Attributes::NonResource { verb, .. } => verb,
        }
    }
}

fn resource_request(
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Option<ResourceAttributes> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (api_group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
        _ => return None,
    };
    let (mut verb, rest) = match rest {
        ["watch", rest @ ..] if !rest.is_empty() => ("watch".to_string(), rest),
        _ => (verb_of(method).to_string(), rest),
    };
    // `/namespaces/x` and `/namespaces/x/status` address the namespace itself, which
    // upstream files under namespace `x`.
    let (namespace, parts) = match rest {
        ["namespaces", namespace, tail @ ..]
            if tail
                .first()
                .is_some_and(|t| !NAMESPACE_SUBRESOURCES.contains(t)) =>
        {
            (Some(namespace.to_string()), tail)
        }
        ["namespaces", namespace, ..] => (Some(namespace.to_string()), rest),
        _ => (None, rest),
    };
    let resource = parts.first()?.to_string();
    let mut name = parts.get(1).map(|n| n.to_string());
    let subresource = parts.get(2).map(|s| s.to_string());
    if name.is_none() && verb == "get" {
        let watching = query_value(query, "watch").is_some_and(|w| w == "true" || w == "1");
        verb = if watching { "watch" } else { "list" }.to_string();
        name = query_value(query, "fieldSelector").and_then(|s| exact_name(&s));
    }
    if name.is_none() && verb == "delete" {
        verb = "deletecollection".to_string();
    }
    if subresource
        .as_deref()
        .is_some_and(|s| STREAM_SUBRESOURCES.contains(&s))
        && resource == "pods"
    {
        verb = "create".to_string();
    }
    Some(ResourceAttributes {
        verb,
        api_group: api_group.to_string(),
        resource,
        subresource,
        name,
        namespace,
    })
}

fn verb_of(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
}

fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// `metadata.name=x` (or `==`) as the whole field selector names one object, so a
/// list or watch of it can be granted by a `resourceNames` rule.
fn exact_name(selector: &str) -> Option<String> {
    let value = selector
        .strip_prefix("metadata.name==")
        .or_else(|| selector.strip_prefix("metadata.name="))?;
    (!value.is_empty() && !value.contains([',', '/', '%'])).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(method: Method, path: &str, query: Option<&str>) -> ResourceAttributes {
        match Attributes::from_request(&method, path, query) {
            Attributes::Resource(r) => r,
            other => panic!("{path} parsed as {other:?}"),
        }
    }

    fn short(
        r: &ResourceAttributes,
    ) -> (
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    ) {
        (
            r.verb.clone(),
            r.api_group.clone(),
            r.resource.clone(),
            r.subresource.clone(),
            r.name.clone(),
            r.namespace.clone(),
        )
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn verbs_come_from_the_method_and_whether_a_name_is_given() {
        let cases = [
            (Method::GET, "/api/v1/namespaces/default/pods", None, "list"),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods",
                Some("watch=true"),
                "watch",
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/default/pods",
                None,
                "watch",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods/web",
                None,
                "get",
            ),
            (
                Method::POST,
                "/api/v1/namespaces/default/pods",
                None,
                "create",
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/default/pods/web",
                None,
                "update",
            ),
            (
                Method::PATCH,
                "/api/v1/namespaces/default/pods/web",
                None,
                "patch",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/default/pods/web",
                None,
                "delete",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/default/pods",
                None,
                "deletecollection",
            ),
        ];
        for (method, path, query, verb) in cases {
            assert_eq!(resource(method, path, query).verb, verb, "{path} {query:?}");
        }
    }

    #[test]
    fn groups_namespaces_names_and_subresources_are_split_out() {
        assert_eq!(
            short(&resource(
                Method::GET,
                "/apis/apps/v1/namespaces/ns1/deployments/web/scale",
                None
            )),
            (
                "get".into(),
                "apps".into(),
                "deployments".into(),
                s("scale"),
                s("web"),
                s("ns1")
            )
        );
        assert_eq!(
            short(&resource(Method::GET, "/api/v1/nodes", None)),
            ("list".into(), "".into(), "nodes".into(), None, None, None)
        );
        assert_eq!(
            short(&resource(Method::GET, "/apis/apps/v1/deployments", None)),
            (
                "list".into(),
                "apps".into(),
                "deployments".into(),
                None,
                None,
                None
            )
        );
        assert_eq!(
            short(&resource(
                Method::PUT,
                "/api/v1/namespaces/ns1/status",
                None
            )),
            (
                "update".into(),
                "".into(),
                "namespaces".into(),
                s("status"),
                s("ns1"),
                s("ns1")
            )
        );
        assert_eq!(
            short(&resource(Method::GET, "/api/v1/namespaces/ns1", None)),
            (
                "get".into(),
                "".into(),
                "namespaces".into(),
                None,
                s("ns1"),
                s("ns1")
            )
        );
        assert_eq!(
            short(&resource(Method::GET, "/api/v1/namespaces", None)),
            (
                "list".into(),
                "".into(),
                "namespaces".into(),
                None,
                None,
                None
            )
        );
    }

    #[test]
    fn field_selector_on_the_name_names_the_object() {
        let r = resource(
            Method::GET,
            "/api/v1/namespaces/kube-node-lease/leases",
            Some("fieldSelector=metadata.name%3Dn1&watch=1"),
        );
        assert_eq!((r.verb.as_str(), r.name.as_deref()), ("watch", Some("n1")));
        let r = resource(
            Method::GET,
            "/api/v1/pods",
            Some("fieldSelector=spec.nodeName%3Dn1"),
        );
        assert_eq!(r.name, None);
    }

    #[test]
    fn stream_subresources_need_create_whatever_the_method() {
        for method in [Method::GET, Method::POST] {
            let r = resource(
                method,
                "/api/v1/namespaces/default/pods/web/exec",
                Some("command=sh"),
            );
            assert_eq!(
                (r.verb.as_str(), r.subresource.as_deref()),
                ("create", Some("exec"))
            );
        }
        let log = resource(Method::GET, "/api/v1/namespaces/default/pods/web/log", None);
        assert_eq!(log.verb, "get");
    }

    #[test]
    fn discovery_and_health_paths_are_non_resource_requests() {
        for path in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/healthz",
            "/version",
            "/openapi/v2",
        ] {
            assert_eq!(
                Attributes::from_request(&Method::GET, path, None),
                Attributes::NonResource {
                    verb: "get".into(),
                    path: path.into()
                },
            );
        }
    }
}
