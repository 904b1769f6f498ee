//! Services end to end from a second node: a `gantry server` and two joined
//! `gantry agent`s, each in its own network-namespace host on one Ethernet
//! segment, web pods one per node. From a client pod on the last joined node,
//! the Service answers by DNS name (that node's own cluster DNS) and by VIP with
//! every backend, including those on other nodes; that node's NodePort answers
//! the server and a machine outside the cluster; headless and ExternalName
//! names resolve; a backend failing readiness leaves the rotation there; and a
//! Service scaled to nothing is refused at once.

use crate::common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::hosts::{ClusterHost, JoinedHost, Lan, NetnsHost};
use common::services::{
    ClientPod, Placement, assert_headless_and_external_name, assert_refused_without_endpoints,
    assert_unready_leaves_rotation, cluster_ip, expose_node_port, start_web_service,
};
use common::wait_for;
use common::web::pods_of;

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const AGENT_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 200, 0, 2), Ipv4Addr::new(10, 200, 0, 3)];
/// A machine on the same segment that is not a node.
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 10);
const MINUTE: Duration = Duration::from_secs(60);

/// The bodies of GETs of `url` from `host` until every one of `want` answered
/// (or a minute passed).
fn backends_seen_from(host: &NetnsHost, url: &str, want: &BTreeSet<String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    wait_for(MINUTE, || {
        let out = host.run(&["timeout", "5", "wget", "-qO-", url]);
        if out.status.success() {
            seen.insert(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        want.is_subset(&seen)
    });
    seen
}

#[test]
fn services_work_from_a_joined_node() {
    let lan = Lan::new(24);
    let server = ClusterHost::start(lan.host(SERVER_IP), SERVER_IP);
    let agents: Vec<JoinedHost> = AGENT_IPS
        .iter()
        .map(|&ip| JoinedHost::join(lan.host(ip), ip, &server))
        .collect();
    let outside = lan.host(OUTSIDE_IP);
    // Like real machines, the nodes have a default route: without any route to
    // a VIP, a pod's packets to a Service with no endpoints would be refused by
    // routing (network unreachable) before the proxy's reject rule sees them.
    for host in [server.host()]
        .into_iter()
        .chain(agents.iter().map(JoinedHost::host))
    {
        host.ip(&["route", "add", "default", "via", "10.200.0.254"]);
    }
    let client_node = &agents[1];

    start_web_service(
        &server,
        Placement::OnePerNode,
        "client",
        Some(client_node.node_name()),
    );
    let client = ClientPod::new(&server, "client");
    let pods = pods_of(&server, "web");
    let names: BTreeSet<String> = pods.iter().map(|(name, _, _)| name.clone()).collect();
    let nodes: BTreeSet<&str> = pods.iter().map(|(_, _, node)| node.as_str()).collect();
    assert_eq!((names.len(), nodes.len()), (3, 3), "one per node: {pods:?}");

    // Every backend, two of them on other nodes, answers through the DNS name
    // (served by the client's own node) and through the VIP.
    let vip = cluster_ip(&server, "web");
    let vip_url = format!("http://{vip}/");
    assert_eq!(client.backends_seen("http://web/", &names), names);
    assert_eq!(client.backends_seen(&vip_url, &names), names);

    // The joined node's NodePort reaches every backend, from the server's host
    // and from a machine that is no node at all.
    let node_port = expose_node_port(&server, "web-np");
    let node_port_url = format!("http://{}:{node_port}/", client_node.node_ip());
    for (from, host) in [("server", server.host()), ("outside", &outside)] {
        assert_eq!(
            backends_seen_from(host, &node_port_url, &names),
            names,
            "NodePort {node_port_url} from the {from} host"
        );
    }

    // Headless and ExternalName names resolve on the joined node's DNS.
    let pod_ips: Vec<&str> = pods.iter().map(|(_, ip, _)| ip.as_str()).collect();
    assert_headless_and_external_name(&server, &client, &pod_ips, &vip);

    // A backend on another node that fails its readiness probe leaves the
    // rotation on the client's node too.
    let (dropped, _, _) = pods
        .iter()
        .find(|(_, _, node)| node != client_node.node_name())
        .expect("a backend on another node");
    assert_unready_leaves_rotation(&server, &client, dropped);

    // Without endpoints the joined node refuses at once.
    assert_refused_without_endpoints(&server, &client, &vip_url);
}
