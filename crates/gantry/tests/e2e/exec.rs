//! `kubectl exec`, `cp` and `attach` end to end: the real kubectl opens a WebSocket
//! (`v5.channel.k8s.io`) to the API server, which authorizes it and splices it to the
//! node agent's kubelet API, which runs the command in the container.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::attach::KubectlOnTerminal;
use common::KUBECTL;
use common::agent_node::AgentNode;

const MINUTE: Duration = Duration::from_secs(60);

/// A node with one running busybox pod `name` that sleeps.
fn node_with_pod(name: &str, script: &str) -> AgentNode {
    let node = AgentNode::start();
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
    securityContext: {{allowPrivilegeEscalation: false}}
"#,
        node = node.name,
    );
    node.server.apply(&manifest);
    node.server.ok(&[
        "wait",
        "--for=condition=Ready",
        &format!("pod/{name}"),
        "--timeout=60s",
    ]);
    node
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn exec(node: &AgentNode, args: &[&str], input: Option<&str>) -> Output {
    node.server
        .kubectl_with_input(&[&["exec"], args].concat(), input)
}

#[test]
fn exec_relays_output_exit_codes_and_stdin() {
    let node = node_with_pod("shell", "sleep 3600");

    let hostname = exec(&node, &["shell", "--", "cat", "/etc/hostname"], None);
    assert!(hostname.status.success(), "{}", text(&hostname.stderr));
    assert_eq!(text(&hostname.stdout), "shell\n");

    let split = exec(
        &node,
        &["shell", "--", "sh", "-c", "echo out; echo err >&2"],
        None,
    );
    assert_eq!(text(&split.stdout), "out\n");
    assert!(
        text(&split.stderr).contains("err\n"),
        "{}",
        text(&split.stderr)
    );

    let failed = exec(&node, &["shell", "--", "sh", "-c", "exit 3"], None);
    assert_eq!(failed.status.code(), Some(3), "{}", text(&failed.stderr));
    assert!(
        text(&failed.stderr).contains("command terminated with exit code 3"),
        "{}",
        text(&failed.stderr)
    );

    let echoed = exec(&node, &["-i", "shell", "--", "cat"], Some("hi\n"));
    assert!(echoed.status.success(), "{}", text(&echoed.stderr));
    assert_eq!(text(&echoed.stdout), "hi\n");

    // More than any pipe or socket buffer, so back-pressure is exercised.
    let big = "x".repeat(4 << 20);
    let counted = exec(&node, &["-i", "shell", "--", "wc", "-c"], Some(&big));
    assert_eq!(text(&counted.stdout).trim(), (4 << 20).to_string());

    let missing = exec(&node, &["shell", "--", "no-such-program"], None);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("no-such-program"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn exec_with_a_terminal() {
    let node = node_with_pod("term", "sleep 3600");
    // kubectl only allocates a terminal when its stdin is one: `script` gives it a pty.
    let kubectl = format!(
        "{KUBECTL} --kubeconfig {} exec -it term -- sh -c 'tty; echo done; exit 5'",
        node.server.kubeconfig().display()
    );
    let out = Command::new("script")
        .args(["-qec", &kubectl, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script runs");
    let printed = text(&out.stdout);
    assert!(printed.contains("/dev/pts/"), "{printed}");
    assert!(printed.contains("done"), "{printed}");
    assert_eq!(out.status.code(), Some(5), "{printed}");
}

#[test]
fn exec_terminal_takes_the_clients_size_and_resizes() {
    let node = node_with_pod("sized", "sleep 3600");
    // The size kubectl sends first may land just after the command starts: wait for
    // it (before it, busybox's `stty size` fails on the 0x0 terminal).
    let script = "until [ \"$(stty size 2>/dev/null)\" = '33 101' ]; do usleep 100000; done; \
        echo initial-$((30+3)); \
        trap 'echo resized $(stty size); exit 7' WINCH; \
        echo ready; while :; do usleep 100000; done";
    let mut kubectl = KubectlOnTerminal::spawn(
        &node.server,
        &["exec", "-it", "sized", "--", "sh", "-c", script],
        33,
        101,
    );
    kubectl.expect("initial-33");
    kubectl.expect("ready");
    kubectl.resize(40, 120);
    kubectl.expect("resized 40 120");
    let status = kubectl.wait();
    assert_eq!(status.code(), Some(7), "{}", kubectl.output());
}

#[test]
fn kubectl_cp_copies_files_both_ways() {
    let node = node_with_pod("files", "sleep 3600");
    let local = tempfile::tempdir().expect("temp dir");
    let upload = local.path().join("in.txt");
    std::fs::write(&upload, "to the pod\n").expect("write");
    node.server
        .ok(&["cp", upload.to_str().expect("utf-8"), "files:/tmp/in.txt"]);
    let copied = node
        .server
        .ok(&["exec", "files", "--", "cat", "/tmp/in.txt"]);
    assert_eq!(copied, "to the pod\n");

    node.server.ok(&[
        "exec",
        "files",
        "--",
        "sh",
        "-c",
        "mkdir -p /tmp/d && echo from the pod > /tmp/d/out.txt",
    ]);
    let download = local.path().join("out.txt");
    node.server.ok(&[
        "cp",
        "files:/tmp/d/out.txt",
        download.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        std::fs::read_to_string(&download).expect("downloaded"),
        "from the pod\n"
    );
}

#[test]
fn streams_are_refused_to_nodes_and_for_missing_containers() {
    let node = node_with_pod("guarded", "sleep 3600");
    let node_kubeconfig = node.server.dir.path().join("server/agent.kubeconfig");
    assert!(node_kubeconfig.exists(), "{}", node_kubeconfig.display());
    let as_node = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(&node_kubeconfig)
        .args(["exec", "guarded", "--", "true"])
        .output()
        .expect("kubectl runs");
    assert!(!as_node.status.success());
    let message = text(&as_node.stderr);
    assert!(
        message.contains("Forbidden") && message.contains("cannot create resource \"pods/exec\""),
        "{message}"
    );

    let wrong = exec(&node, &["guarded", "-c", "nope", "--", "true"], None);
    assert!(!wrong.status.success());
    let message = text(&wrong.stderr);
    assert!(
        message.contains("container nope is not valid for pod guarded"),
        "{message}"
    );

    let missing = exec(&node, &["missing", "--", "true"], None);
    assert!(!missing.status.success());
    let message = text(&missing.stderr);
    assert!(message.contains(r#"pods "missing" not found"#), "{message}");
}

#[test]
fn attach_follows_a_containers_output() {
    let node = node_with_pod(
        "ticker",
        "i=0; while true; do echo tick $i; i=$((i+1)); usleep 200000; done",
    );
    let mut attach = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(node.server.kubeconfig())
        .args(["attach", "ticker"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl attach runs");
    let stdout = attach.stdout.take().expect("piped");
    let (lines, received) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let first = received.recv_timeout(MINUTE);
    let second = received.recv_timeout(MINUTE);
    let _ = attach.kill();
    let _ = attach.wait();
    let _ = reader.join();
    let (first, second) = (first.expect("a line"), second.expect("another line"));
    assert!(first.starts_with("tick "), "{first}");
    assert!(second.starts_with("tick "), "{second}");
    assert_ne!(first, second);
}
