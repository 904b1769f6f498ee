//! Pod volumes on a real `gantry server` and its node agent, driven by the real
//! kubectl: ConfigMap volumes follow their ConfigMap while the pod runs, a
//! missing ConfigMap holds the pod in CreateContainerConfigError, emptyDir is
//! shared by init and app containers, secrets get their defaultMode, the
//! kubelet-managed /etc files are right, and a claim bound by the controller
//! manager's binder mounts its PersistentVolume's host path.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::agent_node::AgentNode;
use common::wait_for;

const MINUTE: Duration = Duration::from_secs(60);

/// Creates a pod bound to `node` from the YAML of its spec's body.
fn run_pod(node: &AgentNode, name: &str, spec: &str) {
    let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {}\n  terminationGracePeriodSeconds: 1\n{indented}",
        node.name
    );
    node.server.apply(&manifest);
}

fn logs(node: &AgentNode, pod: &str, container: &str) -> String {
    let out = node.server.kubectl(&["logs", pod, "-c", container]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `path` of the pod satisfies `want`; fails with the pod's status.
fn wait_jsonpath(node: &AgentNode, pod: &str, path: &str, want: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    let reached = wait_for(MINUTE, || {
        last = node.jsonpath(pod, path);
        want(&last)
    });
    assert!(
        reached,
        "pod {pod}: {path} is {last:?}; status: {}",
        node.jsonpath(pod, "{.status}")
    );
    last
}

/// Replaces the ConfigMap `name` as `kubectl create ... --dry-run | kubectl replace` does.
fn replace_config_map(node: &AgentNode, name: &str, literal: &str) {
    let yaml = node.server.ok(&[
        "create",
        "configmap",
        name,
        &format!("--from-literal={literal}"),
        "-o",
        "yaml",
        "--dry-run=client",
    ]);
    let out = node
        .server
        .kubectl_with_input(&["replace", "-f", "-"], Some(&yaml));
    assert!(
        out.status.success(),
        "replace failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_map_volumes_follow_their_config_map() {
    let node = AgentNode::start();
    node.server.ok(&[
        "create",
        "configmap",
        "greeting",
        "--from-literal=message=hello",
    ]);
    let reader = r#"containers:
- name: reader
  image: busybox:test
  imagePullPolicy: Never
  command: ["sh", "-c", "while true; do echo \"message=$(cat /config/message)\"; sleep 1; done"]
  volumeMounts:
  - {name: config, mountPath: /config}
volumes:
- name: config
  configMap: {name: CONFIG_MAP}
"#;
    run_pod(&node, "reader", &reader.replace("CONFIG_MAP", "greeting"));
    // A pod whose ConfigMap does not exist yet waits, as the kubelet reports it.
    run_pod(&node, "waiter", &reader.replace("CONFIG_MAP", "later"));

    assert!(
        wait_for(MINUTE, || logs(&node, "reader", "reader")
            .contains("message=hello\n")),
        "the pod reads the ConfigMap: {}",
        node.jsonpath("reader", "{.status}")
    );
    let replaced_at = Instant::now();
    replace_config_map(&node, "greeting", "message=goodbye");
    assert!(
        wait_for(MINUTE, || logs(&node, "reader", "reader")
            .contains("message=goodbye\n")),
        "the running pod sees the new content: {}",
        logs(&node, "reader", "reader")
    );
    eprintln!(
        "ConfigMap update visible in the pod after {:?}",
        replaced_at.elapsed()
    );
    assert_eq!(
        node.jsonpath("reader", "{.status.containerStatuses[0].restartCount}"),
        "0",
        "the update needs no restart"
    );

    let waiting = "{.status.containerStatuses[0].state.waiting}";
    let state = wait_jsonpath(&node, "waiter", waiting, |w| {
        w.contains("CreateContainerConfigError")
    });
    assert!(
        state.contains("later"),
        "the message names the ConfigMap: {state}"
    );
    let events = node.server.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=waiter",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(events.contains("FailedMount"), "events: {events}");
    node.server.ok(&[
        "create",
        "configmap",
        "later",
        "--from-literal=message=late",
    ]);
    wait_jsonpath(&node, "waiter", "{.status.phase}", |p| p == "Running");
    assert!(
        wait_for(MINUTE, || logs(&node, "waiter", "reader")
            .contains("message=late\n")),
        "the pod starts once its ConfigMap exists"
    );
}

/// Reads the output of a pod that runs once and succeeds.
fn output_of_completed(node: &AgentNode, pod: &str, container: &str) -> String {
    wait_jsonpath(node, pod, "{.status.phase}", |p| p == "Succeeded");
    logs(node, pod, container)
}

/// The non-loopback nameservers of the host's resolv.conf.
fn host_nameservers() -> Vec<String> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|line| line.strip_prefix("nameserver"))
        .map(|server| server.trim().to_owned())
        .filter(|server| {
            server
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .collect()
}

#[test]
fn empty_dirs_secrets_etc_files_and_claims_reach_containers() {
    let node = AgentNode::start();
    node.server.ok(&[
        "create",
        "secret",
        "generic",
        "token",
        "--from-literal=token=s3cr3t",
    ]);
    run_pod(
        &node,
        "files",
        r#"restartPolicy: Never
subdomain: demo
hostAliases:
- ip: 192.0.2.7
  hostnames: [alias.test]
initContainers:
- name: setup
  image: busybox:test
  imagePullPolicy: Never
  command: ["sh", "-c", "echo from-init > /work/msg"]
  volumeMounts:
  - {name: work, mountPath: /work}
containers:
- name: app
  image: busybox:test
  imagePullPolicy: Never
  command:
  - sh
  - -c
  - |
    echo "shared=$(cat /shared/msg)"
    echo "token=$(cat /secret/token)"
    echo "mode=$(stat -L -c %a /secret/token)"
    echo "hostname=$(cat /etc/hostname)"
    cat /etc/hosts
    echo ---
    cat /etc/resolv.conf
  volumeMounts:
  - {name: work, mountPath: /shared}
  - {name: token, mountPath: /secret}
volumes:
- name: work
  emptyDir: {}
- name: token
  secret:
    secretName: token
    defaultMode: 256
"#,
    );
    run_pod(
        &node,
        "custom-dns",
        r#"restartPolicy: Never
dnsPolicy: None
dnsConfig:
  nameservers: [192.0.2.53]
  searches: [example.test]
  options:
  - {name: ndots, value: "2"}
containers:
- name: app
  image: busybox:test
  imagePullPolicy: Never
  command: ["cat", "/etc/resolv.conf"]
"#,
    );

    let output = output_of_completed(&node, "files", "app");
    assert!(output.contains("shared=from-init\n"), "{output}");
    assert!(output.contains("token=s3cr3t\n"), "{output}");
    assert!(output.contains("mode=400\n"), "{output}");
    assert!(output.contains("hostname=files\n"), "{output}");
    let (hosts, resolv) = output.split_once("---\n").expect("hosts, then resolv.conf");
    assert!(hosts.contains("127.0.0.1\tlocalhost\n"), "{hosts}");
    assert!(
        hosts.contains("\tfiles.demo.default.svc.cluster.local\tfiles\n"),
        "{hosts}"
    );
    assert!(hosts.contains("192.0.2.7\talias.test\n"), "{hosts}");
    // No cluster DNS without the pod network: the host's resolvers, minus loopback.
    for server in host_nameservers() {
        assert!(
            resolv.contains(&format!("nameserver {server}\n")),
            "{resolv}"
        );
    }
    assert!(!resolv.contains("nameserver 127."), "{resolv}");

    let custom = output_of_completed(&node, "custom-dns", "app");
    assert_eq!(
        custom,
        "search example.test\nnameserver 192.0.2.53\noptions ndots:2\n"
    );

    claims_wait_for_a_volume_then_mount_it(&node);
}

/// A pod whose claim is unbound waits; once a PersistentVolume appears, the
/// binder binds it and the pod writes into the volume's host path. The claim
/// asks for no class (static volumes only), not the default local-path one.
fn claims_wait_for_a_volume_then_mount_it(node: &AgentNode) {
    node.server.apply(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
  storageClassName: ""
"#,
    );
    run_pod(
        node,
        "writer",
        r#"restartPolicy: Never
containers:
- name: app
  image: busybox:test
  imagePullPolicy: Never
  command: ["sh", "-c", "echo written > /data/out"]
  volumeMounts:
  - {name: data, mountPath: /data}
volumes:
- name: data
  persistentVolumeClaim: {claimName: data}
"#,
    );
    let waiting = wait_jsonpath(
        node,
        "writer",
        "{.status.containerStatuses[0].state.waiting}",
        |w| w.contains("ContainerCreating"),
    );
    assert!(waiting.contains("not bound"), "{waiting}");

    let host_dir = node.server.dir.path().join("pv-data");
    node.server.apply(&format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata: {{name: local-data}}
spec:
  capacity: {{storage: 2Gi}}
  accessModes: [ReadWriteOnce]
  hostPath: {{path: {}, type: DirectoryOrCreate}}
"#,
        host_dir.display()
    ));
    wait_jsonpath(node, "writer", "{.status.phase}", |p| p == "Succeeded");
    let claim = node.server.ok(&[
        "get",
        "pvc",
        "data",
        "-o",
        "jsonpath={.status.phase} {.spec.volumeName}",
    ]);
    assert_eq!(claim, "Bound local-data");
    let written = std::fs::read_to_string(Path::new(&host_dir).join("out"));
    assert_eq!(written.ok().as_deref(), Some("written\n"));
}
