//! Shared by the integration tests that start a real `gantry server` and drive it
//! with the real kubectl.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod agent_node;
pub mod fake_kubelet;
pub mod hosts;
pub mod services;
pub mod web;

pub const KUBECTL: &str = "/usr/bin/kubectl";

/// A running `gantry server`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub dir: TempDir,
    pub port: u16,
}

impl Server {
    /// A control-plane-only server (no node agent): for tests of the API, the scheduler
    /// and the controllers, which must not touch the host's network or run containers.
    pub fn start() -> Server {
        Self::start_with(&["--disable-agent"])
    }

    /// A server with extra `gantry server` flags (e.g. none, to run the local node agent).
    pub fn start_with(flags: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::launch(dir, 0, flags)
    }

    /// Restarts a control-plane-only server on its old data directory and port.
    pub fn start_in(dir: TempDir, port: u16) -> Server {
        Self::launch(dir, port, &["--disable-agent"])
    }

    fn launch(dir: TempDir, port: u16, flags: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["--root"])
            .arg(dir.path())
            .args([
                "server",
                "--bind-address",
                "127.0.0.1",
                "--https-port",
                &port.to_string(),
            ])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gantry server starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("server announces its address")
                .expect("readable stdout");
            if let Some(address) = line.strip_prefix("Serving on https://") {
                break address
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("a port");
            }
        };
        Server { child, dir, port }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("server/admin.kubeconfig")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_input(args, None)
    }

    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut command = Command::new(KUBECTL);
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args);
        run_kubectl(command, input)
    }

    /// Runs kubectl, requires success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(&format!("kubectl {args:?}"), self.kubectl(args))
    }

    pub fn apply(&self, manifest: &str) -> String {
        let out = self.kubectl_with_input(&["apply", "-f", "-"], Some(manifest));
        succeeded("apply", out)
    }

    /// Stops the server abruptly and hands back its data directory.
    pub fn kill(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a prepared kubectl `command` with `input` on its stdin; collects its output.
pub fn run_kubectl(mut command: Command, input: Option<&str>) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    if let Some(input) = input {
        stdin
            .write_all(input.as_bytes())
            .expect("kubectl reads stdin");
    }
    drop(stdin);
    child.wait_with_output().expect("kubectl finishes")
}

/// Requires `out` (of `what`) to be a success and returns its stdout.
pub fn succeeded(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}
