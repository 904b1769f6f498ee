//! `kubectl port-forward` end to end: the real kubectl speaks SPDY/3.1 (tunnelled in a
//! WebSocket by default, plain SPDY when its WebSocket support is switched off) to the
//! API server, which relays it to the node agent, which connects to the port inside
//! the pod's network namespace. The node has no pod network, so the pod's localhost
//! is reachable in no other way.

use crate::common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::agent_node::AgentNode;
use common::{KUBECTL, Server, wait_for};

const MINUTE: Duration = Duration::from_secs(60);
/// How long one fetch through the forwarded port may take before it counts as a hang.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The file the pod serves.
const FILE_CONTENT: &str = "forwarded file\n";
/// The size of the pod's large file: many SPDY frames and WebSocket messages.
const BIG_FILE_BYTES: usize = 1 << 20;

/// A node with pod `web` serving `/file.txt` and `/big` on its localhost port 80 only.
fn node_with_web_pod() -> AgentNode {
    let node = AgentNode::start();
    let script = format!(
        "mkdir -p /www && printf '{}' > /www/file.txt && \
         dd if=/dev/zero of=/www/big bs=1024 count={} && \
         exec httpd -f -p 127.0.0.1:80 -h /www",
        FILE_CONTENT.escape_default(),
        BIG_FILE_BYTES / 1024
    );
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:test
    imagePullPolicy: Never
    command: ["sh", "-c", {script:?}]
"#,
        node = node.name,
    );
    node.server.apply(&manifest);
    node.server
        .ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);
    // A failed forward ends kubectl's session, so wait until httpd really listens.
    let serving = wait_for(MINUTE, || {
        let out = node.server.kubectl(&[
            "exec",
            "web",
            "--",
            "wget",
            "-qO-",
            "http://127.0.0.1/file.txt",
        ]);
        out.status.success() && out.stdout == FILE_CONTENT.as_bytes()
    });
    assert!(serving, "httpd serves inside the pod");
    node
}

/// A running `kubectl port-forward`, killed on drop.
struct PortForward {
    child: Child,
    /// The local port kubectl listens on.
    port: u16,
    stderr: Arc<Mutex<String>>,
}

impl PortForward {
    /// Runs `kubectl port-forward pod/<pod> :<remote>` and waits for the local port it
    /// prints. `websockets: false` makes kubectl use plain SPDY.
    fn start(server: &Server, pod: &str, remote: u16, websockets: bool) -> PortForward {
        let mut child = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            // -v=6 logs each request's verb, URL and status: which transport was used.
            .args(["port-forward", "-v=6", "--address", "127.0.0.1"])
            .arg(format!("pod/{pod}"))
            .arg(format!(":{remote}"))
            .env(
                "KUBECTL_PORT_FORWARD_WEBSOCKETS",
                if websockets { "true" } else { "false" },
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = stderr_pipe.read(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..n]);
                sink.lock().expect("stderr lock").push_str(&text);
            }
        });
        let (lines, printed) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            // Read to the end even when nobody listens any more: kubectl dies of
            // SIGPIPE when its stdout ("Handling connection for ...") is closed.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = lines.send(line);
            }
        });
        let mut forward = PortForward {
            child,
            port: 0,
            stderr,
        };
        // "Forwarding from 127.0.0.1:40123 -> 80"
        while let Ok(line) = printed.recv_timeout(MINUTE) {
            let port = line
                .strip_prefix("Forwarding from 127.0.0.1:")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|port| port.parse().ok());
            if let Some(port) = port {
                forward.port = port;
                return forward;
            }
        }
        panic!("kubectl printed no local port: {}", forward.stderr());
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).expect("connects");
        stream
            .set_read_timeout(Some(FETCH_TIMEOUT))
            .expect("read timeout");
        stream
    }

    /// Whether kubectl upgraded `/portforward` with `verb` (GET: WebSocket, POST: SPDY).
    fn upgraded_with(&self, verb: &str) -> bool {
        self.stderr().lines().any(|line| {
            line.contains(&format!("verb=\"{verb}\""))
                && line.contains("/pods/web/portforward")
                && line.contains("101 Switching Protocols")
        })
    }

    /// Whether kubectl exits within `timeout`.
    fn exits_within(&mut self, timeout: Duration) -> bool {
        wait_for(timeout, || matches!(self.child.try_wait(), Ok(Some(_))))
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends an HTTP/1.0 GET on `stream` (the server closes after answering).
fn request(stream: &mut TcpStream, path: &str) {
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request sent");
}

/// Reads the whole response: the status line and the body.
fn response(forward: &PortForward, stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut bytes = Vec::new();
    if let Err(error) = stream.read_to_end(&mut bytes) {
        panic!(
            "the response ends (no hang): {error}; kubectl: {}",
            forward.stderr()
        );
    }
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "a complete head: {:?}; kubectl: {}",
                String::from_utf8_lossy(&bytes),
                forward.stderr()
            )
        });
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, bytes[split + 4..].to_vec())
}

fn fetch(forward: &PortForward, path: &str) -> (String, Vec<u8>) {
    let mut stream = forward.connect();
    request(&mut stream, path);
    response(forward, &mut stream)
}

/// Fetches through `forward` repeatedly, on two connections at once, and a large file.
fn exercise(forward: &PortForward) {
    for _ in 0..3 {
        let (status, body) = fetch(forward, "/file.txt");
        assert!(status.contains("200"), "{status}; {}", forward.stderr());
        assert_eq!(body, FILE_CONTENT.as_bytes());
    }
    // Both connections are open before either is used, then answered in reverse order.
    let mut first = forward.connect();
    let mut second = forward.connect();
    request(&mut second, "/file.txt");
    let (_, second_body) = response(forward, &mut second);
    request(&mut first, "/file.txt");
    let (_, first_body) = response(forward, &mut first);
    assert_eq!(first_body, FILE_CONTENT.as_bytes());
    assert_eq!(second_body, FILE_CONTENT.as_bytes());

    let (status, body) = fetch(forward, "/big");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.len(), BIG_FILE_BYTES);
    assert!(body.iter().all(|byte| *byte == 0));
}

#[test]
fn port_forward_reaches_the_pods_localhost_over_websocket_and_spdy() {
    let node = node_with_web_pod();
    let tunnelled = PortForward::start(&node.server, "web", 80, true);
    exercise(&tunnelled);
    assert!(tunnelled.upgraded_with("GET"), "{}", tunnelled.stderr());
    let plain = PortForward::start(&node.server, "web", 80, false);
    exercise(&plain);
    assert!(plain.upgraded_with("POST"), "{}", plain.stderr());
    // Both sessions stay usable side by side.
    assert_eq!(fetch(&tunnelled, "/file.txt").1, FILE_CONTENT.as_bytes());
}

#[test]
fn port_forward_to_a_closed_port_fails_instead_of_hanging() {
    let node = node_with_web_pod();
    let mut forward = PortForward::start(&node.server, "web", 81, true);
    let mut stream = forward.connect();
    request(&mut stream, "/file.txt");
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    assert!(
        matches!(read, Ok(0)) || read.is_err() && answer.is_empty(),
        "no answer from a closed port: {read:?} {answer:?}"
    );
    // kubectl reports the kubelet's error and gives up on the session.
    assert!(forward.exits_within(MINUTE), "kubectl exits");
    let stderr = forward.stderr();
    assert!(
        stderr.contains("error forwarding port 81 to pod default/web")
            && stderr.contains("refused"),
        "{stderr}"
    );
    let missing = node
        .server
        .kubectl(&["port-forward", "pod/nothing-here", ":80"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}
