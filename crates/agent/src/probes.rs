//! Container probes and lifecycle hooks: exec (through the engine), httpGet and
//! tcpSocket (to the pod's IP from the host, or from inside the pod's network
//! namespace while the pod has no routable IP), run on the kubelet's schedule
//! (initialDelaySeconds, periodSeconds, timeoutSeconds, success and failure
//! thresholds). Startup gates the others; readiness feeds the Ready condition;
//! a failed liveness (or startup) probe asks the pod worker to restart the container.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ExecAction, HTTPGetAction, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pods::Engine;

/// Where a container's probes and hooks reach it.
#[derive(Clone)]
pub struct ProbeTarget {
    /// Runs exec actions.
    pub engine: Engine,
    /// The engine's container ID.
    pub container_id: String,
    /// The pod's network namespace, entered when there is no routable pod IP.
    pub netns: Option<PathBuf>,
    /// The pod's IP, when it has a routable one.
    pub pod_ip: Option<IpAddr>,
    /// The container's spec (for named ports).
    pub container: Container,
}

/// The outcome of one probe or hook run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The check passed.
    Success,
    /// It failed, with the reason shown in events and logs.
    Failure(String),
}

/// What the probes of one running container have concluded so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeResults {
    /// The startup probe has succeeded (true when there is none).
    pub started: bool,
    /// The readiness probe passes (true when there is none).
    pub ready: bool,
    /// Why the container must be restarted, when a liveness or startup probe gave up.
    pub restart: Option<String>,
}

/// The three probes of one container, running until cancelled.
pub struct Probers {
    /// Their shared conclusions.
    pub results: Arc<Mutex<ProbeResults>>,
    /// Stops them.
    pub cancel: CancellationToken,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Startup,
    Readiness,
    Liveness,
}

/// Starts the container's probes on `tasks`; `wake` is notified whenever a result changes.
pub fn spawn(
    tasks: &TaskTracker,
    target: ProbeTarget,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) -> Probers {
    let container = &target.container;
    let results = Arc::new(Mutex::new(ProbeResults {
        started: container.startup_probe.is_none(),
        ready: container.readiness_probe.is_none(),
        restart: None,
    }));
    let probes = [
        (Kind::Startup, container.startup_probe.clone()),
        (Kind::Readiness, container.readiness_probe.clone()),
        (Kind::Liveness, container.liveness_probe.clone()),
    ];
    for (kind, probe) in probes {
        let Some(probe) = probe else { continue };
        tasks.spawn(run_probe(
            kind,
            probe,
            target.clone(),
            results.clone(),
            wake.clone(),
            cancel.clone(),
        ));
    }
    Probers { results, cancel }
}

/// Consecutive results, as the kubelet counts them against the thresholds.
#[derive(Default)]
struct Streak {
    successes: i32,
    failures: i32,
}

impl Streak {
    fn record(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Success => {
                self.successes += 1;
                self.failures = 0;
            }
            Outcome::Failure(_) => {
                self.failures += 1;
                self.successes = 0;
            }
        }
    }
}

async fn run_probe(
    kind: Kind,
    probe: Probe,
    target: ProbeTarget,
    results: Arc<Mutex<ProbeResults>>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    let seconds = |value: Option<i32>, default: i32| {
        Duration::from_secs(value.unwrap_or(default).max(0) as u64)
    };
    let initial_delay = seconds(probe.initial_delay_seconds, 0);
    let period = seconds(probe.period_seconds, 10).max(Duration::from_secs(1));
    let timeout = seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
    let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = tokio::time::sleep(initial_delay) => {}
    }
    let mut streak = Streak::default();
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let started = lock(&results).started;
        if kind == Kind::Startup && started {
            return;
        }
        if kind != Kind::Startup && !started {
            continue;
        }
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            outcome = check(&probe, &target, timeout) => outcome,
        };
        streak.record(&outcome);
        let changed = {
            let mut results = lock(&results);
            let before = results.clone();
            match kind {
                Kind::Readiness if streak.successes >= success_threshold => results.ready = true,
                Kind::Readiness if streak.failures >= failure_threshold => results.ready = false,
                Kind::Startup if streak.successes >= 1 => results.started = true,
                Kind::Startup | Kind::Liveness if streak.failures >= failure_threshold => {
                    if let Outcome::Failure(reason) = &outcome {
                        let name = if kind == Kind::Startup {
                            "Startup"
                        } else {
                            "Liveness"
                        };
                        results.restart = Some(format!("{name} probe failed: {reason}"));
                    }
                }
                _ => {}
            }
            *results != before
        };
        if changed {
            wake.notify_one();
        }
        if lock(&results).restart.is_some() {
            return;
        }
    }
}

fn lock(results: &Mutex<ProbeResults>) -> std::sync::MutexGuard<'_, ProbeResults> {
    results
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs one probe once, failing it when it takes longer than `timeout`.
pub async fn check(probe: &Probe, target: &ProbeTarget, timeout: Duration) -> Outcome {
    if let Some(exec) = &probe.exec {
        run_exec(exec, target, timeout).await
    } else if let Some(http) = &probe.http_get {
        run_http(http, target, timeout).await
    } else if let Some(tcp) = &probe.tcp_socket {
        run_tcp(tcp, target, timeout).await
    } else {
        Outcome::Failure("probe has no handler".into())
    }
}

/// Runs an exec action in the container.
pub async fn run_exec(exec: &ExecAction, target: &ProbeTarget, timeout: Duration) -> Outcome {
    let command = exec.command.clone().unwrap_or_default();
    if command.is_empty() {
        return Outcome::Failure("exec action has no command".into());
    }
    match target
        .engine
        .exec(&target.container_id, &command, timeout)
        .await
    {
        Ok(output) if output.code == 0 => Outcome::Success,
        Ok(output) => Outcome::Failure(format!(
            "command {command:?} exited with {}: {}",
            output.code,
            output.text.trim()
        )),
        Err(error) => Outcome::Failure(error),
    }
}

/// Sends an HTTP GET; 200–399 passes, as upstream.
pub async fn run_http(http: &HTTPGetAction, target: &ProbeTarget, timeout: Duration) -> Outcome {
    let port = match resolve_port(&http.port, &target.container) {
        Ok(port) => port,
        Err(reason) => return Outcome::Failure(reason),
    };
    let path = http
        .path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    let headers: Vec<(String, String)> = http
        .http_headers
        .iter()
        .flatten()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let host_override = http.host.clone().filter(|h| !h.is_empty());
    let (netns, address) = destination(target, host_override.as_deref(), port);
    let result = in_namespace(netns, move || {
        let mut stream = TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes())?;
        let mut head = [0u8; 64];
        let mut read = 0;
        while read < 12 {
            let n = stream.read(&mut head[read..])?;
            if n == 0 {
                break;
            }
            read += n;
        }
        Ok(String::from_utf8_lossy(&head[..read]).into_owned())
    })
    .await;
    match result {
        Ok(head) => match http_status(&head) {
            Some(code) if (200..400).contains(&code) => Outcome::Success,
            Some(code) => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
            None => Outcome::Failure(format!("malformed HTTP response: {head:?}")),
        },
        Err(error) => Outcome::Failure(format!(
            "Get \"http://{address}{}\": {error}",
            http.path.as_deref().unwrap_or("/")
        )),
    }
}

/// Opens a TCP connection.
pub async fn run_tcp(tcp: &TCPSocketAction, target: &ProbeTarget, timeout: Duration) -> Outcome {
    let port = match resolve_port(&tcp.port, &target.container) {
        Ok(port) => port,
        Err(reason) => return Outcome::Failure(reason),
    };
    let (netns, address) = destination(target, tcp.host.as_deref().filter(|h| !h.is_empty()), port);
    match in_namespace(netns, move || {
        TcpStream::connect_timeout(&address, timeout).map(drop)
    })
    .await
    {
        Ok(()) => Outcome::Success,
        Err(error) => Outcome::Failure(format!("dial tcp {address}: {error}")),
    }
}

/// Where to connect: the given host or the pod IP from the host's namespace, or
/// loopback inside the pod's namespace when the pod has no routable IP.
fn destination(
    target: &ProbeTarget,
    host: Option<&str>,
    port: u16,
) -> (Option<PathBuf>, SocketAddr) {
    if let Some(ip) = host.and_then(|h| h.parse::<IpAddr>().ok()) {
        return (None, SocketAddr::new(ip, port));
    }
    match (target.pod_ip, &target.netns) {
        (Some(ip), _) => (None, SocketAddr::new(ip, port)),
        (None, netns) => (
            netns.clone(),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        ),
    }
}

/// A probe port: a number, or the name of one of the container's ports.
fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("couldn't find port {name:?} in the container"))
        }
    }
}

/// `HTTP/1.1 200 OK` -> 200.
fn http_status(head: &str) -> Option<u16> {
    let mut words = head.split_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

/// Runs blocking network I/O on a thread of its own, inside `netns` when given
/// (setns changes only the calling thread, which ends with the work).
async fn in_namespace<T: Send + 'static>(
    netns: Option<PathBuf>,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| {
            if let Some(path) = netns {
                let namespace = std::fs::File::open(&path)?;
                nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)?;
            }
            work()
        })();
        let _ = sender.send(result);
    });
    receiver
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("probe thread ended without a result")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container() -> Container {
        serde_json::from_value(
            json!({"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .unwrap()
    }

    #[test]
    fn ports_resolve_by_number_or_name() {
        let c = container();
        assert_eq!(resolve_port(&IntOrString::Int(80), &c), Ok(80));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("8081".into()), &c),
            Ok(8081)
        );
        assert!(resolve_port(&IntOrString::String("grpc".into()), &c).is_err());
        assert!(resolve_port(&IntOrString::Int(70000), &c).is_err());
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(http_status("HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(http_status("HTTP/1.1 404 Not Found"), Some(404));
        assert_eq!(http_status("garbage"), None);
    }

    #[test]
    fn streaks_reset_on_the_opposite_result() {
        let mut streak = Streak::default();
        streak.record(&Outcome::Failure("x".into()));
        streak.record(&Outcome::Failure("x".into()));
        assert_eq!((streak.successes, streak.failures), (0, 2));
        streak.record(&Outcome::Success);
        assert_eq!((streak.successes, streak.failures), (1, 0));
    }

    #[tokio::test]
    async fn tcp_and_http_checks_reach_a_local_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let host = Some("127.0.0.1".to_owned());
        let http: HTTPGetAction =
            serde_json::from_value(json!({"port": port, "path": "/healthz", "host": host}))
                .unwrap();
        let tcp: TCPSocketAction =
            serde_json::from_value(json!({"port": port, "host": host})).unwrap();
        let root = tempfile::tempdir().unwrap();
        let shim = gantry_runtime::ShimCommand {
            program: "/bin/false".into(),
            args: vec![],
        };
        let engine = Engine::open(&crate::AgentConfig::new("n", root.path(), shim)).unwrap();
        let target = ProbeTarget {
            engine,
            container_id: "none".into(),
            netns: None,
            pod_ip: None,
            container: container(),
        };
        assert_eq!(
            run_http(&http, &target, Duration::from_secs(5)).await,
            Outcome::Success
        );
        assert_eq!(
            run_tcp(&tcp, &target, Duration::from_secs(5)).await,
            Outcome::Success
        );
        server.join().unwrap();
        let closed: TCPSocketAction =
            serde_json::from_value(json!({"port": port, "host": host})).unwrap();
        assert!(matches!(
            run_tcp(&closed, &target, Duration::from_secs(5)).await,
            Outcome::Failure(_)
        ));
    }
}
