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
    recent: Arc<std::sync::Mutex<HashMap<EventKey, RecordedSlot>>>,
}

/// How many distinct Events a recorder remembers for counting repeats; upstream's
/// correlator keeps an LRU of the same size. Past it the memory is dropped, so a
/// long-running agent does not grow without bound (a repeat then starts a new Event).
const REMEMBERED_EVENTS: usize = 4096;

/// (involved object's UID, reason, message): what makes two Events repeats.
type EventKey = (String, String, String);
/// The Event recorded for a key (its name) and its count so far.
type Recorded = (String, i32);
/// One key's recorded Event; repeats of that Event queue on its lock.
type RecordedSlot = Arc<Mutex<Option<Recorded>>>;

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

    /// The slot of `key`, created on first use.
    fn slot(&self, key: EventKey) -> RecordedSlot {
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() >= REMEMBERED_EVENTS && !recent.contains_key(&key) {
            recent.clear();
        }
        recent.entry(key).or_default().clone()
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
        // Only repeats of one Event wait for each other (to bump one count); the
        // requests of different Events run concurrently.
        let slot = self.slot(key);
        let mut recorded = slot.lock().await;
        if let Some((name, count)) = recorded.clone()
            && let Some(mut existing) = events.get_opt(&name).await?
        {
            existing.count = Some(count + 1);
            existing.last_timestamp = Some(now.clone());
            if events
                .replace(&name, &PostParams::default(), &existing)
                .await
                .is_ok()
            {
                *recorded = Some((name, count + 1));
                return Ok(());
            }
        }
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", object.name.as_deref().unwrap_or("object"))),
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
            *recorded = Some((name, 1));
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

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_apiserver::testing::TestServer;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ListParams;

    fn reference(name: &str) -> ObjectReference {
        let object = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            ..Default::default()
        };
        object_reference(&object)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_repeats_bump_one_event_and_others_are_recorded_apart() {
        let server = TestServer::start();
        let client = server.client().await;
        let recorder = EventRecorder::new(client.clone(), "tester", Some("node-a"));
        let (first, second) = (reference("first"), reference("second"));
        let records = [
            (&first, "Started"),
            (&first, "Started"),
            (&first, "Started"),
            (&second, "Started"),
            (&second, "Killing"),
        ]
        .map(|(object, reason)| {
            let recorder = recorder.clone();
            let object = object.clone();
            tokio::spawn(async move {
                recorder
                    .record(&object, EventType::Normal, reason, "message")
                    .await
            })
        });
        for record in records {
            record.await.unwrap();
        }
        let events: Api<Event> = Api::namespaced(client, "default");
        let listed = events.list(&ListParams::default()).await.unwrap().items;
        let mut seen: Vec<(String, String, i32)> = listed
            .iter()
            .map(|e| {
                (
                    e.involved_object.name.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    e.count.unwrap_or_default(),
                )
            })
            .collect();
        seen.sort();
        let expected = [
            ("first", "Started", 3),
            ("second", "Killing", 1),
            ("second", "Started", 1),
        ]
        .map(|(name, reason, count)| (name.to_owned(), reason.to_owned(), count));
        assert_eq!(seen, expected);
    }
}
