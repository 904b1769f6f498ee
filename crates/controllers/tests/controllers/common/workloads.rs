//! What the StatefulSet and DaemonSet tests share: an API server with chosen
//! controllers running in-process, a log of every pod change seen through a watch
//! (so ordering can be asserted after the fact, without sleeping), and polling with
//! a deadline.

#![allow(dead_code)] // each test binary uses its own subset

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use gantry_apiserver::testing::TestServer;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The namespace every test object lives in.
pub const NAMESPACE: &str = "default";

/// How long any awaited condition may take.
pub const TIMEOUT: Duration = Duration::from_secs(90);

/// An API server and the controllers under test; dropping it stops both.
pub struct Cluster {
    pub client: Client,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    /// Kept so the server runs as long as the cluster.
    _server: TestServer,
}

impl Cluster {
    /// Starts a server and `controller` against it.
    pub async fn start<F, Fut>(controller: F) -> Cluster
    where
        F: FnOnce(Client, CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let server = TestServer::start();
        let client = server.client().await;
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(controller(client.clone(), shutdown.clone()));
        Cluster {
            client,
            shutdown,
            tasks,
            _server: server,
        }
    }

    /// A namespaced API in the test namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// Starts recording every pod change in the test namespace, in watch order.
    pub async fn pod_log(&mut self) -> PodLog {
        let log = PodLog::default();
        let sightings = log.sightings.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let events = watcher(self.api::<Pod>(), watcher::Config::default());
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            let mut events = std::pin::pin!(events);
            let mut ready_tx = Some(ready_tx);
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    event = events.next() => event,
                };
                let (pod, deleted) = match event {
                    Some(Ok(watcher::Event::Apply(pod))) => (pod, false),
                    Some(Ok(watcher::Event::Delete(pod))) => (pod, true),
                    Some(Ok(watcher::Event::InitDone)) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    Some(_) => continue,
                    None => return,
                };
                let sighting = Sighting::of(&pod, deleted);
                sightings.lock().expect("log lock").push(sighting);
            }
        });
        ready_rx.await.expect("the pod watch starts");
        log
    }

    /// Stops the controllers and waits until they have.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while let Some(finished) = self.tasks.join_next().await {
            finished.expect("controller task ends cleanly");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One pod as one watch event showed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    pub name: String,
    pub uid: String,
    pub revision: Option<String>,
    pub ready: bool,
    /// The event was the pod's removal.
    pub deleted: bool,
}

impl Sighting {
    fn of(pod: &Pod, deleted: bool) -> Sighting {
        let conditions = pod
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten());
        let ready = conditions
            .filter(|c| c.type_ == "Ready")
            .any(|c| c.status == "True");
        Sighting {
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            revision: pod.labels().get("controller-revision-hash").cloned(),
            ready,
            deleted,
        }
    }
}

/// Every pod change seen, in the order the API server made them.
#[derive(Clone, Default)]
pub struct PodLog {
    sightings: Arc<Mutex<Vec<Sighting>>>,
}

impl PodLog {
    /// A copy of what was seen so far.
    pub fn sightings(&self) -> Vec<Sighting> {
        self.sightings.lock().expect("log lock").clone()
    }

    /// Names of pods in the order their first sighting with `revision` came.
    pub fn first_seen_at_revision(&self, revision: &str) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for sighting in self.sightings() {
            if sighting.revision.as_deref() == Some(revision) && !names.contains(&sighting.name) {
                names.push(sighting.name);
            }
        }
        names
    }

    /// Names of pods in the order they were deleted.
    pub fn deletions(&self) -> Vec<String> {
        let deleted = self.sightings().into_iter().filter(|s| s.deleted);
        deleted.map(|s| s.name).collect()
    }

    /// The index of the first sighting matching `predicate`.
    pub fn position(&self, predicate: impl Fn(&Sighting) -> bool) -> Option<usize> {
        self.sightings().iter().position(predicate)
    }
}

/// Polls `probe` every 100 ms until it yields a value; fails the test after [`TIMEOUT`].
pub async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let polling = async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            if let Some(value) = probe().await {
                return value;
            }
        }
    };
    match tokio::time::timeout(TIMEOUT, polling).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}
