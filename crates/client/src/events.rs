//! Core/v1 Events, the ones `kubectl describe` and `kubectl get events` show.
//!
//! kube-runtime's recorder writes `events.k8s.io/v1` Events; Gantry serves the core/v1
//! kind, which kubectl 1.32 reads for `describe`, so components record through this.
//! Repeats of the same (object, reason, message) within a recorder bump `count` and
//! `lastTimestamp` on one Event instead of creating a new one, as client-go's
//! correlator does.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::Mutex;

/// Whether an Event reports routine progress or something an operator should look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// `Normal`.
    Normal,
    /// `Warning`.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Records Events on behalf of one component (`reportingComponent`/`source.component`).
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    component: String,
    host: Option<String>,
    recent: Arc<Mutex<HashMap<(String, String, String), (String, i32)>>>,
}

impl EventRecorder {
    /// A recorder for `component` (e.g. `default-scheduler`, `replicaset-controller`),
    /// optionally on a node (`source.host`, as the kubelet sets it).
    pub fn new(client: kube::Client, component: &str, host: Option<&str>) -> Self {
        EventRecorder {
            client,
            component: component.to_string(),
            host: host.map(str::to_string),
            recent: Arc::default(),
        }
    }

    /// Records an Event about `object`; failures are logged, never returned, because an
    /// Event is best-effort and must not stop the work it reports.
    pub async fn record(
        &self,
        object: &ObjectReference,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) {
        if let Err(err) = self.try_record(object, event_type, reason, message).await {
            tracing::debug!(%err, reason, "recording an event");
        }
    }

    async fn try_record(
        &self,
        object: &ObjectReference,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let namespace = object.namespace.clone().unwrap_or_else(|| "default".into());
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let key = (
            object.uid.clone().unwrap_or_default(),
            reason.to_string(),
            message.to_string(),
        );
        let now = Time(Timestamp::now());
        let mut recent = self.recent.lock().await;
        if let Some((name, count)) = recent.get(&key).cloned() {
            if let Some(mut existing) = events.get_opt(&name).await? {
                existing.count = Some(count + 1);
                existing.last_timestamp = Some(now.clone());
                if events
                    .replace(&name, &PostParams::default(), &existing)
                    .await
                    .is_ok()
                {
                    recent.insert(key, (name, count + 1));
                    return Ok(());
                }
            }
        }
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!(
                    "{}.",
                    object.name.as_deref().unwrap_or("object")
                )),
                namespace: Some(namespace),
                ..Default::default()
            },
            involved_object: object.clone(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(event_type.as_str().to_string()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: self.host.clone(),
            ..Default::default()
        };
        let created = events.create(&PostParams::default(), &event).await?;
        if let Some(name) = created.metadata.name {
            recent.insert(key, (name, 1));
        }
        Ok(())
    }
}

/// The reference Events point at, built from any object's metadata.
pub fn object_reference<K>(object: &K) -> ObjectReference
where
    K: kube::Resource<DynamicType = ()>,
{
    let meta = object.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    }
}
