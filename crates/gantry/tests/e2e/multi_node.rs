//! Three nodes, each in its own network-namespace "host" on one Ethernet segment: a
//! `gantry server` with its agent and two `gantry agent`s joined with the token. Pods
//! spread one per node reach each other by pod IP over the host-gw routes the agents
//! keep between the nodes' pod CIDRs, and a node that leaves loses its routes.

use crate::common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::hosts::{ClusterHost, JoinedHost, Lan, NetnsHost};
use common::services::{Placement, web_deployment};
use common::wait_for;
use common::web::{WEB_PORT, fetched, pods_of, run_fetcher};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const AGENT_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 200, 0, 2), Ipv4Addr::new(10, 200, 0, 3)];
const MINUTE: Duration = Duration::from_secs(60);

/// `podCIDR via nodeIP` routes in `host`'s main table, as `ip route` prints them.
fn pod_routes(host: &NetnsHost) -> Vec<String> {
    host.ip(&["-4", "route", "show", "root", "10.42.0.0/16"])
        .lines()
        .filter(|line| line.contains(" via "))
        .map(|line| {
            let mut words = line.split_whitespace();
            format!(
                "{} via {}",
                words.next().unwrap_or(""),
                words.nth(1).unwrap_or("")
            )
        })
        .collect()
}

fn pod_cidr(cluster: &ClusterHost, node: &str) -> String {
    cluster.ok(&["get", "node", node, "-o", "jsonpath={.spec.podCIDR}"])
}

/// Waits until `host`'s pod routes are exactly `want` (in any order).
fn assert_routes(host: &NetnsHost, mut want: Vec<String>) {
    want.sort();
    let mut last = Vec::new();
    let reached = wait_for(MINUTE, || {
        last = pod_routes(host);
        last.sort();
        last == want
    });
    assert!(
        reached,
        "routes in {}: {last:?}, want {want:?}",
        host.name()
    );
}

#[test]
fn pods_on_three_nodes_reach_each_other_over_host_gw_routes() {
    let lan = Lan::new(24);
    let server = ClusterHost::start(lan.host(SERVER_IP), SERVER_IP);
    let mut agents: Vec<JoinedHost> = AGENT_IPS
        .iter()
        .map(|&ip| JoinedHost::join(lan.host(ip), ip, &server))
        .collect();

    // Every host routes the other two nodes' pod CIDRs via their addresses.
    let nodes: Vec<(&NetnsHost, &str, Ipv4Addr)> = [(server.host(), server.node_name(), SERVER_IP)]
        .into_iter()
        .chain(
            agents
                .iter()
                .map(|a| (a.host(), a.node_name(), a.node_ip())),
        )
        .collect();
    let cidrs: Vec<String> = nodes
        .iter()
        .map(|(_, name, _)| pod_cidr(&server, name))
        .collect();
    for (i, (host, _, _)) in nodes.iter().enumerate() {
        let others = nodes
            .iter()
            .zip(&cidrs)
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, ((_, _, ip), cidr))| format!("{cidr} via {ip}"))
            .collect();
        assert_routes(host, others);
    }

    server.apply(&web_deployment(Placement::OnePerNode));
    server.ok(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    let pods = pods_of(&server, "web");
    let mut placed: Vec<&str> = pods.iter().map(|(_, _, node)| node.as_str()).collect();
    placed.sort();
    placed.dedup();
    assert_eq!(placed.len(), 3, "one pod per node: {pods:?}");

    // From a pod on every node, every web pod answers with its own name.
    let urls: Vec<String> = pods
        .iter()
        .map(|(_, ip, _)| format!("http://{ip}:{WEB_PORT}/"))
        .collect();
    for (i, (_, node, _)) in nodes.iter().enumerate() {
        run_fetcher(&server, &format!("fetcher-{i}"), node, &urls);
    }
    for i in 0..nodes.len() {
        let answers = fetched(&server, &format!("fetcher-{i}"), &urls);
        let names: Vec<(String, String)> = pods
            .iter()
            .map(|(name, ip, _)| (format!("http://{ip}:{WEB_PORT}/"), name.clone()))
            .collect();
        assert_eq!(answers, names, "fetcher-{i}");
    }

    // A node that leaves takes its route with it, on the nodes that remain.
    let leaving = agents.remove(1);
    let leaving_name = leaving.node_name().to_string();
    drop(leaving);
    server.ok(&["delete", "node", &leaving_name]);
    assert_routes(
        server.host(),
        vec![format!("{} via {}", cidrs[1], AGENT_IPS[0])],
    );
    assert_routes(
        agents[0].host(),
        vec![format!("{} via {SERVER_IP}", cidrs[0])],
    );
}
