//! Authorization: upstream's RBAC authorizer over an in-memory index of the RBAC
//! objects, kept fresh from the store's watch (never read per request), plus the
//! `system:masters` bypass and the escalation checks on writes of roles and bindings.

pub mod attributes;
pub mod escalation;
mod index;
pub mod policy;
pub mod reviews;
pub mod rules;

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use gantry_api::{ApiError, Reason};
use gantry_store::{Event, ListOptions, Store};
use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef};
use tokio_util::sync::CancellationToken;

pub use attributes::{Attributes, ResourceAttributes};
use index::{RBAC_KEY_PREFIX, RbacIndex};
pub use policy::MASTERS_GROUP;

use crate::auth::UserInfo;

/// Decides whether a user may make a request, from the cluster's RBAC objects.
#[derive(Clone, Default)]
pub struct Authorizer {
    index: Arc<RwLock<RbacIndex>>,
}

impl Authorizer {
    /// Whether `user` may do what `attributes` describe.
    pub fn allows(&self, user: &UserInfo, attributes: &Attributes) -> bool {
        if user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return true;
        }
        let namespace = match attributes {
            Attributes::Resource(r) => r.namespace.as_deref(),
            Attributes::NonResource { .. } => None,
        };
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        index
            .rules_for(user, namespace)
            .any(|rule| rules::rule_allows(rule, attributes))
    }

    /// Every rule granted to `user` cluster-wide and in `namespace`.
    pub fn rules_for(&self, user: &UserInfo, namespace: Option<&str>) -> Vec<PolicyRule> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        index.rules_for(user, namespace).cloned().collect()
    }

    /// The rules of the role a binding in `namespace` (`None`: a ClusterRoleBinding) refers to.
    pub fn role_rules(&self, role_ref: &RoleRef, namespace: Option<&str>) -> Vec<PolicyRule> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        index.role_rules(role_ref, namespace)
    }

    /// Reads every RBAC object, replacing the index; returns the revision read at, from
    /// which [`Authorizer::follow`] continues.
    pub async fn load(&self, store: &dyn Store) -> Result<u64, gantry_store::StoreError> {
        let page = store.list(RBAC_KEY_PREFIX, ListOptions::default()).await?;
        let mut fresh = RbacIndex::default();
        for kv in &page.items {
            fresh.put(&kv.key, &kv.value);
        }
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(page.revision)
    }

    /// Applies RBAC changes from the store's watch until `shutdown`; reloads everything
    /// when the watch ends or falls behind compaction.
    pub async fn follow(
        self,
        store: Arc<dyn Store>,
        mut revision: u64,
        shutdown: CancellationToken,
    ) {
        loop {
            let mut events = match store.watch(RBAC_KEY_PREFIX, revision).await {
                Ok(events) => events,
                Err(err) => {
                    tracing::warn!(%err, "cannot watch RBAC objects; reloading");
                    futures::stream::empty().boxed()
                }
            };
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    event = events.next() => event,
                };
                match event {
                    Some(Ok(event)) => {
                        revision = event.revision();
                        self.apply(&event);
                    }
                    Some(Err(_)) | None => break,
                }
            }
            // Back off briefly so a failing store is not spun on.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            }
            match self.load(store.as_ref()).await {
                Ok(loaded) => revision = loaded,
                Err(err) => tracing::warn!(%err, "cannot reload RBAC objects"),
            }
        }
    }

    fn apply(&self, event: &Event) {
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Put { kv, .. } => index.put(&kv.key, &kv.value),
            Event::Delete { prev, .. } => index.delete(&prev.key),
        }
    }
}

/// The 403 kube-apiserver answers a denied request with, word for word:
/// `pods "web" is forbidden: User "jane" cannot get resource "pods" in API group "" in the
/// namespace "default"`.
pub fn forbidden(user: &UserInfo, attributes: &Attributes) -> ApiError {
    match attributes {
        Attributes::NonResource { verb, path } => ApiError::new(
            Reason::Forbidden,
            format!(
                "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
                user.name
            ),
        ),
        Attributes::Resource(request) => resource_forbidden(&user.name, request),
    }
}

fn resource_forbidden(name: &str, request: &ResourceAttributes) -> ApiError {
    let resource = match &request.subresource {
        Some(sub) => format!("{}/{sub}", request.resource),
        None => request.resource.clone(),
    };
    let scope = match &request.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let reason = format!(
        "User \"{name}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        request.verb, request.api_group
    );
    let qualified = if request.api_group.is_empty() {
        request.resource.clone()
    } else {
        format!("{}.{}", request.resource, request.api_group)
    };
    let message = match &request.name {
        Some(object) => format!("{qualified} \"{object}\" is forbidden: {reason}"),
        None => format!("{qualified} is forbidden: {reason}"),
    };
    ApiError {
        reason: Reason::Forbidden,
        message,
        details: Some(Box::new(gantry_api::status::Details {
            group: request.api_group.clone(),
            kind: request.resource.clone(),
            name: request.name.clone().unwrap_or_default(),
        })),
        causes: Vec::new(),
        retry_after_seconds: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An authorizer holding exactly the bootstrap policy.
    fn bootstrapped() -> Authorizer {
        let authorizer = Authorizer::default();
        {
            let mut index = authorizer.index.write().unwrap();
            for (name, rules) in policy::cluster_roles() {
                let role = json!({"metadata": {"name": name}, "rules": rules});
                index.put(
                    &format!("{RBAC_KEY_PREFIX}clusterroles/{name}"),
                    role.to_string().as_bytes(),
                );
            }
            for (name, subjects) in policy::cluster_role_bindings() {
                let binding = json!({
                    "metadata": {"name": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                    "subjects": subjects,
                });
                index.put(
                    &format!("{RBAC_KEY_PREFIX}clusterrolebindings/{name}"),
                    binding.to_string().as_bytes(),
                );
            }
        }
        authorizer
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        groups.push("system:authenticated".into());
        UserInfo {
            name: name.into(),
            uid: None,
            groups,
        }
    }

    fn resource(verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> Attributes {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_string())),
            None => (resource, None),
        };
        Attributes::Resource(ResourceAttributes {
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource,
            name: None,
            namespace: namespace.map(str::to_string),
        })
    }

    #[test]
    fn every_component_identity_may_do_its_job() {
        let authorizer = bootstrapped();
        let node = user("system:node:n1", &["system:nodes"]);
        let scheduler = user("system:kube-scheduler", &[]);
        let controllers = user("system:kube-controller-manager", &[]);
        let ns = Some("default");
        let lease_ns = Some("kube-node-lease");
        let needs = [
            (&node, resource("create", "", "nodes", None)),
            (&node, resource("patch", "", "nodes/status", None)),
            (
                &node,
                resource("update", "coordination.k8s.io", "leases", lease_ns),
            ),
            (&node, resource("watch", "", "pods", None)),
            (&node, resource("patch", "", "pods/status", ns)),
            (&node, resource("delete", "", "pods", ns)),
            (&node, resource("get", "", "secrets", ns)),
            (
                &node,
                resource("list", "discovery.k8s.io", "endpointslices", None),
            ),
            (&node, resource("create", "", "events", ns)),
            (&node, resource("get", "", "events", ns)),
            (&scheduler, resource("get", "", "events", ns)),
            (&node, resource("delete", "", "persistentvolumes", None)),
            (&scheduler, resource("create", "", "pods/binding", ns)),
            (
                &scheduler,
                resource("watch", "storage.k8s.io", "storageclasses", None),
            ),
            (
                &scheduler,
                resource("patch", "", "persistentvolumeclaims", ns),
            ),
            (
                &scheduler,
                resource(
                    "update",
                    "coordination.k8s.io",
                    "leases",
                    Some("kube-system"),
                ),
            ),
            (&controllers, resource("create", "", "pods", ns)),
            (
                &controllers,
                resource("patch", "apps", "deployments/status", ns),
            ),
            (
                &controllers,
                resource("delete", "apps", "controllerrevisions", ns),
            ),
            (&controllers, resource("update", "batch", "jobs/status", ns)),
            (&controllers, resource("patch", "", "nodes/status", None)),
            (
                &controllers,
                resource("create", "", "persistentvolumes", None),
            ),
            (&controllers, resource("delete", "", "configmaps", ns)),
        ];
        for (who, attributes) in &needs {
            assert!(
                authorizer.allows(who, attributes),
                "{} {attributes:?}",
                who.name
            );
        }
        let discovery = Attributes::NonResource {
            verb: "get".into(),
            path: "/apis/apps/v1".into(),
        };
        assert!(authorizer.allows(&user("anyone", &[]), &discovery));
    }

    #[test]
    fn components_may_not_open_streams_or_touch_rbac() {
        let authorizer = bootstrapped();
        let ns = Some("default");
        for who in [
            user("system:node:n1", &["system:nodes"]),
            user("system:kube-scheduler", &[]),
            user("system:kube-controller-manager", &[]),
            user("jane", &[]),
        ] {
            assert!(!authorizer.allows(&who, &resource("create", "", "pods/exec", ns)));
            assert!(!authorizer.allows(
                &who,
                &resource(
                    "create",
                    "rbac.authorization.k8s.io",
                    "clusterrolebindings",
                    None
                )
            ));
        }
        let admin = user("admin", &[MASTERS_GROUP]);
        assert!(authorizer.allows(&admin, &resource("create", "", "pods/exec", ns)));
    }

    #[test]
    fn denials_read_as_upstream_writes_them() {
        let jane = user("jane", &[]);
        let named = Attributes::Resource(ResourceAttributes {
            verb: "get".into(),
            api_group: "apps".into(),
            resource: "deployments".into(),
            subresource: Some("scale".into()),
            name: Some("web".into()),
            namespace: Some("shop".into()),
        });
        let error = forbidden(&jane, &named);
        assert_eq!(error.code(), 403);
        assert_eq!(
            error.message,
            "deployments.apps \"web\" is forbidden: User \"jane\" cannot get resource \"deployments/scale\" in API group \"apps\" in the namespace \"shop\""
        );
        assert_eq!(
            forbidden(&jane, &resource("list", "", "nodes", None)).message,
            "nodes is forbidden: User \"jane\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        );
        let path = Attributes::NonResource {
            verb: "get".into(),
            path: "/metrics".into(),
        };
        assert_eq!(
            forbidden(&jane, &path).message,
            "forbidden: User \"jane\" cannot get path \"/metrics\""
        );
    }
}
