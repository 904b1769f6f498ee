//! A single-node cluster on the machine's own network: `gantry server` with its node
//! agent but no pod network (`--pod-network none`), for tests of what pods do on the
//! engine (status, restarts, probes, logs) rather than how they are networked.

use std::time::Duration;

use super::hosts::remove_engine_state;
use super::{Server, wait_for};

/// How long cleanup waits for the pods to go away gracefully.
const POD_DELETION_TIMEOUT: Duration = Duration::from_secs(60);

/// A server with its node agent (kubelet API on a free port, so tests run side by
/// side) and `busybox:test` in its engine. On drop its pods are deleted and awaited
/// while the agent still runs (so preStop hooks and grace periods are honoured),
/// then the server stops and nothing of the engine is left behind.
pub struct AgentNode {
    pub server: Server,
    pub name: String,
}

impl AgentNode {
    /// Starts the server and waits for its Node to register.
    pub fn start() -> AgentNode {
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
        AgentNode { server, name }
    }

    /// `kubectl get pod <pod> -o jsonpath=<path>`; empty when the pod is missing.
    pub fn jsonpath(&self, pod: &str, path: &str) -> String {
        let out = self
            .server
            .kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for AgentNode {
    fn drop(&mut self) {
        let _ = self
            .server
            .kubectl(&["delete", "pods", "--all", "--wait=false"]);
        wait_for(POD_DELETION_TIMEOUT, || {
            self.server
                .kubectl(&["get", "pods", "-o", "name"])
                .stdout
                .is_empty()
        });
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
        remove_engine_state(self.server.dir.path());
    }
}
