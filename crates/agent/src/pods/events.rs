//! The Events the kubelet records about pods and their containers (Pulling,
//! Pulled, Created, Started, Killing, BackOff, Unhealthy, Failed), with
//! upstream's reasons and wording, so `kubectl describe pod` tells the same
//! story on Gantry as on any cluster. Source `kubelet`, host the node's name.

use std::time::Duration;

use gantry_client::{EventRecorder, EventType, object_reference};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};

/// The component name Events carry, as upstream's.
pub const COMPONENT: &str = "kubelet";

/// Records a node's pod Events; cheap to clone.
#[derive(Clone)]
pub struct PodEvents {
    recorder: EventRecorder,
}

/// One Event's type, reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEvent {
    /// Normal or Warning.
    pub event_type: EventType,
    /// Upstream's CamelCase reason.
    pub reason: &'static str,
    /// What happened, in upstream's words.
    pub message: String,
}

impl PodEvent {
    fn normal(reason: &'static str, message: String) -> PodEvent {
        PodEvent {
            event_type: EventType::Normal,
            reason,
            message,
        }
    }

    fn warning(reason: &'static str, message: String) -> PodEvent {
        PodEvent {
            event_type: EventType::Warning,
            reason,
            message,
        }
    }

    /// The pod's volumes could not be set up (upstream's `FailedMount`).
    pub fn failed_mount(message: &str) -> PodEvent {
        PodEvent::warning("FailedMount", message.to_owned())
    }

    /// The image is about to be pulled.
    pub fn pulling(image: &str) -> PodEvent {
        PodEvent::normal("Pulling", format!("Pulling image \"{image}\""))
    }

    /// The image was pulled, in `took`.
    pub fn pulled(image: &str, took: Duration) -> PodEvent {
        PodEvent::normal(
            "Pulled",
            format!(
                "Successfully pulled image \"{image}\" in {:.3}s",
                took.as_secs_f64()
            ),
        )
    }

    /// The image was there already; nothing was pulled.
    pub fn already_present(image: &str) -> PodEvent {
        PodEvent::normal(
            "Pulled",
            format!("Container image \"{image}\" already present on machine"),
        )
    }

    /// Pulling failed.
    pub fn pull_failed(image: &str, error: &str) -> PodEvent {
        PodEvent::warning(
            "Failed",
            format!("Failed to pull image \"{image}\": {error}"),
        )
    }

    /// The container could not be created or started.
    pub fn failed(message: &str) -> PodEvent {
        PodEvent::warning("Failed", format!("Error: {message}"))
    }

    /// Waiting before the next pull attempt.
    pub fn pull_back_off(image: &str) -> PodEvent {
        PodEvent::normal("BackOff", format!("Back-off pulling image \"{image}\""))
    }

    /// The container was created.
    pub fn created(container: &str) -> PodEvent {
        PodEvent::normal("Created", format!("Created container: {container}"))
    }

    /// The container was started.
    pub fn started(container: &str) -> PodEvent {
        PodEvent::normal("Started", format!("Started container {container}"))
    }

    /// The container is being stopped; `why` says what decided it, if not deletion.
    pub fn killing(container: &str, why: Option<&str>) -> PodEvent {
        let message = match why {
            Some(why) => format!("Container {container} {why}, will be restarted"),
            None => format!("Stopping container {container}"),
        };
        PodEvent::normal("Killing", message)
    }

    /// The container keeps failing and waits before its next restart.
    pub fn crash_back_off(container: &str) -> PodEvent {
        PodEvent::warning(
            "BackOff",
            format!("Back-off restarting failed container {container}"),
        )
    }

    /// A probe failed (`message` is the prober's, e.g. `Liveness probe failed: ...`).
    pub fn unhealthy(message: &str) -> PodEvent {
        PodEvent::warning("Unhealthy", message.to_owned())
    }
}

impl PodEvents {
    /// Records as the kubelet of `node_name`.
    pub fn new(client: kube::Client, node_name: &str) -> PodEvents {
        PodEvents {
            recorder: EventRecorder::new(client, COMPONENT, Some(node_name)),
        }
    }

    /// Records `event` about the pod as a whole (volumes, sandbox). Best effort.
    pub async fn pod(&self, pod: &Pod, event: PodEvent) {
        self.recorder
            .record(
                &object_reference(pod),
                event.event_type,
                event.reason,
                &event.message,
            )
            .await;
    }

    /// Records `event` about container `container` of `pod` (its `fieldPath`
    /// points at the container, as `kubectl describe` shows it). Best effort.
    pub async fn container(&self, pod: &Pod, container: &str, event: PodEvent) {
        let reference = container_reference(pod, container);
        self.recorder
            .record(&reference, event.event_type, event.reason, &event.message)
            .await;
    }
}

/// The pod's reference with `fieldPath` naming the container
/// (`spec.containers{web}` or `spec.initContainers{setup}`).
pub fn container_reference(pod: &Pod, container: &str) -> ObjectReference {
    let mut reference = object_reference(pod);
    let is_init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|init| init.iter().any(|c| c.name == container));
    let list = if is_init {
        "initContainers"
    } else {
        "containers"
    };
    reference.field_path = Some(format!("spec.{list}{{{container}}}"));
    reference
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_point_at_the_container() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [{"name": "web"}], "initContainers": [{"name": "setup"}]}
        }))
        .unwrap();
        let web = container_reference(&pod, "web");
        assert_eq!(web.field_path.as_deref(), Some("spec.containers{web}"));
        assert_eq!(web.kind.as_deref(), Some("Pod"));
        assert_eq!(web.uid.as_deref(), Some("u"));
        assert_eq!(
            container_reference(&pod, "setup").field_path.as_deref(),
            Some("spec.initContainers{setup}")
        );
    }

    #[test]
    fn messages_read_like_the_kubelet() {
        assert_eq!(
            PodEvent::pulled("busybox", Duration::from_millis(1500)).message,
            "Successfully pulled image \"busybox\" in 1.500s"
        );
        assert_eq!(
            PodEvent::already_present("busybox:test").message,
            "Container image \"busybox:test\" already present on machine"
        );
        assert_eq!(
            PodEvent::killing("web", Some("failed liveness probe")).message,
            "Container web failed liveness probe, will be restarted"
        );
        assert_eq!(
            PodEvent::crash_back_off("web").event_type,
            EventType::Warning
        );
    }
}
