//! Serves only the discovery and OpenAPI documents over plain HTTP on
//! 127.0.0.1 and runs the real kubectl against them: proof that kubectl
//! accepts what the API server will serve, before the API server exists.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use gantry_api::registry::{self, GroupVersion};
use gantry_api::{discovery, openapi};
use serde_json::{Value, json};

const KUBECTL: &str = "/usr/bin/kubectl";

/// A throwaway HTTP/1.1 server answering with the documents, plus canned
/// objects for GETs and a record of writes, so kubectl's use of the
/// documents when writing can be observed. Dropping it stops the accept loop
/// and joins its thread.
struct DocumentServer {
    address: String,
    state: Arc<ServerState>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct ServerState {
    stopping: AtomicBool,
    /// Objects returned for GETs of their exact path.
    objects: Mutex<HashMap<String, Value>>,
    /// Every non-GET request received.
    writes: Mutex<Vec<RecordedRequest>>,
}

#[derive(Debug, Clone)]
struct RecordedRequest {
    method: String,
    target: String,
    content_type: String,
    body: String,
}

impl DocumentServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let address = listener.local_addr().expect("local address").to_string();
        let state = Arc::new(ServerState::default());
        let shared = Arc::clone(&state);
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let state = Arc::clone(&shared);
                    std::thread::spawn(move || serve_connection(stream, &state));
                }
            }
        });
        DocumentServer {
            address,
            state,
            acceptor: Some(acceptor),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn put_object(&self, path: &str, object: Value) {
        self.state
            .objects
            .lock()
            .expect("lock")
            .insert(path.to_string(), object);
    }

    fn writes(&self) -> Vec<RecordedRequest> {
        self.state.writes.lock().expect("lock").clone()
    }
}

impl Drop for DocumentServer {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        // Wake the blocked accept so the loop sees the flag.
        let _ = TcpStream::connect(&self.address);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Answers one request and closes the connection.
fn serve_connection(stream: TcpStream, state: &ServerState) {
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
    let length = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut words = request_line.split_whitespace();
    let method = words.next().unwrap_or("GET").to_string();
    let target = words.next().unwrap_or("/").to_string();
    let path = target.split('?').next().unwrap_or("/");
    let accept = headers
        .get("accept")
        .map(String::as_str)
        .unwrap_or_default();
    let stored = state.objects.lock().expect("lock").get(path).cloned();
    let (status, content_type, response) = if method != "GET" {
        let recorded = RecordedRequest {
            method: method.clone(),
            target: target.clone(),
            content_type: headers.get("content-type").cloned().unwrap_or_default(),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        state.writes.lock().expect("lock").push(recorded);
        match stored {
            Some(object) => ("200 OK", "application/json", bytes(object)),
            None => ("201 Created", "application/json", body),
        }
    } else if path == "/openapi/v2" && accept.contains(openapi::V2_PROTOBUF_MEDIA_TYPE) {
        (
            "200 OK",
            openapi::V2_PROTOBUF_CONTENT_TYPE,
            openapi::v2_document_protobuf().to_vec(),
        )
    } else if let Some(object) = stored {
        ("200 OK", "application/json", bytes(object))
    } else {
        match route(path) {
            Some(body) => ("200 OK", "application/json", body),
            None => ("404 Not Found", "application/json", not_found(path)),
        }
    };
    let mut stream = stream;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&response));
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
    registry::group_versions()
        .into_iter()
        .find(|gv| gv.group == group && gv.version == version)
}

fn route(path: &str) -> Option<Vec<u8>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api"] => Some(bytes(discovery::api_versions("127.0.0.1"))),
        ["api", version] => {
            discovery::api_resource_list(served_group_version("", version)?).map(bytes)
        }
        ["apis"] => Some(bytes(discovery::api_group_list())),
        ["apis", group] => discovery::api_group(group).map(bytes),
        ["apis", group, version] => {
            discovery::api_resource_list(served_group_version(group, version)?).map(bytes)
        }
        ["version"] => Some(bytes(discovery::version_info())),
        ["openapi", "v2"] => Some(openapi::v2_document().to_vec()),
        ["openapi", "v3"] => Some(bytes(openapi::v3_root())),
        ["openapi", "v3", rest @ ..] => {
            openapi::v3_group_version(&rest.join("/")).map(<[u8]>::to_vec)
        }
        _ => None,
    }
}

/// Runs kubectl against `server` with an empty kubeconfig and a private
/// cache, and returns its standard output.
fn kubectl(server: &DocumentServer, home: &Path, args: &[&str]) -> String {
    kubectl_with_stderr(server, home, args).0
}

/// Like [`kubectl`], returning standard output and standard error.
fn kubectl_with_stderr(server: &DocumentServer, home: &Path, args: &[&str]) -> (String, String) {
    assert!(
        Path::new(KUBECTL).exists(),
        "{KUBECTL} is required for this test"
    );
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
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {stderr}\n{stdout}"
    );
    (stdout, stderr.into_owned())
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
    assert!(
        out.contains("template\t<PodTemplateSpec> -required-"),
        "{out}"
    );
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
    let out = kubectl(
        &server,
        home.path(),
        &[
            "explain",
            "--output=plaintext-openapiv2",
            "deploy.spec.replicas",
        ],
    );
    assert!(out.contains("Number of desired pods"), "{out}");
}

#[test]
fn kubectl_lists_api_resources() {
    let server = DocumentServer::start();
    let home = tempfile::tempdir().expect("temp dir");
    let out = kubectl(&server, home.path(), &["api-resources"]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.contains(&vec![
            "deployments",
            "deploy",
            "apps/v1",
            "true",
            "Deployment"
        ]),
        "{out}"
    );
    assert!(
        rows.contains(&vec!["pods", "po", "v1", "true", "Pod"]),
        "{out}"
    );
    assert!(
        rows.contains(&vec!["nodes", "no", "v1", "false", "Node"]),
        "{out}"
    );
    assert!(
        rows.contains(&vec!["leases", "coordination.k8s.io/v1", "true", "Lease"]),
        "{out}"
    );
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
    assert_eq!(
        version["serverVersion"]["gitVersion"],
        discovery::version_info()["gitVersion"]
    );
}

/// `kubectl apply` to an existing object computes a strategic merge patch.
/// It takes the merge keys from the OpenAPI v3 document when that document
/// declares the PATCH operation and its media type, and checks the same
/// document for `fieldValidation` before sending `fieldValidation=Strict`.
#[test]
fn kubectl_apply_patches_with_openapi_v3_merge_keys_and_field_validation() {
    let server = DocumentServer::start();
    let home = tempfile::tempdir().expect("temp dir");
    let manifest = |image: &str, extra_containers: Value| {
        let mut containers = vec![json!({"name": "web", "image": image})];
        containers.extend(extra_containers.as_array().cloned().unwrap_or_default());
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": containers},
                },
            },
        })
    };
    let applied = manifest("nginx:1.0", json!([]));
    let mut live = applied.clone();
    live["metadata"]["resourceVersion"] = "7".into();
    live["metadata"]["uid"] = "0b0a7e7c-0000-4000-8000-000000000001".into();
    live["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/last-applied-configuration": applied.to_string()});
    server.put_object("/apis/apps/v1/namespaces/default/deployments/web", live);

    let wanted = manifest("nginx:1.1", json!([{"name": "log", "image": "busybox"}]));
    let file = home.path().join("deploy.json");
    std::fs::write(&file, wanted.to_string()).expect("write manifest");
    let file = file.display().to_string();
    let (out, stderr) = kubectl_with_stderr(&server, home.path(), &["apply", "-v=5", "-f", &file]);
    assert!(
        out.contains("deployment.apps/web configured"),
        "{out}\n{stderr}"
    );
    assert!(
        !stderr.contains("OpenAPI V3"),
        "kubectl could not use the v3 document:\n{stderr}"
    );

    let writes = server.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    let patch = &writes[0];
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.content_type, "application/strategic-merge-patch+json");
    assert!(
        patch.target.contains("fieldValidation=Strict"),
        "{}",
        patch.target
    );
    let body: Value = serde_json::from_str(&patch.body).expect("patch is JSON");
    let spec = &body["spec"]["template"]["spec"];
    // Only a merge key turns the containers list into a keyed merge with an
    // element order directive.
    assert_eq!(
        spec["$setElementOrder/containers"],
        json!([{"name": "web"}, {"name": "log"}]),
        "{body}"
    );
    let containers = spec["containers"].as_array().expect("containers patched");
    assert!(
        containers.contains(&json!({"name": "web", "image": "nginx:1.1"})),
        "{body}"
    );
}

/// Every served resource resolves in kubectl (discovery) and has a schema
/// kubectl finds by its group, version and kind (OpenAPI v3), down to the
/// deepest field.
#[test]
fn kubectl_explains_every_served_resource() {
    let server = DocumentServer::start();
    let home = tempfile::tempdir().expect("temp dir");
    for r in registry::RESOURCES {
        let qualified = if r.group_version.group.is_empty() {
            r.plural.to_string()
        } else {
            format!("{}.{}", r.plural, r.group_version.group)
        };
        let out = kubectl(
            &server,
            home.path(),
            &["explain", &qualified, "--recursive"],
        );
        assert!(out.contains(&format!("KIND:       {}", r.kind)), "{out}");
        assert!(out.contains("DESCRIPTION:"), "{out}");
        assert!(out.contains("metadata\t<ObjectMeta>"), "{qualified}: {out}");
    }
}

/// kubectl leaves field validation to servers whose OpenAPI v3 document
/// offers `fieldValidation`: it sends unknown fields on and asks the server
/// to reject (`--validate=strict`, the default) or warn about them.
#[test]
fn kubectl_create_delegates_field_validation_to_the_server() {
    let server = DocumentServer::start();
    let home = tempfile::tempdir().expect("temp dir");
    let manifest = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"mode": "fast"},
        "bogusField": 1,
    });
    let file = home.path().join("cm.json");
    std::fs::write(&file, manifest.to_string()).expect("write manifest");
    let file = file.display().to_string();

    kubectl(&server, home.path(), &["create", "-f", &file]);
    kubectl(
        &server,
        home.path(),
        &["create", "--validate=warn", "-f", &file],
    );

    let writes = server.writes();
    assert_eq!(writes.len(), 2, "{writes:?}");
    for (write, mode) in writes.iter().zip(["Strict", "Warn"]) {
        assert_eq!(write.method, "POST");
        assert!(
            write
                .target
                .starts_with("/api/v1/namespaces/default/configmaps?"),
            "{}",
            write.target
        );
        assert!(
            write.target.contains(&format!("fieldValidation={mode}")),
            "{}",
            write.target
        );
        assert!(
            write.body.contains("bogusField"),
            "unknown fields reach the server: {}",
            write.body
        );
    }
}
