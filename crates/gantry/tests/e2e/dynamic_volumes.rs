//! Dynamic provisioning on a real `gantry server` with its node agent, driven by
//! the real kubectl, as on k3s: the default `local-path` StorageClass, a claim
//! without a class provisioned on the node its first pod is scheduled to, its
//! data kept for the next pod, and the volume and its directory removed with the
//! claim.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::agent_node::AgentNode;
use common::wait_for;

const MINUTE: Duration = Duration::from_secs(60);

/// A pod (left to the scheduler) mounting claim `data` at /data and running `script`.
fn run_pod(node: &AgentNode, name: &str, restart: &str, script: &str) {
    node.server.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: {restart}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:test
    imagePullPolicy: Never
    command: ["sh", "-c", "{script}"]
    volumeMounts:
    - {{name: data, mountPath: /data}}
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: data}}
"#
    ));
}

/// Waits until `jsonpath` of `kind/name` satisfies `want`; fails with its last value.
fn wait_jsonpath(
    node: &AgentNode,
    kind: &str,
    name: &str,
    path: &str,
    want: impl Fn(&str) -> bool,
) -> String {
    let mut last = String::new();
    let reached = wait_for(MINUTE, || {
        let out = node
            .server
            .kubectl(&["get", kind, name, "-o", &format!("jsonpath={path}")]);
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        want(&last)
    });
    assert!(reached, "{kind} {name}: {path} is {last:?}");
    last
}

fn delete_pod(node: &AgentNode, name: &str) {
    node.server.ok(&["delete", "pod", name, "--wait=false"]);
    let gone = wait_for(MINUTE, || {
        let out = node.server.kubectl(&["get", "pod", name, "-o", "name"]);
        !out.status.success()
    });
    assert!(gone, "pod {name} is deleted");
}

#[test]
fn a_claim_without_a_class_is_provisioned_on_its_pods_node_and_reclaimed() {
    let node = AgentNode::start();
    let classes = node.server.ok(&["get", "storageclass"]);
    assert!(classes.contains("local-path (default)"), "{classes}");
    assert!(classes.contains("gantry.dev/local-path"), "{classes}");
    assert!(classes.contains("WaitForFirstConsumer"), "{classes}");

    node.server.apply(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
"#,
    );
    let class = node.server.ok(&[
        "get",
        "pvc",
        "data",
        "-o",
        "jsonpath={.spec.storageClassName}",
    ]);
    assert_eq!(class, "local-path");

    run_pod(
        &node,
        "writer",
        "Always",
        "echo kept > /data/file && exec sleep 3600",
    );
    wait_jsonpath(&node, "pod", "writer", "{.status.phase}", |phase| {
        phase == "Running"
    });
    let volume = wait_jsonpath(
        &node,
        "pvc",
        "data",
        "{.status.phase} {.spec.volumeName}",
        |s| s.starts_with("Bound pvc-"),
    );
    let volume = volume.trim_start_matches("Bound ").to_owned();
    let selected = node.server.ok(&[
        "get",
        "pvc",
        "data",
        "-o",
        r"jsonpath={.metadata.annotations.volume\.kubernetes\.io/selected-node}",
    ]);
    assert_eq!(selected, node.name);
    let affinity = node.server.ok(&[
        "get",
        "pv",
        &volume,
        "-o",
        "jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}",
    ]);
    assert_eq!(affinity, node.name);
    let path = PathBuf::from(node.server.ok(&[
        "get",
        "pv",
        &volume,
        "-o",
        "jsonpath={.spec.hostPath.path}",
    ]));
    let storage = node.server.dir.path().join("storage");
    assert_eq!(path, storage.join(format!("{volume}_default_data")));
    let written = std::fs::read_to_string(path.join("file"));
    assert_eq!(written.ok().as_deref(), Some("kept\n"));

    delete_pod(&node, "writer");
    run_pod(&node, "reader", "Never", "cat /data/file");
    wait_jsonpath(&node, "pod", "reader", "{.status.phase}", |phase| {
        phase == "Succeeded"
    });
    assert_eq!(node.server.ok(&["logs", "reader"]), "kept\n");

    delete_pod(&node, "reader");
    node.server.ok(&["delete", "pvc", "data"]);
    let reclaimed = wait_for(MINUTE, || {
        node.server.ok(&["get", "pv", "-o", "name"]).is_empty()
    });
    assert!(reclaimed, "the volume object is deleted");
    assert!(!path.exists(), "{} is removed", path.display());
    assert!(storage.exists(), "the storage root itself stays");
}
