//! Serves only the discovery and OpenAPI documents over plain HTTP on
//! 127.0.0.1 and runs the real kubectl against them: proof that kubectl
//! accepts what the API server will serve, before the API server exists.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use gantry_api::registry::{self, GroupVersion};
use gantry_api::{discovery, openapi};
use serde_json::{Value, json};

const KUBECTL: &str = "/usr/bin/kubectl";

/// A throwaway HTTP/1.1 server answering GET requests for the documents.
/// Dropping it stops the accept loop and joins its thread.
struct DocumentServer {
    address: String,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl DocumentServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let address = listener.local_addr().expect("local address").to_string();
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    std::thread::spawn(move || serve_connection(stream));
                }
            }
        });
        DocumentServer { address, stopping, acceptor: Some(acceptor) }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for DocumentServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the blocked accept so the loop sees the flag.
        let _ = TcpStream::connect(&self.address);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Answers one request and closes the connection.
fn serve_connection(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut accept = String::new();
    let mut header = String::new();
    while reader.read_line(&mut header).unwrap_or(0) > 0 && header != "\r\n" {
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("accept") {
                accept = value.trim().to_string();
            }
        }
        header.clear();
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/");
    let wants_protobuf = accept.contains(openapi::V2_PROTOBUF_MEDIA_TYPE);
    let (status, content_type, body) = match (path, wants_protobuf) {
        ("/openapi/v2", true) => {
            ("200 OK", openapi::V2_PROTOBUF_CONTENT_TYPE, openapi::v2_document_protobuf().to_vec())
        }
        _ => match route(path) {
            Some(body) => ("200 OK", "application/json", body),
            None => ("404 Not Found", "application/json", not_found(path)),
        },
    };
    let mut stream = stream;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
    let _ = stream.shutdown(Shutdown::Both);
}

fn bytes(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).expect("serialise")
}

fn not_found(path: &str) -> Vec<u8> {
    bytes(json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": format!("the server could not find the requested resource ({path})"),
        "reason": "NotFound", "code": 404,
    }))
}

fn served_group_version(group: &str, version: &str) -> Option<GroupVersion> {
    registry::group_versions().into_iter().find(|gv| gv.group == group && gv.version == version)
}

fn route(path: &str) -> Option<Vec<u8>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api"] => Some(bytes(discovery::api_versions("127.0.0.1"))),
        ["api", version] => discovery::api_resource_list(served_group_version("", version)?).map(bytes),
        ["apis"] => Some(bytes(discovery::api_group_list())),
        ["apis", group] => discovery::api_group(group).map(bytes),
        ["apis", group, version] => {
            discovery::api_resource_list(served_group_version(group, version)?).map(bytes)
        }
        ["version"] => Some(bytes(discovery::version_info())),
        ["openapi", "v2"] => Some(openapi::v2_document().to_vec()),
        ["openapi", "v3"] => Some(bytes(openapi::v3_root())),
        ["openapi", "v3", rest @ ..] => openapi::v3_group_version(&rest.join("/")).map(<[u8]>::to_vec),
        _ => None,
    }
}

/// Runs kubectl against `server` with an empty kubeconfig and a private cache.
fn kubectl(server: &DocumentServer, home: &Path, args: &[&str]) -> String {
    assert!(Path::new(KUBECTL).exists(), "{KUBECTL} is required for this test");
    let cache = home.join("cache");
    let output: Output = Command::new("timeout")
        .arg("60")
        .arg(KUBECTL)
        .arg(format!("--server={}", server.url()))
        .arg(format!("--cache-dir={}", cache.display()))
        .args(args)
        .env("HOME", home)
        .env("KUBECONFIG", home.join("kubeconfig"))
        .output()
        .expect("run kubectl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kubectl {args:?} failed: {stderr}\n{stdout}");
    stdout
}

#[test]
fn kubectl_explains_deployment_spec_from_openapi_v3() {
    let server = DocumentServer::start();
    let home = tempfile::tempdir().expect("temp dir");
    let out = kubectl(&server, home.path(), &["explain", "deployment.spec"]);
    assert!(out.contains("GROUP:      apps"), "{out}");
    assert!(out.contains("KIND:       Deployment"), "{out}");
    assert!(out.contains("replicas\t<integer>"), "{out}");
    assert!(out.contains("Number of desired pods"), "{out}");
    assert!(out.contains("template\t<PodTemplateSpec> -required-"), "{out}");
}

#[test]
fn kubectl_explains_pod_containers() {
    let server = DocumentServer::start();
    let home = tempfile::tempdir().expect("temp dir");
    let out = kubectl(&server, home.path(), &["explain", "pods.spec.containers"]);
    assert!(out.contains("KIND:       Pod"), "{out}");
    assert!(out.contains("FIELD: containers <[]Container>"), "{out}");
    assert!(out.contains("image\t<string>"), "{out}");
    assert!(out.contains("Container image name"), "{out}");
}

#[test]
fn kubectl_explains_from_openapi_v2_too() {
    let server = DocumentServer::start();
    let home = tempfile::tempdir().expect("temp dir");
    let out = kubectl(&server, home.path(), &["explain", "--output=plaintext-openapiv2", "deploy.spec.replicas"]);
    assert!(out.contains("Number of desired pods"), "{out}");
}

#[test]
fn kubectl_lists_api_resources() {
    let server = DocumentServer::start();
    let home = tempfile::tempdir().expect("temp dir");
    let out = kubectl(&server, home.path(), &["api-resources"]);
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(rows.contains(&vec!["deployments", "deploy", "apps/v1", "true", "Deployment"]), "{out}");
    assert!(rows.contains(&vec!["pods", "po", "v1", "true", "Pod"]), "{out}");
    assert!(rows.contains(&vec!["nodes", "no", "v1", "false", "Node"]), "{out}");
    assert!(rows.contains(&vec!["leases", "coordination.k8s.io/v1", "true", "Lease"]), "{out}");
    // Subresources are not resources of their own.
    assert!(!out.contains("pods/status"), "{out}");
    let served = out.lines().count() - 1;
    assert_eq!(served, registry::RESOURCES.len(), "{out}");
}

#[test]
fn kubectl_accepts_version_info() {
    let server = DocumentServer::start();
    let home = tempfile::tempdir().expect("temp dir");
    let out = kubectl(&server, home.path(), &["version", "-o", "json"]);
    let version: Value = serde_json::from_str(&out).expect("kubectl prints JSON");
    assert_eq!(version["serverVersion"]["minor"], "33");
    assert_eq!(version["serverVersion"]["gitVersion"], discovery::version_info()["gitVersion"]);
}
