//! `kubectl attach` and `kubectl run -i` end to end: pods created with `stdin: true`
//! (and `tty: true`) keep their stdin open in the container's monitor, and the agent
//! relays the client's input, the live output and terminal sizes through the
//! monitor's stdio socket.

use crate::common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::agent_node::AgentNode;
use common::{KUBECTL, Server, wait_for};

const MINUTE: Duration = Duration::from_secs(60);

/// kubectl on a pseudo-terminal of its own, as at a user's terminal: it is the
/// session leader with the terminal as its controlling tty, so resizing the
/// terminal sends it SIGWINCH.
pub struct KubectlOnTerminal {
    child: Child,
    master: File,
    output: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl KubectlOnTerminal {
    /// Runs `kubectl args` for `server` on a `rows` x `cols` terminal.
    pub fn spawn(server: &Server, args: &[&str], rows: u16, cols: u16) -> KubectlOnTerminal {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave = |pty: &OwnedFd| Stdio::from(pty.try_clone().expect("dup the pty"));
        let mut command = Command::new(KUBECTL);
        command
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .args(args)
            .stdin(slave(&pty.slave))
            .stdout(slave(&pty.slave))
            .stderr(slave(&pty.slave));
        // SAFETY: setsid and ioctl are async-signal-safe; fd 0 is the pty's slave.
        unsafe {
            command.pre_exec(|| {
                if nix::libc::setsid() < 0 || nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("kubectl runs");
        drop(pty.slave);
        let master = File::from(pty.master);
        let output = Arc::new(Mutex::new(String::new()));
        let mut source = master.try_clone().expect("dup the pty master");
        let sink = Arc::clone(&output);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once kubectl and everything it started closed the terminal.
            while let Ok(n @ 1..) = source.read(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]);
                sink.lock().expect("output lock").push_str(&text);
            }
        });
        KubectlOnTerminal {
            child,
            master,
            output,
            reader: Some(reader),
        }
    }

    /// Everything kubectl wrote so far.
    pub fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    /// Waits until the output contains `text`.
    pub fn expect(&self, text: &str) {
        assert!(
            wait_for(MINUTE, || self.output().contains(text)),
            "never saw {text:?} in:\n{}",
            self.output()
        );
    }

    /// Types `text` at the terminal.
    pub fn type_text(&mut self, text: &str) {
        self.master
            .write_all(text.as_bytes())
            .expect("write to the terminal");
    }

    /// Resizes the terminal (the kernel sends kubectl SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize we own; the master is open.
        let done =
            unsafe { nix::libc::ioctl(self.master.as_raw_fd(), nix::libc::TIOCSWINSZ, &size) };
        assert_eq!(done, 0, "resize: {}", std::io::Error::last_os_error());
    }

    /// Waits for kubectl to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let mut status = None;
        let exited = wait_for(MINUTE, || {
            status = self.child.try_wait().expect("kubectl status");
            status.is_some()
        });
        assert!(exited, "kubectl did not exit:\n{}", self.output());
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        status.expect("exited")
    }
}

impl Drop for KubectlOnTerminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pod `name` on `node` running `command` with stdin open (and a terminal when `tty`).
fn start_stdin_pod(node: &AgentNode, name: &str, command: &str, tty: bool) {
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:test
    imagePullPolicy: Never
    command: [{command:?}]
    stdin: true
    tty: {tty}
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
}

/// `kubectl attach -i` with piped stdio; its stdout comes back line by line.
fn attach_with_pipes(server: &Server, pod: &str) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(["attach", "-i", pod])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl attach runs");
    let stdout = child.stdout.take().expect("piped");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (child, received)
}

/// Reads lines until one equals `expected`.
fn expect_line(lines: &mpsc::Receiver<String>, expected: &str) {
    loop {
        match lines.recv_timeout(MINUTE) {
            Ok(line) if line == expected => return,
            Ok(_) => continue,
            Err(error) => panic!("no line {expected:?}: {error}"),
        }
    }
}

#[test]
fn attach_writes_to_stdin_and_reads_the_echo_while_logs_keep_it() {
    let node = AgentNode::start();
    start_stdin_pod(&node, "echo", "cat", false);

    // Without stdinOnce, stdin stays open between sessions.
    for text in ["first session", "second session"] {
        let (mut attach, lines) = attach_with_pipes(&node.server, "echo");
        let mut stdin = attach.stdin.take().expect("piped");
        // kubectl only starts reading its stdin once the stream is up; what it reads
        // earlier still goes out, in order, when it is.
        writeln!(stdin, "{text}").expect("kubectl reads stdin");
        expect_line(&lines, text);
        let _ = attach.kill();
        let _ = attach.wait();
    }

    let logs = node.server.ok(&["logs", "echo"]);
    assert_eq!(logs, "first session\nsecond session\n");
    assert_eq!(node.jsonpath("echo", "{.status.phase}"), "Running");
}

#[test]
fn attach_to_a_terminal_gets_its_input_and_sizes() {
    let node = AgentNode::start();
    start_stdin_pod(&node, "term", "sh", true);

    let mut attach = KubectlOnTerminal::spawn(&node.server, &["attach", "-it", "term"], 33, 101);
    attach.expect("If you don't see a command prompt");
    // The arithmetic keeps the typed command's echo from matching.
    attach.type_text(
        "until [ \"$(stty size)\" = '33 101' ]; do usleep 100000; done; echo sized-$((30+3))\n",
    );
    attach.expect("sized-33");
    attach.resize(40, 120);
    attach.type_text(
        "until [ \"$(stty size)\" = '40 120' ]; do usleep 100000; done; echo resized-$((40+2))\n",
    );
    attach.expect("resized-42");
    attach.type_text("exit\n");
    let status = attach.wait();
    assert!(status.success(), "{status:?}:\n{}", attach.output());
    assert!(wait_for(MINUTE, || {
        node.jsonpath("term", "{.status.phase}") == "Succeeded"
    }));
}

#[test]
fn kubectl_run_interactive_returns_the_output_and_removes_the_pod() {
    let node = AgentNode::start();
    let overrides = format!(r#"{{"spec":{{"nodeName":"{}"}}}}"#, node.name);
    let out = node.server.kubectl_with_input(
        &[
            "run",
            "runner",
            "-i",
            "--rm",
            "--restart=Never",
            "--image=busybox:test",
            "--image-pull-policy=Never",
            &format!("--overrides={overrides}"),
            "--",
            "sh",
        ],
        Some("echo hello from $((6*7))\nexit 0\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("hello from 42"), "{stdout}");
    assert!(
        wait_for(MINUTE, || node
            .server
            .kubectl(&["get", "pod", "runner", "-o", "name"])
            .stdout
            .is_empty()),
        "kubectl run --rm deletes the pod"
    );
}
