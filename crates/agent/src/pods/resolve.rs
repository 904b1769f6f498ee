//! From a pod's container spec to what the engine runs, with Kubernetes'
//! semantics: `command` replaces the image's ENTRYPOINT and `args` its CMD;
//! environment from values, the downward API, ConfigMaps and Secrets, with
//! `$(VAR)` references expanded; resource limits as cgroup settings; the
//! security context's user and group.

use std::collections::{BTreeMap, HashMap};

use gantry_api::quantity::Quantity;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};

/// Why a container's configuration cannot be built yet (the kubelet's
/// `CreateContainerConfigError`); the message is upstream's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A referenced ConfigMap or Secret does not exist.
    #[error("{kind} \"{name}\" not found")]
    NotFound {
        /// `configmap` or `secret`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The object exists but lacks the key.
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey {
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// The pod's namespace.
        namespace: String,
        /// The object's name.
        name: String,
        /// The key asked for.
        key: String,
    },
    /// A downward API path this agent does not know.
    #[error("unsupported fieldPath: {0}")]
    UnsupportedField(String),
    /// A resource quantity that does not parse.
    #[error("invalid quantity {0:?}")]
    InvalidQuantity(String),
    /// `runAsNonRoot` with `runAsUser: 0`.
    #[error(
        "container's runAsUser breaks non-root policy (pod: \"{pod}\", container: {container})"
    )]
    RunAsUserIsRoot {
        /// `name_namespace(uid)`.
        pod: String,
        /// The container's name.
        container: String,
    },
    /// `runAsNonRoot` and the image runs as root.
    #[error(
        "container has runAsNonRoot and image will run as root (pod: \"{pod}\", container: {container})"
    )]
    ImageRunsAsRoot {
        /// `name_namespace(uid)`.
        pod: String,
        /// The container's name.
        container: String,
    },
    /// `runAsNonRoot` and the image names its user, which cannot be checked.
    #[error(
        "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: \"{pod}\", container: {container})"
    )]
    NonNumericImageUser {
        /// The image's USER.
        user: String,
        /// `name_namespace(uid)`.
        pod: String,
        /// The container's name.
        container: String,
    },
}

/// The ConfigMaps and Secrets a container refers to, fetched beforehand
/// (`None` when the object does not exist).
#[derive(Clone, Debug, Default)]
pub struct EnvSources {
    /// By name.
    pub config_maps: HashMap<String, Option<ConfigMap>>,
    /// By name.
    pub secrets: HashMap<String, Option<Secret>>,
}

impl EnvSources {
    /// The names of the ConfigMaps and Secrets `container` reads, to fetch.
    pub fn referenced_by(container: &Container) -> (Vec<String>, Vec<String>) {
        let mut config_maps = Vec::new();
        let mut secrets = Vec::new();
        for source in container.env_from.iter().flatten() {
            if let Some(reference) = &source.config_map_ref {
                config_maps.push(reference.name.clone());
            }
            if let Some(reference) = &source.secret_ref {
                secrets.push(reference.name.clone());
            }
        }
        for var in container.env.iter().flatten() {
            let Some(from) = &var.value_from else {
                continue;
            };
            if let Some(key) = &from.config_map_key_ref {
                config_maps.push(key.name.clone());
            }
            if let Some(key) = &from.secret_key_ref {
                secrets.push(key.name.clone());
            }
        }
        config_maps.sort();
        config_maps.dedup();
        secrets.sort();
        secrets.dedup();
        (config_maps, secrets)
    }

    fn config_map_data(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let config_map = self.config_maps.get(name)?.as_ref()?;
        let mut data = config_map.data.clone().unwrap_or_default();
        for (key, value) in config_map.binary_data.iter().flatten() {
            data.insert(key.clone(), String::from_utf8_lossy(&value.0).into_owned());
        }
        Some(data)
    }

    fn secret_data(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let secret = self.secrets.get(name)?.as_ref()?;
        let mut data: BTreeMap<String, String> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        data.extend(secret.string_data.clone().unwrap_or_default());
        Some(data)
    }
}

/// What the downward API may read that is not in the pod object yet.
#[derive(Clone, Debug, Default)]
pub struct PodRuntimeFacts {
    /// The pod's IP, once it has one.
    pub pod_ip: Option<String>,
    /// The node's IP.
    pub host_ip: String,
}

/// The container's environment, in order, as `KEY=value` (later entries win).
pub fn resolve_env(
    pod: &Pod,
    container: &Container,
    sources: &EnvSources,
    facts: &PodRuntimeFacts,
) -> Result<Vec<String>, ConfigError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, key: String, value: String| {
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
    };
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let data = if let Some(reference) = &source.config_map_ref {
            match sources.config_map_data(&reference.name) {
                Some(data) => data,
                None if reference.optional == Some(true) => continue,
                None => return Err(not_found("configmap", &reference.name)),
            }
        } else if let Some(reference) = &source.secret_ref {
            match sources.secret_data(&reference.name) {
                Some(data) => data,
                None if reference.optional == Some(true) => continue,
                None => return Err(not_found("secret", &reference.name)),
            }
        } else {
            continue;
        };
        for (key, value) in data {
            set(&mut env, format!("{prefix}{key}"), value);
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    field_value(pod, &field.field_path, facts)?
                } else if let Some(key) = &from.config_map_key_ref {
                    let data = sources.config_map_data(&key.name);
                    match keyed(
                        data,
                        &key.key,
                        key.optional,
                        "configmap",
                        "ConfigMap",
                        &key.name,
                        &namespace,
                    )? {
                        Some(value) => value,
                        None => continue,
                    }
                } else if let Some(key) = &from.secret_key_ref {
                    let data = sources.secret_data(&key.name);
                    match keyed(
                        data,
                        &key.key,
                        key.optional,
                        "secret",
                        "Secret",
                        &key.name,
                        &namespace,
                    )? {
                        Some(value) => value,
                        None => continue,
                    }
                } else if let Some(resource) = &from.resource_field_ref {
                    resource_value(
                        container,
                        &resource.resource,
                        resource.divisor.as_ref().map(|d| d.0.as_str()),
                    )?
                } else {
                    String::new()
                }
            }
            (Some(value), None) => {
                let defined: HashMap<&str, &str> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                expand(value, |name| defined.get(name).map(|v| v.to_string()))
            }
            (None, None) => String::new(),
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

fn not_found(kind: &'static str, name: &str) -> ConfigError {
    ConfigError::NotFound {
        kind,
        name: name.to_owned(),
    }
}

/// One key of a ConfigMap or Secret; `Ok(None)` when optional and absent.
fn keyed(
    data: Option<BTreeMap<String, String>>,
    key: &str,
    optional: Option<bool>,
    kind: &'static str,
    display_kind: &'static str,
    name: &str,
    namespace: &str,
) -> Result<Option<String>, ConfigError> {
    let optional = optional == Some(true);
    match data {
        None if optional => Ok(None),
        None => Err(not_found(kind, name)),
        Some(data) => match data.get(key) {
            Some(value) => Ok(Some(value.clone())),
            None if optional => Ok(None),
            None => Err(ConfigError::MissingKey {
                kind: display_kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                key: key.to_owned(),
            }),
        },
    }
}

/// The downward API's `fieldRef` paths.
fn field_value(pod: &Pod, path: &str, facts: &PodRuntimeFacts) -> Result<String, ConfigError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_entry = |map: &Option<BTreeMap<String, String>>, prefix: &str| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(
            map.as_ref()
                .and_then(|m| m.get(key).cloned())
                .unwrap_or_default(),
        )
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone().unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        _ => map_entry(&meta.labels, "metadata.labels['")
            .or_else(|| map_entry(&meta.annotations, "metadata.annotations['"))
            .ok_or_else(|| ConfigError::UnsupportedField(path.to_owned()))?,
    };
    Ok(value)
}

/// `resourceFieldRef`: a limit or request divided by the divisor, rounded up.
fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
) -> Result<String, ConfigError> {
    let resources = container.resources.as_ref();
    let (map, name) = match resource.split_once('.') {
        Some(("limits", name)) => (resources.and_then(|r| r.limits.as_ref()), name),
        Some(("requests", name)) => (resources.and_then(|r| r.requests.as_ref()), name),
        _ => return Err(ConfigError::UnsupportedField(resource.to_owned())),
    };
    let value = match map.and_then(|m| m.get(name)) {
        Some(quantity) => parse_quantity(&quantity.0)?,
        None => 0.0,
    };
    let divisor = match divisor {
        Some(d) if !d.is_empty() => parse_quantity(d)?,
        _ => 1.0,
    };
    if divisor <= 0.0 {
        return Err(ConfigError::InvalidQuantity(divisor.to_string()));
    }
    Ok(((value / divisor).ceil() as i64).to_string())
}

/// Kubernetes' `$(VAR)` expansion: defined references are replaced, `$$` is a
/// literal `$`, anything else is left as written.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The image ENTRYPOINT override (`command`) and CMD override (`args`), with
/// `$(VAR)` references expanded against the container's environment.
pub fn command_and_args(
    container: &Container,
    env: &[String],
) -> (Option<Vec<String>>, Vec<String>) {
    let vars: HashMap<&str, &str> = env.iter().filter_map(|kv| kv.split_once('=')).collect();
    let expand_all = |words: &Vec<String>| -> Vec<String> {
        words
            .iter()
            .map(|w| expand(w, |name| vars.get(name).map(|v| v.to_string())))
            .collect()
    };
    let command = container
        .command
        .as_ref()
        .filter(|c| !c.is_empty())
        .map(expand_all);
    let args = container.args.as_ref().map(expand_all).unwrap_or_default();
    (command, args)
}

/// A resource quantity (`128Mi`, `1.5`, `500m`, `1e3`, `2G`) as a number.
pub fn parse_quantity(text: &str) -> Result<f64, ConfigError> {
    Quantity::parse(text.trim())
        .map(Quantity::as_f64)
        .map_err(|_| ConfigError::InvalidQuantity(text.to_owned()))
}

/// The container's cgroup settings: memory and CPU limits, CPU shares from the request.
pub fn resources(container: &Container) -> Result<gantry_runtime::Resources, ConfigError> {
    let requirements = container.resources.as_ref();
    let limit = |name: &str| {
        requirements
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(name))
            .map(|q| parse_quantity(&q.0))
            .transpose()
    };
    let request = requirements
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("cpu"))
        .map(|q| parse_quantity(&q.0))
        .transpose()?;
    let cpu_limit = limit("cpu")?;
    // Like the kubelet: a limit without a request requests the limit.
    let cpu_request = request.or(cpu_limit);
    Ok(gantry_runtime::Resources {
        memory_bytes: limit("memory")?.map(|bytes| bytes.ceil() as i64),
        nano_cpus: cpu_limit.map(|cores| (cores * 1e9).round() as i64),
        cpu_shares: cpu_request.map(|cores| ((cores * 1024.0).round() as u64).max(2)),
        pids_limit: None,
    })
}

/// `runAsUser[:runAsGroup]` from the container's security context, else the pod's;
/// `None` keeps the image's USER.
pub fn user(pod: &Pod, container: &Container, image_user: Option<&str>) -> Option<String> {
    let container_context = container.security_context.as_ref();
    let pod_context = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let uid = container_context
        .and_then(|c| c.run_as_user)
        .or_else(|| pod_context.and_then(|p| p.run_as_user));
    let gid = container_context
        .and_then(|c| c.run_as_group)
        .or_else(|| pod_context.and_then(|p| p.run_as_group));
    let image_user = image_user
        .filter(|u| !u.is_empty())
        .map(|u| u.split_once(':').map_or(u, |(user, _)| user).to_owned());
    match (uid, gid) {
        (None, None) => None,
        (Some(uid), None) => Some(uid.to_string()),
        (uid, Some(gid)) => {
            let user = uid
                .map(|u| u.to_string())
                .or(image_user)
                .unwrap_or_else(|| "0".into());
            Some(format!("{user}:{gid}"))
        }
    }
}

/// The security context that applies: the container's fields, else the pod's.
struct EffectiveContext {
    run_as_user: Option<i64>,
    run_as_non_root: Option<bool>,
}

fn effective_context(pod: &Pod, container: &Container) -> EffectiveContext {
    let container_context = container.security_context.as_ref();
    let pod_context = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    EffectiveContext {
        run_as_user: container_context
            .and_then(|c| c.run_as_user)
            .or_else(|| pod_context.and_then(|p| p.run_as_user)),
        run_as_non_root: container_context
            .and_then(|c| c.run_as_non_root)
            .or_else(|| pod_context.and_then(|p| p.run_as_non_root)),
    }
}

/// The kubelet's `verifyRunAsNonRoot`: with `runAsNonRoot`, refuse a container
/// whose user is (or may be) root, before it is created.
pub fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    image_user: Option<&str>,
) -> Result<(), ConfigError> {
    let context = effective_context(pod, container);
    if context.run_as_non_root != Some(true) {
        return Ok(());
    }
    let pod_name = format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    );
    let container_name = container.name.clone();
    match context.run_as_user {
        Some(0) => {
            return Err(ConfigError::RunAsUserIsRoot {
                pod: pod_name,
                container: container_name,
            });
        }
        Some(_) => return Ok(()),
        None => {}
    }
    let user = image_user
        .map(|u| u.split_once(':').map_or(u, |(user, _)| user))
        .unwrap_or_default();
    match user.parse::<u32>() {
        _ if user.is_empty() => Err(ConfigError::ImageRunsAsRoot {
            pod: pod_name,
            container: container_name,
        }),
        Ok(0) => Err(ConfigError::ImageRunsAsRoot {
            pod: pod_name,
            container: container_name,
        }),
        Ok(_) => Ok(()),
        Err(_) => Err(ConfigError::NonNumericImageUser {
            user: user.to_owned(),
            pod: pod_name,
            container: container_name,
        }),
    }
}

/// The engine's security settings from the security contexts: capabilities,
/// privilege, escalation, supplementary groups (`supplementalGroups` and
/// `fsGroup`, as the kubelet adds both) and the OOM score of the pod's QoS.
pub fn security(pod: &Pod, container: &Container, oom_score_adj: i32) -> gantry_runtime::Security {
    let context = container.security_context.as_ref();
    let pod_context = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let capabilities = context.and_then(|c| c.capabilities.as_ref());
    let mut groups: Vec<u32> = pod_context
        .into_iter()
        .flat_map(|p| {
            p.supplemental_groups
                .iter()
                .flatten()
                .copied()
                .chain(p.fs_group)
        })
        .filter_map(|gid| u32::try_from(gid).ok())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let privileged = context.and_then(|c| c.privileged).unwrap_or(false);
    gantry_runtime::Security {
        privileged,
        cap_add: capabilities.and_then(|c| c.add.clone()).unwrap_or_default(),
        cap_drop: capabilities
            .and_then(|c| c.drop.clone())
            .unwrap_or_default(),
        supplementary_groups: groups,
        // Kubernetes' default is to allow it; only an explicit `false` sets no_new_privs.
        allow_privilege_escalation: context
            .and_then(|c| c.allow_privilege_escalation)
            .unwrap_or(true),
        oom_score_adj: Some(oom_score_adj),
    }
}

/// The names of the Secrets listed in the pod's `imagePullSecrets`.
pub fn image_pull_secret_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
        .map(|reference| reference.name.clone())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Credentials for `image`'s registry from the pod's image pull secrets, the
/// first that has an entry for it winning, as in the kubelet's keyring:
/// `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`) and the legacy
/// `kubernetes.io/dockercfg` (`.dockercfg`, the `auths` map alone).
pub fn pull_credentials(secrets: &[Secret], image: &str) -> Option<gantry_image::Credentials> {
    let reference = gantry_image::ImageReference::parse(image).ok()?;
    let registry = reference.registry();
    secrets.iter().find_map(|secret| {
        let data = secret.data.as_ref();
        let document = match data.and_then(|d| d.get(".dockerconfigjson")) {
            Some(json) => String::from_utf8_lossy(&json.0).into_owned(),
            None => {
                let legacy = data.and_then(|d| d.get(".dockercfg"))?;
                format!("{{\"auths\": {}}}", String::from_utf8_lossy(&legacy.0))
            }
        };
        gantry_image::credentials_from_config_text(&document, registry)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns1", "uid": "u-1",
                         "labels": {"app": "x"}, "annotations": {"note": "hi"}},
            "spec": {"nodeName": "node-a", "serviceAccountName": "sa",
                     "securityContext": {"runAsUser": 1000},
                     "containers": containers}
        }))
        .unwrap()
    }

    fn container(value: serde_json::Value) -> Container {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn command_replaces_entrypoint_and_args_replace_cmd() {
        let c = container(
            json!({"name": "a", "command": ["sh", "-c"], "args": ["echo $(GREETING) $$(HOME) $(MISSING)"]}),
        );
        let (entrypoint, cmd) = command_and_args(&c, &["GREETING=hello".into()]);
        assert_eq!(entrypoint, Some(vec!["sh".to_owned(), "-c".to_owned()]));
        assert_eq!(cmd, vec!["echo hello $(HOME) $(MISSING)"]);
        let only_args = container(json!({"name": "a", "args": ["x"]}));
        assert_eq!(
            command_and_args(&only_args, &[]),
            (None, vec!["x".to_owned()])
        );
        let neither = container(json!({"name": "a", "command": []}));
        assert_eq!(command_and_args(&neither, &[]), (None, vec![]));
    }

    #[test]
    fn env_comes_from_values_downward_api_and_config() {
        let c = container(json!({
            "name": "a",
            "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"},
                        {"secretRef": {"name": "absent", "optional": true}}],
            "env": [
                {"name": "A", "value": "1"},
                {"name": "B", "value": "$(A)-$(CM_color)"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "s", "key": "password"}}},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "nope", "optional": true}}},
                {"name": "A", "value": "2"}
            ],
            "resources": {"limits": {"memory": "64Mi"}}
        }));
        let p = pod(json!([c.clone()]));
        let mut sources = EnvSources::default();
        sources.config_maps.insert(
            "cm".into(),
            Some(ConfigMap {
                data: Some(BTreeMap::from([("color".into(), "blue".into())])),
                ..Default::default()
            }),
        );
        sources.secrets.insert(
            "s".into(),
            Some(Secret {
                data: Some(BTreeMap::from([(
                    "password".into(),
                    ByteString(b"hunter2".to_vec()),
                )])),
                ..Default::default()
            }),
        );
        sources.secrets.insert("absent".into(), None);
        let facts = PodRuntimeFacts {
            pod_ip: Some("10.42.0.5".into()),
            host_ip: "192.168.1.2".into(),
        };
        let env = resolve_env(&p, &c, &sources, &facts).unwrap();
        assert_eq!(
            env,
            vec![
                "CM_color=blue",
                "B=1-blue",
                "POD=web",
                "NS=ns1",
                "APP=x",
                "NOTE=hi",
                "NODE=node-a",
                "IP=10.42.0.5",
                "PASS=hunter2",
                "A=2"
            ]
        );
        assert_eq!(
            EnvSources::referenced_by(&c),
            (
                vec!["cm".to_owned()],
                vec!["absent".to_owned(), "s".to_owned()]
            )
        );
    }

    #[test]
    fn missing_config_is_a_config_error_with_upstream_wording() {
        let c = container(json!({"name": "a", "env": [
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]}));
        let p = pod(json!([c.clone()]));
        let mut sources = EnvSources::default();
        let facts = PodRuntimeFacts::default();
        let error = resolve_env(&p, &c, &sources, &facts).unwrap_err();
        assert_eq!(error.to_string(), "configmap \"cm\" not found");
        sources
            .config_maps
            .insert("cm".into(), Some(ConfigMap::default()));
        let error = resolve_env(&p, &c, &sources, &facts).unwrap_err();
        assert_eq!(error.to_string(), "couldn't find key k in ConfigMap ns1/cm");
    }

    #[test]
    fn quantities_and_limits_become_cgroup_settings() {
        assert_eq!(parse_quantity("128Mi").unwrap(), 134_217_728.0);
        assert_eq!(parse_quantity("500m").unwrap(), 0.5);
        assert_eq!(parse_quantity("1e3").unwrap(), 1000.0);
        assert_eq!(parse_quantity("2G").unwrap(), 2e9);
        assert!(parse_quantity("12zz").is_err());
        let c = container(json!({"name": "a", "resources": {
            "limits": {"memory": "64Mi", "cpu": "1500m"}, "requests": {"cpu": "250m"}}}));
        let r = resources(&c).unwrap();
        assert_eq!(r.memory_bytes, Some(64 << 20));
        assert_eq!(r.nano_cpus, Some(1_500_000_000));
        assert_eq!(r.cpu_shares, Some(256));
        assert_eq!(
            resources(&container(json!({"name": "a"}))).unwrap(),
            Default::default()
        );
    }

    #[test]
    fn pull_secrets_give_credentials_for_the_image_registry() {
        let secret = |key: &str, text: &str| Secret {
            data: Some(BTreeMap::from([(
                key.to_owned(),
                ByteString(text.as_bytes().to_vec()),
            )])),
            ..Default::default()
        };
        // "dXNlcjpzZWNyZXQ=" is base64 for "user:secret".
        let json = secret(
            ".dockerconfigjson",
            r#"{"auths": {"localhost:5000": {"auth": "dXNlcjpzZWNyZXQ="}}}"#,
        );
        let legacy = secret(
            ".dockercfg",
            r#"{"https://index.docker.io/v1/": {"username": "hub", "password": "pw"}}"#,
        );
        let secrets = vec![json, legacy];
        let local = pull_credentials(&secrets, "localhost:5000/app:1").unwrap();
        assert_eq!(
            (local.username.as_str(), local.password.as_str()),
            ("user", "secret")
        );
        let hub = pull_credentials(&secrets, "busybox:latest").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "pw")
        );
        assert!(pull_credentials(&secrets, "quay.io/x/y").is_none());
        let p: Pod = serde_json::from_value(json!({"spec": {"containers": [],
            "imagePullSecrets": [{"name": "regcred"}, {"name": ""}]}}))
        .unwrap();
        assert_eq!(image_pull_secret_names(&p), vec!["regcred"]);
    }

    #[test]
    fn run_as_non_root_refuses_root_users() {
        let mut p = pod(json!([{"name": "a"}]));
        p.spec.as_mut().unwrap().security_context =
            Some(serde_json::from_value(json!({"runAsNonRoot": true})).unwrap());
        let c = container(json!({"name": "a"}));
        assert_eq!(
            verify_run_as_non_root(&p, &c, None)
                .unwrap_err()
                .to_string(),
            "container has runAsNonRoot and image will run as root (pod: \"web_ns1(u-1)\", container: a)"
        );
        assert!(verify_run_as_non_root(&p, &c, Some("0:0")).is_err());
        assert!(verify_run_as_non_root(&p, &c, Some("1000")).is_ok());
        assert!(matches!(
            verify_run_as_non_root(&p, &c, Some("www")),
            Err(ConfigError::NonNumericImageUser { .. })
        ));
        let as_root = container(json!({"name": "a", "securityContext": {"runAsUser": 0}}));
        assert!(matches!(
            verify_run_as_non_root(&p, &as_root, Some("1000")),
            Err(ConfigError::RunAsUserIsRoot { .. })
        ));
        let as_user = container(json!({"name": "a", "securityContext": {"runAsUser": 7}}));
        assert!(verify_run_as_non_root(&p, &as_user, None).is_ok());
        let opted_out = container(json!({"name": "a", "securityContext": {"runAsNonRoot": false}}));
        assert!(verify_run_as_non_root(&p, &opted_out, None).is_ok());
    }

    #[test]
    fn security_contexts_become_engine_settings() {
        let mut p = pod(json!([{"name": "a"}]));
        p.spec.as_mut().unwrap().security_context = Some(
            serde_json::from_value(json!({"supplementalGroups": [5000, 4000], "fsGroup": 4000}))
                .unwrap(),
        );
        let c = container(json!({"name": "a", "securityContext": {
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["CHOWN"]},
            "allowPrivilegeEscalation": false}}));
        let security = security(&p, &c, -997);
        assert_eq!(security.cap_add, vec!["NET_ADMIN"]);
        assert_eq!(security.cap_drop, vec!["CHOWN"]);
        assert_eq!(security.supplementary_groups, vec![4000, 5000]);
        assert!(!security.allow_privilege_escalation);
        assert!(!security.privileged);
        assert_eq!(security.oom_score_adj, Some(-997));
        let privileged = container(json!({"name": "a", "securityContext": {"privileged": true}}));
        let security = super::security(&p, &privileged, 1000);
        assert!(security.privileged);
        assert!(security.allow_privilege_escalation);
    }

    #[test]
    fn security_context_user_falls_back_to_pod_then_image() {
        let c = container(json!({"name": "a"}));
        let p = pod(json!([c.clone()]));
        assert_eq!(user(&p, &c, None), Some("1000".into()));
        let c =
            container(json!({"name": "a", "securityContext": {"runAsUser": 5, "runAsGroup": 6}}));
        assert_eq!(user(&p, &c, None), Some("5:6".into()));
        let mut p = p;
        p.spec.as_mut().unwrap().security_context = None;
        let c = container(json!({"name": "a", "securityContext": {"runAsGroup": 6}}));
        assert_eq!(user(&p, &c, Some("www:www")), Some("www:6".into()));
        assert_eq!(
            user(&p, &container(json!({"name": "a"})), Some("www")),
            None
        );
    }
}
