//! Service checks shared by the single-node and multi-node Service tests: a
//! Deployment of self-naming web pods behind a readiness probe, and a client pod
//! that fetches URLs and looks names up from wherever it was placed.

use std::collections::BTreeSet;
use std::process::Output;
use std::time::Duration;

use super::hosts::ClusterHost;
use super::wait_for;
use super::web::SERVE_HOSTNAME;

/// How long a check waits for the cluster to converge.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the web pods may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Wherever the scheduler likes.
    Anywhere,
    /// Never two on one node (required pod anti-affinity on the host name).
    OnePerNode,
}

/// Deployment `web`: 3 pods serving their own name on :8080, ready while
/// `/www/index.html` exists (probed every second, one failure is enough).
pub fn web_deployment(placement: Placement) -> String {
    let affinity = match placement {
        Placement::Anywhere => "",
        Placement::OnePerNode => {
            "
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector:
              matchLabels: {app: web}
            topologyKey: kubernetes.io/hostname"
        }
    };
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
      terminationGracePeriodSeconds: 1{affinity}
      containers:
      - name: web
        image: busybox:test
        imagePullPolicy: Never
        command: ["sh", "-c", {SERVE_HOSTNAME:?}]
        readinessProbe:
          httpGet: {{path: /index.html, port: 8080}}
          periodSeconds: 1
          failureThreshold: 1
"#
    )
}

/// A pod `name` that idles so commands can be run in it; on `node` when given
/// (bound directly, bypassing the scheduler), else wherever it is scheduled.
pub fn client_pod(name: &str, node: Option<&str>) -> String {
    let node_name = node
        .map(|node| format!("\n  nodeName: {node}"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:{node_name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: busybox:test
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#
    )
}

/// Runs Service checks from inside one client pod.
pub struct ClientPod<'a> {
    cluster: &'a ClusterHost,
    pod: &'a str,
}

impl<'a> ClientPod<'a> {
    /// Checks from pod `pod` (already Ready) of `cluster`.
    pub fn new(cluster: &'a ClusterHost, pod: &'a str) -> ClientPod<'a> {
        ClientPod { cluster, pod }
    }

    /// `wget -qO- url` in the pod, given 5 seconds (busybox `wget -T` segfaults).
    fn wget(&self, url: &str) -> Output {
        self.cluster
            .kubectl(&["exec", self.pod, "--", "timeout", "5", "wget", "-qO-", url])
    }

    /// One HTTP GET; the trimmed body, or `None` when it fails.
    pub fn get(&self, url: &str) -> Option<String> {
        let out = self.wget(url);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The backends that answered `url` until all of `want` were seen (or a
    /// minute passed).
    pub fn backends_seen(&self, url: &str, want: &BTreeSet<String>) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        wait_for(CONVERGE_TIMEOUT, || {
            if let Some(body) = self.get(url) {
                seen.insert(body);
            }
            want.is_subset(&seen)
        });
        seen
    }

    /// Asserts that `count` GETs of `url` all succeed and none is answered by `dropped`.
    pub fn assert_never_served_by(&self, url: &str, dropped: &str, count: usize) {
        for _ in 0..count {
            let body = self.get(url);
            assert!(body.is_some(), "{url} answers from {}", self.pod);
            assert_ne!(body.as_deref(), Some(dropped), "an unready pod served");
        }
    }

    /// Asserts that a GET of `url` is refused at once rather than left to time out.
    pub fn assert_refused(&self, url: &str) {
        let out = self.wget(url);
        let error = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && error.contains("refused"),
            "{url} from {}: refused, not timed out: {error}",
            self.pod
        );
    }

    /// What `nslookup name` prints in the pod.
    pub fn lookup(&self, name: &str) -> String {
        let out = self
            .cluster
            .kubectl(&["exec", self.pod, "--", "nslookup", name]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the lookup of `name` mentions every one of `want`.
    pub fn assert_resolves_to(&self, name: &str, want: &[&str]) {
        let mut answer = String::new();
        let resolved = wait_for(CONVERGE_TIMEOUT, || {
            answer = self.lookup(name);
            want.iter().all(|ip| answer.contains(ip))
        });
        assert!(
            resolved,
            "{name} from {} resolves to {want:?}: {answer}",
            self.pod
        );
    }
}

/// Deploys `web` (placed as `placement`) and client pod `client` (on
/// `client_node` if given), waits for both, and exposes `web` as ClusterIP
/// Service `web` on port 80 (to 8080).
pub fn start_web_service(
    cluster: &ClusterHost,
    placement: Placement,
    client: &str,
    client_node: Option<&str>,
) {
    let manifests = format!(
        "{}---\n{}",
        web_deployment(placement),
        client_pod(client, client_node)
    );
    cluster.apply(&manifests);
    cluster.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let pod = format!("pod/{client}");
    cluster.ok(&["wait", "--for=condition=Ready", &pod, "--timeout=60s"]);
    cluster.ok(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
    ]);
}

/// Exposes `web` as NodePort Service `name` (port 80 to 8080); returns its NodePort.
pub fn expose_node_port(cluster: &ClusterHost, name: &str) -> String {
    let name_flag = format!("--name={name}");
    cluster.ok(&[
        "expose",
        "deployment",
        "web",
        &name_flag,
        "--type=NodePort",
        "--port=80",
        "--target-port=8080",
    ]);
    node_port(cluster, name)
}

/// Creates headless Service `web-headless` and ExternalName Service `alias`
/// (to `web`'s name) and checks from `client` that the first resolves to every
/// one of `pod_ips` and the second, through its CNAME, to `vip`.
pub fn assert_headless_and_external_name(
    cluster: &ClusterHost,
    client: &ClientPod,
    pod_ips: &[&str],
    vip: &str,
) {
    cluster.apply(&headless_web_service("web-headless"));
    client.assert_resolves_to("web-headless.default.svc.cluster.local", pod_ips);
    cluster.ok(&[
        "create",
        "service",
        "externalname",
        "alias",
        "--external-name",
        "web.default.svc.cluster.local",
    ]);
    client.assert_resolves_to("alias.default.svc.cluster.local", &[vip]);
}

/// Makes web pod `dropped` fail its readiness probe, waits until Service `web`
/// lists 2 ready addresses, and checks that `client` is only served by the others.
pub fn assert_unready_leaves_rotation(cluster: &ClusterHost, client: &ClientPod, dropped: &str) {
    cluster.ok(&["exec", dropped, "--", "rm", "/www/index.html"]);
    wait_ready_addresses(cluster, "web", 2);
    client.assert_never_served_by("http://web/", dropped, 15);
}

/// Scales `web` to nothing and checks that `client`'s request to `url` is
/// refused at once rather than left to time out.
pub fn assert_refused_without_endpoints(cluster: &ClusterHost, client: &ClientPod, url: &str) {
    cluster.ok(&["scale", "deployment", "web", "--replicas=0"]);
    wait_ready_addresses(cluster, "web", 0);
    client.assert_refused(url);
}

/// The ClusterIP of `service`.
pub fn cluster_ip(cluster: &ClusterHost, service: &str) -> String {
    cluster.ok(&[
        "get",
        "service",
        service,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])
}

/// The first NodePort of `service`.
pub fn node_port(cluster: &ClusterHost, service: &str) -> String {
    cluster.ok(&[
        "get",
        "service",
        service,
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ])
}

/// How many ready addresses `service` has in its Endpoints and in its
/// EndpointSlices (what the proxies and the DNS servers follow).
pub fn ready_addresses(cluster: &ClusterHost, service: &str) -> (usize, usize) {
    let endpoints = cluster.ok(&[
        "get",
        "endpoints",
        service,
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ]);
    let selector = format!("kubernetes.io/service-name={service}");
    let slices = cluster.ok(&[
        "get",
        "endpointslices",
        "-l",
        &selector,
        "-o",
        "jsonpath={.items[*].endpoints[?(@.conditions.ready==true)].addresses[*]}",
    ]);
    (
        endpoints.split_whitespace().count(),
        slices.split_whitespace().count(),
    )
}

/// Waits until `service` has exactly `count` ready addresses in its Endpoints
/// and its EndpointSlices.
pub fn wait_ready_addresses(cluster: &ClusterHost, service: &str, count: usize) {
    let mut last = (0, 0);
    let reached = wait_for(CONVERGE_TIMEOUT, || {
        last = ready_addresses(cluster, service);
        last == (count, count)
    });
    assert!(
        reached,
        "{service} has {count} ready addresses; (Endpoints, EndpointSlices): {last:?}"
    );
}

/// A headless Service `name` for the web pods' port 8080.
pub fn headless_web_service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  clusterIP: None\n  selector: {{app: web}}\n  ports:\n  - port: 8080\n"
    )
}
