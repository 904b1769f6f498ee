//! `kubectl logs` end to end: the real kubectl asks the API server, which finds the
//! pod's node and relays the node agent's kubelet API (`/containerLogs`) back.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::agent_node::AgentNode;
use common::hosts::shim_command;
use common::{KUBECTL, wait_for};

const MINUTE: Duration = Duration::from_secs(60);

impl AgentNode {
    /// Creates a pod on this node with one busybox container running `script`.
    fn run_script_pod(&self, name: &str, script: &str, extra: &str) {
        let manifest = format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:test
    imagePullPolicy: Never
    command: ["sh", "-c", {script:?}]
{extra}"#,
            node = self.name,
        );
        self.server.apply(&manifest);
    }

    fn wait_running(&self, pod: &str, restarts: u32) {
        let path = "jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.running.startedAt}";
        let mut last = String::new();
        let running = wait_for(MINUTE, || {
            let out = self.server.kubectl(&["get", "pod", pod, "-o", path]);
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut fields = last.split_whitespace();
            fields.next() == Some(&restarts.to_string()) && fields.next().is_some()
        });
        if !running {
            let current = self.server.kubectl(&["logs", pod]);
            let previous = self.server.kubectl(&["logs", pod, "--previous"]);
            panic!(
                "pod {pod} is not running after {restarts} restarts: {last}; logs: {:?}; previous: {:?} {:?}",
                String::from_utf8_lossy(&current.stdout),
                String::from_utf8_lossy(&previous.stdout),
                String::from_utf8_lossy(&previous.stderr),
            );
        }
    }

    /// Waits until `kubectl logs <args>` prints what `done` wants, returning it.
    fn wait_logs(&self, args: &[&str], done: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let reached = wait_for(Duration::from_secs(20), || {
            let out = self.server.kubectl(&[&["logs"], args].concat());
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            out.status.success() && done(&last)
        });
        assert!(reached, "kubectl logs {args:?}: {last}");
        last
    }
}

#[test]
fn logs_print_a_containers_output_and_honour_tail() {
    let node = AgentNode::start();
    let port = node.server.ok(&[
        "get",
        "node",
        &node.name,
        "-o",
        "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    assert!(
        port.parse::<u16>().is_ok_and(|p| p != 0),
        "kubelet port: {port:?}"
    );
    node.run_script_pod("hello", "echo one; echo two; sleep 1000", "");
    node.wait_running("hello", 0);

    node.wait_logs(&["hello"], |out| out == "one\ntwo\n");
    let tail = node.server.ok(&["logs", "hello", "--tail=1"]);
    assert_eq!(tail, "two\n");
    let stamped = node.server.ok(&["logs", "hello", "--timestamps"]);
    let first = stamped.lines().next().expect("a line");
    let (time, text) = first.split_once(' ').expect("a timestamp prefix");
    assert!(
        time.parse::<jiff::Timestamp>().is_ok(),
        "not RFC3339: {first}"
    );
    assert_eq!(text, "one");

    let wrong = node.server.kubectl(&["logs", "hello", "-c", "nope"]);
    assert!(!wrong.status.success());
    let message = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        message.contains("container nope is not valid for pod hello"),
        "{message}"
    );

    let missing = node.server.kubectl(&["logs", "missing"]);
    assert!(!missing.status.success());
    let message = String::from_utf8_lossy(&missing.stderr);
    assert!(message.contains(r#"pods "missing" not found"#), "{message}");

    let no_previous = node.server.kubectl(&["logs", "hello", "--previous"]);
    assert!(!no_previous.status.success());
    let message = String::from_utf8_lossy(&no_previous.stderr);
    assert!(
        message.contains(r#"previous terminated container "main" in pod "hello" not found"#),
        "{message}"
    );
}

#[test]
fn logs_follow_streams_lines_written_later() {
    let node = AgentNode::start();
    node.run_script_pod(
        "counter",
        "i=0; while true; do echo $i; i=$((i+1)); usleep 200000; done",
        "",
    );
    node.wait_running("counter", 0);
    node.wait_logs(&["counter"], |out| !out.is_empty());

    let mut follow = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(node.server.kubeconfig())
        .args(["logs", "-f", "--tail=1", "counter"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl runs");
    let stdout = follow.stdout.take().expect("stdout is piped");
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a line within 10s")
            .parse::<u64>()
            .expect("a counter")
    };
    let first = next();
    let second = next();
    let third = next();
    let still_following = follow.try_wait().expect("kubectl status").is_none();
    let _ = follow.kill();
    let _ = follow.wait();
    let _ = reader.join();
    assert_eq!((second, third), (first + 1, first + 2));
    assert!(still_following, "kubectl logs -f ended early");
}

#[test]
fn logs_previous_shows_the_attempt_before_a_restart() {
    let node = AgentNode::start();
    // Every attempt prints something of its own, then crashes.
    node.run_script_pod(
        "flaky",
        "echo run $(cat /proc/sys/kernel/random/uuid); exit 1",
        "",
    );
    let restarts = "jsonpath={.status.containerStatuses[0].restartCount}";
    assert!(
        wait_for(MINUTE, || node
            .server
            .ok(&["get", "pod", "flaky", "-o", restarts])
            == "1"),
        "the container restarts once"
    );
    let uid = node
        .server
        .ok(&["get", "pod", "flaky", "-o", "jsonpath={.metadata.uid}"]);
    let attempt_output = |attempt: u32| {
        let root = node.server.dir.path();
        let runtime = gantry_runtime::Runtime::open(root, shim_command(root)).expect("runtime");
        let name = format!("k8s_main_flaky_default_{uid}_{attempt}");
        let (entries, _) = runtime.logs(&name, 0).expect("the attempt's log");
        entries.into_iter().map(|e| e.text).collect::<String>()
    };
    let (first, second) = (attempt_output(0), attempt_output(1));
    assert!(
        first.starts_with("run ") && first != second,
        "{first:?} {second:?}"
    );

    assert_eq!(node.server.ok(&["logs", "flaky", "--previous"]), first);
    assert_eq!(node.server.ok(&["logs", "flaky"]), second);
}
