//! Forgetting UDP flows whose endpoint went away.
//!
//! NAT is decided on a flow's first packet and kept in its conntrack entry;
//! UDP has no end of connection, so a client that keeps sending from the same
//! port keeps going to a removed endpoint until the entry times out. As
//! kube-proxy does, after each sync the entries of UDP flows DNATed to an
//! endpoint that left a service port are deleted (with the `conntrack` tool
//! from conntrack-tools), so the next packet is balanced afresh.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Command;

use super::ProxyError;
use super::model::{Protocol, ServicePort};
use crate::network::NetworkError;
use crate::network::netns::Namespace;

/// The UDP flows to delete: sent to `destination` (any address when `None`)
/// on `port`, and answered by `endpoint`, the address they were DNATed to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StaleFlows {
    /// The address the client sent to: a ClusterIP, load-balancer or
    /// external IP; `None` for a node port, which any node address serves.
    pub destination: Option<Ipv4Addr>,
    /// The port the client sent to.
    pub port: u16,
    /// The removed endpoint's address.
    pub endpoint: Ipv4Addr,
}

impl StaleFlows {
    /// The `conntrack -D` arguments that delete these flows.
    fn arguments(&self) -> Vec<String> {
        let mut args = vec!["-D".into(), "-p".into(), "udp".into()];
        if let Some(destination) = self.destination {
            args.extend(["--orig-dst".into(), destination.to_string()]);
        }
        args.extend([
            "--orig-port-dst".into(),
            self.port.to_string(),
            "--reply-src".into(),
            self.endpoint.to_string(),
        ]);
        args
    }
}

/// The flows that may still go to UDP endpoints present in `before` but
/// gone from the same service port in `after`, on every address the port
/// was served on.
pub fn stale_udp_flows(before: &[ServicePort], after: &[ServicePort]) -> BTreeSet<StaleFlows> {
    let current: BTreeMap<String, &ServicePort> =
        after.iter().map(|port| (port.id(), port)).collect();
    let mut stale = BTreeSet::new();
    for old in before.iter().filter(|port| port.protocol == Protocol::Udp) {
        let kept: BTreeSet<Ipv4Addr> = current
            .get(&old.id())
            .into_iter()
            .flat_map(|port| port.endpoints.iter().map(|e| *e.address.ip()))
            .collect();
        let removed = old
            .endpoints
            .iter()
            .map(|endpoint| *endpoint.address.ip())
            .filter(|ip| !kept.contains(ip));
        for endpoint in removed {
            let addresses = std::iter::once(old.cluster_ip)
                .chain(old.load_balancer_ips.iter().copied())
                .chain(old.external_ips.iter().copied());
            for destination in addresses {
                stale.insert(StaleFlows {
                    destination: Some(destination),
                    port: old.port,
                    endpoint,
                });
            }
            if let Some(node_port) = old.node_port {
                stale.insert(StaleFlows {
                    destination: None,
                    port: node_port,
                    endpoint,
                });
            }
        }
    }
    stale
}

/// Deletes the conntrack entries of `flows` in `namespace`.
pub(crate) async fn forget(
    namespace: &Namespace,
    flows: BTreeSet<StaleFlows>,
) -> Result<(), ProxyError> {
    if flows.is_empty() {
        return Ok(());
    }
    namespace
        .run(move || {
            for flow in &flows {
                let output = Command::new("conntrack")
                    .args(flow.arguments())
                    .output()
                    .map_err(|source| NetworkError::Io {
                        context: "running conntrack (package conntrack)".into(),
                        source,
                    })?;
                // Exit status 1 with "0 flow entries" is nothing to delete.
                let stderr = String::from_utf8_lossy(&output.stderr);
                if !output.status.success() && !stderr.contains("0 flow entries") {
                    return Ok(Err(ProxyError::Conntrack(stderr.trim().to_string())));
                }
            }
            Ok(Ok(()))
        })
        .await?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::Endpoint;

    fn dns(endpoints: &[&str]) -> ServicePort {
        ServicePort {
            namespace: "kube-system".into(),
            service: "dns".into(),
            port_name: String::new(),
            protocol: Protocol::Udp,
            cluster_ip: "10.43.0.53".parse().unwrap(),
            port: 53,
            node_port: Some(30053),
            load_balancer_ips: Vec::new(),
            external_ips: vec!["203.0.113.7".parse().unwrap()],
            external_traffic_local: false,
            internal_traffic_local: false,
            affinity_timeout: None,
            endpoints: endpoints
                .iter()
                .map(|address| Endpoint::remote(address.parse().unwrap()))
                .collect(),
        }
    }

    #[test]
    fn a_removed_udp_endpoint_loses_its_flows_on_every_address() {
        let before = [dns(&["10.42.0.5:5353", "10.42.0.6:5353"])];
        let after = [dns(&["10.42.0.6:5353"])];
        let gone: Ipv4Addr = "10.42.0.5".parse().unwrap();
        let flows: Vec<StaleFlows> = stale_udp_flows(&before, &after).into_iter().collect();
        assert_eq!(
            flows,
            [
                StaleFlows {
                    destination: None,
                    port: 30053,
                    endpoint: gone
                },
                StaleFlows {
                    destination: Some("10.43.0.53".parse().unwrap()),
                    port: 53,
                    endpoint: gone
                },
                StaleFlows {
                    destination: Some("203.0.113.7".parse().unwrap()),
                    port: 53,
                    endpoint: gone
                },
            ]
        );
        assert_eq!(
            flows[1].arguments().join(" "),
            "-D -p udp --orig-dst 10.43.0.53 --orig-port-dst 53 --reply-src 10.42.0.5"
        );
        // A deleted service port counts as every endpoint removed.
        assert_eq!(stale_udp_flows(&before, &[]).len(), 6);
    }

    #[test]
    fn tcp_ports_and_kept_endpoints_keep_their_flows() {
        let mut tcp = dns(&["10.42.0.5:5353"]);
        tcp.protocol = Protocol::Tcp;
        assert!(stale_udp_flows(&[tcp], &[]).is_empty());
        let same = [dns(&["10.42.0.5:5353"])];
        assert!(stale_udp_flows(&same, &same).is_empty());
    }
}
