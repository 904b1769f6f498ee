//! What the data path needs from Services and EndpointSlices: one
//! [`ServicePort`] per (Service, port), with its virtual addresses and the ready
//! endpoints that port's traffic may go to.
//!
//! This is the only place that reads the Kubernetes objects; the ruleset is
//! rendered from these plain values, so it can be tested and benchmarked
//! without an API server.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use k8s_openapi::api::core::v1::{Service, ServicePort as ApiServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Services annotated with this (value `"true"`) are served by the node-local
/// DNS server at their ClusterIP, so the proxy leaves their address alone.
pub const NODE_LOCAL_DNS_ANNOTATION: &str = "gantry.dev/node-local-dns";

/// kube-proxy's default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10_800;

/// A transport protocol a Service port can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The Kubernetes spelling (`TCP`, `UDP`, `SCTP`); `None` for anything else.
    pub fn from_api(name: Option<&str>) -> Option<Protocol> {
        match name.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    /// The nftables spelling, also used in chain names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// A ready endpoint of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// The pod address and target port.
    pub address: SocketAddrV4,
    /// Whether the endpoint runs on this node: the only ones a `Local`
    /// traffic policy sends traffic to.
    pub is_local: bool,
}

impl Endpoint {
    /// An endpoint on another node.
    pub fn remote(address: SocketAddrV4) -> Endpoint {
        Endpoint {
            address,
            is_local: false,
        }
    }
}

/// One port of one Service, as traffic sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// The port's name (may be empty for a single-port Service).
    pub port_name: String,
    /// The port's protocol.
    pub protocol: Protocol,
    /// The Service's virtual IP.
    pub cluster_ip: Ipv4Addr,
    /// The port on the ClusterIP (and on load-balancer addresses).
    pub port: u16,
    /// The port opened on every node address (NodePort and LoadBalancer).
    pub node_port: Option<u16>,
    /// Addresses the port is also served on: the load balancer's ingress IPs.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `spec.externalIPs`: more addresses the port is served on, as external
    /// traffic.
    pub external_ips: Vec<Ipv4Addr>,
    /// `externalTrafficPolicy: Local`: traffic from outside through node
    /// ports, load-balancer and external IPs goes only to this node's
    /// endpoints, unmasqueraded, so the client address is preserved.
    pub external_traffic_local: bool,
    /// `internalTrafficPolicy: Local`: ClusterIP traffic goes only to this
    /// node's endpoints.
    pub internal_traffic_local: bool,
    /// ClientIP session affinity's timeout in seconds; `None` without affinity.
    pub affinity_timeout: Option<u32>,
    /// The ready endpoints, sorted by address, no duplicates.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// `namespace/name/protocol/port`, kube-proxy's name for a service port;
    /// the number stands in for an empty port name.
    pub fn id(&self) -> String {
        let port = if self.port_name.is_empty() {
            self.port.to_string()
        } else {
            self.port_name.clone()
        };
        format!(
            "{}/{}/{}/{}",
            self.namespace, self.service, self.protocol, port
        )
    }
}

/// The service ports to program for `services` with the endpoints of
/// `slices`. Skipped: headless and ExternalName Services, IPv6 ClusterIPs,
/// and Services served by the node-local DNS. `node_ips` are this node's
/// addresses: a LoadBalancer Service is served on them even before its status
/// lists them; endpoints whose `nodeName` is `node_name` are local.
pub fn service_ports<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node_ips: &[Ipv4Addr],
    node_name: Option<&str>,
) -> Vec<ServicePort> {
    let endpoints = ready_endpoints_by_service(slices, node_name);
    let mut ports: Vec<ServicePort> = services
        .into_iter()
        .filter_map(|service| programmable(service, node_ips))
        .flat_map(|(service, shape)| {
            let key = (
                service.metadata.namespace.clone().unwrap_or_default(),
                service.metadata.name.clone().unwrap_or_default(),
            );
            let by_port = endpoints.get(&key);
            service_spec_ports(service)
                .iter()
                .filter_map(|port| shape.port(&key, port, by_port))
                .collect::<Vec<_>>()
        })
        .collect();
    ports.sort_by_key(ServicePort::id);
    ports
}

/// What a Service's ports share.
struct ServiceShape {
    cluster_ip: Ipv4Addr,
    load_balancer_ips: Vec<Ipv4Addr>,
    external_ips: Vec<Ipv4Addr>,
    external_traffic_local: bool,
    internal_traffic_local: bool,
    affinity_timeout: Option<u32>,
}

/// Ready endpoints of one Service, by (port name, protocol).
type EndpointsByPort = BTreeMap<(String, Protocol), BTreeSet<Endpoint>>;

impl ServiceShape {
    fn port(
        &self,
        (namespace, service): &(String, String),
        port: &ApiServicePort,
        endpoints: Option<&EndpointsByPort>,
    ) -> Option<ServicePort> {
        let protocol = Protocol::from_api(port.protocol.as_deref())?;
        let port_name = port.name.clone().unwrap_or_default();
        // The API server allocates node ports for NodePort and LoadBalancer Services only.
        let node_port = port.node_port.and_then(|p| u16::try_from(p).ok());
        Some(ServicePort {
            namespace: namespace.clone(),
            service: service.clone(),
            protocol,
            cluster_ip: self.cluster_ip,
            port: u16::try_from(port.port).ok()?,
            node_port,
            load_balancer_ips: self.load_balancer_ips.clone(),
            external_ips: self.external_ips.clone(),
            external_traffic_local: self.external_traffic_local,
            internal_traffic_local: self.internal_traffic_local,
            affinity_timeout: self.affinity_timeout,
            endpoints: endpoints
                .and_then(|by_port| by_port.get(&(port_name.clone(), protocol)))
                .map(|set| set.iter().copied().collect())
                .unwrap_or_default(),
            port_name,
        })
    }
}

fn service_spec_ports(service: &Service) -> &[ApiServicePort] {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_deref())
        .unwrap_or_default()
}

/// The shared shape of a Service the proxy programs, or `None` when it has
/// nothing to program.
fn programmable<'a>(
    service: &'a Service,
    node_ips: &[Ipv4Addr],
) -> Option<(&'a Service, ServiceShape)> {
    let spec = service.spec.as_ref()?;
    let node_local_dns = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(NODE_LOCAL_DNS_ANNOTATION))
        .is_some_and(|value| value == "true");
    if node_local_dns || spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    // "None" (headless), empty or IPv6: nothing to program.
    let cluster_ip: Ipv4Addr = spec.cluster_ip.as_deref()?.parse().ok()?;
    let is_load_balancer = spec.type_.as_deref() == Some("LoadBalancer");
    let load_balancer_ips = if is_load_balancer {
        let mut ips: BTreeSet<Ipv4Addr> = node_ips.iter().copied().collect();
        ips.extend(load_balancer_ingress_ips(service));
        ips.into_iter().collect()
    } else {
        Vec::new()
    };
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|config| config.client_ip.as_ref())
            .and_then(|client_ip| client_ip.timeout_seconds)
            .and_then(|seconds| u32::try_from(seconds).ok())
            .filter(|seconds| *seconds > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECONDS)
    });
    let external_ips = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    Some((
        service,
        ServiceShape {
            cluster_ip,
            load_balancer_ips,
            external_ips,
            external_traffic_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            internal_traffic_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            affinity_timeout,
        },
    ))
}

/// The IPv4 addresses in a Service's `status.loadBalancer.ingress`.
pub fn load_balancer_ingress_ips(service: &Service) -> Vec<Ipv4Addr> {
    service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ingress| ingress.ip.as_deref()?.parse().ok())
        .collect()
}

/// Every ready IPv4 endpoint, by Service (namespace, name) and then by port
/// name and protocol, merged across the Service's slices; those on the node
/// `node_name` are local.
fn ready_endpoints_by_service<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node_name: Option<&str>,
) -> BTreeMap<(String, String), EndpointsByPort> {
    let mut by_service: BTreeMap<(String, String), EndpointsByPort> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let key = (
            slice.metadata.namespace.clone().unwrap_or_default(),
            service.clone(),
        );
        let ready: Vec<(Ipv4Addr, bool)> = slice
            .endpoints
            .iter()
            // An unset condition means ready, as the API documents.
            .filter(|endpoint| {
                endpoint
                    .conditions
                    .as_ref()
                    .and_then(|conditions| conditions.ready)
                    != Some(false)
            })
            .filter_map(|endpoint| {
                let ip = endpoint.addresses.first()?.parse().ok()?;
                let is_local = node_name.is_some() && endpoint.node_name.as_deref() == node_name;
                Some((ip, is_local))
            })
            .collect();
        let by_port = by_service.entry(key).or_default();
        for port in slice.ports.iter().flatten() {
            let (Some(number), Some(protocol)) = (
                port.port.and_then(|p| u16::try_from(p).ok()),
                Protocol::from_api(port.protocol.as_deref()),
            ) else {
                continue;
            };
            by_port
                .entry((port.name.clone().unwrap_or_default(), protocol))
                .or_default()
                .extend(ready.iter().map(|(ip, is_local)| Endpoint {
                    address: SocketAddrV4::new(*ip, number),
                    is_local: *is_local,
                }));
        }
    }
    by_service
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(json: serde_json::Value) -> Service {
        serde_json::from_value(json).expect("service")
    }

    fn slice(json: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json).expect("slice")
    }

    #[test]
    fn named_ports_take_their_endpoints_from_the_matching_slice_port() {
        let web = service(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.10", "ports": [
                {"name": "http", "port": 80, "targetPort": "web"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ]}
        }));
        let slices = [slice(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "default",
                         "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.42.0.5"], "conditions": {"ready": true}},
                {"addresses": ["10.42.0.6"], "conditions": {"ready": false}},
                {"addresses": ["10.42.0.7"]},
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "dns", "port": 5353, "protocol": "UDP"}]
        }))];
        let ports = service_ports([&web], &slices, &[], None);
        assert_eq!(ports.len(), 2);
        let http = &ports[0];
        assert_eq!(http.id(), "default/web/tcp/http");
        assert_eq!((http.port, http.protocol), (80, Protocol::Tcp));
        assert_eq!(
            http.endpoints,
            [
                Endpoint::remote("10.42.0.5:8080".parse().unwrap()),
                Endpoint::remote("10.42.0.7:8080".parse().unwrap())
            ]
        );
        let dns = &ports[1];
        assert_eq!(dns.id(), "default/web/udp/dns");
        assert_eq!(
            dns.endpoints,
            [
                Endpoint::remote("10.42.0.5:5353".parse().unwrap()),
                Endpoint::remote("10.42.0.7:5353".parse().unwrap())
            ]
        );
    }

    #[test]
    fn headless_external_name_and_node_local_dns_services_are_skipped() {
        let headless = service(serde_json::json!({
            "metadata": {"name": "h", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
        }));
        let external = service(serde_json::json!({
            "metadata": {"name": "e", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}
        }));
        let dns = service(serde_json::json!({
            "metadata": {"name": "dns", "namespace": "kube-system",
                         "annotations": {NODE_LOCAL_DNS_ANNOTATION: "true"}},
            "spec": {"clusterIP": "10.43.0.10", "ports": [{"port": 53, "protocol": "UDP"}]}
        }));
        assert!(service_ports([&headless, &external, &dns], [], &[], None).is_empty());
    }

    #[test]
    fn load_balancers_are_served_on_node_and_ingress_addresses_with_affinity() {
        let lb = service(serde_json::json!({
            "metadata": {"name": "lb", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.20",
                     "sessionAffinity": "ClientIP",
                     "ports": [{"port": 443, "nodePort": 30443}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.2"}]}}
        }));
        let ports = service_ports([&lb], [], &["192.168.1.1".parse().unwrap()], None);
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].id(), "default/lb/tcp/443");
        assert_eq!(ports[0].node_port, Some(30443));
        assert_eq!(
            ports[0].load_balancer_ips,
            [
                "192.168.1.1".parse::<Ipv4Addr>().unwrap(),
                "192.168.1.2".parse().unwrap()
            ]
        );
        assert_eq!(
            ports[0].affinity_timeout,
            Some(DEFAULT_AFFINITY_TIMEOUT_SECONDS)
        );
        assert!(ports[0].endpoints.is_empty());
    }

    #[test]
    fn traffic_policies_external_ips_and_this_nodes_endpoints_are_read() {
        let web = service(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.43.0.30",
                     "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
                     "externalIPs": ["203.0.113.7", "2001:db8::1"],
                     "ports": [{"port": 80, "nodePort": 30080}]}
        }));
        let slices = [slice(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "default",
                         "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.42.0.5"], "nodeName": "here"},
                {"addresses": ["10.42.1.5"], "nodeName": "there"},
            ],
            "ports": [{"port": 8080, "protocol": "TCP"}]
        }))];
        let ports = service_ports([&web], &slices, &[], Some("here"));
        let port = &ports[0];
        assert!(port.external_traffic_local && port.internal_traffic_local);
        assert_eq!(
            port.external_ips,
            ["203.0.113.7".parse::<Ipv4Addr>().unwrap()]
        );
        let local: Vec<(String, bool)> = port
            .endpoints
            .iter()
            .map(|endpoint| (endpoint.address.to_string(), endpoint.is_local))
            .collect();
        assert_eq!(
            local,
            [
                ("10.42.0.5:8080".into(), true),
                ("10.42.1.5:8080".into(), false)
            ]
        );
        let unnamed = service_ports([&web], &slices, &[], None);
        assert!(
            unnamed[0]
                .endpoints
                .iter()
                .all(|endpoint| !endpoint.is_local)
        );
    }
}
