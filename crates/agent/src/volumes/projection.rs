//! Turns configMap, secret, downwardAPI and projected volume sources into the files
//! the [`AtomicWriter`](super::atomic_writer::AtomicWriter) writes, reading the
//! referenced objects from the API.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, DownwardAPIVolumeFile, KeyToPath, Node, Pod,
    ProjectedVolumeSource, Secret, SecretVolumeSource, VolumeProjection,
};
use kube::{Api, Client};

use super::VolumeError;
use super::atomic_writer::{FileProjection, Payload};
use super::downward;
use super::paths::{validate_item_path, validate_key};

/// The API's default for `defaultMode` (0644).
const DEFAULT_MODE: i32 = 0o644;

/// Which kind of object a volume's keys come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// A core/v1 ConfigMap.
    ConfigMap,
    /// A core/v1 Secret.
    Secret,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ConfigMap => "configmap",
            Self::Secret => "secret",
        })
    }
}

/// Builds payloads for one pod's volumes.
pub struct Projector<'a> {
    client: &'a Client,
    pod: &'a Pod,
    namespace: &'a str,
}

/// A reference to the keys of a ConfigMap or Secret, with the volume's options.
struct KeySelection<'a> {
    kind: ObjectKind,
    name: &'a str,
    items: Option<&'a [KeyToPath]>,
    optional: bool,
    default_mode: i32,
}

impl<'a> Projector<'a> {
    /// A projector reading objects from the pod's namespace.
    pub fn new(client: &'a Client, pod: &'a Pod) -> Self {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        Self {
            client,
            pod,
            namespace,
        }
    }

    /// The files of a configMap volume.
    pub async fn config_map(&self, source: &ConfigMapVolumeSource) -> Result<Payload, VolumeError> {
        let mut payload = Payload::new();
        let selection = KeySelection {
            kind: ObjectKind::ConfigMap,
            name: &source.name,
            items: source.items.as_deref(),
            optional: source.optional.unwrap_or(false),
            default_mode: source.default_mode.unwrap_or(DEFAULT_MODE),
        };
        self.project_keys(&selection, &mut payload).await?;
        Ok(payload)
    }

    /// The files of a secret volume.
    pub async fn secret(&self, source: &SecretVolumeSource) -> Result<Payload, VolumeError> {
        let mut payload = Payload::new();
        let selection = KeySelection {
            kind: ObjectKind::Secret,
            name: source.secret_name.as_deref().unwrap_or_default(),
            items: source.items.as_deref(),
            optional: source.optional.unwrap_or(false),
            default_mode: source.default_mode.unwrap_or(DEFAULT_MODE),
        };
        self.project_keys(&selection, &mut payload).await?;
        Ok(payload)
    }

    /// The files of a downwardAPI volume.
    pub async fn downward_api(
        &self,
        items: &[DownwardAPIVolumeFile],
        default_mode: Option<i32>,
    ) -> Result<Payload, VolumeError> {
        let mut payload = Payload::new();
        self.project_downward(items, default_mode.unwrap_or(DEFAULT_MODE), &mut payload)
            .await?;
        Ok(payload)
    }

    /// The files of a projected volume: its sources merged into one directory.
    pub async fn projected(&self, source: &ProjectedVolumeSource) -> Result<Payload, VolumeError> {
        let default_mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        let mut payload = Payload::new();
        for projection in source.sources.iter().flatten() {
            self.project_source(projection, default_mode, &mut payload)
                .await?;
        }
        Ok(payload)
    }

    async fn project_source(
        &self,
        projection: &VolumeProjection,
        default_mode: i32,
        payload: &mut Payload,
    ) -> Result<(), VolumeError> {
        if let Some(config_map) = &projection.config_map {
            let selection = KeySelection {
                kind: ObjectKind::ConfigMap,
                name: &config_map.name,
                items: config_map.items.as_deref(),
                optional: config_map.optional.unwrap_or(false),
                default_mode,
            };
            self.project_keys(&selection, payload).await?;
        }
        if let Some(secret) = &projection.secret {
            let selection = KeySelection {
                kind: ObjectKind::Secret,
                name: &secret.name,
                items: secret.items.as_deref(),
                optional: secret.optional.unwrap_or(false),
                default_mode,
            };
            self.project_keys(&selection, payload).await?;
        }
        if let Some(downward_api) = &projection.downward_api {
            let items = downward_api.items.as_deref().unwrap_or_default();
            self.project_downward(items, default_mode, payload).await?;
        }
        if projection.service_account_token.is_some() {
            return Err(VolumeError::Unsupported(
                "serviceAccountToken projections (the TokenRequest API is not served yet)",
            ));
        }
        if projection.cluster_trust_bundle.is_some() {
            return Err(VolumeError::Unsupported("clusterTrustBundle projections"));
        }
        Ok(())
    }

    /// Adds the selected keys of a ConfigMap or Secret to `payload`, the kubelet way:
    /// every key as a file when there are no `items`, otherwise `key -> path` with
    /// per-item modes; a missing object or key is an error unless `optional`.
    async fn project_keys(
        &self,
        selection: &KeySelection<'_>,
        payload: &mut Payload,
    ) -> Result<(), VolumeError> {
        let Some(data) = self.fetch_keys(selection.kind, selection.name).await? else {
            return if selection.optional {
                Ok(())
            } else {
                Err(VolumeError::ObjectNotFound {
                    kind: selection.kind,
                    name: selection.name.to_owned(),
                })
            };
        };
        match selection.items.filter(|items| !items.is_empty()) {
            None => {
                for (key, bytes) in data {
                    validate_key(&key)?;
                    let file = file(bytes, selection.default_mode)?;
                    payload.insert(key.into(), file);
                }
            }
            Some(items) => {
                for item in items {
                    let Some(bytes) = data.get(&item.key) else {
                        if selection.optional {
                            continue;
                        }
                        return Err(VolumeError::MissingKey {
                            kind: selection.kind,
                            name: selection.name.to_owned(),
                            key: item.key.clone(),
                        });
                    };
                    let path = validate_item_path(&item.path)?;
                    let mode = item.mode.unwrap_or(selection.default_mode);
                    payload.insert(path, file(bytes.clone(), mode)?);
                }
            }
        }
        Ok(())
    }

    /// The keys of a ConfigMap (`data` and `binaryData`) or Secret (`data` and
    /// `stringData`), or `None` if the object does not exist.
    async fn fetch_keys(
        &self,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
        let keys = match kind {
            ObjectKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), self.namespace);
                api.get_opt(name).await?.map(|config_map| {
                    let text = config_map.data.into_iter().flatten();
                    let text = text.map(|(key, value)| (key, value.into_bytes()));
                    let binary = config_map.binary_data.into_iter().flatten();
                    text.chain(binary.map(|(key, value)| (key, value.0)))
                        .collect()
                })
            }
            ObjectKind::Secret => {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), self.namespace);
                api.get_opt(name).await?.map(|secret| {
                    let strings = secret.string_data.into_iter().flatten();
                    let strings = strings.map(|(key, value)| (key, value.into_bytes()));
                    let data = secret.data.into_iter().flatten();
                    data.map(|(key, value)| (key, value.0))
                        .chain(strings)
                        .collect()
                })
            }
        };
        Ok(keys)
    }

    async fn project_downward(
        &self,
        items: &[DownwardAPIVolumeFile],
        default_mode: i32,
        payload: &mut Payload,
    ) -> Result<(), VolumeError> {
        let node = self.node_if_needed(items).await?;
        for item in items {
            let value = match (&item.field_ref, &item.resource_field_ref) {
                (Some(field), _) => downward::field_value(self.pod, field)?,
                (None, Some(resource)) => {
                    downward::resource_value(self.pod, resource, node.as_ref())?
                }
                (None, None) => return Err(VolumeError::UnsupportedField(item.path.clone())),
            };
            let path = validate_item_path(&item.path)?;
            let mode = item.mode.unwrap_or(default_mode);
            payload.insert(path, file(value.into_bytes(), mode)?);
        }
        Ok(())
    }

    /// The pod's Node, read only when an item reports an unset limit (which the
    /// kubelet replaces by the node's allocatable amount).
    async fn node_if_needed(
        &self,
        items: &[DownwardAPIVolumeFile],
    ) -> Result<Option<Node>, VolumeError> {
        let needed = items.iter().any(|item| {
            item.resource_field_ref
                .as_ref()
                .is_some_and(|selector| downward::needs_node(self.pod, selector))
        });
        let node_name = self.pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        match (needed, node_name) {
            (true, Some(node_name)) => {
                let api: Api<Node> = Api::all(self.client.clone());
                Ok(api.get_opt(node_name).await?)
            }
            _ => Ok(None),
        }
    }
}

/// A file with a mode checked to be permission bits only (0..=0777, as the API
/// server requires).
fn file(data: Vec<u8>, mode: i32) -> Result<FileProjection, VolumeError> {
    let mode = u32::try_from(mode)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or(VolumeError::InvalidMode(mode))?;
    Ok(FileProjection { data, mode })
}
