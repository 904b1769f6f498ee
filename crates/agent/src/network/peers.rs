//! Host-gw routing between nodes: every other Node's `spec.podCIDR` is routed via
//! that Node's InternalIP, like flannel's host-gw backend. The routes follow the
//! Nodes: a node that joins gets a route, one that leaves or moves loses it.
//!
//! Nodes must share a link-layer segment (the next hop is a neighbour); across
//! routers an overlay (VXLAN) would be needed instead.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector};
use tokio_util::sync::CancellationToken;

use super::PodNetwork;

/// How often the routes are rewritten even without a Node change, so a route
/// someone deleted by hand, or a change that failed, is repaired.
const RESYNC_INTERVAL: Duration = Duration::from_secs(15);

/// One other node's pod CIDR and the address that reaches it.
pub type PeerRoute = (Ipv4Net, Ipv4Addr);

/// Keeps `network`'s peer routes equal to the other Nodes' (pod CIDR, InternalIP)
/// until `shutdown`. Routes stay in place when it stops: pods keep running across
/// an agent restart, and so must their reachability.
pub async fn sync_peer_routes(
    client: kube::Client,
    network: Arc<PodNetwork>,
    own_node: String,
    shutdown: CancellationToken,
) {
    let (nodes, writer) = reflector::store::<Node>();
    let events = reflector(
        writer,
        watcher::watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff(),
    );
    let mut events = std::pin::pin!(events);
    let mut resync = tokio::time::interval(RESYNC_INTERVAL);
    let mut listed = false;
    let mut applied: Option<Vec<PeerRoute>> = None;
    loop {
        let resync_due = tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.next() => match event {
                None => return,
                Some(Ok(event)) => {
                    listed |= matches!(event, Event::InitDone);
                    false
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "watching nodes for pod routes failed; retrying");
                    continue;
                }
            },
            _ = resync.tick() => true,
        };
        if !listed {
            continue;
        }
        let nodes: Vec<Arc<Node>> = nodes.state();
        let wanted = peer_routes(nodes.iter().map(Arc::as_ref), &own_node);
        if !resync_due && applied.as_ref() == Some(&wanted) {
            continue;
        }
        match network.set_peer_routes(&wanted).await {
            Ok(()) => {
                if applied.as_ref() != Some(&wanted) {
                    tracing::info!(routes = ?wanted, "pod routes to other nodes updated");
                }
                applied = Some(wanted);
            }
            Err(error) => {
                tracing::warn!(%error, "updating pod routes to other nodes failed; retrying");
                applied = None;
            }
        }
    }
}

/// The routes to every node but `own_node` that has an IPv4 pod CIDR and an IPv4
/// InternalIP, sorted so equal sets compare equal.
pub fn peer_routes<'a>(nodes: impl Iterator<Item = &'a Node>, own_node: &str) -> Vec<PeerRoute> {
    let mut routes: Vec<PeerRoute> = nodes
        .filter(|node| node.metadata.name.as_deref() != Some(own_node))
        .filter_map(|node| Some((pod_cidr(node)?, internal_ipv4(node)?)))
        .collect();
    routes.sort();
    routes
}

fn pod_cidr(node: &Node) -> Option<Ipv4Net> {
    node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()
}

fn internal_ipv4(node: &Node) -> Option<Ipv4Addr> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    addresses
        .iter()
        .filter(|address| address.type_ == "InternalIP")
        .find_map(|address| match address.address.parse() {
            Ok(IpAddr::V4(ip)) => Some(ip),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    fn node(name: &str, pod_cidr: Option<&str>, addresses: &[(&str, &str)]) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: pod_cidr.map(Into::into),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(type_, address)| NodeAddress {
                            type_: type_.to_string(),
                            address: address.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn routes_go_to_every_other_node_via_its_internal_ip() {
        let nodes = [
            node(
                "b",
                Some("10.42.2.0/24"),
                &[("Hostname", "b"), ("InternalIP", "10.0.0.2")],
            ),
            node("self", Some("10.42.0.0/24"), &[("InternalIP", "10.0.0.1")]),
            node("a", Some("10.42.1.0/24"), &[("InternalIP", "10.0.0.3")]),
        ];
        assert_eq!(
            peer_routes(nodes.iter(), "self"),
            vec![
                ("10.42.1.0/24".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 3)),
                ("10.42.2.0/24".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 2)),
            ]
        );
    }

    #[test]
    fn nodes_without_a_cidr_or_an_ipv4_internal_ip_get_no_route() {
        let nodes = [
            node("pending", None, &[("InternalIP", "10.0.0.2")]),
            node("v6", Some("10.42.3.0/24"), &[("InternalIP", "fd00::3")]),
            node(
                "external-only",
                Some("10.42.4.0/24"),
                &[("ExternalIP", "203.0.113.4")],
            ),
            node("garbled", Some("not-a-cidr"), &[("InternalIP", "10.0.0.5")]),
            node(
                "dual",
                Some("10.42.6.0/24"),
                &[("InternalIP", "fd00::6"), ("InternalIP", "10.0.0.6")],
            ),
        ];
        assert_eq!(
            peer_routes(nodes.iter(), "self"),
            vec![("10.42.6.0/24".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 6))]
        );
    }
}
