//! A stand-in kubelet for controller tests: there is no node agent in these tests,
//! so pods would stay Pending forever and no rollout could progress. This watches
//! pods and reports them Running and Ready through `pods/status`, as a kubelet does
//! once containers start, optionally after a start-up delay and only for chosen images.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Which pods become Ready, and how soon.
#[derive(Debug, Clone, Default)]
pub struct ReadyPolicy {
    /// How long a pod "starts" before it is Ready.
    pub startup: Duration,
    /// Only pods all of whose containers run this image become Ready; `None`: all pods.
    pub only_image: Option<String>,
}

/// Marks pods in one namespace Ready until dropped.
pub struct TestKubelet {
    shutdown: CancellationToken,
}

impl TestKubelet {
    /// Starts marking pods in `namespace` Ready according to `policy`.
    pub fn start(client: Client, namespace: &str, policy: ReadyPolicy) -> TestKubelet {
        let shutdown = CancellationToken::new();
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        tokio::spawn(run(pods, policy, shutdown.clone()));
        TestKubelet { shutdown }
    }
}

impl Drop for TestKubelet {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn run(pods: Api<Pod>, policy: ReadyPolicy, shutdown: CancellationToken) {
    let mut starting = JoinSet::new();
    let events = watcher(pods.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut events = std::pin::pin!(events);
    let mut started = HashSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            event = events.next() => match event {
                Some(Ok(pod)) if should_start(&pod, &policy) && started.insert(pod.uid()) => {
                    starting.spawn(mark_ready(pods.clone(), pod.name_any(), policy.startup));
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    starting.shutdown().await;
}

fn should_start(pod: &Pod, policy: &ReadyPolicy) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if pod.metadata.deletion_timestamp.is_some() || phase == Some("Running") {
        return false;
    }
    let images = pod
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .map(|container| container.image.as_deref());
    match &policy.only_image {
        Some(only) => images.into_iter().all(|image| image == Some(only.as_str())),
        None => true,
    }
}

async fn mark_ready(pods: Api<Pod>, name: String, startup: Duration) {
    tokio::time::sleep(startup).await;
    let now = Timestamp::now().to_string();
    let status = json!({"status": {
        "phase": "Running",
        "startTime": now,
        "conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
        ],
    }});
    // The pod may be gone already (scaled down while "starting"); that is fine.
    let _ = pods
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await;
}
