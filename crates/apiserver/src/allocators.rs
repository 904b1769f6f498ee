//! Service ClusterIP and NodePort allocation, the admission step that gives
//! a new Service its virtual IP and node ports.
//!
//! The allocated values live only in the Services themselves: the in-use set
//! is read back from the store under a lock, so there is no second record to
//! drift out of step. (One server process allocates; a replicated control
//! plane will need the allocation recorded in the store, as Kubernetes'
//! IPAddress objects do.)

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use gantry_api::{ApiError, Cause};
use serde_json::Value;

/// The service CIDR, k3s's default: 10.43.0.0/16.
pub const SERVICE_NETWORK: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 0);
pub const SERVICE_PREFIX_LEN: u8 = 16;
/// The cluster DNS Service's address (k3s's), served by every node agent.
pub const CLUSTER_DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 10);
/// Kubernetes' default NodePort range.
pub const NODE_PORTS: RangeInclusive<u16> = 30000..=32767;

/// The first usable address, reserved for the `kubernetes` Service.
pub fn first_service_ip() -> Ipv4Addr {
    Ipv4Addr::from(u32::from(SERVICE_NETWORK) + 1)
}

/// What other Services already hold.
#[derive(Debug, Default)]
pub struct InUse {
    pub cluster_ips: BTreeSet<Ipv4Addr>,
    pub node_ports: BTreeSet<u16>,
}

impl InUse {
    /// Collects the addresses and ports of existing Services.
    pub fn from_services<'a>(services: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut in_use = InUse::default();
        for service in services {
            if let Some(ip) = service["spec"]["clusterIP"]
                .as_str()
                .and_then(|ip| ip.parse().ok())
            {
                in_use.cluster_ips.insert(ip);
            }
            for port in service["spec"]["ports"].as_array().into_iter().flatten() {
                if let Some(node_port) = port["nodePort"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                {
                    in_use.node_ports.insert(node_port);
                }
            }
        }
        in_use
    }
}

/// Fills in `spec.clusterIP(s)` and node ports of a new Service, or refuses
/// a requested value that is outside the range or taken.
pub fn allocate(service: &mut Value, in_use: &InUse) -> Result<(), ApiError> {
    let name = service["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let service_type = service["spec"]["type"]
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    if service_type == "ExternalName" {
        return Ok(());
    }
    let requested = service["spec"]["clusterIP"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let ip = match requested.as_str() {
        "None" => None,
        "" => Some(next_free_ip(in_use)?),
        text => Some(check_requested_ip(&name, text, in_use)?),
    };
    if let Some(ip) = ip {
        service["spec"]["clusterIP"] = ip.to_string().into();
        service["spec"]["clusterIPs"] = vec![ip.to_string()].into();
    }
    if matches!(service_type.as_str(), "NodePort" | "LoadBalancer") {
        allocate_node_ports(&name, service, in_use)?;
    }
    Ok(())
}

fn in_range(ip: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - SERVICE_PREFIX_LEN);
    u32::from(ip) & mask == u32::from(SERVICE_NETWORK)
}

fn next_free_ip(in_use: &InUse) -> Result<Ipv4Addr, ApiError> {
    let size = 1u32 << (32 - SERVICE_PREFIX_LEN);
    (1..size - 1)
        .map(|offset| Ipv4Addr::from(u32::from(SERVICE_NETWORK) + offset))
        .find(|ip| !in_use.cluster_ips.contains(ip))
        .ok_or_else(|| {
            ApiError::internal(format!(
                "failed to allocate a serviceIP: range is full ({SERVICE_NETWORK}/{SERVICE_PREFIX_LEN})"
            ))
        })
}

fn check_requested_ip(name: &str, text: &str, in_use: &InUse) -> Result<Ipv4Addr, ApiError> {
    let invalid = |detail: String| {
        ApiError::invalid(
            "",
            "Service",
            name,
            vec![Cause::invalid("spec.clusterIPs", text, detail)],
        )
    };
    let ip: Ipv4Addr = text
        .parse()
        .map_err(|_| invalid("must be a valid IP address".into()))?;
    if !in_range(ip) {
        return Err(invalid(format!(
            "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {SERVICE_NETWORK}/{SERVICE_PREFIX_LEN}"
        )));
    }
    if in_use.cluster_ips.contains(&ip) {
        return Err(invalid(format!(
            "failed to allocate IP {ip}: provided IP is already allocated"
        )));
    }
    Ok(ip)
}

fn allocate_node_ports(name: &str, service: &mut Value, in_use: &InUse) -> Result<(), ApiError> {
    let mut taken = in_use.node_ports.clone();
    let Some(ports) = service["spec"]["ports"].as_array_mut() else {
        return Ok(());
    };
    for (index, port) in ports.iter_mut().enumerate() {
        match port["nodePort"].as_u64() {
            Some(requested) => {
                let field = format!("spec.ports[{index}].nodePort");
                let fits = u16::try_from(requested)
                    .ok()
                    .filter(|p| NODE_PORTS.contains(p));
                let Some(requested) = fits else {
                    return Err(ApiError::invalid(
                        "",
                        "Service",
                        name,
                        vec![Cause::invalid(
                            field,
                            requested,
                            format!(
                                "provided port is not in the valid range. The range of valid ports is {}-{}",
                                NODE_PORTS.start(),
                                NODE_PORTS.end()
                            ),
                        )],
                    ));
                };
                if !taken.insert(requested) {
                    return Err(ApiError::invalid(
                        "",
                        "Service",
                        name,
                        vec![Cause::invalid(
                            field,
                            requested,
                            "provided port is already allocated",
                        )],
                    ));
                }
            }
            None => {
                let free = NODE_PORTS
                    .clone()
                    .find(|p| !taken.contains(p))
                    .ok_or_else(|| {
                        ApiError::internal("failed to allocate a nodePort: range is full")
                    })?;
                taken.insert(free);
                port["nodePort"] = free.into();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn service(spec: Value) -> Value {
        json!({"metadata": {"name": "web"}, "spec": spec})
    }

    #[test]
    fn allocates_the_next_free_ip_and_node_ports() {
        let existing = [service(
            json!({"clusterIP": "10.43.0.1", "ports": [{"port": 80, "nodePort": 30000}]}),
        )];
        let in_use = InUse::from_services(&existing);
        let mut svc = service(json!({"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}));
        allocate(&mut svc, &in_use).expect("allocates");
        assert_eq!(svc["spec"]["clusterIP"], "10.43.0.2");
        assert_eq!(svc["spec"]["clusterIPs"], json!(["10.43.0.2"]));
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30001);
        assert_eq!(svc["spec"]["ports"][1]["nodePort"], 30002);
    }

    #[test]
    fn refuses_taken_or_foreign_addresses_and_ports() {
        let existing = [service(
            json!({"clusterIP": "10.43.0.7", "ports": [{"port": 80, "nodePort": 31000}]}),
        )];
        let in_use = InUse::from_services(&existing);
        let err =
            allocate(&mut service(json!({"clusterIP": "10.43.0.7"})), &in_use).expect_err("taken");
        assert_eq!(err.code(), 422);
        assert!(
            err.message.contains("provided IP is already allocated"),
            "{}",
            err.message
        );
        let err = allocate(&mut service(json!({"clusterIP": "192.168.1.1"})), &in_use)
            .expect_err("outside");
        assert!(
            err.message.contains("not in the valid range"),
            "{}",
            err.message
        );
        let mut taken_port =
            service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 31000}]}));
        let err = allocate(&mut taken_port, &in_use).expect_err("port taken");
        assert!(
            err.message.contains("spec.ports[0].nodePort"),
            "{}",
            err.message
        );
    }

    #[test]
    fn headless_and_external_name_get_no_ip() {
        let in_use = InUse::default();
        let mut headless = service(json!({"clusterIP": "None", "ports": [{"port": 80}]}));
        allocate(&mut headless, &in_use).expect("headless");
        assert_eq!(headless["spec"]["clusterIP"], "None");
        let mut external = service(json!({"type": "ExternalName", "externalName": "example.com"}));
        allocate(&mut external, &in_use).expect("external name");
        assert!(external["spec"].get("clusterIP").is_none());
    }
}
