//! The table of resources Gantry serves.
//!
//! One static [`ResourceInfo`] per resource drives routing, discovery, store
//! keys and kubectl's short names, so adding a resource is one entry here
//! (plus its defaulting, validation and table columns).

/// An API group and version, e.g. `apps/v1`; the core group is `""`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupVersion {
    pub group: &'static str,
    pub version: &'static str,
}

impl GroupVersion {
    /// The `apiVersion` string objects of this group version carry.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The URL prefix under which this group version is served.
    pub fn url_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }
}

/// A subresource served under a resource, e.g. `pods/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subresource {
    /// `/status`: writes change only `.status`; main-resource writes ignore it.
    Status,
    /// `/scale`: an `autoscaling/v1` `Scale` view of `.spec.replicas`.
    Scale,
    /// `pods/binding`: assigns a pod to a node.
    Binding,
    /// `pods/eviction`: a policy-checked delete.
    Eviction,
    /// `pods/log`, `pods/exec`, `pods/attach`, `pods/portforward`: served by
    /// the node agent through the API server.
    Log,
    Exec,
    Attach,
    PortForward,
    /// `namespaces/finalize`: the namespace controller removes finalizers.
    Finalize,
    /// `serviceaccounts/token`: issues a signed token for the account (TokenRequest).
    Token,
}

impl Subresource {
    /// The path segment naming this subresource.
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Eviction => "eviction",
            Subresource::Log => "log",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
            Subresource::PortForward => "portforward",
            Subresource::Finalize => "finalize",
            Subresource::Token => "token",
        }
    }

    /// Parses a path segment.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "status" => Subresource::Status,
            "scale" => Subresource::Scale,
            "binding" => Subresource::Binding,
            "eviction" => Subresource::Eviction,
            "log" => Subresource::Log,
            "exec" => Subresource::Exec,
            "attach" => Subresource::Attach,
            "portforward" => Subresource::PortForward,
            "finalize" => Subresource::Finalize,
            "token" => Subresource::Token,
            _ => return None,
        })
    }
}

/// Everything the server needs to know to serve one resource.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    pub group_version: GroupVersion,
    pub kind: &'static str,
    /// The URL path segment (`deployments`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// kubectl categories (`all` makes `kubectl get all` include it).
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
    /// False for virtual resources that are never stored (`bindings`).
    pub stored: bool,
}

impl ResourceInfo {
    /// The `kind` of the list object (`PodList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The verbs advertised in discovery.
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.stored {
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        } else {
            &["create"]
        }
    }

    /// Whether `sub` is served under this resource.
    pub fn has_subresource(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// The store key prefix holding every object of this resource, ending in
    /// `/`; append `namespace/` then the name for namespaced resources.
    pub fn key_prefix(&self) -> String {
        if self.group_version.group.is_empty() {
            format!("/registry/{}/", self.plural)
        } else {
            format!("/registry/{}/{}/", self.group_version.group, self.plural)
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/{name}", self.key_prefix()),
            _ => format!("{}{name}", self.key_prefix()),
        }
    }
}

const CORE_V1: GroupVersion = GroupVersion {
    group: "",
    version: "v1",
};
const APPS_V1: GroupVersion = GroupVersion {
    group: "apps",
    version: "v1",
};
const COORDINATION_V1: GroupVersion = GroupVersion {
    group: "coordination.k8s.io",
    version: "v1",
};
const DISCOVERY_V1: GroupVersion = GroupVersion {
    group: "discovery.k8s.io",
    version: "v1",
};
const BATCH_V1: GroupVersion = GroupVersion {
    group: "batch",
    version: "v1",
};
const STORAGE_V1: GroupVersion = GroupVersion {
    group: "storage.k8s.io",
    version: "v1",
};
const SCHEDULING_V1: GroupVersion = GroupVersion {
    group: "scheduling.k8s.io",
    version: "v1",
};
const RBAC_V1: GroupVersion = GroupVersion {
    group: "rbac.authorization.k8s.io",
    version: "v1",
};
const AUTHENTICATION_V1: GroupVersion = GroupVersion {
    group: "authentication.k8s.io",
    version: "v1",
};
const AUTHORIZATION_V1: GroupVersion = GroupVersion {
    group: "authorization.k8s.io",
    version: "v1",
};

use Subresource::*;

const WORKLOAD_SUBRESOURCES: &[Subresource] = &[Status, Scale];

/// Every resource Gantry serves, in discovery order.
pub static RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        group_version: CORE_V1,
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        namespaced: false,
        categories: &[],
        subresources: &[Status, Finalize],
        stored: true,
    },
    ResourceInfo {
        group_version: CORE_V1,
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        namespaced: true,
        categories: &["all"],
        subresources: &[Status, Binding, Eviction, Log, Exec, Attach, PortForward],
        stored: true,
    },
    ResourceInfo {
        group_version: CORE_V1,
        kind: "Binding",
        plural: "bindings",
        singular: "binding",
        short_names: &[],
        namespaced: true,
        categories: &[],
        subresources: &[],
        stored: false,
    },
    ResourceInfo {
        group_version: CORE_V1,
        kind: "Service",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        namespaced: true,
        categories: &["all"],
        subresources: &[Status],
        stored: true,
    },
    ResourceInfo {
        group_version: CORE_V1,
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        short_names: &["ep"],
        namespaced: true,
        categories: &[],
        subresources: &[],
        stored: true,
    },
    ResourceInfo {
        group_version: CORE_V1,
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        short_names: &["cm"],
        namespaced: true,
        categories: &[],
        subresources: &[],
        stored: true,
    },
    ResourceInfo {
        group_version: CORE_V1,
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
        namespaced: true,
        categories: &[],
        subresources: &[],
        stored: true,
    },
    ResourceInfo {
        group_version: CORE_V1,
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        short_names: &["sa"],
        namespaced: true,
        categories: &[],
        subresources: &[Token],
        stored: true,
    },
    ResourceInfo {
        group_version: CORE_V1,
        kind: "Node",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
        namespaced: false,
        categories: &[],
        subresources: &[Status],
        stored: true,
    },
    ResourceInfo {
        group_version: CORE_V1,
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        namespaced: true,
        categories: &[],
        subresources: &[],
        stored: true,
    },
    ResourceInfo {
        group_version: CORE_V1,
        kind: "PersistentVolume",
        plural: "persistentvolumes",
        singular: "persistentvolume",
        short_names: &["pv"],
        namespaced: false,
        categories: &[],
        subresources: &[Status],
        stored: true,
    },
    ResourceInfo {
        group_version: CORE_V1,
        kind: "PersistentVolumeClaim",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        short_names: &["pvc"],
        namespaced: true,
        categories: &[],
        subresources: &[Status],
        stored: true,
    },
    ResourceInfo {
        group_version: APPS_V1,
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        short_names: &["deploy"],
        namespaced: true,
        categories: &["all"],
        subresources: WORKLOAD_SUBRESOURCES,
        stored: true,
    },
    ResourceInfo {
        group_version: APPS_V1,
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        short_names: &["rs"],
        namespaced: true,
        categories: &["all"],
        subresources: WORKLOAD_SUBRESOURCES,
        stored: true,
    },
    ResourceInfo {
        group_version: APPS_V1,
        kind: "StatefulSet",
        plural: "statefulsets",
        singular: "statefulset",
        short_names: &["sts"],
        namespaced: true,
        categories: &["all"],
        subresources: WORKLOAD_SUBRESOURCES,
        stored: true,
    },
    ResourceInfo {
        group_version: APPS_V1,
        kind: "DaemonSet",
        plural: "daemonsets",
        singular: "daemonset",
        short_names: &["ds"],
        namespaced: true,
        categories: &["all"],
        subresources: &[Status],
        stored: true,
    },
    ResourceInfo {
        group_version: APPS_V1,
        kind: "ControllerRevision",
        plural: "controllerrevisions",
        singular: "controllerrevision",
        short_names: &[],
        namespaced: true,
        categories: &[],
        subresources: &[],
        stored: true,
    },
    ResourceInfo {
        group_version: COORDINATION_V1,
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        short_names: &[],
        namespaced: true,
        categories: &[],
        subresources: &[],
        stored: true,
    },
    ResourceInfo {
        group_version: DISCOVERY_V1,
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        short_names: &[],
        namespaced: true,
        categories: &[],
        subresources: &[],
        stored: true,
    },
    ResourceInfo {
        group_version: BATCH_V1,
        kind: "Job",
        plural: "jobs",
        singular: "job",
        short_names: &[],
        namespaced: true,
        categories: &["all"],
        subresources: &[Status],
        stored: true,
    },
    ResourceInfo {
        group_version: BATCH_V1,
        kind: "CronJob",
        plural: "cronjobs",
        singular: "cronjob",
        short_names: &["cj"],
        namespaced: true,
        categories: &["all"],
        subresources: &[Status],
        stored: true,
    },
    ResourceInfo {
        group_version: STORAGE_V1,
        kind: "StorageClass",
        plural: "storageclasses",
        singular: "storageclass",
        short_names: &["sc"],
        namespaced: false,
        categories: &[],
        subresources: &[],
        stored: true,
    },
    ResourceInfo {
        group_version: SCHEDULING_V1,
        kind: "PriorityClass",
        plural: "priorityclasses",
        singular: "priorityclass",
        short_names: &["pc"],
        namespaced: false,
        categories: &[],
        subresources: &[],
        stored: true,
    },
    ResourceInfo {
        group_version: RBAC_V1,
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        short_names: &[],
        namespaced: false,
        categories: &[],
        subresources: &[],
        stored: true,
    },
    ResourceInfo {
        group_version: RBAC_V1,
        kind: "ClusterRole",
        plural: "clusterroles",
        singular: "clusterrole",
        short_names: &[],
        namespaced: false,
        categories: &[],
        subresources: &[],
        stored: true,
    },
    ResourceInfo {
        group_version: RBAC_V1,
        kind: "RoleBinding",
        plural: "rolebindings",
        singular: "rolebinding",
        short_names: &[],
        namespaced: true,
        categories: &[],
        subresources: &[],
        stored: true,
    },
    ResourceInfo {
        group_version: RBAC_V1,
        kind: "Role",
        plural: "roles",
        singular: "role",
        short_names: &[],
        namespaced: true,
        categories: &[],
        subresources: &[],
        stored: true,
    },
    ResourceInfo {
        group_version: AUTHENTICATION_V1,
        kind: "SelfSubjectReview",
        plural: "selfsubjectreviews",
        singular: "selfsubjectreview",
        short_names: &[],
        namespaced: false,
        categories: &[],
        subresources: &[],
        stored: false,
    },
    ResourceInfo {
        group_version: AUTHENTICATION_V1,
        kind: "TokenReview",
        plural: "tokenreviews",
        singular: "tokenreview",
        short_names: &[],
        namespaced: false,
        categories: &[],
        subresources: &[],
        stored: false,
    },
    ResourceInfo {
        group_version: AUTHORIZATION_V1,
        kind: "LocalSubjectAccessReview",
        plural: "localsubjectaccessreviews",
        singular: "localsubjectaccessreview",
        short_names: &[],
        namespaced: true,
        categories: &[],
        subresources: &[],
        stored: false,
    },
    ResourceInfo {
        group_version: AUTHORIZATION_V1,
        kind: "SelfSubjectAccessReview",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        short_names: &[],
        namespaced: false,
        categories: &[],
        subresources: &[],
        stored: false,
    },
    ResourceInfo {
        group_version: AUTHORIZATION_V1,
        kind: "SubjectAccessReview",
        plural: "subjectaccessreviews",
        singular: "subjectaccessreview",
        short_names: &[],
        namespaced: false,
        categories: &[],
        subresources: &[],
        stored: false,
    },
];

/// Looks a resource up by group, version and plural (as found in a URL).
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| {
        r.group_version.group == group && r.group_version.version == version && r.plural == plural
    })
}

/// Looks a resource up by its object's `apiVersion` and `kind`.
pub fn find_by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.group_version.api_version() == api_version)
}

/// Every group version served, core first, in discovery order.
pub fn group_versions() -> Vec<GroupVersion> {
    let mut seen = Vec::new();
    for r in RESOURCES {
        if !seen.contains(&r.group_version) {
            seen.push(r.group_version);
        }
    }
    seen
}

/// The resources served in one group version.
pub fn resources_in(gv: GroupVersion) -> impl Iterator<Item = &'static ResourceInfo> {
    RESOURCES.iter().filter(move |r| r.group_version == gv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_groups_and_namespaces() {
        let pods = find("", "v1", "pods").expect("pods are served");
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/pods/default/web"
        );
        let deploys = find("apps", "v1", "deployments").expect("deployments are served");
        assert_eq!(
            deploys.key(Some("ns1"), "api"),
            "/registry/apps/deployments/ns1/api"
        );
        let nodes = find_by_kind("v1", "Node").expect("nodes are served");
        assert_eq!(nodes.key(None, "n1"), "/registry/nodes/n1");
    }

    #[test]
    fn no_two_resources_share_a_plural_in_a_group_version() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group_version == b.group_version && a.plural == b.plural),
                    "{} registered twice",
                    a.plural
                );
            }
        }
    }

    #[test]
    fn core_group_comes_first() {
        let gvs = group_versions();
        assert_eq!(gvs[0].api_version(), "v1");
        assert!(gvs.iter().any(|gv| gv.api_version() == "apps/v1"));
    }
}
