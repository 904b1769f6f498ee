//! Pod startup latency: the time from a pod's create request to the watch seeing it
//! Ready, for 100 pods created at once on one node agent with the bridge pod network
//! and a pre-pulled image, next to Kubernetes' pod startup SLO (p99 <= 5 s). Also
//! the agent's resident memory, measured on a separate `gantry agent` process.
//!
//! Where the time goes: the bench's own watch sees each pod scheduled and Ready,
//! and the agent logs the stages of each pod's start (target
//! `gantry_agent::pods::startup`, see `gantry_agent::pods::startup`); the report
//! gives each stage's p50 and p99 and the stage that dominates the slowest pods.
//!
//! Run with `cargo bench -p gantry --bench pod_startup` as root. Everything runs in a
//! network namespace of its own, so the host's network is untouched.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use gantry_image::ImageStore;
use gantry_image::test_support::{BUSYBOX_TAG, import_busybox};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

const PODS: usize = 100;
const TIMEOUT: Duration = Duration::from_secs(300);
/// Kubernetes' scalability SLO for pod startup latency (stateless pods, image
/// pulls excluded), at the 99th percentile.
const SLO_P99: Duration = Duration::from_secs(5);
/// The agent's startup lines, and nothing else from it.
const AGENT_LOG_FILTER: &str = "error,gantry_agent::pods::startup=debug";

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
    let (mut agent, agent_log) = Process::agent(root.path(), server.port);
    // Pods' network namespaces are pinned under the root: unpin whatever is left.
    let _unmount = UnmountOnDrop(root.path().join("netns"));
    let load_before = load_average();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(measure(root.path(), agent.child.id()))
    }));
    let load_after = load_average();
    agent.stop();
    server.stop();
    let traces = agent_log.finish();
    remove_containers(root.path());
    match outcome {
        Ok((pods, rss)) => {
            report(&pods, rss);
            report_stages(&pods, &traces);
            println!("load average (1, 5, 15 min): before {load_before}, after {load_after}");
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
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

    /// The agent, logging its pods' startup stages to a pipe the returned
    /// reader drains.
    fn agent(root: &Path, server_port: u16) -> (Process, AgentLog) {
        let mut child = gantry(root)
            .args([
                "agent",
                "--server",
                &format!("https://127.0.0.1:{server_port}"),
            ])
            .arg("--token-file")
            .arg(root.join("server/node-token"))
            .args(["--node-name", "bench", "--kubelet-port", "0"])
            .env("RUST_LOG", AGENT_LOG_FILTER)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gantry agent");
        let log = AgentLog::read(child.stderr.take().expect("stderr"));
        (Process { child, port: 0 }, log)
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

/// One pod's milestones as this process saw them (wall clock, to line up with
/// the agent's).
#[derive(Clone, Debug)]
struct PodTimes {
    name: String,
    created: SystemTime,
    scheduled: Option<SystemTime>,
    ready: SystemTime,
}

impl PodTimes {
    fn latency(&self) -> Duration {
        self.ready.duration_since(self.created).unwrap_or_default()
    }
}

/// Creates the pods at once and times each from its create request to Ready;
/// returns their milestones and the agent's (current, peak) RSS in KiB.
async fn measure(root: &Path, agent_pid: u32) -> (Vec<PodTimes>, (u64, u64)) {
    let client = gantry_client::connect(&root.join("server/admin.kubeconfig"))
        .await
        .expect("admin client");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    wait_for_node(&pods).await;
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn(watch_milestones(pods.clone(), seen_tx));
    let mut created = HashMap::new();
    let mut creates = futures::stream::iter((0..PODS).map(|i| {
        let pods = pods.clone();
        async move {
            let name = format!("startup-{i}");
            let started = SystemTime::now();
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
    let mut scheduled = HashMap::new();
    let mut done = Vec::with_capacity(PODS);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while done.len() < PODS {
        let milestone = tokio::time::timeout_at(deadline, seen_rx.recv())
            .await
            .expect("every pod becomes Ready in time")
            .expect("the watch runs");
        match milestone {
            Milestone::Scheduled(name, at) => {
                scheduled.entry(name).or_insert(at);
            }
            Milestone::Ready(name, ready) => {
                if let Some(created) = created.remove(&name) {
                    let scheduled = scheduled.get(&name).copied();
                    done.push(PodTimes {
                        name,
                        created,
                        scheduled,
                        ready,
                    });
                }
            }
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
    (done, rss)
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

/// What the bench's watch saw happen to a pod, and when.
enum Milestone {
    Scheduled(String, SystemTime),
    Ready(String, SystemTime),
}

/// Sends each pod's name whenever the watch sees it bound to a node or Ready
/// (the receiver keeps the first of each).
async fn watch_milestones(pods: Api<Pod>, seen: tokio::sync::mpsc::UnboundedSender<Milestone>) {
    let events = watcher(pods, watcher::Config::default()).applied_objects();
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let Ok(pod) = event else { continue };
        let now = SystemTime::now();
        let is_ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let is_bound = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
        let milestone = if is_ready {
            Milestone::Ready(pod.name_any(), now)
        } else if is_bound {
            Milestone::Scheduled(pod.name_any(), now)
        } else {
            continue;
        };
        if seen.send(milestone).is_err() {
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

fn report(pods: &[PodTimes], (rss, peak): (u64, u64)) {
    let mut latencies: Vec<Duration> = pods.iter().map(PodTimes::latency).collect();
    latencies.sort();
    let at = |q: f64| secs(percentile(&latencies, q));
    println!("pod startup latency, {PODS} pods created at once, one node, image pre-pulled:");
    println!(
        "  gantry      p50 {:.2} s   p90 {:.2} s   p99 {:.2} s   max {:.2} s",
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0)
    );
    let p99 = percentile(&latencies, 0.99);
    println!(
        "  Kubernetes scalability SLO: pod startup latency (excluding image pulls) p99 <= {} s: {} (p99 {:.2} s)",
        SLO_P99.as_secs(),
        if p99 <= SLO_P99 { "met" } else { "MISSED" },
        secs(p99)
    );
    println!(
        "agent RSS with {PODS} pods: {:.1} MiB (peak {:.1} MiB)",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The nearest-rank `q` quantile of sorted values.
fn percentile<T: Copy>(sorted: &[T], q: f64) -> T {
    sorted[((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1)]
}

/// How many of the slowest pods the "slowest" column averages over.
const SLOWEST: usize = 10;

/// Each stage's p50 and p99 over the pods, its mean over the slowest pods, and
/// the stage that dominates those.
fn report_stages(pods: &[PodTimes], traces: &HashMap<String, AgentTrace>) {
    let mut breakdowns: Vec<(Duration, Vec<(String, f64)>)> = pods
        .iter()
        .filter_map(|pod| Some((pod.latency(), breakdown(pod, traces.get(&pod.name)?))))
        .collect();
    println!(
        "where the time goes, ms (agent startup lines for {} of {} pods; \"slowest\" = mean of the {SLOWEST} slowest):",
        breakdowns.len(),
        pods.len()
    );
    if breakdowns.is_empty() {
        return;
    }
    breakdowns.sort_by_key(|(latency, _)| std::cmp::Reverse(*latency));
    let mut names: Vec<String> = Vec::new();
    for (_, stages) in &breakdowns {
        for (name, _) in stages {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let slowest = &breakdowns[..SLOWEST.min(breakdowns.len())];
    println!(
        "  {:<12} {:>8} {:>8} {:>8}",
        "stage", "p50", "p99", "slowest"
    );
    let mut dominant = (String::new(), 0.0);
    for name in &names {
        let of = |stages: &[(String, f64)]| {
            stages
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0.0, |(_, ms)| *ms)
        };
        let mut all: Vec<f64> = breakdowns.iter().map(|(_, s)| of(s)).collect();
        all.sort_by(f64::total_cmp);
        let slow = slowest.iter().map(|(_, s)| of(s)).sum::<f64>() / slowest.len() as f64;
        println!(
            "  {name:<12} {:>8.1} {:>8.1} {slow:>8.1}",
            percentile(&all, 0.50),
            percentile(&all, 0.99)
        );
        if slow > dominant.1 {
            dominant = (name.clone(), slow);
        }
    }
    let slow_latency = slowest.iter().map(|(l, _)| secs(*l)).sum::<f64>() / slowest.len() as f64;
    println!(
        "  dominant stage of the slowest pods: {} ({:.0} ms of {:.0} ms)",
        dominant.0,
        dominant.1,
        slow_latency * 1000.0
    );
}

/// A pod's latency split into stages: scheduling and delivery to the agent as
/// the bench's watch saw them, the agent's own stages, and the status reaching
/// the bench's watch.
fn breakdown(pod: &PodTimes, trace: &AgentTrace) -> Vec<(String, f64)> {
    let ms = |later: SystemTime, earlier: SystemTime| {
        later
            .duration_since(earlier)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let mut stages = Vec::new();
    let scheduled = pod.scheduled.unwrap_or(pod.created);
    stages.push(("schedule".to_owned(), ms(scheduled, pod.created)));
    stages.push(("to agent".to_owned(), ms(trace.seen, scheduled)));
    stages.extend(trace.stages.iter().cloned());
    let agent_ms: f64 = trace.stages.iter().map(|(_, ms)| ms).sum();
    let status_written = trace.seen + Duration::from_secs_f64(agent_ms / 1000.0);
    stages.push(("to watch".to_owned(), ms(pod.ready, status_written)));
    stages
}

/// One pod's startup line from the agent.
#[derive(Clone, Debug)]
struct AgentTrace {
    seen: SystemTime,
    stages: Vec<(String, f64)>,
}

/// Reads the agent's stderr on a thread of its own (so the pipe never fills),
/// keeping its pods' startup lines by pod name.
struct AgentLog {
    reader: std::thread::JoinHandle<()>,
    traces: Arc<Mutex<HashMap<String, AgentTrace>>>,
}

impl AgentLog {
    fn read(stderr: std::process::ChildStderr) -> AgentLog {
        let traces: Arc<Mutex<HashMap<String, AgentTrace>>> = Arc::default();
        let sink = traces.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((pod, trace)) = parse_startup_line(&line) {
                    sink.lock().expect("traces").insert(pod, trace);
                } else if !line.contains("pod started") {
                    eprintln!("agent: {line}");
                }
            }
        });
        AgentLog { reader, traces }
    }

    /// Once the agent has exited: its startup lines by pod name. Waits (a
    /// while) for the pipe's end, which a leftover child holding it may delay.
    fn finish(self) -> HashMap<String, AgentTrace> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::mem::take(&mut *self.traces.lock().expect("traces"))
    }
}

/// `... pod started pod="default/startup-1" seen_unix_ms=... total_ms=...
/// stages=sandbox:1.2,cgroup:0.3` -> ("startup-1", trace).
fn parse_startup_line(line: &str) -> Option<(String, AgentTrace)> {
    if !line.contains("pod started") {
        return None;
    }
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
            .map(|value| value.trim_matches('"'))
    };
    let pod = field("pod")?;
    let name = pod.rsplit('/').next()?.to_owned();
    let seen_ms: u64 = field("seen_unix_ms")?.parse().ok()?;
    let stages = field("stages")?
        .split(',')
        .filter_map(|stage| {
            let (name, ms) = stage.split_once(':')?;
            Some((name.to_owned(), ms.parse().ok()?))
        })
        .collect();
    let trace = AgentTrace {
        seen: SystemTime::UNIX_EPOCH + Duration::from_millis(seen_ms),
        stages,
    };
    Some((name, trace))
}
