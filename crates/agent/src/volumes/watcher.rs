//! Keeps configMap, secret and projected volumes current without polling: watches
//! ConfigMaps and Secrets and refreshes exactly the tracked pods that reference a
//! changed object, so an update reaches running containers within moments.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{ObjectKind, PodVolumes, VolumeManager, pod_volumes};

/// An object a pod's volumes read: kind, namespace, name.
type ObjectRef = (ObjectKind, String, String);

/// Refreshes the volumes of tracked pods when the ConfigMaps and Secrets they use
/// change. The pod worker tracks a pod once its volumes are prepared and untracks
/// it at teardown; one task runs [`VolumeWatcher::run`] for the whole node.
#[derive(Clone)]
pub struct VolumeWatcher {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    manager: VolumeManager,
    /// Tracked pods by uid.
    pods: Mutex<BTreeMap<String, TrackedPod>>,
    /// Which kinds have finished their initial list (bit 0 ConfigMaps, bit 1 Secrets).
    synced: watch::Sender<u8>,
}

struct TrackedPod {
    pod: Pod,
    volumes: PodVolumes,
    references: BTreeSet<ObjectRef>,
}

/// What one watch event means for the tracked pods.
enum Change {
    /// An object changed or went away: refresh the pods that read it.
    Object(ObjectRef),
    /// A (re)list of a kind completed: changes may have been missed, refresh all.
    Synced(ObjectKind),
}

const ALL_SYNCED: u8 = 0b11;

impl VolumeWatcher {
    /// A watcher that refreshes through `manager`.
    pub fn new(client: Client, manager: VolumeManager) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                manager,
                pods: Mutex::default(),
                synced: watch::Sender::new(0),
            }),
        }
    }

    /// Starts (or, with a newer pod object, updates) refreshing a pod's volumes.
    pub fn track(&self, pod: Pod, volumes: PodVolumes) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let references = references(&pod);
        self.pods().insert(
            uid,
            TrackedPod {
                pod,
                volumes,
                references,
            },
        );
    }

    /// Stops refreshing a pod (call before [`VolumeManager::cleanup`]).
    pub fn untrack(&self, pod_uid: &str) {
        self.pods().remove(pod_uid);
    }

    /// Resolves once both watches have listed their objects, after which every
    /// change is seen. For tests and for ordering start-up.
    pub async fn wait_until_watching(&self) {
        let mut synced = self.inner.synced.subscribe();
        // Only fails if the sender is dropped, which `self` prevents.
        let _ = synced.wait_for(|bits| *bits == ALL_SYNCED).await;
    }

    /// Watches until `shutdown` is cancelled. Watch errors are retried with
    /// backoff; refresh errors are logged and retried on the next change.
    pub async fn run(self, shutdown: CancellationToken) {
        let client = &self.inner.client;
        let config_maps = changes::<ConfigMap>(Api::all(client.clone()), ObjectKind::ConfigMap);
        let secrets = changes::<Secret>(Api::all(client.clone()), ObjectKind::Secret);
        let mut changes = std::pin::pin!(futures::stream::select(config_maps, secrets));
        loop {
            let change = tokio::select! {
                () = shutdown.cancelled() => return,
                change = changes.next() => change,
            };
            match change {
                Some(Change::Object(object)) => self.refresh_readers_of(Some(&object)).await,
                Some(Change::Synced(kind)) => {
                    self.inner
                        .synced
                        .send_modify(|bits| *bits |= kind_bit(kind));
                    self.refresh_readers_of(None).await;
                }
                None => return,
            }
        }
    }

    /// Refreshes the pods that read `object`, or all tracked pods for `None`.
    async fn refresh_readers_of(&self, object: Option<&ObjectRef>) {
        let affected: Vec<(Pod, PodVolumes)> = self
            .pods()
            .values()
            .filter(|tracked| object.is_none_or(|object| tracked.references.contains(object)))
            .map(|tracked| (tracked.pod.clone(), tracked.volumes.clone()))
            .collect();
        for (pod, volumes) in affected {
            if let Err(error) = self.inner.manager.refresh(&pod, &volumes).await {
                tracing::warn!(pod = %pod.name_any(), %error, "refreshing volumes failed");
            }
        }
    }

    fn pods(&self) -> MutexGuard<'_, BTreeMap<String, TrackedPod>> {
        self.inner
            .pods
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn kind_bit(kind: ObjectKind) -> u8 {
    match kind {
        ObjectKind::ConfigMap => 0b01,
        ObjectKind::Secret => 0b10,
    }
}

/// A kind's watch events as changes; errors are logged (the watcher retries).
fn changes<K>(api: Api<K>, kind: ObjectKind) -> impl Stream<Item = Change> + Send
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K: Send + 'static,
{
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| async move {
            let object = |object: K| {
                let namespace = object.namespace().unwrap_or_default();
                Change::Object((kind, namespace, object.name_any()))
            };
            match event {
                Ok(Event::Apply(changed) | Event::Delete(changed)) => Some(object(changed)),
                Ok(Event::InitDone) => Some(Change::Synced(kind)),
                Ok(Event::Init | Event::InitApply(_)) => None,
                Err(error) => {
                    tracing::warn!(%kind, %error, "watch for volume sources failed; retrying");
                    None
                }
            }
        })
}

/// The ConfigMaps and Secrets a pod's volumes read.
fn references(pod: &Pod) -> BTreeSet<ObjectRef> {
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let reference = |kind, name: &str| (kind, namespace.clone(), name.to_owned());
    let mut references = BTreeSet::new();
    for volume in pod_volumes(pod) {
        if let Some(source) = &volume.config_map {
            references.insert(reference(ObjectKind::ConfigMap, &source.name));
        }
        if let Some(name) = volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref())
        {
            references.insert(reference(ObjectKind::Secret, name));
        }
        let projections = volume.projected.as_ref().and_then(|p| p.sources.as_ref());
        for projection in projections.into_iter().flatten() {
            if let Some(source) = &projection.config_map {
                references.insert(reference(ObjectKind::ConfigMap, &source.name));
            }
            if let Some(source) = &projection.secret {
                references.insert(reference(ObjectKind::Secret, &source.name));
            }
        }
    }
    references
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, ConfigMapVolumeSource, PodSpec, ProjectedVolumeSource,
        SecretProjection, SecretVolumeSource, Volume, VolumeProjection,
    };

    use super::*;

    #[test]
    fn references_cover_plain_and_projected_sources() {
        let volume = |name: &str| Volume {
            name: name.into(),
            ..Default::default()
        };
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                volumes: Some(vec![
                    Volume {
                        config_map: Some(ConfigMapVolumeSource {
                            name: "cm".into(),
                            ..Default::default()
                        }),
                        ..volume("a")
                    },
                    Volume {
                        secret: Some(SecretVolumeSource {
                            secret_name: Some("s".into()),
                            ..Default::default()
                        }),
                        ..volume("b")
                    },
                    Volume {
                        projected: Some(ProjectedVolumeSource {
                            sources: Some(vec![
                                VolumeProjection {
                                    config_map: Some(ConfigMapProjection {
                                        name: "pcm".into(),
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                },
                                VolumeProjection {
                                    secret: Some(SecretProjection {
                                        name: "ps".into(),
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                },
                            ]),
                            default_mode: None,
                        }),
                        ..volume("c")
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let shop = |kind, name: &str| (kind, "shop".to_owned(), name.to_owned());
        assert_eq!(
            references(&pod),
            BTreeSet::from([
                shop(ObjectKind::ConfigMap, "cm"),
                shop(ObjectKind::ConfigMap, "pcm"),
                shop(ObjectKind::Secret, "ps"),
                shop(ObjectKind::Secret, "s"),
            ])
        );
    }
}
