//! Pod startup latency: the time from a pod's create request to the watch seeing it
//! Ready, for 100 pods created at once on one node agent with the bridge pod network
//! and a pre-pulled image, next to Kubernetes' pod startup SLO (p99 <= 5 s). Also
//! the agent's resident memory, measured on a separate `gantry agent` process.
//!
//! Run with `cargo bench -p gantry --bench pod_startup` as root. Everything runs in a
//! network namespace of its own, so the host's network is untouched.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gantry_image::ImageStore;
use gantry_image::test_support::{BUSYBOX_TAG, import_busybox};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

const PODS: usize = 100;
const TIMEOUT: Duration = Duration::from_secs(300);

fn main() {
    let netns = format!("gantry-bench-{}", std::process::id());
    run(&netns, "ip", &["netns", "add", &netns]);
    let result = std::panic::catch_unwind(|| bench_in(&netns));
    run(&netns, "ip", &["netns", "delete", &netns]);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn run(what: &str, program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "{program} {args:?} ({what})"
    );
}

fn bench_in(netns: &str) {
    enter_netns(netns);
    run(netns, "ip", &["link", "set", "lo", "up"]);
    let root = tempfile::tempdir().expect("temp dir");
    import_busybox(&ImageStore::open(root.path()).expect("image store")).expect("busybox image");
    let mut server = Process::server(root.path());
    let mut agent = Process::agent(root.path(), server.port);
    // Pods' network namespaces are pinned under the root: unpin whatever is left.
    let _unmount = UnmountOnDrop(root.path().join("netns"));
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(measure(root.path(), agent.child.id()))
    }));
    agent.stop();
    server.stop();
    remove_containers(root.path());
    match outcome {
        Ok((latencies, rss)) => report(latencies, rss),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Moves this (still single-threaded) process into the namespace; every thread and
/// child started afterwards lives there too.
fn enter_netns(name: &str) {
    let file = std::fs::File::open(format!("/run/netns/{name}")).expect("netns file");
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

struct Process {
    child: Child,
    port: u16,
}

impl Process {
    fn server(root: &Path) -> Process {
        let mut child = gantry(root)
            .args(["server", "--disable-agent", "--bind-address", "127.0.0.1"])
            .args(["--https-port", "0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("gantry server");
        let stdout = child.stdout.take().expect("stdout");
        let port = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                line.strip_prefix("Serving on https://")
                    .and_then(|a| a.rsplit(':').next()?.parse().ok())
            })
            .expect("the server announces its port");
        Process { child, port }
    }

    fn agent(root: &Path, server_port: u16) -> Process {
        let child = gantry(root)
            .args([
                "agent",
                "--server",
                &format!("https://127.0.0.1:{server_port}"),
            ])
            .arg("--token-file")
            .arg(root.join("server/node-token"))
            .args(["--node-name", "bench", "--kubelet-port", "0"])
            .stdout(Stdio::null())
            .spawn()
            .expect("gantry agent");
        Process { child, port: 0 }
    }

    /// SIGTERM, then SIGKILL if it has not exited within 30 s.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

fn gantry(root: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gantry"));
    command.arg("--root").arg(root).env("RUST_LOG", "error");
    command
}

/// Creates the pods at once and times each from its create request to Ready;
/// returns the latencies and the agent's (current, peak) RSS in KiB.
async fn measure(root: &Path, agent_pid: u32) -> (Vec<Duration>, (u64, u64)) {
    let client = gantry_client::connect(&root.join("server/admin.kubeconfig"))
        .await
        .expect("admin client");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    wait_for_node(&pods).await;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn(watch_ready(pods.clone(), ready_tx));
    let mut created = HashMap::new();
    let mut creates = futures::stream::iter((0..PODS).map(|i| {
        let pods = pods.clone();
        async move {
            let name = format!("startup-{i}");
            let started = Instant::now();
            pods.create(&PostParams::default(), &pod(&name))
                .await
                .expect("pod created");
            (name, started)
        }
    }))
    .buffer_unordered(16);
    while let Some((name, started)) = creates.next().await {
        created.insert(name, started);
    }
    let mut latencies = Vec::with_capacity(PODS);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while latencies.len() < PODS {
        let (name, at) = tokio::time::timeout_at(deadline, ready_rx.recv())
            .await
            .expect("every pod becomes Ready in time")
            .expect("the watch runs");
        if let Some(started) = created.remove(&name) {
            latencies.push(at.duration_since(started));
        }
    }
    watch.abort();
    let rss = rss_kib(agent_pid);
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("pods deleted");
    tokio::time::timeout(TIMEOUT, async {
        while !pods
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the agent removes every pod");
    (latencies, rss)
}

async fn wait_for_node(pods: &Api<Pod>) {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(pods.clone().into());
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let ready = nodes
                .get_opt("bench")
                .await
                .ok()
                .flatten()
                .is_some_and(|n| n.spec.and_then(|s| s.pod_cidr).is_some());
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the node registers and gets a pod CIDR");
}

/// Sends each pod's name with the instant the watch first saw it Ready.
async fn watch_ready(pods: Api<Pod>, ready: tokio::sync::mpsc::UnboundedSender<(String, Instant)>) {
    let events = watcher(pods, watcher::Config::default()).applied_objects();
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let Ok(pod) = event else { continue };
        let is_ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if is_ready && ready.send((pod.name_any(), Instant::now())).is_err() {
            return;
        }
    }
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "sleep", "image": BUSYBOX_TAG, "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
            }],
        },
    }))
    .expect("pod manifest")
}

/// (VmRSS, VmHWM) of a process in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Lazily unmounts everything under a directory when dropped.
struct UnmountOnDrop(std::path::PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return;
        };
        for entry in entries.flatten() {
            let _ = nix::mount::umount2(&entry.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Removes whatever containers a failed run left behind.
fn remove_containers(root: &Path) {
    let listed = gantry(root).args(["ps", "-aq"]).output();
    let ids = listed
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for id in ids.split_whitespace() {
        let _ = gantry(root)
            .args(["rm", "-f", id])
            .stdout(Stdio::null())
            .status();
    }
}

fn report(mut latencies: Vec<Duration>, (rss, peak): (u64, u64)) {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    let secs = |d: Duration| d.as_secs_f64();
    println!("pod startup latency, {PODS} pods created at once, one node, image pre-pulled:");
    println!(
        "  gantry      p50 {:.2} s   p90 {:.2} s   p99 {:.2} s   max {:.2} s",
        secs(at(0.50)),
        secs(at(0.90)),
        secs(at(0.99)),
        secs(at(1.0))
    );
    println!("  Kubernetes SLO (pod startup, excluding image pull): p99 <= 5 s");
    println!(
        "agent RSS with {PODS} pods: {:.1} MiB (peak {:.1} MiB)",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
}
