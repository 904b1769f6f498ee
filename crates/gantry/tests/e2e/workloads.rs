//! StatefulSets and DaemonSets through a real `gantry server` (no node agent) and the
//! real kubectl: fake Nodes are created with kubectl, and the test plays kubelet by
//! patching pod status, so `kubectl get` and `kubectl rollout status` see the
//! controllers' work as they would on a real cluster. Rollout history and undo run
//! against stand-in kubelets (`FakeCluster`), which also finish pod deletions.

use crate::common;
use crate::common::fake_kubelet::{FakeCluster, NodeSpec};

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
            && ds
                .get(1)
                .is_some_and(|row| row[..6] == ["agent", "2", "2", "2", "2", "2"])
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
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE",
            "SELECTOR"
        ]
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
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["pod/web-0", "pod/web-1"]
    );
    let events = server.ok(&["get", "events"]);
    assert!(
        events.contains("create Pod web-0 in StatefulSet web successful"),
        "{events}"
    );
}

/// The revision numbers `kubectl rollout history` lists for `workload`.
fn history_numbers(server: &Server, workload: &str) -> Vec<String> {
    let history = server.ok(&["rollout", "history", workload]);
    history
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|first| first.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .collect()
}

/// The image of the first container of `workload`'s template.
fn template_image(server: &Server, workload: &str) -> String {
    let jsonpath = "jsonpath={.spec.template.spec.containers[0].image}";
    server.ok(&["get", workload, "-o", jsonpath])
}

/// Changes `workload`'s image, rolls it back with `kubectl rollout undo`, and
/// checks what `kubectl rollout history` shows at each step.
fn roll_forward_and_back(server: &Server, workload: &str, container: &str) {
    let rollout_status = || server.ok(&["rollout", "status", workload, "--timeout=60s"]);
    rollout_status();
    assert_eq!(history_numbers(server, workload), ["1"]);
    server.ok(&["set", "image", workload, &format!("{container}=busybox:v2")]);
    rollout_status();
    assert_eq!(history_numbers(server, workload), ["1", "2"]);
    let first = server.ok(&["rollout", "history", workload, "--revision=1"]);
    assert!(first.contains("busybox:test"), "{first}");
    let second = server.ok(&["rollout", "history", workload, "--revision=2"]);
    assert!(second.contains("busybox:v2"), "{second}");

    let undone = server.ok(&["rollout", "undo", workload]);
    assert!(undone.contains("rolled back"), "{undone}");
    rollout_status();
    assert_eq!(template_image(server, workload), "busybox:test");
    assert_eq!(
        history_numbers(server, workload),
        ["2", "3"],
        "the first revision is reused as the third"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_history_and_undo_for_statefulsets_and_daemonsets() {
    let server = Server::start();
    let client: kube::Client = gantry_client::connect(&server.kubeconfig())
        .await
        .expect("admin client");
    let cluster = FakeCluster::start(client);
    for name in ["fake-1", "fake-2"] {
        let node = NodeSpec {
            name,
            cpu: "2",
            labels: &[("role", "worker")],
            taints: &[],
        };
        cluster.add_node(node).await;
    }
    server.apply(WORKLOADS);

    roll_forward_and_back(&server, "statefulset/web", "app");
    roll_forward_and_back(&server, "daemonset/agent", "agent");

    let revisions = table(&server, "controllerrevisions");
    assert_eq!(revisions[0], ["NAME", "CONTROLLER", "REVISION", "AGE"]);
    let controllers: Vec<&str> = revisions[1..].iter().map(|row| row[1].as_str()).collect();
    assert_eq!(controllers.len(), 4, "{revisions:?}");
    assert!(
        controllers.contains(&"statefulset.apps/web"),
        "{revisions:?}"
    );
    assert!(
        controllers.contains(&"daemonset.apps/agent"),
        "{revisions:?}"
    );
}
