//! One task per pod that drives the pod's containers to its spec: the sandbox,
//! init containers in order, app containers with their restart policy and
//! back-off, probes and hooks, the status, and graceful termination.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use gantry_runtime::{BindMount, CreateOptions, NetworkMode};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Container, LifecycleHandler, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backoff::{Backoff, go_duration};
use super::cgroups::{self, CgroupFs};
use super::engine::{Engine, PodContainer};
use super::etc_files::{self, ClusterDns, EtcFiles};
use super::events::{PodEvent, PodEvents};
use super::naming::ContainerName;
use super::qos::{self, QosClass};
use super::resolve::{self, EnvSources, PodRuntimeFacts};
use super::sandbox::{PodSandbox, Sandboxes};
use super::startup::{Stage, StartupTrace};
use super::status::{ContainerView, Observed, PodView, Waiting, pod_status};
use crate::probes::{self, Outcome, ProbeTarget, Probers};
use crate::volumes::{PodVolumes, VolumeError, VolumeManager, VolumeWatcher};

/// How often a worker looks at its containers when nothing else wakes it.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The grace period when the pod does not say.
const DEFAULT_GRACE: i64 = 30;

/// What the pod watch tells a worker.
#[derive(Clone, Debug)]
pub enum PodUpdate {
    /// The pod's latest version.
    Present(Box<Pod>),
    /// The pod is gone from the API: stop everything now.
    Gone,
}

/// What every worker shares.
pub struct WorkerContext {
    /// The API client.
    pub client: kube::Client,
    /// The container engine.
    pub engine: Engine,
    /// The pods' network namespaces.
    pub sandboxes: Sandboxes,
    /// The node's IP, the pods' hostIP.
    pub host_ip: String,
    /// Records the kubelet's Events about pods.
    pub events: PodEvents,
    /// Where pod cgroups are created.
    pub cgroups: CgroupFs,
    /// Prepares and removes the pods' volumes.
    pub volumes: VolumeManager,
    /// Re-projects changed ConfigMaps and Secrets into the tracked pods' volumes.
    pub volume_watcher: VolumeWatcher,
    /// The cluster DNS the pods' resolv.conf points at.
    pub dns: ClusterDns,
}

/// A pod's prepared volumes and the per-pod /etc files every container mounts.
#[derive(Clone)]
struct MountedVolumes {
    volumes: PodVolumes,
    etc_files: Vec<BindMount>,
    /// The labels and annotations the downwardAPI volumes were written from.
    downward_source: DownwardSource,
}

type DownwardSource = (
    Option<std::collections::BTreeMap<String, String>>,
    Option<std::collections::BTreeMap<String, String>>,
);

fn downward_source(pod: &Pod) -> DownwardSource {
    (
        pod.metadata.labels.clone(),
        pod.metadata.annotations.clone(),
    )
}

/// What the agent remembers about one container between syncs.
#[derive(Default)]
struct Track {
    /// Why it is not running, when the engine cannot say (pull, config errors).
    waiting: Option<Waiting>,
    /// Crash-loop back-off.
    restarts: Backoff,
    /// Image pull back-off, and when the last pull failed.
    pulls: Backoff,
    pull_failed_at: Option<Timestamp>,
}

struct Probed {
    container_id: String,
    probers: Probers,
}

struct PodWorker {
    context: Arc<WorkerContext>,
    uid: String,
    tracks: HashMap<String, Track>,
    sandbox: Option<PodSandbox>,
    start_time: Timestamp,
    probes: HashMap<String, Probed>,
    probe_tasks: TaskTracker,
    probe_cancel: CancellationToken,
    wake: Arc<Notify>,
    /// The pod's cgroup (`/kubepods/...`), once created.
    pod_cgroup: Option<String>,
    /// Set once the pod's volumes are ready; containers start only then.
    mounted: Option<MountedVolumes>,
    /// Why the volumes are not ready: every waiting container shows it.
    volume_waiting: Option<Waiting>,
    /// Where the pod's first start spends its time.
    startup: StartupTrace,
}

/// Drives one pod until it is deleted (returns after the API object is gone) or
/// `shutdown` (returns at once and leaves its containers running).
pub async fn run(
    context: Arc<WorkerContext>,
    uid: String,
    mut updates: watch::Receiver<PodUpdate>,
    shutdown: CancellationToken,
) {
    let mut worker = PodWorker {
        context,
        uid,
        tracks: HashMap::new(),
        sandbox: None,
        start_time: Timestamp::now(),
        probes: HashMap::new(),
        probe_tasks: TaskTracker::new(),
        probe_cancel: shutdown.child_token(),
        wake: Arc::new(Notify::new()),
        pod_cgroup: None,
        mounted: None,
        volume_waiting: None,
        startup: StartupTrace::new(),
    };
    loop {
        worker.startup.mark(Stage::Wait);
        let update = updates.borrow_and_update().clone();
        let finished = tokio::select! {
            _ = shutdown.cancelled() => break,
            finished = worker.handle(update) => finished,
        };
        if finished {
            break;
        }
        let wake = worker.wake.clone();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = updates.changed() => if changed.is_err() { break },
            _ = wake.notified() => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
    worker.probe_cancel.cancel();
    worker.probe_tasks.close();
    worker.probe_tasks.wait().await;
    worker.context.engine.forget_pod(&worker.uid);
}

impl PodWorker {
    /// One pass; true once the pod is gone for good.
    async fn handle(&mut self, update: PodUpdate) -> bool {
        match update {
            PodUpdate::Gone => {
                self.terminate(None, 0).await;
                true
            }
            PodUpdate::Present(pod) if pod.metadata.deletion_timestamp.is_some() => {
                let grace = grace_period(&pod);
                self.terminate(Some(&pod), grace).await;
                self.delete_from_api(&pod).await
            }
            PodUpdate::Present(pod) => {
                if let Err(error) = self.sync(&pod).await {
                    tracing::warn!(pod = %pod_key(&pod), %error, "pod sync failed");
                }
                false
            }
        }
    }

    async fn sync(&mut self, pod: &Pod) -> Result<(), String> {
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(());
        };
        let sandbox = self.ensure_sandbox().await?;
        self.startup.mark(Stage::Sandbox);
        self.ensure_pod_cgroup(pod).await?;
        self.startup.mark(Stage::Cgroup);
        let volumes = self.ensure_volumes(pod, &sandbox).await;
        self.startup.mark(Stage::Volumes);
        if let Err(error) = volumes {
            let waiting = volume_waiting(&error);
            // Retried every sync: report (log and Event) only what is new.
            if self.volume_waiting.as_ref() != Some(&waiting) {
                tracing::warn!(pod = %pod_key(pod), %error, "preparing volumes");
                let message = waiting.message.clone().unwrap_or_default();
                self.context
                    .events
                    .pod(pod, PodEvent::failed_mount(&message))
                    .await;
            }
            self.volume_waiting = Some(waiting);
            let containers = self.observe().await?;
            let initialized = spec.init_containers.as_ref().is_none_or(Vec::is_empty);
            return self
                .write_status(pod, &containers, &sandbox, initialized)
                .await;
        }
        self.volume_waiting = None;
        let containers = self.observe().await?;
        self.startup.mark(Stage::Observe);
        self.restart_failed_probes(pod, &containers).await;
        let policy = spec.restart_policy.as_deref().unwrap_or("Always");
        let init_specs = spec.init_containers.clone().unwrap_or_default();
        let mut initialized = true;
        for container in &init_specs {
            let attempts = attempts(&containers, &container.name);
            let latest = attempts.last().cloned();
            match latest {
                Some(done) if done.exited() && done.exit_code == Some(0) => continue,
                Some(failed) if failed.exited() => {
                    if policy != "Never" {
                        self.restart(pod, &sandbox, container, &failed).await;
                    }
                }
                Some(_) => {}
                None => self.start(pod, &sandbox, container, 0).await,
            }
            initialized = false;
            break;
        }
        if initialized {
            for container in &spec.containers {
                let attempts = attempts(&containers, &container.name);
                let latest = attempts.last().cloned();
                match latest {
                    None => self.start(pod, &sandbox, container, 0).await,
                    Some(running) if running.running => {
                        self.ensure_probes(container, &running, &sandbox);
                    }
                    Some(exited) if exited.exited() => {
                        if should_restart(policy, exited.exit_code) {
                            self.restart(pod, &sandbox, container, &exited).await;
                        } else {
                            self.track(&container.name).waiting = None;
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        let containers = self.observe().await?;
        self.startup.mark(Stage::Observe);
        self.write_status(pod, &containers, &sandbox, initialized)
            .await
    }

    fn track(&mut self, name: &str) -> &mut Track {
        self.tracks.entry(name.to_owned()).or_default()
    }

    async fn ensure_sandbox(&mut self) -> Result<PodSandbox, String> {
        if let Some(sandbox) = &self.sandbox {
            return Ok(sandbox.clone());
        }
        let sandbox = self
            .context
            .sandboxes
            .ensure(&self.uid)
            .await
            .map_err(|e| format!("creating the pod sandbox: {e}"))?;
        self.sandbox = Some(sandbox.clone());
        Ok(sandbox)
    }

    /// Prepares the pod's volumes and /etc files before its first container
    /// starts (retried each sync until it succeeds), then hands the pod to the
    /// volume watcher; later syncs only re-project downwardAPI volumes when the
    /// pod's labels or annotations change.
    async fn ensure_volumes(&mut self, pod: &Pod, sandbox: &PodSandbox) -> Result<(), VolumeError> {
        if let Some(mounted) = &mut self.mounted {
            let source = downward_source(pod);
            if mounted.downward_source != source {
                self.context.volumes.refresh(pod, &mounted.volumes).await?;
                self.context
                    .volume_watcher
                    .track(pod.clone(), mounted.volumes.clone());
                mounted.downward_source = source;
            }
            return Ok(());
        }
        let volumes = self.context.volumes.prepare(pod).await?;
        let pod_dir = self.context.volumes.pod_dir(&self.uid)?;
        let files = {
            let (pod, pod_ip, dns) = (pod.clone(), sandbox.ip, self.context.dns.clone());
            tokio::task::spawn_blocking(move || {
                EtcFiles::for_pod(&pod, pod_ip, &dns).install(&pod_dir)
            })
            .await?
            .map_err(|source| VolumeError::Io {
                context: "writing the pod's /etc files".into(),
                source,
            })?
        };
        self.context
            .volume_watcher
            .track(pod.clone(), volumes.clone());
        self.mounted = Some(MountedVolumes {
            volumes,
            etc_files: files,
            downward_source: downward_source(pod),
        });
        Ok(())
    }

    /// The container's bind mounts: its volumeMounts, and the pod's /etc files
    /// unless a volumeMount already covers that path.
    async fn container_mounts(&self, container: &Container) -> Result<Vec<BindMount>, String> {
        let mounted = self
            .mounted
            .clone()
            .ok_or("the pod's volumes are not prepared")?;
        let (manager, spec) = (self.context.volumes.clone(), container.clone());
        let volume_mounts =
            tokio::task::spawn_blocking(move || manager.mounts_for(&mounted.volumes, &spec))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        let covered = |file: &BindMount| {
            volume_mounts
                .iter()
                .any(|mount| mount.destination == file.destination)
        };
        let etc_files: Vec<BindMount> = mounted
            .etc_files
            .iter()
            .filter(|file| !covered(file))
            .cloned()
            .collect();
        Ok(etc_files.into_iter().chain(volume_mounts).collect())
    }

    /// Creates the pod's cgroup under its QoS class with the pod-wide limits,
    /// before any container goes into it; once per worker (applying again after
    /// an agent restart is harmless).
    async fn ensure_pod_cgroup(&mut self, pod: &Pod) -> Result<(), String> {
        let Some(spec) = pod.spec.as_ref().filter(|_| self.pod_cgroup.is_none()) else {
            return Ok(());
        };
        let qos = qos::pod_qos(spec);
        let path = cgroups::pod_cgroup_path(qos, &self.uid);
        let resources = cgroups::pod_resources(spec, qos);
        let (cgroups, target) = (self.context.cgroups.clone(), path.clone());
        tokio::task::spawn_blocking(move || cgroups.apply(&target, &resources))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("creating the pod cgroup {path}: {e}"))?;
        self.pod_cgroup = Some(path);
        Ok(())
    }

    /// Removes the pod's cgroup once its containers are gone (under every QoS
    /// class: a worker that never synced does not know which).
    async fn remove_pod_cgroup(&mut self) {
        let cgroups = self.context.cgroups.clone();
        let paths: Vec<String> = [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ]
        .into_iter()
        .map(|qos| cgroups::pod_cgroup_path(qos, &self.uid))
        .collect();
        let removed = tokio::task::spawn_blocking(move || {
            paths.iter().try_for_each(|path| cgroups.remove(path))
        })
        .await;
        if let Ok(Err(error)) = removed {
            tracing::warn!(uid = %self.uid, %error, "removing the pod cgroup");
        }
        self.pod_cgroup = None;
    }

    /// Records an Event about one of the pod's containers.
    async fn record(&self, pod: &Pod, container: &str, event: PodEvent) {
        self.context.events.container(pod, container, event).await;
    }

    async fn observe(&self) -> Result<Vec<PodContainer>, String> {
        self.context
            .engine
            .containers_of(&self.uid)
            .await
            .map_err(|e| format!("listing containers: {e}"))
    }

    /// Restarts an exited container once its back-off allows, else shows CrashLoopBackOff.
    async fn restart(
        &mut self,
        pod: &Pod,
        sandbox: &PodSandbox,
        container: &Container,
        exited: &Observed,
    ) {
        let now = Timestamp::now();
        let finished = exited.finished_at.unwrap_or(now);
        let track = self.track(&container.name);
        if track.restarts.blocked_until(finished, now).is_some() {
            let message = format!(
                "back-off {} restarting failed container={} pod={}_{}({})",
                go_duration(track.restarts.delay()),
                container.name,
                pod.metadata.name.as_deref().unwrap_or_default(),
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.uid.as_deref().unwrap_or_default(),
            );
            let entering = track
                .waiting
                .as_ref()
                .is_none_or(|w| w.reason != "CrashLoopBackOff");
            track.waiting = Some(Waiting::new("CrashLoopBackOff", message));
            if entering {
                let event = PodEvent::crash_back_off(&container.name);
                self.record(pod, &container.name, event).await;
            }
            return;
        }
        track.restarts.next(finished);
        self.start(pod, sandbox, container, exited.attempt + 1)
            .await;
    }

    /// Pulls the image, builds the container and starts it as `attempt`.
    async fn start(
        &mut self,
        pod: &Pod,
        sandbox: &PodSandbox,
        container: &Container,
        attempt: u32,
    ) {
        let waiting = self
            .create_and_start(pod, sandbox, container, attempt)
            .await
            .err();
        if let Some(failed) = waiting.as_ref().filter(|w| {
            matches!(
                w.reason.as_str(),
                "CreateContainerConfigError" | "CreateContainerError"
            )
        }) {
            let message = failed.message.clone().unwrap_or_default();
            self.record(pod, &container.name, PodEvent::failed(&message))
                .await;
        }
        self.track(&container.name).waiting = waiting;
    }

    async fn create_and_start(
        &mut self,
        pod: &Pod,
        sandbox: &PodSandbox,
        container: &Container,
        attempt: u32,
    ) -> Result<(), Waiting> {
        let image = self.pull(pod, container).await?;
        let options = self
            .create_options(pod, sandbox, container, attempt, &image)
            .await
            .map_err(|e| Waiting::new("CreateContainerConfigError", e))?;
        self.startup.mark(Stage::Config);
        self.remove_attempts_before(&container.name, attempt.saturating_sub(1))
            .await;
        self.startup.mark(Stage::Observe);
        let started = self
            .context
            .engine
            .blocking_for_pod(&self.uid, move |runtime| {
                let created = runtime.create(options)?;
                let created_at = Instant::now();
                runtime
                    .start(&created.config.id)
                    .map(|c| (c.config.id, created_at))
            })
            .await;
        let id = match started {
            Ok((id, created_at)) => {
                self.startup.mark_at(Stage::Create, created_at);
                self.startup.mark(Stage::Start);
                self.record(pod, &container.name, PodEvent::created(&container.name))
                    .await;
                self.record(pod, &container.name, PodEvent::started(&container.name))
                    .await;
                self.startup.mark(Stage::Events);
                id
            }
            // The container exists and has exited: its status says why.
            Err(gantry_runtime::Error::StartFailed(message, _)) => {
                self.record(pod, &container.name, PodEvent::created(&container.name))
                    .await;
                self.record(pod, &container.name, PodEvent::failed(&message))
                    .await;
                return Ok(());
            }
            Err(error) => return Err(Waiting::new("CreateContainerError", error.to_string())),
        };
        if let Some(hook) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
        {
            let target = self.probe_target(container, &id, sandbox);
            let outcome = run_hook(hook, &target, Duration::from_secs(30)).await;
            if let Outcome::Failure(reason) = outcome {
                tracing::warn!(pod = %pod_key(pod), container = %container.name, %reason, "PostStartHook failed");
                let _ = self
                    .context
                    .engine
                    .blocking_for_pod(&self.uid, move |runtime| {
                        runtime.stop(&id, Duration::from_secs(2))
                    })
                    .await;
            }
        }
        Ok(())
    }

    /// The image for `container` per its pull policy, or why it is not there.
    async fn pull(
        &mut self,
        pod: &Pod,
        container: &Container,
    ) -> Result<gantry_image::Image, Waiting> {
        let reference = container.image.clone().unwrap_or_default();
        let policy = container
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| default_pull_policy(&reference).to_owned());
        let now = Timestamp::now();
        let track = self.track(&container.name);
        if let Some(failed) = track.pull_failed_at
            && track.pulls.blocked_until(failed, now).is_some()
        {
            self.record(pod, &container.name, PodEvent::pull_back_off(&reference))
                .await;
            return Err(Waiting::new(
                "ImagePullBackOff",
                format!("Back-off pulling image \"{reference}\""),
            ));
        }
        let engine = self.context.engine.clone();
        let present = match policy.as_str() {
            "Always" => None,
            _ => engine.image(&reference, "Never", None).await.ok(),
        };
        let pulled = match present {
            Some(image) => {
                self.startup.mark(Stage::Image);
                let event = PodEvent::already_present(&reference);
                self.record(pod, &container.name, event).await;
                self.startup.mark(Stage::Events);
                Ok(image)
            }
            None if policy == "Never" => engine.image(&reference, "Never", None).await,
            None => {
                self.record(pod, &container.name, PodEvent::pulling(&reference))
                    .await;
                let began = Instant::now();
                let credentials = self.pull_credentials(pod, &reference).await;
                let pulled = engine.image(&reference, "Always", credentials).await;
                let event = match &pulled {
                    Ok(_) => PodEvent::pulled(&reference, began.elapsed()),
                    Err(error) => PodEvent::pull_failed(&reference, &error.to_string()),
                };
                self.record(pod, &container.name, event).await;
                pulled
            }
        };
        self.startup.mark(Stage::Image);
        match pulled {
            Ok(image) => {
                self.track(&container.name).pull_failed_at = None;
                Ok(image)
            }
            Err(gantry_image::ImageError::NotFound(_)) if policy == "Never" => Err(Waiting::new(
                "ErrImageNeverPull",
                format!("Container image \"{reference}\" is not present with pull policy of Never"),
            )),
            Err(error) => {
                let track = self.track(&container.name);
                track.pulls.next(now);
                track.pull_failed_at = Some(now);
                Err(Waiting::new(
                    "ErrImagePull",
                    format!("failed to pull image \"{reference}\": {error}"),
                ))
            }
        }
    }

    async fn create_options(
        &self,
        pod: &Pod,
        sandbox: &PodSandbox,
        container: &Container,
        attempt: u32,
        image: &gantry_image::Image,
    ) -> Result<CreateOptions, String> {
        let sources = self.env_sources(pod, container).await?;
        let facts = PodRuntimeFacts {
            pod_ip: sandbox.ip.map(|ip| ip.to_string()),
            host_ip: self.context.host_ip.clone(),
        };
        let env =
            resolve::resolve_env(pod, container, &sources, &facts).map_err(|e| e.to_string())?;
        let (entrypoint, cmd) = resolve::command_and_args(container, &env);
        let resources = resolve::resources(container).map_err(|e| e.to_string())?;
        let mounts = self.container_mounts(container).await?;
        let image_config = image.config.config().clone();
        let image_user = image_config.as_ref().and_then(|c| c.user().clone());
        resolve::verify_run_as_non_root(pod, container, image_user.as_deref())
            .map_err(|e| e.to_string())?;
        let qos = pod.spec.as_ref().map_or(QosClass::BestEffort, qos::pod_qos);
        let oom_score_adj = qos::oom_score_adj(qos, container, cgroups::node_memory_bytes());
        let security = resolve::security(pod, container, oom_score_adj);
        let name = ContainerName {
            container: container.name.clone(),
            pod: pod.metadata.name.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            uid: self.uid.clone(),
            attempt,
        };
        Ok(CreateOptions {
            name: Some(name.format()),
            image: container.image.clone().unwrap_or_default(),
            image_id: image.id.as_str().to_owned(),
            lowerdirs: image.layers.clone(),
            image_config,
            entrypoint,
            cmd,
            env,
            working_dir: container.working_dir.clone().filter(|w| !w.is_empty()),
            user: resolve::user(pod, container, image_user.as_deref()),
            hostname: Some(etc_files::pod_hostname(pod)),
            mounts,
            resources,
            network: NetworkMode::Join(sandbox.netns.clone()),
            cgroup_parent: self.pod_cgroup.clone(),
            security,
            read_only: container
                .security_context
                .as_ref()
                .and_then(|s| s.read_only_root_filesystem)
                .unwrap_or(false),
            tty: container.tty.unwrap_or(false),
            open_stdin: container.stdin.unwrap_or(false),
            stdin_once: container.stdin_once.unwrap_or(false),
            ..Default::default()
        })
    }

    /// Fetches the ConfigMaps and Secrets the container's environment reads.
    async fn env_sources(&self, pod: &Pod, container: &Container) -> Result<EnvSources, String> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let (config_map_names, secret_names) = EnvSources::referenced_by(container);
        let mut sources = EnvSources::default();
        let config_maps: Api<ConfigMap> = Api::namespaced(self.context.client.clone(), &namespace);
        for name in config_map_names {
            let found = config_maps
                .get_opt(&name)
                .await
                .map_err(|e| e.to_string())?;
            sources.config_maps.insert(name, found);
        }
        let secrets: Api<Secret> = Api::namespaced(self.context.client.clone(), &namespace);
        for name in secret_names {
            let found = secrets.get_opt(&name).await.map_err(|e| e.to_string())?;
            sources.secrets.insert(name, found);
        }
        Ok(sources)
    }

    /// Registry credentials for `image` from the pod's image pull secrets;
    /// missing or unreadable secrets are skipped, as the kubelet does.
    async fn pull_credentials(&self, pod: &Pod, image: &str) -> Option<gantry_image::Credentials> {
        let names = resolve::image_pull_secret_names(pod);
        if names.is_empty() {
            return None;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(self.context.client.clone(), &namespace);
        let mut secrets = Vec::new();
        for name in names {
            match api.get_opt(&name).await {
                Ok(Some(secret)) => secrets.push(secret),
                Ok(None) => {
                    tracing::warn!(pod = %pod_key(pod), secret = %name, "image pull secret not found")
                }
                Err(error) => {
                    tracing::warn!(pod = %pod_key(pod), secret = %name, %error, "reading an image pull secret")
                }
            }
        }
        resolve::pull_credentials(&secrets, image)
    }

    /// Keeps the previous attempt (for `lastState`) and removes older ones.
    async fn remove_attempts_before(&self, container: &str, keep_from: u32) {
        if keep_from == 0 {
            return;
        }
        let Ok(containers) = self.observe().await else {
            return;
        };
        let stale: Vec<String> = containers
            .into_iter()
            .filter(|c| c.name.container == container && c.name.attempt < keep_from)
            .map(|c| c.observed.id)
            .collect();
        if stale.is_empty() {
            return;
        }
        let _ = self
            .context
            .engine
            .blocking_for_pod(&self.uid, move |runtime| {
                for id in stale {
                    runtime.remove(&id, true)?;
                }
                Ok(())
            })
            .await;
    }

    fn probe_target(&self, container: &Container, id: &str, sandbox: &PodSandbox) -> ProbeTarget {
        ProbeTarget {
            engine: self.context.engine.clone(),
            container_id: id.to_owned(),
            netns: Some(sandbox.netns.clone()),
            pod_ip: sandbox.ip,
            container: container.clone(),
        }
    }

    /// Starts the probes of a running container once per attempt.
    fn ensure_probes(&mut self, container: &Container, running: &Observed, sandbox: &PodSandbox) {
        if self
            .probes
            .get(&container.name)
            .is_some_and(|p| p.container_id == running.id)
        {
            return;
        }
        if let Some(old) = self.probes.remove(&container.name) {
            old.probers.cancel.cancel();
        }
        let target = self.probe_target(container, &running.id, sandbox);
        let probers = probes::spawn(
            &self.probe_tasks,
            target,
            self.wake.clone(),
            self.probe_cancel.child_token(),
        );
        self.probes.insert(
            container.name.clone(),
            Probed {
                container_id: running.id.clone(),
                probers,
            },
        );
    }

    /// Stops containers whose liveness or startup probe gave up; the restart
    /// policy then decides what comes next, as for any exit.
    async fn restart_failed_probes(&mut self, pod: &Pod, containers: &[PodContainer]) {
        let failed: Vec<(String, String, String)> = self
            .probes
            .iter()
            .filter_map(|(name, probed)| {
                let reason = probed.probers.results.lock().ok()?.restart.clone()?;
                Some((name.clone(), probed.container_id.clone(), reason))
            })
            .collect();
        let grace = Duration::from_secs(grace_seconds(pod).max(0) as u64);
        for (name, id, reason) in failed {
            if let Some(probed) = self.probes.remove(&name) {
                probed.probers.cancel.cancel();
            }
            let still_running = containers
                .iter()
                .any(|c| c.observed.id == id && c.observed.running);
            if !still_running {
                continue;
            }
            tracing::info!(pod = %pod_key(pod), container = %name, %reason, "killing container to restart it");
            let (probe, detail) = reason
                .split_once(" probe failed: ")
                .unwrap_or(("liveness", &reason));
            let unhealthy =
                PodEvent::unhealthy(&format!("{} probe failed: {detail}", capitalized(probe)));
            self.record(pod, &name, unhealthy).await;
            let killing = PodEvent::killing(&name, Some(&format!("failed {probe} probe")));
            self.record(pod, &name, killing).await;
            let _ = self
                .context
                .engine
                .blocking_for_pod(&self.uid, move |runtime| runtime.stop(&id, grace))
                .await;
        }
    }

    async fn write_status(
        &mut self,
        pod: &Pod,
        containers: &[PodContainer],
        sandbox: &PodSandbox,
        initialized: bool,
    ) -> Result<(), String> {
        let spec = pod.spec.as_ref().ok_or("pod without spec")?;
        let init_specs = spec.init_containers.clone().unwrap_or_default();
        let view = PodView {
            init: self.container_views(&init_specs, containers, false, initialized),
            app: self.container_views(&spec.containers, containers, true, initialized),
            restart_policy: spec.restart_policy.as_deref().unwrap_or("Always"),
            host_ip: self.context.host_ip.clone(),
            pod_ip: sandbox.ip.map(|ip| ip.to_string()),
            start_time: self.start_time,
            qos: qos::pod_qos(spec),
        };
        let status = pod_status(&view, pod.status.as_ref(), Timestamp::now());
        let wanted = serde_json::to_value(&status).map_err(|e| e.to_string())?;
        let current = serde_json::to_value(&pod.status).map_err(|e| e.to_string())?;
        if !differs(&wanted, &current) {
            return Ok(());
        }
        let pods: Api<Pod> = Api::namespaced(
            self.context.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let patch = serde_json::json!({ "status": wanted });
        pods.patch_status(
            pod.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| format!("writing the pod status: {e}"))?;
        self.startup.mark(Stage::Status);
        if is_ready(&status) {
            self.startup.finish(&pod_key(pod));
        }
        Ok(())
    }

    /// What the status needs to know about each of `specs`.
    fn container_views<'a>(
        &self,
        specs: &'a [Container],
        containers: &[PodContainer],
        app: bool,
        initialized: bool,
    ) -> Vec<ContainerView<'a>> {
        specs
            .iter()
            .map(|container| {
                let attempts = attempts(containers, &container.name);
                let current = attempts.last().cloned();
                let previous = attempts.iter().rev().nth(1).cloned();
                let results = self
                    .probes
                    .get(&container.name)
                    .filter(|p| current.as_ref().is_some_and(|c| c.id == p.container_id))
                    .and_then(|p| p.probers.results.lock().ok().map(|r| r.clone()));
                let mut waiting = self.volume_waiting.clone().or_else(|| {
                    self.tracks
                        .get(&container.name)
                        .and_then(|t| t.waiting.clone())
                });
                if app && !initialized && current.is_none() {
                    waiting = Some(Waiting::new("PodInitializing", None));
                }
                // A running container has nothing to wait for.
                if current.as_ref().is_some_and(|c| c.running) {
                    waiting = None;
                }
                let has_readiness = container.readiness_probe.is_some();
                let has_startup = container.startup_probe.is_some();
                ContainerView {
                    spec: container,
                    current,
                    previous,
                    waiting,
                    ready: results.as_ref().map_or(!has_readiness, |r| r.ready),
                    started: results.as_ref().map_or(!has_startup, |r| r.started),
                }
            })
            .collect()
    }

    /// Stops the pod's containers (preStop hook, SIGTERM, SIGKILL after
    /// `grace_seconds`), removes them and releases the sandbox.
    async fn terminate(&mut self, pod: Option<&Pod>, grace_seconds: i64) {
        self.probe_cancel.cancel();
        self.probes.clear();
        let deadline = Instant::now() + Duration::from_secs(grace_seconds.max(0) as u64);
        let containers = self.observe().await.unwrap_or_default();
        let sandbox = self.sandbox.clone();
        let specs: Vec<Container> = pod
            .and_then(|p| p.spec.as_ref())
            .map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let running: Vec<PodContainer> = containers
            .iter()
            .filter(|c| c.observed.running)
            .cloned()
            .collect();
        if let Some(pod) = pod {
            for c in &running {
                let name = &c.name.container;
                self.record(pod, name, PodEvent::killing(name, None)).await;
            }
        }
        let mut stops = Vec::new();
        for c in running {
            let spec = specs.iter().find(|s| s.name == c.name.container).cloned();
            let id = c.observed.id.clone();
            let target = match (&spec, &sandbox) {
                (Some(spec), Some(sandbox)) => Some(self.probe_target(spec, &id, sandbox)),
                _ => None,
            };
            let (engine, uid) = (self.context.engine.clone(), self.uid.clone());
            stops.push(async move {
                let hook = spec
                    .as_ref()
                    .and_then(|s| s.lifecycle.as_ref())
                    .and_then(|l| l.pre_stop.clone());
                if let (Some(hook), Some(target)) = (hook, target) {
                    let budget = deadline.saturating_duration_since(Instant::now());
                    if let Outcome::Failure(reason) = run_hook(&hook, &target, budget).await {
                        tracing::warn!(container = %id, %reason, "PreStopHook failed");
                    }
                }
                // Like the kubelet: at least two seconds between SIGTERM and SIGKILL.
                let remaining = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_secs(if grace_seconds > 0 { 2 } else { 0 }));
                let _ = engine
                    .blocking_for_pod(&uid, move |runtime| runtime.stop(&id, remaining))
                    .await;
            });
        }
        join_all(stops).await;
        let ids: Vec<String> = containers.into_iter().map(|c| c.observed.id).collect();
        let removed = self
            .context
            .engine
            .blocking_for_pod(&self.uid, move |runtime| {
                for id in ids {
                    match runtime.remove(&id, true) {
                        Ok(()) | Err(gantry_runtime::Error::NotFound(_)) => {}
                        Err(error) => return Err(error),
                    }
                }
                Ok(())
            })
            .await;
        if let Err(error) = removed {
            tracing::warn!(uid = %self.uid, %error, "removing the pod's containers");
        }
        self.remove_pod_cgroup().await;
        if let Err(error) = self.context.sandboxes.remove(&self.uid).await {
            tracing::warn!(uid = %self.uid, %error, "releasing the pod sandbox");
        }
        self.sandbox = None;
        // Only once no container uses them: unmounts tmpfs volumes, deletes files.
        self.context.volume_watcher.untrack(&self.uid);
        if let Err(error) = self.context.volumes.cleanup(&self.uid).await {
            tracing::warn!(uid = %self.uid, %error, "removing the pod's volumes");
        }
        self.mounted = None;
    }

    /// Deletes the pod object for good once its containers are gone; true on success.
    async fn delete_from_api(&self, pod: &Pod) -> bool {
        let pods: Api<Pod> = Api::namespaced(
            self.context.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match pods
            .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
            .await
        {
            Ok(_) => true,
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => true,
            Err(error) => {
                tracing::warn!(pod = %pod_key(pod), %error, "deleting the terminated pod");
                false
            }
        }
    }
}

/// The attempts at running container `name`, oldest first.
fn attempts(containers: &[PodContainer], name: &str) -> Vec<Observed> {
    containers
        .iter()
        .filter(|c| c.name.container == name)
        .map(|c| c.observed.clone())
        .collect()
}

/// Whether an exited container comes back under the pod's restart policy.
pub fn should_restart(policy: &str, exit_code: Option<i32>) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != Some(0),
        _ => true,
    }
}

/// Kubernetes' default: `Always` for `:latest` or untagged images, else `IfNotPresent`.
pub fn default_pull_policy(reference: &str) -> &'static str {
    let name = reference.split('@').next().unwrap_or(reference);
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        _ if reference.contains('@') => "IfNotPresent",
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// How a container waits on volumes that are not ready: the pod's own
/// configuration at fault (a missing ConfigMap, a bad key) is
/// `CreateContainerConfigError`, as the kubelet reports it; anything else (an
/// unbound claim, a node-side failure) keeps the pod `ContainerCreating` while
/// the worker retries.
fn volume_waiting(error: &VolumeError) -> Waiting {
    if error.is_config_error() {
        Waiting::new("CreateContainerConfigError", error.to_string())
    } else {
        Waiting::new(
            "ContainerCreating",
            format!("Unable to attach or mount volumes: {error}"),
        )
    }
}

/// `liveness` as `Liveness`, for probe Event messages.
fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn grace_seconds(pod: &Pod) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE)
}

/// The deletion's grace period, else the spec's.
fn grace_period(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .unwrap_or_else(|| grace_seconds(pod))
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Runs a lifecycle hook (exec, httpGet or tcpSocket) within `timeout`.
async fn run_hook(hook: &LifecycleHandler, target: &ProbeTarget, timeout: Duration) -> Outcome {
    let timeout = timeout.max(Duration::from_secs(1));
    if let Some(exec) = &hook.exec {
        probes::run_exec(exec, target, timeout).await
    } else if let Some(http) = &hook.http_get {
        probes::run_http(http, target, timeout).await
    } else if let Some(tcp) = &hook.tcp_socket {
        probes::run_tcp(tcp, target, timeout).await
    } else if let Some(sleep) = &hook.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(timeout)).await;
        Outcome::Success
    } else {
        Outcome::Failure("hook has no handler".into())
    }
}

/// Whether the status says the pod is Ready.
fn is_ready(status: &k8s_openapi::api::core::v1::PodStatus) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Whether any field we set differs from what the API server has.
fn differs(wanted: &serde_json::Value, current: &serde_json::Value) -> bool {
    let Some(wanted) = wanted.as_object() else {
        return true;
    };
    wanted
        .iter()
        .any(|(key, value)| current.get(key) != Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_decide_on_exit_codes() {
        assert!(should_restart("Always", Some(0)));
        assert!(should_restart("OnFailure", Some(1)));
        assert!(!should_restart("OnFailure", Some(0)));
        assert!(!should_restart("Never", Some(1)));
    }

    #[test]
    fn pull_policy_defaults_like_kubernetes() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("busybox:test"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/app"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/app:1"), "IfNotPresent");
        assert_eq!(default_pull_policy("busybox@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn only_fields_we_set_count_as_changes() {
        let wanted = serde_json::json!({"phase": "Running"});
        assert!(!differs(
            &wanted,
            &serde_json::json!({"phase": "Running", "qosClass": "BestEffort"})
        ));
        assert!(differs(&wanted, &serde_json::json!({"phase": "Pending"})));
        assert!(differs(&wanted, &serde_json::Value::Null));
    }
}
