//! The legacy (non-aggregated) discovery documents: `/api`, `/apis`,
//! `/apis/{group}`, the per-group-version resource lists and `/version`.
//!
//! kubectl builds its REST mapper (short names, plural names, which
//! resources are namespaced, which verbs they allow) from these, so they are
//! derived from [`registry::RESOURCES`] rather than written out. Only the
//! plain `application/json` forms are produced: a server that answers
//! kubectl's request for aggregated discovery with them makes kubectl fall
//! back to reading them one group version at a time.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::registry::{self, GroupVersion, ResourceInfo, Subresource};

/// The Kubernetes release whose API (k8s-openapi's `v1_33` schemas) Gantry serves.
const KUBERNETES_MAJOR: &str = "1";
const KUBERNETES_MINOR: &str = "33";

/// `GET /api`: the core group's versions and the address clients should use.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address},
        ],
    })
}

/// `GET /apis`: every named group with its versions.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = named_groups().into_iter().map(group_body).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`: one named group, or `None` if it is not served.
pub fn api_group(group: &str) -> Option<Value> {
    let name = named_groups().into_iter().find(|g| *g == group)?;
    let mut body = group_body(name);
    body["kind"] = "APIGroup".into();
    body["apiVersion"] = "v1".into();
    Some(body)
}

/// `GET /api/v1`, `GET /apis/{group}/{version}`: the resources of one group
/// version, with their subresources, or `None` if it is not served.
pub fn api_resource_list(gv: GroupVersion) -> Option<Value> {
    let mut resources = Vec::new();
    for r in registry::resources_in(gv) {
        resources.push(resource_entry(r));
        resources.extend(r.subresources.iter().map(|&sub| subresource_entry(r, sub)));
    }
    if resources.is_empty() {
        return None;
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv.api_version(),
        "resources": resources,
    }))
}

/// `GET /version`.
pub fn version_info() -> Value {
    json!({
        "major": KUBERNETES_MAJOR,
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0+gantry.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": option_env!("GANTRY_GIT_COMMIT").unwrap_or(""),
        "gitTreeState": if option_env!("GANTRY_GIT_COMMIT").is_some() { "clean" } else { "" },
        "buildDate": option_env!("GANTRY_BUILD_DATE").unwrap_or(""),
        // Gantry is not built with Go; the field is kept because clients
        // expect it, and names the compiler that was used instead.
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    })
}

/// The architecture name in Go's spelling, which clients compare against.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The named (non-core) groups, in discovery order.
fn named_groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for gv in registry::group_versions() {
        if !gv.group.is_empty() && !groups.contains(&gv.group) {
            groups.push(gv.group);
        }
    }
    groups
}

/// An `APIGroup` without `kind`/`apiVersion` (as embedded in the list).
/// The first version registered for a group is its preferred one.
fn group_body(group: &'static str) -> Value {
    let versions: Vec<Value> = registry::group_versions()
        .into_iter()
        .filter(|gv| gv.group == group)
        .map(|gv| json!({"groupVersion": gv.api_version(), "version": gv.version}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

fn resource_entry(r: &ResourceInfo) -> Value {
    let mut entry = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs(),
    });
    if r.stored {
        entry["storageVersionHash"] = storage_version_hash(r).into();
    }
    if !r.short_names.is_empty() {
        entry["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        entry["categories"] = json!(r.categories);
    }
    entry
}

/// An opaque token that changes when a resource's storage version changes,
/// computed as Kubernetes does (base64 of the first 8 bytes of the SHA-256 of
/// `group/version/kind`), so storage migration tools see familiar values.
fn storage_version_hash(r: &ResourceInfo) -> String {
    let gv = r.group_version;
    let digest = Sha256::digest(format!("{}/{}/{}", gv.group, gv.version, r.kind));
    BASE64.encode(&digest[..8])
}

/// How a subresource appears in discovery: the kind it exchanges (with its
/// group and version when they differ from the parent's) and its verbs.
fn subresource_entry(r: &ResourceInfo, sub: Subresource) -> Value {
    let (group_version, kind, verbs): (Option<(&str, &str)>, &str, &[&str]) = match sub {
        Subresource::Status => (None, r.kind, &["get", "patch", "update"]),
        Subresource::Scale => (
            Some(("autoscaling", "v1")),
            "Scale",
            &["get", "patch", "update"],
        ),
        Subresource::Binding => (None, "Binding", &["create"]),
        Subresource::Eviction => (Some(("policy", "v1")), "Eviction", &["create"]),
        Subresource::Log => (None, r.kind, &["get"]),
        Subresource::Exec => (None, "PodExecOptions", &["create", "get"]),
        Subresource::Attach => (None, "PodAttachOptions", &["create", "get"]),
        Subresource::PortForward => (None, "PodPortForwardOptions", &["create", "get"]),
        Subresource::Finalize => (None, r.kind, &["update"]),
        Subresource::Token => (
            Some(("authentication.k8s.io", "v1")),
            "TokenRequest",
            &["create"],
        ),
    };
    let mut entry = json!({
        "name": format!("{}/{}", r.plural, sub.name()),
        "singularName": "",
        "namespaced": r.namespaced,
        "kind": kind,
        "verbs": verbs,
    });
    if let Some((group, version)) = group_version {
        entry["group"] = group.into();
        entry["version"] = version.into();
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources_of(gv: GroupVersion) -> Vec<Value> {
        api_resource_list(gv).expect("served")["resources"]
            .as_array()
            .expect("array")
            .clone()
    }

    fn entry<'a>(resources: &'a [Value], name: &str) -> &'a Value {
        resources
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed"))
    }

    #[test]
    fn every_resource_is_listed_with_its_scope_verbs_and_names() {
        for r in registry::RESOURCES {
            let resources = resources_of(r.group_version);
            let e = entry(&resources, r.plural);
            assert_eq!(e["namespaced"], r.namespaced, "{}", r.plural);
            assert_eq!(e["kind"], r.kind);
            assert_eq!(e["singularName"], r.singular);
            assert_eq!(e["verbs"], json!(r.verbs()));
            let short: Vec<&str> = e["shortNames"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            assert_eq!(short, r.short_names);
            for sub in r.subresources {
                entry(&resources, &format!("{}/{}", r.plural, sub.name()));
            }
        }
    }

    #[test]
    fn subresources_name_the_kinds_they_exchange() {
        let apps = resources_of(GroupVersion {
            group: "apps",
            version: "v1",
        });
        let scale = entry(&apps, "deployments/scale");
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["version"], "v1");
        assert_eq!(scale["kind"], "Scale");
        assert_eq!(scale["verbs"], json!(["get", "patch", "update"]));
        let core = resources_of(GroupVersion {
            group: "",
            version: "v1",
        });
        assert_eq!(entry(&core, "pods/status")["kind"], "Pod");
        assert_eq!(entry(&core, "pods/log")["verbs"], json!(["get"]));
        assert_eq!(entry(&core, "pods/eviction")["group"], "policy");
        assert_eq!(entry(&core, "bindings")["verbs"], json!(["create"]));
        assert_eq!(entry(&core, "pods")["categories"], json!(["all"]));
    }

    #[test]
    fn groups_cover_every_named_group_version() {
        let list = api_group_list();
        assert_eq!(list["kind"], "APIGroupList");
        let groups = list["groups"].as_array().expect("groups");
        for gv in registry::group_versions()
            .into_iter()
            .filter(|gv| !gv.group.is_empty())
        {
            let g = groups
                .iter()
                .find(|g| g["name"] == gv.group)
                .expect("group listed");
            assert!(
                g["versions"]
                    .as_array()
                    .expect("versions")
                    .iter()
                    .any(|v| v["groupVersion"] == gv.api_version())
            );
            assert_eq!(api_group(gv.group).expect("served")["kind"], "APIGroup");
        }
        assert!(
            groups.iter().all(|g| g["name"] != ""),
            "core group is served under /api"
        );
        assert!(api_group("nope.example.com").is_none());
        assert!(
            api_resource_list(GroupVersion {
                group: "apps",
                version: "v2"
            })
            .is_none()
        );
    }

    #[test]
    fn storage_version_hashes_are_stable_and_distinct() {
        let core = resources_of(GroupVersion {
            group: "",
            version: "v1",
        });
        let pods = entry(&core, "pods")["storageVersionHash"]
            .as_str()
            .expect("stored resources have one");
        // The values Kubernetes clusters publish for the same kinds.
        assert_eq!(pods, "xPOwRZ+Yhw8=");
        let apps = resources_of(GroupVersion {
            group: "apps",
            version: "v1",
        });
        assert_eq!(
            entry(&apps, "deployments")["storageVersionHash"],
            "8aSe+NMegvE="
        );
        let services = entry(&core, "services")["storageVersionHash"]
            .as_str()
            .expect("hash");
        assert_ne!(pods, services);
        assert!(entry(&core, "bindings").get("storageVersionHash").is_none());
        assert!(
            entry(&core, "pods/status")
                .get("storageVersionHash")
                .is_none()
        );
    }

    #[test]
    fn core_versions_and_version_info() {
        let v = api_versions("10.0.0.1:6443");
        assert_eq!(v["versions"], json!(["v1"]));
        assert_eq!(
            v["serverAddressByClientCIDRs"][0]["serverAddress"],
            "10.0.0.1:6443"
        );
        let info = version_info();
        assert_eq!(info["major"], "1");
        assert_eq!(info["minor"], "33");
        assert!(
            info["gitVersion"]
                .as_str()
                .expect("string")
                .starts_with("v1.33.0+gantry")
        );
        assert!(
            info["platform"]
                .as_str()
                .expect("string")
                .starts_with("linux/")
        );
    }
}
