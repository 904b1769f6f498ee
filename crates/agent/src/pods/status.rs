//! The pod status the kubelet would report, computed from what the engine says
//! about each container plus what the agent knows (pull errors, back-off,
//! probe results). Pure: the worker gathers the inputs, this decides.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::qos::QosClass;

/// What the engine reports about one attempt at running a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The engine's container ID.
    pub id: String,
    /// Which attempt (the restart count when it was started).
    pub attempt: u32,
    /// The image's ID.
    pub image_id: String,
    /// Its process is alive.
    pub running: bool,
    /// How it ended, once it has.
    pub exit_code: Option<i32>,
    /// The kernel's OOM killer ended it.
    pub oom_killed: bool,
    /// Why it could not start.
    pub error: Option<String>,
    /// When its process started.
    pub started_at: Option<Timestamp>,
    /// When its process ended.
    pub finished_at: Option<Timestamp>,
}

impl Observed {
    /// Its process ran and ended (or never managed to start).
    pub fn exited(&self) -> bool {
        !self.running && self.exit_code.is_some()
    }

    fn terminated(&self) -> ContainerStateTerminated {
        let code = self.exit_code.unwrap_or(0);
        let reason = if self.oom_killed {
            "OOMKilled"
        } else if self.error.is_some() {
            "StartError"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        ContainerStateTerminated {
            exit_code: code,
            reason: Some(reason.into()),
            message: self.error.clone(),
            started_at: self.started_at.map(Time),
            finished_at: self.finished_at.map(Time),
            container_id: Some(container_id(&self.id)),
            signal: (code > 128).then_some(code - 128),
        }
    }
}

/// `gantry://<id>`, the runtime-qualified ID Kubernetes shows.
pub fn container_id(id: &str) -> String {
    format!("gantry://{id}")
}

/// A waiting reason and message (`ContainerCreating`, `CrashLoopBackOff`, `ErrImagePull`…).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// Upstream's CamelCase reason.
    pub reason: String,
    /// Details, when there are any.
    pub message: Option<String>,
}

impl Waiting {
    /// A waiting state with a reason and message.
    pub fn new(reason: &str, message: impl Into<Option<String>>) -> Waiting {
        Waiting {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Everything known about one container of the pod.
#[derive(Clone, Debug)]
pub struct ContainerView<'a> {
    /// Its spec.
    pub spec: &'a Container,
    /// The latest attempt, if any was created.
    pub current: Option<Observed>,
    /// The attempt before it, for `lastState`.
    pub previous: Option<Observed>,
    /// Why it is not running, when the agent knows better than the engine
    /// (an exited container waiting in back-off shows `CrashLoopBackOff`).
    pub waiting: Option<Waiting>,
    /// The readiness probe passes (or there is none).
    pub ready: bool,
    /// The startup probe has passed (or there is none).
    pub started: bool,
}

impl ContainerView<'_> {
    fn is_running(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.running)
    }

    fn succeeded(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.exited() && c.exit_code == Some(0))
    }

    fn status(&self) -> ContainerStatus {
        let current = self.current.as_ref();
        let running = self.is_running();
        let state = match current {
            Some(c) if c.running => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: c.started_at.map(Time),
                }),
                ..Default::default()
            },
            Some(c) if c.exited() && self.waiting.is_none() => ContainerState {
                terminated: Some(c.terminated()),
                ..Default::default()
            },
            _ => {
                let waiting = self
                    .waiting
                    .clone()
                    .unwrap_or_else(|| Waiting::new("ContainerCreating", None));
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(waiting.reason),
                        message: waiting.message,
                    }),
                    ..Default::default()
                }
            }
        };
        // The exited attempt still shown as the state is not also the last state.
        let last = match current {
            Some(c) if c.exited() && state.terminated.is_none() => Some(c),
            _ => self.previous.as_ref().filter(|p| p.exited()),
        };
        ContainerStatus {
            name: self.spec.name.clone(),
            image: self.spec.image.clone().unwrap_or_default(),
            image_id: current.map(|c| c.image_id.clone()).unwrap_or_default(),
            container_id: current.map(|c| container_id(&c.id)),
            state: Some(state),
            last_state: Some(ContainerState {
                terminated: last.map(Observed::terminated),
                ..Default::default()
            }),
            ready: running && self.ready && self.started,
            started: Some(running && self.started),
            restart_count: current.map_or(0, |c| c.attempt as i32),
            ..Default::default()
        }
    }
}

/// The pod-level facts that go into the status.
#[derive(Clone, Debug)]
pub struct PodView<'a> {
    /// Init containers, in spec order.
    pub init: Vec<ContainerView<'a>>,
    /// App containers, in spec order.
    pub app: Vec<ContainerView<'a>>,
    /// `Always`, `OnFailure` or `Never`.
    pub restart_policy: &'a str,
    /// The node's IP.
    pub host_ip: String,
    /// The pod's IP, once it has one.
    pub pod_ip: Option<String>,
    /// When the agent first acknowledged the pod.
    pub start_time: Timestamp,
    /// The pod's QoS class.
    pub qos: QosClass,
}

/// Kubelet's pod phase from its containers.
pub fn phase(view: &PodView) -> &'static str {
    let init_failed = view.init.iter().any(|c| {
        c.current
            .as_ref()
            .is_some_and(|o| o.exited() && o.exit_code != Some(0))
            && c.waiting.is_none()
    });
    if init_failed && view.restart_policy == "Never" {
        return "Failed";
    }
    if !initialized(view) {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for container in &view.app {
        match &container.current {
            Some(c) if c.running => running += 1,
            Some(c) if c.exited() => {
                stopped += 1;
                if c.exit_code == Some(0) && container.waiting.is_none() {
                    succeeded += 1;
                }
            }
            _ => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match view.restart_policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        }
    } else {
        "Pending"
    }
}

fn initialized(view: &PodView) -> bool {
    view.init.iter().all(ContainerView::succeeded)
}

/// The whole status; `previous` keeps conditions' transition times stable.
pub fn pod_status(view: &PodView, previous: Option<&PodStatus>, now: Timestamp) -> PodStatus {
    let phase = phase(view);
    let condition = |type_: &str, ok: bool, reason: Option<String>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        let since = previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        PodCondition {
            type_: type_.into(),
            status: status.into(),
            reason,
            message,
            last_transition_time: Some(since),
            ..Default::default()
        }
    };
    let incomplete: Vec<&str> = view
        .init
        .iter()
        .filter(|c| !c.succeeded())
        .map(|c| c.spec.name.as_str())
        .collect();
    let unready: Vec<&str> = view
        .app
        .iter()
        .filter(|c| !(c.is_running() && c.ready && c.started))
        .map(|c| c.spec.name.as_str())
        .collect();
    let initialized = incomplete.is_empty();
    let ready = unready.is_empty();
    let (not_ready_reason, not_ready_message) = if phase == "Succeeded" {
        (Some("PodCompleted".to_owned()), None)
    } else if ready {
        (None, None)
    } else {
        (
            Some("ContainersNotReady".to_owned()),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let conditions = vec![
        condition("PodReadyToStartContainers", true, None, None),
        condition(
            "Initialized",
            initialized,
            (!initialized).then(|| "ContainersNotInitialized".to_owned()),
            (!initialized).then(|| {
                format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                )
            }),
        ),
        condition(
            "Ready",
            ready,
            not_ready_reason.clone(),
            not_ready_message.clone(),
        ),
        condition(
            "ContainersReady",
            ready,
            not_ready_reason,
            not_ready_message,
        ),
        condition("PodScheduled", true, None, None),
    ];
    let start_time = previous
        .and_then(|p| p.start_time.clone())
        .unwrap_or(Time(view.start_time));
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: Some(view.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: view.host_ip.clone(),
        }]),
        pod_ip: view.pod_ip.clone(),
        pod_ips: view
            .pod_ip
            .as_ref()
            .map(|ip| vec![PodIP { ip: ip.clone() }]),
        start_time: Some(start_time),
        init_container_statuses: (!view.init.is_empty())
            .then(|| view.init.iter().map(ContainerView::status).collect()),
        container_statuses: Some(view.app.iter().map(ContainerView::status).collect()),
        qos_class: Some(view.qos.as_str().to_owned()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> Container {
        Container {
            name: name.into(),
            image: Some("busybox:test".into()),
            ..Default::default()
        }
    }

    fn observed(attempt: u32, running: bool, exit_code: Option<i32>) -> Observed {
        Observed {
            id: format!("id{attempt}"),
            attempt,
            image_id: "sha256:abc".into(),
            running,
            exit_code,
            oom_killed: false,
            error: None,
            started_at: Some(Timestamp::UNIX_EPOCH),
            finished_at: exit_code.map(|_| Timestamp::UNIX_EPOCH),
        }
    }

    fn view<'a>(spec: &'a Container, current: Option<Observed>) -> ContainerView<'a> {
        ContainerView {
            spec,
            current,
            previous: None,
            waiting: None,
            ready: true,
            started: true,
        }
    }

    fn pod<'a>(
        init: Vec<ContainerView<'a>>,
        app: Vec<ContainerView<'a>>,
        policy: &'a str,
    ) -> PodView<'a> {
        PodView {
            init,
            app,
            restart_policy: policy,
            host_ip: "10.0.0.1".into(),
            pod_ip: Some("10.42.0.7".into()),
            start_time: Timestamp::UNIX_EPOCH,
            qos: QosClass::Burstable,
        }
    }

    fn condition(status: &PodStatus, type_: &str) -> PodCondition {
        status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
            .clone()
    }

    #[test]
    fn a_running_ready_container_makes_a_ready_running_pod() {
        let web = spec("web");
        let view = pod(
            vec![],
            vec![view(&web, Some(observed(0, true, None)))],
            "Always",
        );
        let status = pod_status(&view, None, Timestamp::now());
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(condition(&status, "Ready").status, "True");
        assert_eq!(condition(&status, "Initialized").status, "True");
        let container = &status.container_statuses.as_ref().unwrap()[0];
        assert!(container.ready);
        assert_eq!(container.container_id.as_deref(), Some("gantry://id0"));
        assert!(container.state.as_ref().unwrap().running.is_some());
        assert_eq!(status.pod_ips.unwrap()[0].ip, "10.42.0.7");
    }

    #[test]
    fn unready_and_creating_containers_keep_the_pod_pending_or_unready() {
        let web = spec("web");
        let creating = pod(vec![], vec![view(&web, None)], "Always");
        let status = pod_status(&creating, None, Timestamp::now());
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        let waiting = status.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("ContainerCreating"));
        let mut unready = view(&web, Some(observed(0, true, None)));
        unready.ready = false;
        let status = pod_status(
            &pod(vec![], vec![unready], "Always"),
            None,
            Timestamp::now(),
        );
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let ready = condition(&status, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [web]")
        );
    }

    #[test]
    fn crash_loop_shows_waiting_with_the_last_termination() {
        let web = spec("web");
        let mut crashing = view(&web, Some(observed(2, false, Some(1))));
        crashing.waiting = Some(Waiting::new(
            "CrashLoopBackOff",
            Some("back-off 20s".to_owned()),
        ));
        let status = pod_status(
            &pod(vec![], vec![crashing], "Always"),
            None,
            Timestamp::now(),
        );
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let container = &status.container_statuses.unwrap()[0];
        assert_eq!(container.restart_count, 2);
        let state = container.state.clone().unwrap();
        assert_eq!(
            state.waiting.unwrap().reason.as_deref(),
            Some("CrashLoopBackOff")
        );
        let last = container.last_state.clone().unwrap().terminated.unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    }

    #[test]
    fn terminal_phases_follow_the_restart_policy() {
        let job = spec("job");
        let failed = pod(
            vec![],
            vec![view(&job, Some(observed(0, false, Some(3))))],
            "Never",
        );
        let status = pod_status(&failed, None, Timestamp::now());
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        let terminated = status.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(terminated.exit_code, 3);
        let done = pod(
            vec![],
            vec![view(&job, Some(observed(0, false, Some(0))))],
            "OnFailure",
        );
        let status = pod_status(&done, None, Timestamp::now());
        assert_eq!(status.phase.as_deref(), Some("Succeeded"));
        assert_eq!(
            condition(&status, "Ready").reason.as_deref(),
            Some("PodCompleted")
        );
        let mut oom = observed(0, false, Some(137));
        oom.oom_killed = true;
        let killed = pod(vec![], vec![view(&job, Some(oom))], "Never");
        let status = pod_status(&killed, None, Timestamp::now());
        let terminated = status.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(terminated.reason.as_deref(), Some("OOMKilled"));
    }

    #[test]
    fn init_containers_gate_initialization() {
        let init = spec("setup");
        let app = spec("web");
        let running_init = pod(
            vec![view(&init, Some(observed(0, true, None)))],
            vec![ContainerView {
                waiting: Some(Waiting::new("PodInitializing", None)),
                ..view(&app, None)
            }],
            "Always",
        );
        let status = pod_status(&running_init, None, Timestamp::now());
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        let initialized = condition(&status, "Initialized");
        assert_eq!(initialized.status, "False");
        assert_eq!(
            initialized.message.as_deref(),
            Some("containers with incomplete status: [setup]")
        );
        let failed_init = pod(
            vec![view(&init, Some(observed(0, false, Some(1))))],
            vec![view(&app, None)],
            "Never",
        );
        assert_eq!(phase(&failed_init), "Failed");
        let done = pod(
            vec![view(&init, Some(observed(0, false, Some(0))))],
            vec![view(&app, Some(observed(0, true, None)))],
            "Always",
        );
        let status = pod_status(&done, None, Timestamp::now());
        assert_eq!(condition(&status, "Initialized").status, "True");
        assert_eq!(status.phase.as_deref(), Some("Running"));
    }

    #[test]
    fn transition_times_survive_unchanged_conditions() {
        let web = spec("web");
        let view = pod(
            vec![],
            vec![view(&web, Some(observed(0, true, None)))],
            "Always",
        );
        let first = pod_status(&view, None, Timestamp::UNIX_EPOCH);
        let second = pod_status(&view, Some(&first), Timestamp::now());
        assert_eq!(first, second);
    }
}
