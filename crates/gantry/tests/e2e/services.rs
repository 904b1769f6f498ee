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
use common::services::{
    ClientPod, Placement, assert_headless_and_external_name, assert_refused_without_endpoints,
    assert_unready_leaves_rotation, cluster_ip, expose_node_port, start_web_service,
};
use common::wait_for;
use common::web::pods_of;

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn services_balance_resolve_follow_readiness_and_reject_without_endpoints() {
    let lan = Lan::new(24);
    let cluster = ClusterHost::start(lan.host(SERVER_IP), SERVER_IP);
    // Like any real machine, the host has a default route: the host's own traffic
    // to a VIP needs some route before the proxy's DNAT re-routes it to a pod.
    cluster
        .host()
        .ip(&["route", "add", "default", "via", "10.200.0.254"]);
    start_web_service(&cluster, Placement::Anywhere, "client", None);
    let client = ClientPod::new(&cluster, "client");
    let pods = pods_of(&cluster, "web");
    let names: BTreeSet<String> = pods.iter().map(|(name, _, _)| name.clone()).collect();
    assert_eq!(names.len(), 3, "{pods:?}");

    // Every backend answers through the Service's DNS name and through its VIP.
    let vip = cluster_ip(&cluster, "web");
    let vip_url = format!("http://{vip}/");
    assert_eq!(client.backends_seen("http://web/", &names), names);
    assert_eq!(client.backends_seen(&vip_url, &names), names);
    let from_host = cluster.run_in_host(&["timeout", "5", "wget", "-qO-", &vip_url]);
    let body = String::from_utf8_lossy(&from_host.stdout)
        .trim()
        .to_string();
    assert!(names.contains(&body), "the host reaches the VIP: {body:?}");

    // A NodePort answers on the node's address.
    let node_port = expose_node_port(&cluster, "web-np");
    let url = format!("http://{SERVER_IP}:{node_port}/");
    assert!(
        wait_for(MINUTE, || cluster
            .run_in_host(&["timeout", "5", "wget", "-qO-", &url])
            .status
            .success()),
        "NodePort {url} answers"
    );

    // A headless Service resolves to every ready pod; an ExternalName to its target.
    let pod_ips: Vec<&str> = pods.iter().map(|(_, ip, _)| ip.as_str()).collect();
    assert_headless_and_external_name(&cluster, &client, &pod_ips, &vip);

    // A pod that fails its readiness probe leaves the rotation.
    let (dropped, _, _) = &pods[0];
    assert_unready_leaves_rotation(&cluster, &client, dropped);

    // Without endpoints a request is refused at once rather than left to time out.
    assert_refused_without_endpoints(&cluster, &client, &vip_url);
}
