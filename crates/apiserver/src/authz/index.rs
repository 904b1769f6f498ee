//! The RBAC objects in memory, indexed for the questions the authorizer asks: which
//! rules apply to this user, cluster-wide and in this namespace.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use serde_json::Value;

use crate::auth::UserInfo;

/// The prefix of every RBAC object's store key.
pub const RBAC_KEY_PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// Every Role, ClusterRole and binding, decoded.
#[derive(Debug, Default)]
pub struct RbacIndex {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    /// By `(namespace, name)`.
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_role_bindings: HashMap<String, (RoleRef, Vec<Subject>)>,
    /// By `(namespace, name)`, so one namespace's bindings are one range.
    role_bindings: BTreeMap<(String, String), (RoleRef, Vec<Subject>)>,
}

/// Where in the index a store key belongs.
enum Slot {
    ClusterRole(String),
    Role(String, String),
    ClusterRoleBinding(String),
    RoleBinding(String, String),
}

fn slot(key: &str) -> Option<Slot> {
    let rest = key.strip_prefix(RBAC_KEY_PREFIX)?;
    let parts: Vec<&str> = rest.split('/').collect();
    Some(match parts.as_slice() {
        ["clusterroles", name] => Slot::ClusterRole(name.to_string()),
        ["roles", ns, name] => Slot::Role(ns.to_string(), name.to_string()),
        ["clusterrolebindings", name] => Slot::ClusterRoleBinding(name.to_string()),
        ["rolebindings", ns, name] => Slot::RoleBinding(ns.to_string(), name.to_string()),
        _ => return None,
    })
}

impl RbacIndex {
    /// Records the object stored at `key` (a create or an update).
    pub fn put(&mut self, key: &str, object: &[u8]) {
        let Some(slot) = slot(key) else {
            return;
        };
        let Ok(object) = serde_json::from_slice::<Value>(object) else {
            tracing::warn!(key, "RBAC object is not JSON; ignored");
            return;
        };
        let decoded = match slot {
            Slot::ClusterRole(name) => serde_json::from_value::<ClusterRole>(object).map(|role| {
                self.cluster_roles
                    .insert(name, role.rules.unwrap_or_default());
            }),
            Slot::Role(ns, name) => serde_json::from_value::<Role>(object).map(|role| {
                self.roles
                    .insert((ns, name), role.rules.unwrap_or_default());
            }),
            Slot::ClusterRoleBinding(name) => serde_json::from_value::<ClusterRoleBinding>(object)
                .map(|b| {
                    self.cluster_role_bindings
                        .insert(name, (b.role_ref, b.subjects.unwrap_or_default()));
                }),
            Slot::RoleBinding(ns, name) => serde_json::from_value::<RoleBinding>(object).map(|b| {
                self.role_bindings
                    .insert((ns, name), (b.role_ref, b.subjects.unwrap_or_default()));
            }),
        };
        if let Err(err) = decoded {
            tracing::warn!(key, %err, "RBAC object does not decode; ignored");
        }
    }

    /// Forgets the object stored at `key`.
    pub fn delete(&mut self, key: &str) {
        match slot(key) {
            Some(Slot::ClusterRole(name)) => {
                self.cluster_roles.remove(&name);
            }
            Some(Slot::Role(ns, name)) => {
                self.roles.remove(&(ns, name));
            }
            Some(Slot::ClusterRoleBinding(name)) => {
                self.cluster_role_bindings.remove(&name);
            }
            Some(Slot::RoleBinding(ns, name)) => {
                self.role_bindings.remove(&(ns, name));
            }
            None => {}
        }
    }

    /// Every rule granted to `user` by ClusterRoleBindings and, when `namespace` is
    /// given, by that namespace's RoleBindings. Bindings to missing roles grant nothing.
    pub fn rules_for<'a>(
        &'a self,
        user: &'a UserInfo,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a PolicyRule> + 'a {
        let cluster = self
            .cluster_role_bindings
            .values()
            .filter(move |(_, subjects)| subjects.iter().any(|s| applies_to(s, user, "")))
            .flat_map(move |(role_ref, _)| self.cluster_role_rules(&role_ref.name));
        let namespaced = namespace.into_iter().flat_map(move |ns| {
            self.role_bindings
                .range((ns.to_string(), String::new())..)
                .take_while(move |((binding_ns, _), _)| binding_ns == ns)
                .filter(move |(_, (_, subjects))| subjects.iter().any(|s| applies_to(s, user, ns)))
                .flat_map(move |(_, (role_ref, _))| match role_ref.kind.as_str() {
                    "ClusterRole" => self.cluster_role_rules(&role_ref.name),
                    _ => self
                        .roles
                        .get(&(ns.to_string(), role_ref.name.clone()))
                        .map_or(&[][..], Vec::as_slice),
                })
        });
        cluster.chain(namespaced)
    }

    /// The rules of the role a binding refers to, for escalation checks; `namespace` is
    /// the binding's (`None` for a ClusterRoleBinding).
    pub fn role_rules(&self, role_ref: &RoleRef, namespace: Option<&str>) -> Vec<PolicyRule> {
        match (role_ref.kind.as_str(), namespace) {
            ("Role", Some(ns)) => self
                .roles
                .get(&(ns.to_string(), role_ref.name.clone()))
                .cloned()
                .unwrap_or_default(),
            _ => self.cluster_role_rules(&role_ref.name).to_vec(),
        }
    }

    fn cluster_role_rules(&self, name: &str) -> &[PolicyRule] {
        self.cluster_roles.get(name).map_or(&[], Vec::as_slice)
    }
}

/// Upstream's `appliesToUser`: a ServiceAccount subject without a namespace means the
/// binding's own namespace.
fn applies_to(subject: &Subject, user: &UserInfo, binding_namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let namespace = subject
                .namespace
                .as_deref()
                .filter(|ns| !ns.is_empty())
                .unwrap_or(binding_namespace);
            user.name == format!("system:serviceaccount:{namespace}:{}", subject.name)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn put(index: &mut RbacIndex, key: &str, object: Value) {
        index.put(
            &format!("{RBAC_KEY_PREFIX}{key}"),
            object.to_string().as_bytes(),
        );
    }

    fn verbs(index: &RbacIndex, user: &UserInfo, namespace: Option<&str>) -> Vec<String> {
        let mut verbs: Vec<String> = index
            .rules_for(user, namespace)
            .flat_map(|r| r.verbs.clone())
            .collect();
        verbs.sort();
        verbs
    }

    fn fixture() -> RbacIndex {
        let mut index = RbacIndex::default();
        let rule = |verb: &str| json!({"verbs": [verb], "apiGroups": [""], "resources": ["pods"]});
        put(
            &mut index,
            "clusterroles/viewer",
            json!({"metadata": {"name": "viewer"}, "rules": [rule("list")]}),
        );
        put(
            &mut index,
            "roles/dev/writer",
            json!({"metadata": {"name": "writer", "namespace": "dev"}, "rules": [rule("create")]}),
        );
        put(
            &mut index,
            "clusterrolebindings/devs-view",
            json!({
                "metadata": {"name": "devs-view"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "viewer"},
                "subjects": [{"kind": "Group", "name": "devs"}],
            }),
        );
        put(
            &mut index,
            "rolebindings/dev/ci-write",
            json!({
                "metadata": {"name": "ci-write", "namespace": "dev"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "writer"},
                "subjects": [{"kind": "ServiceAccount", "name": "ci"}, {"kind": "User", "name": "jane"}],
            }),
        );
        put(
            &mut index,
            "rolebindings/dev/jane-view",
            json!({
                "metadata": {"name": "jane-view", "namespace": "dev"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "viewer"},
                "subjects": [{"kind": "User", "name": "jane"}],
            }),
        );
        index
    }

    #[test]
    fn bindings_grant_their_roles_to_matching_subjects_only() {
        let index = fixture();
        assert_eq!(verbs(&index, &user("bob", &["devs"]), None), ["list"]);
        assert_eq!(
            verbs(&index, &user("jane", &[]), None),
            Vec::<String>::new()
        );
        assert_eq!(
            verbs(&index, &user("jane", &[]), Some("dev")),
            ["create", "list"]
        );
        assert_eq!(
            verbs(&index, &user("jane", &[]), Some("prod")),
            Vec::<String>::new()
        );
        let ci = user("system:serviceaccount:dev:ci", &["system:serviceaccounts"]);
        assert_eq!(verbs(&index, &ci, Some("dev")), ["create"]);
        let other_ci = user("system:serviceaccount:prod:ci", &[]);
        assert_eq!(verbs(&index, &other_ci, Some("dev")), Vec::<String>::new());
    }

    #[test]
    fn deleting_a_binding_or_its_role_revokes_access() {
        let mut index = fixture();
        let jane = user("jane", &[]);
        index.delete(&format!("{RBAC_KEY_PREFIX}roles/dev/writer"));
        assert_eq!(verbs(&index, &jane, Some("dev")), ["list"]);
        index.delete(&format!("{RBAC_KEY_PREFIX}rolebindings/dev/jane-view"));
        assert_eq!(verbs(&index, &jane, Some("dev")), Vec::<String>::new());
    }
}
