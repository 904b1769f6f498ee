//! Serves discovery and `Table` lists built by `gantry_api::table` over plain
//! HTTP on 127.0.0.1 and runs the real kubectl against them: proof that
//! `kubectl get` prints our tables the way it prints a real cluster's.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use gantry_api::registry::{self, GroupVersion};
use gantry_api::{discovery, table};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

const KUBECTL: &str = "/usr/bin/kubectl";

/// Answers discovery and, for collection paths, a `Table` of the canned
/// objects (or the plain list when kubectl does not ask for a table).
/// Dropping it stops the accept loop and joins its thread.
struct TableServer {
    address: String,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl TableServer {
    fn start(objects: Vec<Value>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let address = listener.local_addr().expect("local address").to_string();
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let objects = Arc::new(objects);
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let objects = Arc::clone(&objects);
                    std::thread::spawn(move || serve(stream, &objects));
                }
            }
        });
        TableServer {
            address,
            stopping,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for TableServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.address);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn serve(stream: TcpStream, objects: &[Value]) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = HashMap::new();
    let mut header = String::new();
    while reader.read_line(&mut header).unwrap_or(0) > 0 && header != "\r\n" {
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
        header.clear();
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/");
    let wants_table = headers
        .get("accept")
        .is_some_and(|a| a.contains("as=Table"));
    let (status, body) = match route(path, objects, wants_table) {
        Some(body) => ("200 OK", body),
        None => (
            "404 Not Found",
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
        ),
    };
    let body = serde_json::to_vec(&body).expect("serialise");
    let mut stream = stream;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&body));
    let _ = stream.shutdown(Shutdown::Both);
}

fn group_version(group: &str, version: &str) -> Option<GroupVersion> {
    registry::group_versions()
        .into_iter()
        .find(|gv| gv.group == group && gv.version == version)
}

fn route(path: &str, objects: &[Value], wants_table: bool) -> Option<Value> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segments.as_slice() {
        ["api"] => return Some(discovery::api_versions("127.0.0.1")),
        ["apis"] => return Some(discovery::api_group_list()),
        ["version"] => return Some(discovery::version_info()),
        ["apis", group] => return discovery::api_group(group),
        ["api", version] => return discovery::api_resource_list(group_version("", version)?),
        ["apis", group, version] => {
            return discovery::api_resource_list(group_version(group, version)?);
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, plural) = match rest {
        ["namespaces", namespace, plural] => (Some(*namespace), *plural),
        [plural] => (None, *plural),
        _ => return None,
    };
    let resource = registry::find(group, version, plural)?;
    let selected: Vec<Value> = objects
        .iter()
        .filter(|o| o["kind"] == resource.kind)
        .filter(|o| namespace.is_none_or(|ns| o["metadata"]["namespace"] == ns))
        .cloned()
        .collect();
    if wants_table {
        Some(table::to_table(resource, &selected, SystemTime::now()))
    } else {
        Some(
            json!({"kind": resource.list_kind(), "apiVersion": resource.group_version.api_version(), "metadata": {}, "items": selected}),
        )
    }
}

/// An RFC 3339 timestamp `minutes` ago; whole minutes above ten print
/// stably as `Nm` for a full minute, so the test cannot race the clock.
fn minutes_ago(minutes: u64) -> String {
    let then = SystemTime::now() - Duration::from_secs(minutes * 60);
    let secs = then
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after epoch")
        .as_secs();
    Timestamp::from_second(i64::try_from(secs).expect("fits"))
        .expect("in range")
        .to_string()
}

/// Runs kubectl against `server` with an empty kubeconfig and a private
/// cache; returns its output with column padding collapsed to ` | `.
fn kubectl(server: &TableServer, args: &[&str]) -> Vec<String> {
    assert!(
        Path::new(KUBECTL).exists(),
        "{KUBECTL} is required for this test"
    );
    let home = tempfile::tempdir().expect("temp dir");
    let output = Command::new("timeout")
        .arg("60")
        .arg(KUBECTL)
        .arg(format!("--server=http://{}", server.address))
        .arg(format!(
            "--cache-dir={}",
            home.path().join("cache").display()
        ))
        .args(args)
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("kubeconfig"))
        .output()
        .expect("run kubectl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|line| {
            line.trim_end()
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

fn sample_objects() -> Vec<Value> {
    let created = minutes_ago(20);
    vec![
        json!({"kind": "Pod", "metadata": {"name": "web", "namespace": "default", "creationTimestamp": created, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "nginx"}], "nodeName": "node1"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.42.0.5"}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": created}}}]}}),
        json!({"kind": "Pod", "metadata": {"name": "crash", "namespace": "default", "creationTimestamp": created},
            "spec": {"containers": [{"name": "app", "image": "busybox"}], "nodeName": "node1"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.42.0.6"}],
                "containerStatuses": [{"name": "app", "ready": false, "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": minutes_ago(15)}}}]}}),
        json!({"kind": "Pod", "metadata": {"name": "job-x", "namespace": "batch", "creationTimestamp": created},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}}),
        json!({"kind": "Service", "metadata": {"name": "web", "namespace": "default", "creationTimestamp": created},
            "spec": {"type": "NodePort", "clusterIP": "10.43.0.10", "selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443, "protocol": "TCP"}]}}),
        json!({"kind": "Deployment", "metadata": {"name": "web", "namespace": "default", "creationTimestamp": created},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}),
    ]
}

#[test]
fn kubectl_get_pods_prints_status_restarts_and_wide_columns() {
    let server = TableServer::start(sample_objects());
    assert_eq!(
        kubectl(&server, &["get", "pods", "-n", "default"]),
        [
            "NAME | READY | STATUS | RESTARTS | AGE",
            "web | 1/1 | Running | 0 | 20m",
            "crash | 0/1 | CrashLoopBackOff | 4 (15m ago) | 20m",
        ]
    );
    let wide = kubectl(&server, &["get", "pods", "-n", "default", "-o", "wide"]);
    assert_eq!(
        wide[0],
        "NAME | READY | STATUS | RESTARTS | AGE | IP | NODE | NOMINATED NODE | READINESS GATES"
    );
    assert_eq!(
        wide[1],
        "web | 1/1 | Running | 0 | 20m | 10.42.0.5 | node1 | <none> | <none>"
    );
}

#[test]
fn kubectl_uses_row_metadata_for_namespaces_and_labels() {
    let server = TableServer::start(sample_objects());
    let all = kubectl(&server, &["get", "pods", "-A"]);
    assert_eq!(all[0], "NAMESPACE | NAME | READY | STATUS | RESTARTS | AGE");
    assert!(
        all.contains(&"batch | job-x | 0/1 | Completed | 0 | 20m".to_string()),
        "{all:#?}"
    );
    let labelled = kubectl(&server, &["get", "pods", "-n", "default", "--show-labels"]);
    assert_eq!(
        labelled[0],
        "NAME | READY | STATUS | RESTARTS | AGE | LABELS"
    );
    assert_eq!(labelled[1], "web | 1/1 | Running | 0 | 20m | app=web");
}

#[test]
fn kubectl_get_services_and_deployments() {
    let server = TableServer::start(sample_objects());
    assert_eq!(
        kubectl(&server, &["get", "svc", "-n", "default", "-o", "wide"]),
        [
            "NAME | TYPE | CLUSTER-IP | EXTERNAL-IP | PORT(S) | AGE | SELECTOR",
            "web | NodePort | 10.43.0.10 | <none> | 80/TCP,443:30443/TCP | 20m | app=web",
        ]
    );
    assert_eq!(
        kubectl(&server, &["get", "deployments", "-n", "default"]),
        [
            "NAME | READY | UP-TO-DATE | AVAILABLE | AGE",
            "web | 2/3 | 3 | 2 | 20m"
        ]
    );
}

#[test]
fn kubectl_get_nodes_namespaces_events_and_config() {
    let created = minutes_ago(30);
    let server = TableServer::start(vec![
        json!({"kind": "Node", "metadata": {"name": "node1", "creationTimestamp": created,
                "labels": {"node-role.kubernetes.io/control-plane": "true"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "kernelVersion": "6.1.0-28-amd64", "containerRuntimeVersion": "gantry://0.1.0"}}}),
        json!({"kind": "Namespace", "metadata": {"name": "default", "creationTimestamp": created}, "status": {"phase": "Active"}}),
        json!({"kind": "Event", "metadata": {"name": "web.1", "namespace": "default", "creationTimestamp": created},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "type": "Normal", "reason": "Scheduled", "message": "Successfully assigned default/web to node1",
            "source": {"component": "default-scheduler"}, "firstTimestamp": created, "lastTimestamp": created, "count": 1}),
        json!({"kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "default", "creationTimestamp": created},
            "data": {"a": "1", "b": "2"}}),
        json!({"kind": "Secret", "metadata": {"name": "token", "namespace": "default", "creationTimestamp": created},
            "type": "Opaque", "data": {"t": "eA=="}}),
    ]);
    assert_eq!(
        kubectl(&server, &["get", "nodes", "-o", "wide"]),
        [
            "NAME | STATUS | ROLES | AGE | VERSION | INTERNAL-IP | EXTERNAL-IP | OS-IMAGE | KERNEL-VERSION | CONTAINER-RUNTIME",
            "node1 | Ready | control-plane | 30m | v1.33.0 | 10.0.0.2 | <none> | Debian GNU/Linux 12 (bookworm) | 6.1.0-28-amd64 | gantry://0.1.0",
        ]
    );
    assert_eq!(
        kubectl(&server, &["get", "ns"]),
        ["NAME | STATUS | AGE", "default | Active | 30m"]
    );
    assert_eq!(
        kubectl(&server, &["get", "events", "-n", "default"]),
        [
            "LAST SEEN | TYPE | REASON | OBJECT | MESSAGE",
            "30m | Normal | Scheduled | pod/web | Successfully assigned default/web to node1",
        ]
    );
    assert_eq!(
        kubectl(&server, &["get", "cm", "-n", "default"]),
        ["NAME | DATA | AGE", "settings | 2 | 30m"]
    );
    assert_eq!(
        kubectl(&server, &["get", "secrets", "-n", "default"]),
        ["NAME | TYPE | DATA | AGE", "token | Opaque | 1 | 30m"]
    );
}
