//! Pods on a real `gantry server` with its node agent, driven by the real kubectl:
//! they run on the container engine, report status, restart, run probes and
//! hooks, and go away gracefully.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use common::{Server, wait_for};

/// A server with its node agent, `busybox:test` in its engine, and nothing of
/// its containers or network namespaces left behind when dropped.
struct Node {
    server: Server,
    name: String,
}

impl Node {
    fn start() -> Node {
        // A free kubelet API port: tests run side by side.
        let server = Server::start_with(&["--kubelet-port", "0", "--pod-network", "none"]);
        let store = gantry_image::ImageStore::open(server.dir.path()).expect("image store");
        gantry_image::test_support::import_busybox(&store).expect("busybox imports");
        let mut name = String::new();
        assert!(
            wait_for(Duration::from_secs(30), || {
                name = server.ok(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"]);
                !name.is_empty()
            }),
            "the node registers"
        );
        Node { server, name }
    }

    /// Creates a pod bound to this node from the YAML of its spec's body.
    fn run_pod(&self, name: &str, spec: &str) {
        let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
        let manifest = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {}\n  terminationGracePeriodSeconds: 2\n{indented}",
            self.name
        );
        self.server.apply(&manifest);
    }

    fn jsonpath(&self, pod: &str, path: &str) -> String {
        let out = self
            .server
            .kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")]);
        String::from_utf8_lossy(&out.stdout).into_owned()
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

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
        remove_engine_state(self.server.dir.path());
    }
}

/// Removes every container and pinned network namespace under `root`.
fn remove_engine_state(root: &Path) {
    let shim = gantry_runtime::ShimCommand {
        program: env!("CARGO_BIN_EXE_gantry").into(),
        args: vec!["--root".into(), root.into(), "container-shim".into()],
    };
    if let Ok(runtime) = gantry_runtime::Runtime::open(root, shim) {
        for container in runtime.list().unwrap_or_default() {
            let _ = runtime.remove(&container.config.id, true);
        }
    }
    if let Ok(entries) = std::fs::read_dir(root.join("netns")) {
        for entry in entries.flatten() {
            let _ = gantry_runtime::remove_network_namespace(&entry.path());
        }
    }
}

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn a_web_server_pod_becomes_running_and_ready() {
    let node = Node::start();
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
    let node = Node::start();
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
    let node = Node::start();
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
    let node = Node::start();
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
    let node = Node::start();
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
    let node = Node::start();
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
    let node = Node::start();
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
    let node = Node::start();
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
