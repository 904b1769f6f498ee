//! The container engine as the agent uses it: the runtime and image store, with
//! every blocking call moved off the async runtime, and exec run through the
//! `gantry` binary so that no container process is forked from this
//! multi-threaded server.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gantry_image::{Credentials, Image, ImageError, ImageStore, PullOptions};
use gantry_runtime::{Container, Runtime, Status};

use super::naming::ContainerName;
use super::status::Observed;
use crate::{AgentConfig, AgentError};

/// The engine under one root, shared by every pod worker; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    runtime: Runtime,
    images: ImageStore,
    root: PathBuf,
    gantry: PathBuf,
    listing: Arc<tokio::sync::Mutex<Option<Listing>>>,
    /// Counts the calls that may have changed containers, each counted once it
    /// has returned.
    changes: Arc<AtomicU64>,
    /// The count after the latest call not made for one pod: every listing
    /// must show it.
    shared_change: Arc<AtomicU64>,
    /// Per pod, the count after its worker's latest call: the pod's listings
    /// must show it; other pods' need not wait for it.
    pod_changes: Arc<Mutex<HashMap<String, u64>>>,
}

/// How long one listing of the engine's containers answers every pod worker. Each
/// worker looks at its pod's containers every second; without sharing, N pods
/// would read N x N container state files a second.
const LISTING_MAX_AGE: Duration = Duration::from_millis(300);

/// The engine's containers by pod UID, as read at `taken`.
struct Listing {
    taken: Instant,
    /// The change count when it was started: it shows every change counted by then.
    shows: u64,
    by_pod: Arc<BTreeMap<String, Vec<PodContainer>>>,
}

/// What an exec'd command printed and how it ended.
#[derive(Clone, Debug)]
pub struct ExecOutput {
    /// Its exit code (126/127 when it could not be started, as Docker's).
    pub code: i32,
    /// stdout then stderr, for messages.
    pub text: String,
}

/// One container of a pod as found in the engine.
#[derive(Clone, Debug)]
pub struct PodContainer {
    /// What its name says it is.
    pub name: ContainerName,
    /// What the engine says about it.
    pub observed: Observed,
}

impl Engine {
    /// Opens the runtime and the image store under `config.engine_root`.
    pub fn open(config: &AgentConfig) -> Result<Engine, AgentError> {
        Ok(Engine {
            runtime: Runtime::open(&config.engine_root, config.shim.clone())?,
            images: ImageStore::open(&config.engine_root)?,
            root: config.engine_root.clone(),
            gantry: config.shim.program.clone(),
            listing: Arc::default(),
            changes: Arc::default(),
            shared_change: Arc::default(),
            pod_changes: Arc::default(),
        })
    }

    /// Runs `work` on the runtime from the blocking pool (it reads files,
    /// spawns monitors and waits on their state); every later listing shows
    /// what it changed.
    pub async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Runtime) -> gantry_runtime::Result<T> + Send + 'static,
    ) -> gantry_runtime::Result<T> {
        let result = self.run_blocking(work).await;
        let count = self.count_change();
        self.shared_change.fetch_max(count, Ordering::SeqCst);
        result
    }

    /// Runs `work`, which changes only pod `uid`'s containers, like
    /// [`Engine::blocking`]; only that pod's later listings must show it, so
    /// the workers of pods starting at once share listings instead of each
    /// waiting for one of its own.
    pub async fn blocking_for_pod<T: Send + 'static>(
        &self,
        uid: &str,
        work: impl FnOnce(&Runtime) -> gantry_runtime::Result<T> + Send + 'static,
    ) -> gantry_runtime::Result<T> {
        let result = self.run_blocking(work).await;
        let count = self.count_change();
        self.pod_changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uid.to_owned(), count);
        result
    }

    /// Forgets pod `uid`'s changes once its worker is done with it.
    pub fn forget_pod(&self, uid: &str) {
        self.pod_changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(uid);
    }

    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Runtime) -> gantry_runtime::Result<T> + Send + 'static,
    ) -> gantry_runtime::Result<T> {
        let runtime = self.runtime.clone();
        tokio::task::spawn_blocking(move || work(&runtime))
            .await
            .unwrap_or_else(|e| {
                Err(gantry_runtime::Error::Spec(format!(
                    "engine task failed: {e}"
                )))
            })
    }

    /// Counts a change that has happened; returns the new count.
    fn count_change(&self) -> u64 {
        self.changes.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Every container the agent created, grouped by pod UID, attempts in order.
    pub async fn pod_containers(
        &self,
    ) -> gantry_runtime::Result<Arc<BTreeMap<String, Vec<PodContainer>>>> {
        self.listing_showing(self.changes.load(Ordering::SeqCst))
            .await
    }

    /// The containers of the pod `uid`, attempts in order.
    pub async fn containers_of(&self, uid: &str) -> gantry_runtime::Result<Vec<PodContainer>> {
        let own = self
            .pod_changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uid)
            .copied()
            .unwrap_or(0);
        let must_show = own.max(self.shared_change.load(Ordering::SeqCst));
        Ok(self
            .listing_showing(must_show)
            .await?
            .get(uid)
            .cloned()
            .unwrap_or_default())
    }

    /// A listing that shows the first `must_show` changes and is recent enough
    /// to show what changed by itself (exits): the shared one, else a new one.
    /// One listing runs at a time; the callers that queued behind it use it
    /// when it shows what they need.
    async fn listing_showing(
        &self,
        must_show: u64,
    ) -> gantry_runtime::Result<Arc<BTreeMap<String, Vec<PodContainer>>>> {
        let mut listing = self.listing.lock().await;
        if let Some(fresh) = listing
            .as_ref()
            .filter(|l| l.shows >= must_show && l.taken.elapsed() < LISTING_MAX_AGE)
        {
            return Ok(fresh.by_pod.clone());
        }
        let taken = Instant::now();
        let shows = self.changes.load(Ordering::SeqCst);
        let runtime = self.runtime.clone();
        let containers = tokio::task::spawn_blocking(move || runtime.list())
            .await
            .unwrap_or_else(|e| {
                Err(gantry_runtime::Error::Spec(format!(
                    "engine task failed: {e}"
                )))
            })?;
        let by_pod = Arc::new(group_by_pod(containers));
        *listing = Some(Listing {
            taken,
            shows,
            by_pod: by_pod.clone(),
        });
        Ok(by_pod)
    }
}

impl Engine {
    /// Finds an image according to the pull policy, pulling with `credentials`
    /// (a pod's image pull secret) when given.
    ///
    /// The image store's pull future is not `Send` (its layer stream borrows
    /// across awaits), so it runs to completion on a blocking-pool thread.
    pub async fn image(
        &self,
        reference: &str,
        policy: &str,
        credentials: Option<Credentials>,
    ) -> Result<Image, ImageError> {
        let images = self.images.clone();
        let reference = reference.to_owned();
        let policy = policy.to_owned();
        let options = PullOptions {
            credentials,
            ..Default::default()
        };
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || match policy.as_str() {
            "Never" => images.resolve(&reference),
            "Always" => {
                let id = handle.block_on(images.pull(&reference, &options))?;
                images.resolve(id.as_str())
            }
            _ => handle.block_on(images.resolve_or_pull(&reference, &options)),
        })
        .await
        .map_err(|e| ImageError::Registry(format!("image task failed: {e}")))?
    }

    /// Runs `command` in the running container `id` (through `gantry exec`) and
    /// kills it when it outlasts `timeout`.
    pub async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, String> {
        let child = tokio::process::Command::new(&self.gantry)
            .arg("--root")
            .arg(&self.root)
            .arg("exec")
            .arg(id)
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.gantry.display()))?;
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Err(_) => Err(format!("command {command:?} timed out after {timeout:?}")),
            Ok(Err(error)) => Err(format!("running {command:?}: {error}")),
            Ok(Ok(output)) => {
                let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&output.stderr));
                text.truncate(1024);
                Ok(ExecOutput {
                    code: output.status.code().unwrap_or(137),
                    text,
                })
            }
        }
    }

    /// The engine's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Groups the containers the agent created (named `k8s_...`) by pod UID, attempts in order.
fn group_by_pod(containers: Vec<Container>) -> BTreeMap<String, Vec<PodContainer>> {
    let mut by_pod: BTreeMap<String, Vec<PodContainer>> = BTreeMap::new();
    for container in containers {
        let Some(name) = ContainerName::parse(&container.config.name) else {
            continue;
        };
        by_pod
            .entry(name.uid.clone())
            .or_default()
            .push(PodContainer {
                observed: observe(&container, name.attempt),
                name,
            });
    }
    for containers in by_pod.values_mut() {
        containers.sort_by_key(|c| c.name.attempt);
    }
    by_pod
}

fn observe(container: &Container, attempt: u32) -> Observed {
    let state = &container.state;
    Observed {
        id: container.config.id.clone(),
        attempt,
        image_id: container.config.image_id.clone(),
        running: state.status == Status::Running,
        exit_code: (state.status == Status::Exited).then(|| state.exit_code.unwrap_or(255)),
        oom_killed: state.oom_killed,
        error: state.error.clone(),
        started_at: state.started_at,
        finished_at: state.finished_at,
    }
}
