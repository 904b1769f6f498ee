//! The bridge pod network end to end on a single-node `gantry server` running in its
//! own network-namespace "host": a Deployment's pods get addresses from the node's
//! pod CIDR, the host reaches them, they reach each other, and their traffic to
//! machines outside the cluster is masqueraded behind the node's address.

use crate::common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::hosts::{ClusterHost, Lan};
use common::wait_for;
use common::web::{PeerEcho, SERVE_HOSTNAME, WEB_PORT, fetched, pods_of, run_fetcher};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// A machine on the node's network that knows no route to the pods.
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 9);
const MINUTE: Duration = Duration::from_secs(60);

/// Waits until `wget` from the host gets `want` from `url`; panics with the last answer.
fn assert_host_fetches(cluster: &ClusterHost, url: &str, want: &str) {
    let mut last = String::new();
    let fetched = wait_for(MINUTE, || {
        let out = cluster.run_in_host(&["wget", "-qO-", "-T", "2", url]);
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.status.success() && last == want
    });
    assert!(fetched, "GET {url} from the host: {last:?}, want {want:?}");
}

#[test]
fn deployment_pods_serve_the_host_each_other_and_reach_outside_masqueraded() {
    let lan = Lan::new(24);
    let cluster = ClusterHost::start(lan.host(SERVER_IP), SERVER_IP);
    let outside = lan.host(OUTSIDE_IP);
    let _echo = PeerEcho::start(&outside, OUTSIDE_IP);

    cluster.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:test",
        "--replicas=2",
        "--",
        "sh",
        "-c",
        SERVE_HOSTNAME,
    ]);
    cluster.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let pods = pods_of(&cluster, "web");
    assert_eq!(pods.len(), 2, "{pods:?}");
    let pod_cidr: ipnet::Ipv4Net = cluster
        .ok(&[
            "get",
            "node",
            cluster.node_name(),
            "-o",
            "jsonpath={.spec.podCIDR}",
        ])
        .parse()
        .expect("the node has a pod CIDR");

    // The host reaches every pod on its address in the node's pod CIDR.
    for (name, ip, _) in &pods {
        let ip: Ipv4Addr = ip.parse().expect("a pod IP");
        assert!(pod_cidr.contains(&ip), "{ip} lies in {pod_cidr}");
        assert_host_fetches(
            &cluster,
            &format!("http://{ip}:{WEB_PORT}/"),
            &format!("{name}\n"),
        );
    }

    // A pod reaches the web pods directly, and the outside machine (which has no
    // route back to pods) through the node's masquerade: it sees the node's address.
    let mut urls: Vec<String> = pods
        .iter()
        .map(|(_, ip, _)| format!("http://{ip}:{WEB_PORT}/"))
        .collect();
    let outside_url = format!("http://{OUTSIDE_IP}:{WEB_PORT}/cgi-bin/peer");
    urls.push(outside_url.clone());
    run_fetcher(&cluster, "fetcher", cluster.node_name(), &urls);
    let answers = fetched(&cluster, "fetcher", &urls);
    for ((name, ip, _), (url, body)) in pods.iter().zip(&answers) {
        assert_eq!(url, &format!("http://{ip}:{WEB_PORT}/"));
        assert_eq!(body, name, "{answers:?}");
    }
    assert_eq!(
        answers.last(),
        Some(&(outside_url, SERVER_IP.to_string())),
        "{answers:?}"
    );
}
