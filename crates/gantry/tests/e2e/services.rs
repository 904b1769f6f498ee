//! Services end to end on a single-node `gantry server` in its own network-namespace
//! "host", driven by the real kubectl: a ClusterIP Service answers by DNS name and
//! by VIP with every backend, from a pod and from the host; a NodePort answers on
//! the node's address; readiness takes a pod out of rotation; ExternalName and
//! headless Services resolve; a Service without endpoints fails at once.

use crate::common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::hosts::{ClusterHost, Lan};
use common::wait_for;
use common::web::{SERVE_HOSTNAME, pods_of};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const MINUTE: Duration = Duration::from_secs(60);

fn web_deployment() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: busybox:test
        imagePullPolicy: Never
        command: ["sh", "-c", {SERVE_HOSTNAME:?}]
        readinessProbe:
          httpGet: {{path: /index.html, port: 8080}}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: busybox:test
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#
    )
}

/// One HTTP GET from the client pod; `None` when it fails.
fn get_from_pod(cluster: &ClusterHost, url: &str) -> Option<String> {
    let out = cluster.kubectl(&["exec", "client", "--", "timeout", "5", "wget", "-qO-", url]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The backends that answered `url` from the client pod until all of `want`
/// were seen (or a minute passed).
fn backends_seen(cluster: &ClusterHost, url: &str, want: &BTreeSet<String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    wait_for(MINUTE, || {
        if let Some(body) = get_from_pod(cluster, url) {
            seen.insert(body);
        }
        want.is_subset(&seen)
    });
    seen
}

fn lookup(cluster: &ClusterHost, name: &str) -> String {
    let out = cluster.kubectl(&["exec", "client", "--", "nslookup", name]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cluster_ip(cluster: &ClusterHost, service: &str) -> String {
    cluster.ok(&[
        "get",
        "service",
        service,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])
}

fn ready_addresses(cluster: &ClusterHost) -> usize {
    let out = cluster.ok(&[
        "get",
        "endpoints",
        "web",
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ]);
    out.split_whitespace().count()
}

#[test]
fn services_balance_resolve_follow_readiness_and_reject_without_endpoints() {
    let lan = Lan::new(24);
    let cluster = ClusterHost::start(lan.host(SERVER_IP), SERVER_IP);
    // Like any real machine, the host has a default route: the host's own traffic
    // to a VIP needs some route before the proxy's DNAT re-routes it to a pod.
    cluster
        .host()
        .ip(&["route", "add", "default", "via", "10.200.0.254"]);
    cluster.apply(&web_deployment());
    cluster.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    cluster.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "--timeout=60s",
    ]);
    cluster.ok(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
    ]);
    let pods = pods_of(&cluster, "web");
    let names: BTreeSet<String> = pods.iter().map(|(name, _, _)| name.clone()).collect();
    assert_eq!(names.len(), 3, "{pods:?}");

    // Every backend answers through the Service's DNS name and through its VIP.
    let vip = cluster_ip(&cluster, "web");
    assert_eq!(backends_seen(&cluster, "http://web/", &names), names);
    assert_eq!(
        backends_seen(&cluster, &format!("http://{vip}/"), &names),
        names
    );
    let from_host = cluster.run_in_host(&["wget", "-qO-", "-T", "5", &format!("http://{vip}/")]);
    let body = String::from_utf8_lossy(&from_host.stdout)
        .trim()
        .to_string();
    assert!(names.contains(&body), "the host reaches the VIP: {body:?}");

    // A NodePort answers on the node's address.
    cluster.ok(&[
        "expose",
        "deployment",
        "web",
        "--name=web-np",
        "--type=NodePort",
        "--port=80",
        "--target-port=8080",
    ]);
    let node_port = cluster.ok(&[
        "get",
        "service",
        "web-np",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    let url = format!("http://{SERVER_IP}:{node_port}/");
    assert!(
        wait_for(MINUTE, || cluster
            .run_in_host(&["wget", "-qO-", "-T", "5", &url])
            .status
            .success()),
        "NodePort {url} answers"
    );

    // A headless Service resolves to every ready pod; an ExternalName to its target.
    cluster.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web-headless\nspec:\n  clusterIP: None\n  selector: {app: web}\n  ports:\n  - port: 8080\n",
    );
    let pod_ips: Vec<&str> = pods.iter().map(|(_, ip, _)| ip.as_str()).collect();
    let mut answer = String::new();
    assert!(
        wait_for(MINUTE, || {
            answer = lookup(&cluster, "web-headless.default.svc.cluster.local");
            pod_ips.iter().all(|ip| answer.contains(ip))
        }),
        "headless lookup lists {pod_ips:?}: {answer}"
    );
    cluster.ok(&[
        "create",
        "service",
        "externalname",
        "alias",
        "--external-name",
        "web.default.svc.cluster.local",
    ]);
    assert!(
        wait_for(MINUTE, || {
            answer = lookup(&cluster, "alias.default.svc.cluster.local");
            answer.contains(&vip)
        }),
        "ExternalName resolves through its CNAME to {vip}: {answer}"
    );

    // A pod that fails its readiness probe leaves the rotation.
    let (dropped, _, _) = &pods[0];
    cluster.ok(&["exec", dropped, "--", "rm", "/www/index.html"]);
    assert!(
        wait_for(MINUTE, || ready_addresses(&cluster) == 2),
        "the unready pod leaves the endpoints"
    );
    for _ in 0..15 {
        let body = get_from_pod(&cluster, "http://web/");
        assert_ne!(
            body.as_deref(),
            Some(dropped.as_str()),
            "an unready pod served"
        );
    }

    // Without endpoints a request is refused at once rather than left to time out.
    cluster.ok(&["scale", "deployment", "web", "--replicas=0"]);
    assert!(
        wait_for(MINUTE, || ready_addresses(&cluster) == 0),
        "the endpoints empty"
    );
    let out = cluster.kubectl(&[
        "exec",
        "client",
        "--",
        "timeout",
        "5",
        "wget",
        "-qO-",
        &format!("http://{vip}/"),
    ]);
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && error.contains("refused"),
        "refused, not timed out: {error}"
    );
}
