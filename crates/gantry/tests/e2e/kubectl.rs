//! The real kubectl against a real `gantry server` process.
//!
//! Every test starts its own server on a free loopback port with its own
//! data directory, drives it with `/usr/bin/kubectl`, and asserts what
//! kubectl prints.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{KUBECTL, Server, wait_for};

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n";

fn app_manifest(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: {image}
        env: [{{name: MODE, value: prod}}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
data:
  color: blue
---
apiVersion: v1
kind: Secret
metadata:
  name: credentials
  namespace: shop
data:
  password: aHVudGVyMg==
"#
    )
}

#[test]
fn apply_creates_then_reports_unchanged_then_configures() {
    let server = Server::start();
    assert_eq!(server.apply(NAMESPACE).trim(), "namespace/shop created");
    let created = server.apply(&app_manifest("busybox:1.0"));
    for line in ["deployment.apps/web created", "service/web created", "configmap/settings created", "secret/credentials created"] {
        assert!(created.contains(line), "{created}");
    }
    let again = server.apply(&app_manifest("busybox:1.0"));
    assert!(again.contains("deployment.apps/web unchanged") && again.contains("configmap/settings unchanged"), "{again}");
    let changed = server.apply(&app_manifest("busybox:2.0"));
    assert!(changed.contains("deployment.apps/web configured"), "{changed}");
    assert!(changed.contains("service/web unchanged"), "{changed}");
    let image = server.ok(&["get", "deploy", "web", "-n", "shop", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.metadata.generation}"]);
    assert_eq!(image, "busybox:2.0 2");

    let table = server.ok(&["get", "deploy,svc,cm,secret", "-n", "shop"]);
    assert!(table.contains("NAME                  READY   UP-TO-DATE   AVAILABLE   AGE"), "{table}");
    assert!(table.contains("deployment.apps/web   0/2"), "{table}");
    assert!(table.contains("TYPE        CLUSTER-IP") && table.contains("80/TCP"), "{table}");
    assert!(table.contains("configmap/settings   1"), "{table}");
    assert!(table.contains("secret/credentials   Opaque   1"), "{table}");

    let ip = server.ok(&["get", "svc", "web", "-n", "shop", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(ip.starts_with("10.43.") && ip != "10.43.0.1", "allocated from the service CIDR: {ip}");
    assert_eq!(server.ok(&["get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"]), "10.43.0.1");
    assert_eq!(server.ok(&["get", "serviceaccount", "-n", "shop", "-o", "name"]).trim(), "serviceaccount/default");
    let clash = format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: clash\n  namespace: shop\nspec:\n  clusterIP: {ip}\n  ports: [{{port: 80}}]\n");
    let refused = server.kubectl_with_input(&["apply", "-f", "-"], Some(&clash));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("provided IP is already allocated"));

    let yaml = server.ok(&["get", "cm", "settings", "-n", "shop", "-o", "yaml"]);
    assert!(yaml.contains("color: blue") && yaml.contains("resourceVersion:") && yaml.contains("uid:"), "{yaml}");
    let json: serde_json::Value =
        serde_json::from_str(&server.ok(&["get", "secret", "credentials", "-n", "shop", "-o", "json"])).expect("JSON output");
    assert_eq!(json["data"]["password"], "aHVudGVyMg==");
    assert_eq!(json["type"], "Opaque");
}

#[test]
fn label_annotate_patch_scale_and_edit_change_the_object() {
    let server = Server::start();
    server.apply(NAMESPACE);
    server.apply(&app_manifest("busybox:1.0"));
    let d = ["-n", "shop"];
    assert_eq!(server.ok(&["label", "deploy", "web", "tier=front", d[0], d[1]]).trim(), "deployment.apps/web labeled");
    assert_eq!(server.ok(&["annotate", "deploy", "web", "owner=team-a", d[0], d[1]]).trim(), "deployment.apps/web annotated");
    server.ok(&["patch", "deploy", "web", "-n", "shop", "--type", "merge", "-p", r#"{"spec":{"replicas":3}}"#]);
    server.ok(&["patch", "deploy", "web", "-n", "shop", "--type", "json", "-p", r#"[{"op":"add","path":"/metadata/labels/stage","value":"beta"}]"#]);
    server.ok(&["patch", "deploy", "web", "-n", "shop", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"busybox:3.0"}]}}}}"#]);
    let summary = server.ok(&["get", "deploy", "web", "-n", "shop", "-o", "jsonpath={.metadata.labels.tier} {.metadata.labels.stage} {.metadata.annotations.owner} {.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env[0].value}"]);
    assert_eq!(summary, "front beta team-a 3 busybox:3.0 prod", "the strategic patch kept the env");

    assert_eq!(server.ok(&["scale", "deploy", "web", "--replicas=5", "-n", "shop"]).trim(), "deployment.apps/web scaled");
    let edited = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(["edit", "deploy", "web", "-n", "shop"])
        .env("KUBE_EDITOR", "sed -i s/replicas:\\ 5/replicas:\\ 7/")
        .output()
        .expect("kubectl edit runs");
    assert_eq!(String::from_utf8_lossy(&edited.stdout).trim(), "deployment.apps/web edited", "{}", String::from_utf8_lossy(&edited.stderr));
    assert_eq!(server.ok(&["get", "deploy", "web", "-n", "shop", "-o", "jsonpath={.spec.replicas}"]), "7");

    let described = server.ok(&["describe", "deploy", "web", "-n", "shop"]);
    assert!(described.contains("Replicas:               7 desired"), "{described}");
    assert!(described.contains("Image:      busybox:3.0"), "{described}");
    assert!(described.contains("tier=front"), "{described}");
}

#[test]
fn watch_sees_a_change_made_by_another_kubectl() {
    let server = Server::start();
    server.apply(NAMESPACE);
    server.apply(&app_manifest("busybox:1.0"));
    let mut watcher = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(["get", "configmap", "settings", "-n", "shop", "-w", "--output-watch-events", "-o", "jsonpath={.type} {.object.data.color}{\"\\n\"}"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w runs");
    let mut lines = BufReader::new(watcher.stdout.take().expect("piped")).lines();
    let first = lines.next().expect("initial event").expect("readable");
    assert_eq!(first, "ADDED blue");
    server.ok(&["patch", "configmap", "settings", "-n", "shop", "--type", "merge", "-p", r#"{"data":{"color":"green"}}"#]);
    let second = lines.next().expect("change event").expect("readable");
    assert_eq!(second, "MODIFIED green");
    let _ = watcher.kill();
    let _ = watcher.wait();
}

#[test]
fn delete_waits_and_namespace_deletion_removes_its_content() {
    let server = Server::start();
    server.apply(NAMESPACE);
    server.apply(&app_manifest("busybox:1.0"));
    assert_eq!(server.ok(&["delete", "configmap", "settings", "-n", "shop"]).trim(), "configmap \"settings\" deleted");
    let gone = server.kubectl(&["get", "configmap", "settings", "-n", "shop"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("configmaps \"settings\" not found"));

    assert_eq!(server.ok(&["delete", "namespace", "shop"]).trim(), "namespace \"shop\" deleted");
    let leftovers = server.ok(&["get", "deploy,svc,secret", "-A", "-o", "name"]);
    assert!(!leftovers.contains("web") && !leftovers.contains("credentials"), "{leftovers}");
    let namespaces = server.ok(&["get", "ns", "-o", "name"]);
    assert!(!namespaces.contains("namespace/shop"), "{namespaces}");
    assert!(namespaces.contains("namespace/kube-system"));

    let refused = server.kubectl_with_input(&["apply", "-f", "-"], Some(&app_manifest("x")));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("namespaces \"shop\" not found"));
}

#[test]
fn bad_input_is_refused_with_a_clear_status_and_changes_nothing() {
    let server = Server::start();
    let invalid = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers: []\n";
    let out = server.kubectl_with_input(&["apply", "-f", "-"], Some(invalid));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("The Pod \"Bad_Name\" is invalid"), "{stderr}");
    assert!(stderr.contains("spec.containers: Required value"), "{stderr}");
    assert!(server.ok(&["get", "pods", "-A", "-o", "name"]).trim().is_empty());

    // A stale resourceVersion is a conflict.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: default\ndata: {a: '1'}\n";
    server.apply(cm);
    let mut object: serde_json::Value =
        serde_json::from_str(&server.ok(&["get", "cm", "c", "-o", "json"])).expect("json");
    server.ok(&["patch", "cm", "c", "--type", "merge", "-p", r#"{"data":{"a":"2"}}"#]);
    object["data"]["a"] = "3".into();
    let out = server.kubectl_with_input(&["replace", "-f", "-"], Some(&object.to_string()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the object has been modified"), "{stderr}");
    assert_eq!(server.ok(&["get", "cm", "c", "-o", "jsonpath={.data.a}"]), "2");

    // No credentials, no access.
    let anonymous = Command::new("curl")
        .args(["-sk", &format!("https://127.0.0.1:{}/api/v1/namespaces", server.port)])
        .output()
        .expect("curl runs");
    let status: serde_json::Value = serde_json::from_slice(&anonymous.stdout).expect("a Status");
    assert_eq!((status["kind"].as_str(), status["code"].as_i64()), (Some("Status"), Some(401)));
}

#[test]
fn discovery_serves_api_resources_and_explain() {
    let server = Server::start();
    let resources = server.ok(&["api-resources"]);
    assert!(resources.contains("deployments") && resources.contains("apps/v1"), "{resources}");
    assert!(resources.lines().any(|l| l.starts_with("pods ") && l.contains("po") && l.contains("Pod")), "{resources}");
    let explained = server.ok(&["explain", "deployment.spec"]);
    assert!(explained.contains("replicas") && explained.contains("template"), "{explained}");
}

#[test]
fn objects_survive_restart_and_sigkill_during_writes() {
    let server = Server::start();
    server.apply(NAMESPACE);
    server.apply(&app_manifest("busybox:1.0"));
    let dir = server.kill();

    // Restart on the same data: everything is still there.
    let server = Server::start_in(dir, 0);
    let names = server.ok(&["get", "deploy,svc,cm,secret", "-n", "shop", "-o", "name"]);
    for name in ["deployment.apps/web", "service/web", "configmap/settings", "secret/credentials"] {
        assert!(names.contains(name), "{name} lost across restart: {names}");
    }

    // A stream of writes, SIGKILLed mid-way: every acknowledged one survives.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let writer = {
        let kubeconfig = server.kubeconfig();
        let acknowledged = acknowledged.clone();
        std::thread::spawn(move || {
            for i in 0..200 {
                let name = format!("item-{i}");
                let manifest = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: shop\ndata: {{k: v}}\n");
                let child = Command::new(KUBECTL)
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(["create", "-f", "-", "--request-timeout=5s", "-o", "name"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn();
                let Ok(mut child) = child else { break };
                if let Some(mut stdin) = child.stdin.take() {
                    let _ = stdin.write_all(manifest.as_bytes());
                }
                match child.wait_with_output() {
                    Ok(out) if out.status.success() => acknowledged.lock().expect("lock").push(name),
                    _ => break,
                }
            }
        })
    };
    assert!(wait_for(Duration::from_secs(60), || acknowledged.lock().expect("lock").len() >= 5));
    let dir = server.kill();
    writer.join().expect("writer thread");
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(!acknowledged.is_empty());

    let server = Server::start_in(dir, 0);
    let stored = server.ok(&["get", "configmaps", "-n", "shop", "-o", "name"]);
    for name in &acknowledged {
        assert!(stored.lines().any(|l| l == format!("configmap/{name}")), "{name} was acknowledged but lost");
    }
}
