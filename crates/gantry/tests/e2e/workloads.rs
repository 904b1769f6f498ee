//! StatefulSets and DaemonSets through a real `gantry server` (no node agent) and the
//! real kubectl: fake Nodes are created with kubectl, and the test plays kubelet by
//! patching pod status, so `kubectl get` and `kubectl rollout status` see the
//! controllers' work as they would on a real cluster.

use crate::common;

use std::time::Duration;

use common::{Server, wait_for};

const TIMEOUT: Duration = Duration::from_secs(90);

const NODES: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: fake-1, labels: {role: worker}}
---
apiVersion: v1
kind: Node
metadata: {name: fake-2, labels: {role: worker}}
"#;

const WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  replicas: 2
  serviceName: web
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: "busybox:test"}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {role: worker}
      containers: [{name: agent, image: "busybox:test"}]
"#;

/// Reports every pod that is not Ready yet as Running and Ready, as a kubelet would.
fn mark_pods_ready(server: &Server) {
    let jsonpath = r#"{range .items[*]}{.metadata.name} {.status.phase}{"\n"}{end}"#;
    let listed = server.ok(&["get", "pods", "-o", &format!("jsonpath={jsonpath}")]);
    let ready = r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#;
    for line in listed.lines() {
        let Some((name, phase)) = line.split_once(' ') else {
            continue;
        };
        if phase != "Running" {
            // A pod deleted meanwhile fails the patch; the next round looks again.
            server.kubectl(&[
                "patch",
                "pod",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                ready,
            ]);
        }
    }
}

/// The rows of `kubectl get` for `kind` as whitespace-separated columns.
fn table(server: &Server, kind: &str) -> Vec<Vec<String>> {
    server
        .ok(&["get", kind])
        .lines()
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn statefulsets_and_daemonsets_show_in_kubectl_and_roll_out() {
    let server = Server::start();
    server.apply(NODES);
    server.apply(WORKLOADS);

    let rolled_out = wait_for(TIMEOUT, || {
        mark_pods_ready(&server);
        let sts = table(&server, "statefulsets");
        let ds = table(&server, "daemonsets");
        sts.get(1).is_some_and(|row| row[..2] == ["web", "2/2"])
            && ds.get(1).is_some_and(|row| row[..6] == ["agent", "2", "2", "2", "2", "2"])
    });
    assert!(
        rolled_out,
        "workloads never became ready:\n{}\n{}",
        server.ok(&["get", "sts,ds,pods", "-o", "wide"]),
        server.ok(&["get", "events"])
    );

    let sts = table(&server, "statefulsets");
    assert_eq!(sts[0][..3], ["NAME", "READY", "AGE"]);
    let ds = table(&server, "daemonsets");
    assert_eq!(
        ds[0][..8],
        ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE", "SELECTOR"]
    );
    assert_eq!(ds[1][6], "role=worker");

    let status = server.ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    assert!(
        status.contains("roll out complete") || status.contains("rolling update complete"),
        "{status}"
    );
    let status = server.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");

    let names = server.ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
    assert_eq!(names.lines().collect::<Vec<_>>(), ["pod/web-0", "pod/web-1"]);
    let events = server.ok(&["get", "events"]);
    assert!(
        events.contains("create Pod web-0 in StatefulSet web successful"),
        "{events}"
    );
}
