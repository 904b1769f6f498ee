//! The pods bound to this node: a watch on `spec.nodeName=<node>` feeds one
//! worker task per pod ([`worker`]); containers the engine runs for pods that
//! no longer exist are removed, and those of existing pods are adopted.

pub mod backoff;
pub mod cgroups;
mod engine;
pub mod etc_files;
pub mod events;
pub mod naming;
pub mod qos;
pub mod resolve;
pub mod sandbox;
pub mod startup;
pub mod status;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use engine::{Engine, ExecOutput, PodContainer};
pub use worker::{default_pull_policy, should_restart};

use crate::AgentConfig;
use crate::volumes::{VolumeManager, VolumeWatcher};
pub use sandbox::Sandboxes;
use worker::{PodUpdate, WorkerContext};

/// Watches this node's pods and runs a worker per pod until `shutdown`.
pub async fn run(
    client: kube::Client,
    config: AgentConfig,
    engine: Engine,
    sandboxes: Sandboxes,
    host_ip: String,
    shutdown: CancellationToken,
) {
    let volumes = VolumeManager::new(client.clone(), config.engine_root.join("pods"));
    let volume_watcher = VolumeWatcher::new(client.clone(), volumes.clone());
    let background = TaskTracker::new();
    background.spawn(volume_watcher.clone().run(shutdown.clone()));
    let context = Arc::new(WorkerContext {
        client: client.clone(),
        engine,
        sandboxes,
        host_ip,
        events: events::PodEvents::new(client.clone(), &config.node_name),
        cgroups: cgroups::CgroupFs::host(),
        volumes,
        volume_watcher,
        dns: etc_files::ClusterDns {
            nameserver: config.cluster_dns,
            domain: config.cluster_domain.clone(),
        },
    });
    let pods: Api<Pod> = Api::all(client);
    let selector = format!("spec.nodeName={}", config.node_name);
    let mut events = watcher::watcher(pods, watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    let mut workers = Workers::new(context.clone(), shutdown.clone());
    let mut listed: Option<HashSet<String>> = None;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            event = events.next() => event,
        };
        match event {
            None => break,
            Some(Err(error)) => tracing::warn!(%error, "watching pods"),
            Some(Ok(Event::Init)) => listed = Some(HashSet::new()),
            Some(Ok(Event::InitApply(pod))) => {
                if let (Some(listed), Some(uid)) = (listed.as_mut(), pod.metadata.uid.clone()) {
                    listed.insert(uid);
                }
                workers.apply(pod);
            }
            Some(Ok(Event::Apply(pod))) => workers.apply(pod),
            Some(Ok(Event::Delete(pod))) => {
                workers.gone(pod.metadata.uid.as_deref().unwrap_or_default())
            }
            Some(Ok(Event::InitDone)) => {
                let listed = listed.take().unwrap_or_default();
                workers.forget_all_but(&listed);
                remove_orphans(&context, &listed).await;
            }
        }
    }
    workers.shut_down().await;
    background.close();
    background.wait().await;
}

/// The running workers, by pod UID.
struct Workers {
    context: Arc<WorkerContext>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    by_uid: HashMap<String, watch::Sender<PodUpdate>>,
}

impl Workers {
    fn new(context: Arc<WorkerContext>, shutdown: CancellationToken) -> Workers {
        Workers {
            context,
            shutdown,
            tasks: TaskTracker::new(),
            by_uid: HashMap::new(),
        }
    }

    /// Hands the pod's latest version to its worker, starting one if needed.
    fn apply(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let update = PodUpdate::Present(Box::new(pod));
        if let Some(sender) = self.by_uid.get(&uid) {
            // A finished worker (its pod deleted) has dropped its receiver: ignore.
            let _ = sender.send(update);
            return;
        }
        let (sender, receiver) = watch::channel(update);
        self.tasks.spawn(worker::run(
            self.context.clone(),
            uid.clone(),
            receiver,
            self.shutdown.clone(),
        ));
        self.by_uid.insert(uid, sender);
    }

    /// The pod is gone from the API: its worker stops its containers and ends.
    fn gone(&mut self, uid: &str) {
        if let Some(sender) = self.by_uid.remove(uid) {
            let _ = sender.send(PodUpdate::Gone);
        }
    }

    /// After a re-list, pods that were deleted while the watch was down.
    fn forget_all_but(&mut self, listed: &HashSet<String>) {
        let vanished: Vec<String> = self
            .by_uid
            .keys()
            .filter(|uid| !listed.contains(*uid))
            .cloned()
            .collect();
        for uid in vanished {
            self.gone(&uid);
        }
    }

    async fn shut_down(self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Removes containers and sandboxes of pods that no longer exist (deleted while
/// no agent ran); those of listed pods are left for their workers to adopt.
async fn remove_orphans(context: &WorkerContext, listed: &HashSet<String>) {
    let by_pod = match context.engine.pod_containers().await {
        Ok(by_pod) => by_pod,
        Err(error) => {
            tracing::warn!(%error, "listing containers for orphans");
            return;
        }
    };
    let orphans: Vec<String> = by_pod
        .iter()
        .filter(|(uid, _)| !listed.contains(*uid))
        .flat_map(|(_, containers)| containers.iter().map(|c| c.observed.id.clone()))
        .collect();
    if !orphans.is_empty() {
        tracing::info!(count = orphans.len(), "removing containers of deleted pods");
        let removed = context
            .engine
            .blocking(move |runtime| {
                for id in orphans {
                    let _ = runtime.remove(&id, true);
                }
                Ok(())
            })
            .await;
        if let Err(error) = removed {
            tracing::warn!(%error, "removing orphaned containers");
        }
    }
    for uid in context.sandboxes.pinned() {
        if !listed.contains(&uid) {
            let _ = context.sandboxes.remove(&uid).await;
        }
    }
    remove_orphaned_volumes(context, listed).await;
}

/// Unmounts and removes the volumes of pods deleted while no agent ran (after
/// their containers, which may still have used them, are gone).
async fn remove_orphaned_volumes(context: &WorkerContext, listed: &HashSet<String>) {
    let on_disk = match context.volumes.pods_on_disk().await {
        Ok(uids) => uids,
        Err(error) => {
            tracing::warn!(%error, "listing pod volume directories");
            return;
        }
    };
    for uid in on_disk.iter().filter(|uid| !listed.contains(*uid)) {
        if let Err(error) = context.volumes.cleanup(uid).await {
            tracing::warn!(%uid, %error, "removing volumes of a deleted pod");
        }
    }
}
