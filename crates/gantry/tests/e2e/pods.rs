//! Pods on a real `gantry server` with its node agent, driven by the real kubectl:
//! they run on the container engine, report status, restart, run probes and
//! hooks, and go away gracefully.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::agent_node::AgentNode;
use common::wait_for;

impl AgentNode {
    /// Creates a pod bound to this node from the YAML of its spec's body.
    fn run_pod(&self, name: &str, spec: &str) {
        let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
        let manifest = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {}\n  terminationGracePeriodSeconds: 2\n{indented}",
            self.name
        );
        self.server.apply(&manifest);
    }

    fn wait_jsonpath(
        &self,
        pod: &str,
        path: &str,
        timeout: Duration,
        want: impl Fn(&str) -> bool,
    ) -> String {
        let mut last = String::new();
        let reached = wait_for(timeout, || {
            last = self.jsonpath(pod, path);
            want(&last)
        });
        assert!(
            reached,
            "pod {pod}: {path} is {last:?}; status: {}",
            self.jsonpath(pod, "{.status}")
        );
        last
    }
}

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn a_web_server_pod_becomes_running_and_ready() {
    let node = AgentNode::start();
    node.run_pod(
        "web",
        r#"containers:
- name: web
  image: busybox:test
  imagePullPolicy: Never
  command: ["httpd", "-f", "-p", "8080"]
  readinessProbe:
    tcpSocket: {port: 8080}
    periodSeconds: 1
"#,
    );
    node.server
        .ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);
    let table = node.server.ok(&["get", "pod", "web"]);
    let row = table.lines().nth(1).expect("a row for the pod");
    assert!(row.contains("1/1") && row.contains("Running"), "{table}");
    assert!(
        node.jsonpath("web", "{.status.containerStatuses[0].containerID}")
            .starts_with("gantry://")
    );
    assert_eq!(
        node.jsonpath("web", "{.status.containerStatuses[0].started}"),
        "true"
    );
    assert!(!node.jsonpath("web", "{.status.hostIP}").is_empty());
}

#[test]
fn a_crashing_container_backs_off_and_restarts() {
    let node = AgentNode::start();
    node.run_pod(
        "crash",
        r#"containers:
- name: crash
  image: busybox:test
  imagePullPolicy: Never
  command: ["sh", "-c", "exit 1"]
"#,
    );
    let reason = "{.status.containerStatuses[0].state.waiting.reason}";
    node.wait_jsonpath("crash", reason, MINUTE, |r| r == "CrashLoopBackOff");
    let table = node.server.ok(&["get", "pod", "crash"]);
    assert!(table.contains("CrashLoopBackOff"), "{table}");
    let restarts = node.jsonpath("crash", "{.status.containerStatuses[0].restartCount}");
    assert!(
        restarts.parse::<u32>().unwrap() >= 1,
        "restarts: {restarts}"
    );
    assert_eq!(
        node.jsonpath(
            "crash",
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "1"
    );
    assert_eq!(node.jsonpath("crash", "{.status.phase}"), "Running");
    // After the back-off, it runs again.
    node.wait_jsonpath(
        "crash",
        "{.status.containerStatuses[0].restartCount}",
        MINUTE,
        |n| n.parse::<u32>().is_ok_and(|n| n >= 2),
    );
}

#[test]
fn a_failed_pod_that_never_restarts_reports_its_exit_code() {
    let node = AgentNode::start();
    node.run_pod(
        "fail",
        r#"restartPolicy: Never
containers:
- name: job
  image: busybox:test
  imagePullPolicy: Never
  command: ["sh", "-c", "exit 3"]
"#,
    );
    node.wait_jsonpath("fail", "{.status.phase}", MINUTE, |p| p == "Failed");
    let terminated = "{.status.containerStatuses[0].state.terminated";
    assert_eq!(
        node.jsonpath("fail", &format!("{terminated}.exitCode}}")),
        "3"
    );
    assert_eq!(
        node.jsonpath("fail", &format!("{terminated}.reason}}")),
        "Error"
    );
    assert_eq!(
        node.jsonpath("fail", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
}

#[test]
fn init_containers_run_to_completion_before_the_app() {
    let node = AgentNode::start();
    node.run_pod(
        "init",
        r#"initContainers:
- name: setup
  image: busybox:test
  imagePullPolicy: Never
  command: ["sleep", "2"]
containers:
- name: app
  image: busybox:test
  imagePullPolicy: Never
  command: ["sleep", "3600"]
"#,
    );
    node.server
        .ok(&["wait", "--for=condition=Ready", "pod/init", "--timeout=60s"]);
    let init = "{.status.initContainerStatuses[0].state.terminated";
    assert_eq!(
        node.jsonpath("init", &format!("{init}.reason}}")),
        "Completed"
    );
    let finished: jiff::Timestamp = node
        .jsonpath("init", &format!("{init}.finishedAt}}"))
        .parse()
        .unwrap();
    let started: jiff::Timestamp = node
        .jsonpath(
            "init",
            "{.status.containerStatuses[0].state.running.startedAt}",
        )
        .parse()
        .unwrap();
    assert!(
        finished <= started,
        "init finished {finished}, app started {started}"
    );
    assert_eq!(
        node.jsonpath(
            "init",
            "{.status.conditions[?(@.type==\"Initialized\")].status}"
        ),
        "True"
    );
}

#[test]
fn environment_from_a_config_map_reaches_the_process() {
    let node = AgentNode::start();
    node.server
        .ok(&["create", "configmap", "colors", "--from-literal=color=blue"]);
    node.run_pod(
        "env",
        r#"restartPolicy: Never
containers:
- name: check
  image: busybox:test
  imagePullPolicy: Never
  command: ["sh", "-c", "test \"$COLOR\" = blue && test \"$MY_NAME\" = env && test \"$CFG_color\" = blue"]
  env:
  - name: COLOR
    valueFrom: {configMapKeyRef: {name: colors, key: color}}
  - name: MY_NAME
    valueFrom: {fieldRef: {fieldPath: metadata.name}}
  envFrom:
  - configMapRef: {name: colors}
    prefix: CFG_
"#,
    );
    node.wait_jsonpath("env", "{.status.phase}", MINUTE, |p| {
        p == "Succeeded" || p == "Failed"
    });
    assert_eq!(node.jsonpath("env", "{.status.phase}"), "Succeeded");
}

#[test]
fn deleting_a_pod_runs_its_pre_stop_hook_and_removes_it() {
    let node = AgentNode::start();
    // The hook calls back to the test from the host, proving it ran.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hook_called = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 512];
        let n = stream.read(&mut request).unwrap();
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        String::from_utf8_lossy(&request[..n]).into_owned()
    });
    node.run_pod(
        "graceful",
        &format!(
            r#"containers:
- name: app
  image: busybox:test
  imagePullPolicy: Never
  command: ["sleep", "3600"]
  lifecycle:
    preStop:
      httpGet: {{host: 127.0.0.1, port: {port}, path: /pre-stop}}
"#
        ),
    );
    node.server.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/graceful",
        "--timeout=60s",
    ]);
    node.server
        .ok(&["delete", "pod", "graceful", "--wait=false"]);
    let request = hook_called.join().unwrap();
    assert!(request.starts_with("GET /pre-stop HTTP/1.1"), "{request}");
    assert!(
        wait_for(MINUTE, || {
            let out = node.server.kubectl(&["get", "pod", "graceful"]);
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound")
        }),
        "the pod disappears"
    );
    let shim = gantry_runtime::ShimCommand {
        program: env!("CARGO_BIN_EXE_gantry").into(),
        args: vec![],
    };
    let runtime = gantry_runtime::Runtime::open(node.server.dir.path(), shim).unwrap();
    assert!(
        runtime.list().unwrap().is_empty(),
        "its containers are removed"
    );
}

#[test]
fn a_failing_liveness_probe_restarts_the_container() {
    let node = AgentNode::start();
    node.run_pod(
        "live",
        r#"containers:
- name: app
  image: busybox:test
  imagePullPolicy: Never
  command: ["sleep", "3600"]
  livenessProbe:
    exec: {command: ["sh", "-c", "exit 1"]}
    periodSeconds: 1
    failureThreshold: 2
"#,
    );
    node.wait_jsonpath(
        "live",
        "{.status.containerStatuses[0].restartCount}",
        MINUTE,
        |n| n == "1",
    );
    let table = node.server.ok(&["get", "pod", "live"]);
    let row = table.lines().nth(1).expect("a row");
    assert!(
        row.split_whitespace().nth(3) == Some("1"),
        "RESTARTS is 1: {table}"
    );
}

#[test]
fn exceeding_the_memory_limit_is_an_oom_kill() {
    let node = AgentNode::start();
    node.run_pod(
        "oom",
        r#"restartPolicy: Never
containers:
- name: hog
  image: busybox:test
  imagePullPolicy: Never
  command: ["sh", "-c", "x=0123456789abcdef; while true; do x=$x$x; done"]
  resources:
    limits: {memory: 32Mi}
"#,
    );
    node.wait_jsonpath("oom", "{.status.phase}", MINUTE, |p| p == "Failed");
    assert_eq!(
        node.jsonpath(
            "oom",
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "OOMKilled"
    );
}

/// The pod's cgroup directory in `controller`'s hierarchy (v1) or the unified one (v2).
fn pod_cgroup_dir(controller: &str, relative: &str) -> std::path::PathBuf {
    let root = std::path::Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        root.join(relative)
    } else {
        root.join(controller).join(relative)
    }
}

#[test]
fn a_guaranteed_pod_gets_its_class_and_a_pod_cgroup_with_its_limits() {
    let node = AgentNode::start();
    node.run_pod(
        "guaranteed",
        r#"containers:
- name: app
  image: busybox:test
  imagePullPolicy: Never
  command: ["sh", "-c", "cat /proc/self/cgroup; sleep 3600"]
  resources:
    limits: {cpu: 250m, memory: 64Mi}
"#,
    );
    node.wait_jsonpath("guaranteed", "{.status.phase}", MINUTE, |p| p == "Running");
    assert_eq!(
        node.jsonpath("guaranteed", "{.status.qosClass}"),
        "Guaranteed"
    );
    let uid = node.jsonpath("guaranteed", "{.metadata.uid}");
    let relative = format!("kubepods/pod{uid}");
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let read = |controller: &str, file: &str| {
        std::fs::read_to_string(pod_cgroup_dir(controller, &relative).join(file))
            .unwrap_or_else(|e| panic!("reading {file} of the pod cgroup: {e}"))
            .trim()
            .to_owned()
    };
    if v2 {
        assert_eq!(read("memory", "memory.max"), "67108864");
        assert_eq!(read("cpu", "cpu.max"), "25000 100000");
    } else {
        assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "25000");
        assert_eq!(read("cpu", "cpu.shares"), "256");
    }
    // The container's own cgroup sits below the pod's.
    let mut logs = String::new();
    assert!(
        wait_for(MINUTE, || {
            logs = node.server.ok(&["logs", "guaranteed"]);
            logs.contains(&format!("/{relative}/"))
        }),
        "the container runs under /{relative}: {logs}"
    );
    node.server
        .ok(&["delete", "pod", "guaranteed", "--wait=true"]);
    let memory_dir = pod_cgroup_dir("memory", &relative);
    assert!(
        wait_for(MINUTE, || !memory_dir.exists()),
        "{} is removed with the pod",
        memory_dir.display()
    );
}

#[test]
fn run_as_user_group_and_supplemental_groups_reach_the_process() {
    let node = AgentNode::start();
    node.run_pod(
        "ids",
        r#"restartPolicy: Never
securityContext: {runAsUser: 1000, runAsGroup: 3000, supplementalGroups: [4000]}
containers:
- name: app
  image: busybox:test
  imagePullPolicy: Never
  command: ["sh", "-c", "echo uid=$(id -u) gid=$(id -g) groups=$(id -G)"]
"#,
    );
    node.wait_jsonpath("ids", "{.status.phase}", MINUTE, |p| p == "Succeeded");
    let logs = node.server.ok(&["logs", "ids"]);
    assert!(logs.contains("uid=1000 gid=3000"), "{logs}");
    let groups = logs.split("groups=").nth(1).unwrap_or_default();
    assert!(groups.split_whitespace().any(|g| g == "4000"), "{logs}");
}

#[test]
fn capabilities_can_be_dropped_and_privileged_containers_may_mount() {
    let node = AgentNode::start();
    let chown = |name: &str, security: &str| {
        node.run_pod(
            name,
            &format!(
                r#"restartPolicy: Never
containers:
- name: app
  image: busybox:test
  imagePullPolicy: Never
  command: ["sh", "-c", "touch /tmp/f && chown 1 /tmp/f"]
  securityContext: {security}
"#
            ),
        )
    };
    chown("chown-allowed", "{}");
    chown("chown-dropped", "{capabilities: {drop: [CHOWN]}}");
    let mount = |name: &str, privileged: bool| {
        node.run_pod(
            name,
            &format!(
                r#"restartPolicy: Never
containers:
- name: app
  image: busybox:test
  imagePullPolicy: Never
  command: ["sh", "-c", "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t"]
  securityContext: {{privileged: {privileged}}}
"#
            ),
        )
    };
    mount("mount-privileged", true);
    mount("mount-unprivileged", false);
    for (pod, phase) in [
        ("chown-allowed", "Succeeded"),
        ("chown-dropped", "Failed"),
        ("mount-privileged", "Succeeded"),
        ("mount-unprivileged", "Failed"),
    ] {
        node.wait_jsonpath(pod, "{.status.phase}", MINUTE, |p| p == phase);
    }
}

#[test]
fn run_as_non_root_refuses_an_image_that_runs_as_root() {
    let node = AgentNode::start();
    node.run_pod(
        "rootless",
        r#"securityContext: {runAsNonRoot: true}
containers:
- name: app
  image: busybox:test
  imagePullPolicy: Never
  command: ["sleep", "3600"]
"#,
    );
    node.wait_jsonpath(
        "rootless",
        "{.status.containerStatuses[0].state.waiting.reason}",
        MINUTE,
        |r| r == "CreateContainerConfigError",
    );
    let message = node.jsonpath(
        "rootless",
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(
        message.contains("container has runAsNonRoot and image will run as root"),
        "{message}"
    );
}

#[test]
fn describe_shows_the_kubelet_events_of_a_pod() {
    let node = AgentNode::start();
    node.run_pod(
        "eventful",
        r#"containers:
- name: app
  image: busybox:test
  imagePullPolicy: Never
  command: ["sleep", "3600"]
"#,
    );
    node.wait_jsonpath("eventful", "{.status.phase}", MINUTE, |p| p == "Running");
    let mut described = String::new();
    let wanted = [
        "Container image \"busybox:test\" already present on machine",
        "Created container: app",
        "Started container app",
    ];
    let found = wait_for(MINUTE, || {
        described = node.server.ok(&["describe", "pod", "eventful"]);
        wanted.iter().all(|w| described.contains(w))
    });
    assert!(found, "kubectl describe shows {wanted:?}:\n{described}");
    for reason in ["Pulled", "Created", "Started"] {
        let row = described
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(reason))
            .unwrap_or_else(|| panic!("no {reason} event row:\n{described}"));
        assert!(row.contains("kubelet"), "source is the kubelet: {row}");
    }
    let hosts = node.server.ok(&[
        "get",
        "events",
        "-o",
        r#"jsonpath={range .items[?(@.involvedObject.name=="eventful")]}{.source.host}{" "}{end}"#,
    ]);
    assert!(
        hosts.split_whitespace().all(|h| h == node.name) && !hosts.is_empty(),
        "events come from node {}: {hosts:?}",
        node.name
    );
}
