//! Network-namespace "hosts" for end-to-end tests that need a real pod network.
//!
//! A [`NetnsHost`] is a named network namespace standing in for one machine: its
//! own interfaces, routes, ports and nftables, so a `gantry server` with the bridge
//! pod network (bridge `gantry0`, table `gantry`, kubelet port 10250) can run in each
//! of several hosts at once without touching the real machine's network. A [`Lan`]
//! connects hosts through a bridge in a "switch" namespace; a [`ClusterHost`] runs
//! `gantry server` in a host and a [`JoinedHost`] runs `gantry agent` joined to it.
//!
//! Processes enter a host with `nsenter --net` rather than `ip netns exec`: the
//! latter also unshares the mount namespace and remounts /sys, which hides the
//! cgroup v1 hierarchies under /sys/fs/cgroup from the container engine, and keeps
//! its mounts (pod namespaces, container root filesystems) out of the test's sight,
//! so the test could not clean them up.
//!
//! Every type cleans up in `Drop`, so a failing assertion leaks nothing: processes
//! are stopped, containers removed, mounts and cgroups released, namespaces deleted.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;

use super::{KUBECTL, run_kubectl, succeeded, wait_for};

/// How long a stopped `gantry` process gets to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a started server gets to listen, and a node to become Ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a removed container's cgroup gets to empty before its pod's cgroup
/// is removed.
const CGROUP_RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// The API server's port inside a host (each host has its own port space).
pub const API_PORT: u16 = 6443;

/// Runs `program` with `args`, panicking with its stderr unless it succeeds.
fn run_ok(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running {program}: {err}"));
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A short random suffix, so namespaces of tests running side by side never clash.
fn random_suffix() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() as u32)
}

/// A network namespace `gt-<random>` (made with `ip netns add`, loopback up),
/// deleted on drop after every process still inside has been killed.
pub struct NetnsHost {
    name: String,
}

impl NetnsHost {
    /// Creates the namespace with only `lo`, up.
    pub fn new() -> NetnsHost {
        let name = format!("gt-{}", random_suffix());
        run_ok("ip", &["netns", "add", &name]);
        let host = NetnsHost { name };
        host.ip(&["link", "set", "lo", "up"]);
        host
    }

    /// The namespace's name under /run/netns.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, for `setns`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// A command that runs `program` inside this host's network namespace (and
    /// nothing else of it: mounts and cgroups stay the machine's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        command
    }

    /// Runs `args[0]` with the rest of `args` inside the host and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        let (program, rest) = args.split_first().expect("a program to run");
        self.command(program)
            .args(rest)
            .output()
            .unwrap_or_else(|err| panic!("running {program} in {}: {err}", self.name))
    }

    /// Like [`run`](Self::run), requiring success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "{args:?} in {}: {}{}",
            self.name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts `args[0]` with the rest of `args` in the background inside the host;
    /// it is killed when the returned guard is dropped.
    pub fn spawn(&self, args: &[&str]) -> HostProcess {
        let (program, rest) = args.split_first().expect("a program to run");
        let child = self
            .command(program)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {program} in {}: {err}", self.name));
        HostProcess(child)
    }

    /// Runs `ip -n <host> args...`, requiring success.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run_ok("ip", &full)
    }

    /// The process ids still inside the namespace.
    fn pids(&self) -> Vec<i32> {
        let output = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output();
        let Ok(output) = output else {
            return Vec::new();
        };
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect()
    }
}

impl Default for NetnsHost {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetnsHost {
    fn drop(&mut self) {
        // Whatever a test started in here and did not stop (a helper server, a
        // container monitor of a failed start) goes with the host.
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        wait_for(STOP_TIMEOUT, || self.pids().is_empty());
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A background process in a host, killed and reaped when dropped.
pub struct HostProcess(Child);

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An Ethernet segment: a bridge in its own "switch" namespace, with a veth to
/// each attached host. Hosts on it reach each other directly (one /24).
pub struct Lan {
    switch: NetnsHost,
    prefix_len: u8,
}

impl Lan {
    /// The bridge inside the switch namespace.
    const BRIDGE: &'static str = "lan";

    /// An empty segment whose hosts' addresses are /`prefix_len`.
    pub fn new(prefix_len: u8) -> Lan {
        let switch = NetnsHost::new();
        switch.ip(&["link", "add", Self::BRIDGE, "type", "bridge"]);
        switch.ip(&["link", "set", Self::BRIDGE, "up"]);
        Lan { switch, prefix_len }
    }

    /// A new host plugged into the segment: its `eth0` has `address`, up.
    pub fn host(&self, address: Ipv4Addr) -> NetnsHost {
        let host = NetnsHost::new();
        let port = format!("p-{}", &host.name()[3..]);
        self.switch.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host.name(),
        ]);
        self.switch
            .ip(&["link", "set", &port, "master", Self::BRIDGE, "up"]);
        let cidr = format!("{address}/{}", self.prefix_len);
        host.ip(&["addr", "add", &cidr, "dev", "eth0"]);
        host.ip(&["link", "set", "eth0", "up"]);
        host
    }
}

/// A `gantry` process (server or agent) inside a host, with its engine root;
/// dropping it stops the process and removes everything it left in the engine.
struct GantryProcess {
    child: Child,
    root: TempDir,
    /// Lines the process printed on stdout, read by a thread so it never blocks.
    stdout: mpsc::Receiver<String>,
    node_name: String,
    node_ip: Ipv4Addr,
    /// Last, so the namespace goes only after everything in it.
    host: NetnsHost,
}

impl GantryProcess {
    /// Starts `gantry --root <new dir> <args>` in `host`, `busybox:test` already in
    /// its engine, its log (stderr) in `<root>/gantry.log`.
    fn start(host: NetnsHost, node_name: String, node_ip: Ipv4Addr, args: &[&str]) -> Self {
        let root = tempfile::tempdir().expect("engine root");
        let store = gantry_image::ImageStore::open(root.path()).expect("image store");
        gantry_image::test_support::import_busybox(&store).expect("busybox imports");
        let log = std::fs::File::create(root.path().join("gantry.log")).expect("log file");
        let mut child = host
            .command(env!("CARGO_BIN_EXE_gantry"))
            .arg("--root")
            .arg(root.path())
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("gantry starts");
        let output = child.stdout.take().expect("stdout is piped");
        let (lines_tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        GantryProcess {
            child,
            root,
            stdout,
            node_name,
            node_ip,
            host,
        }
    }

    /// Waits for a stdout line starting with `prefix`; returns the rest.
    fn wait_line(&self, prefix: &str) -> String {
        loop {
            match self.stdout.recv_timeout(START_TIMEOUT) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.to_string();
                    }
                }
                Err(_) => panic!("gantry never printed {prefix:?}; log:\n{}", self.log_tail()),
            }
        }
    }

    /// The end of the process's log, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.root.path().join("gantry.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM, then SIGKILL if it does not exit within [`STOP_TIMEOUT`].
    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let exited = wait_for(STOP_TIMEOUT, || !matches!(self.child.try_wait(), Ok(None)));
        if !exited {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for GantryProcess {
    fn drop(&mut self) {
        self.stop();
        remove_engine_state(self.root.path());
    }
}

/// `gantry server` with its node agent and the bridge pod network, inside its own
/// host; kubectl and other commands run there too.
pub struct ClusterHost {
    process: GantryProcess,
    kubeconfig: PathBuf,
}

impl ClusterHost {
    /// Starts the server in `host`, listening on `node_ip` (an address of the host,
    /// in its certificate) and advertising it as the node's InternalIP; returns once
    /// its Node is Ready.
    pub fn start(host: NetnsHost, node_ip: Ipv4Addr) -> ClusterHost {
        let node_name = format!("node-{}", &host.name()[3..]);
        let ip = node_ip.to_string();
        let port = API_PORT.to_string();
        let process = GantryProcess::start(
            host,
            node_name.clone(),
            node_ip,
            &[
                "server",
                "--bind-address",
                &ip,
                "--https-port",
                &port,
                "--tls-san",
                &ip,
                "--node-ip",
                &ip,
                "--node-name",
                &node_name,
            ],
        );
        process.wait_line("Serving on https://");
        let kubeconfig = process.root.path().join("server/admin.kubeconfig");
        let cluster = ClusterHost {
            process,
            kubeconfig,
        };
        cluster.wait_node_ready(&node_name);
        cluster
    }

    /// The URL agents join.
    pub fn url(&self) -> String {
        format!("https://{}:{API_PORT}", self.process.node_ip)
    }

    /// The join token's file.
    pub fn token_file(&self) -> PathBuf {
        self.process.root.path().join("server/node-token")
    }

    /// The name of the server's own Node.
    pub fn node_name(&self) -> &str {
        &self.process.node_name
    }

    /// The server's address (its Node's InternalIP).
    pub fn node_ip(&self) -> Ipv4Addr {
        self.process.node_ip
    }

    /// The host the server runs in.
    pub fn host(&self) -> &NetnsHost {
        &self.process.host
    }

    /// The engine root (images, containers, pod network state).
    pub fn root(&self) -> &Path {
        self.process.root.path()
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// Runs kubectl as admin inside the host.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_input(args, None)
    }

    /// Runs kubectl as admin inside the host with `input` on its stdin.
    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut command = self.host().command(KUBECTL);
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        run_kubectl(command, input)
    }

    /// Runs kubectl, requires success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(&format!("kubectl {args:?}"), self.kubectl(args))
    }

    /// `kubectl apply -f -` with `manifest`, requiring success.
    pub fn apply(&self, manifest: &str) -> String {
        let out = self.kubectl_with_input(&["apply", "-f", "-"], Some(manifest));
        succeeded("apply", out)
    }

    /// Runs a command as the host itself (e.g. `wget` against a pod IP).
    pub fn run_in_host(&self, args: &[&str]) -> Output {
        self.host().run(args)
    }

    /// Waits until Node `name` exists and reports Ready.
    pub fn wait_node_ready(&self, name: &str) {
        let path = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";
        let ready = wait_for(START_TIMEOUT, || {
            let out = self.kubectl(&["get", "node", name, "-o", path]);
            out.status.success() && out.stdout == b"True"
        });
        assert!(
            ready,
            "node {name} is not Ready; server log:\n{}",
            self.log_tail()
        );
    }
}

/// `gantry agent` joined to a [`ClusterHost`] from its own host, with the bridge
/// pod network.
pub struct JoinedHost {
    process: GantryProcess,
}

impl JoinedHost {
    /// Starts the agent in `host` (reaching the server on `node_ip`'s network),
    /// joins with the server's token and returns once its Node is Ready.
    pub fn join(host: NetnsHost, node_ip: Ipv4Addr, server: &ClusterHost) -> JoinedHost {
        let node_name = format!("node-{}", &host.name()[3..]);
        let ip = node_ip.to_string();
        let url = server.url();
        let token_file = server.token_file();
        let process = GantryProcess::start(
            host,
            node_name.clone(),
            node_ip,
            &[
                "agent",
                "--server",
                &url,
                "--token-file",
                token_file.to_str().expect("a UTF-8 path"),
                "--node-name",
                &node_name,
                "--node-ip",
                &ip,
            ],
        );
        let joined = JoinedHost { process };
        server.wait_node_ready(&node_name);
        joined
    }

    /// The agent's Node name.
    pub fn node_name(&self) -> &str {
        &self.process.node_name
    }

    /// The agent's address (its Node's InternalIP).
    pub fn node_ip(&self) -> Ipv4Addr {
        self.process.node_ip
    }

    /// The host the agent runs in.
    pub fn host(&self) -> &NetnsHost {
        &self.process.host
    }

    /// The end of the agent's log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// Shim command line for the engine at `root`, as the agent starts it.
pub fn shim_command(root: &Path) -> gantry_runtime::ShimCommand {
    gantry_runtime::ShimCommand {
        program: env!("CARGO_BIN_EXE_gantry").into(),
        args: vec!["--root".into(), root.into(), "container-shim".into()],
    }
}

/// Removes everything a stopped agent leaves in the engine at `root`: every
/// container (killed, its cgroups and root filesystem released), the pinned pod
/// network namespaces (loopback-only ones in `netns/`, pod-network ones in
/// `network/netns/`), and any mount still below `root`.
pub fn remove_engine_state(root: &Path) {
    let mut ids = Vec::new();
    if let Ok(runtime) = gantry_runtime::Runtime::open(root, shim_command(root)) {
        for container in runtime.list().unwrap_or_default() {
            let _ = runtime.remove(&container.config.id, true);
            ids.push(gantry_runtime::cgroups_path(&container.config));
        }
    }
    for dir in [root.join("netns"), root.join("network/netns")] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let _ = gantry_runtime::remove_network_namespace(&entry.path());
            }
        }
    }
    remove_container_cgroups(&ids);
    unmount_below(root);
}

/// Removes the containers' cgroups (`/gantry/<id>`, or `<pod cgroup>/<id>` for
/// pods) in every hierarchy that the engine did not already release, and the
/// pod cgroups (`/kubepods/.../pod<uid>`) a killed agent left behind.
fn remove_container_cgroups(paths: &[String]) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let hierarchies: Vec<PathBuf> = hierarchies.flatten().map(|e| e.path()).collect();
    for path in paths {
        let relative = Path::new(path.trim_start_matches('/'));
        for hierarchy in &hierarchies {
            // A killed container's monitor may still be reaping it: its cgroup
            // can only go once the last process has left.
            let container = hierarchy.join(relative);
            wait_for(CGROUP_RELEASE_TIMEOUT, || {
                let _ = std::fs::remove_dir(&container);
                !container.exists()
            });
            let pod = relative.parent().filter(|parent| {
                parent.starts_with("kubepods")
                    && parent
                        .file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with("pod"))
            });
            if let Some(pod) = pod {
                let _ = std::fs::remove_dir(hierarchy.join(pod));
            }
        }
    }
}

/// Detaches every mount at or below `root`, deepest first.
fn unmount_below(root: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape_mount_point(point)))
        .filter(|point| point.starts_with(root))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    for point in points {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_point(escaped: &str) -> String {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
