//! The proxy's nftables ruleset, laid out as kube-proxy's nftables mode lays
//! out its `kube-proxy` table, and the `nft` scripts that move a table from
//! one ruleset to the next.
//!
//! The table has a fixed skeleton (base chains on the netfilter hooks and the
//! verdict maps they look up) and a variable part: one chain per service port
//! (`service-…`: masquerade marking, session affinity, `numgen random mod N`
//! over its endpoints), one per NodePort/LoadBalancer entry point
//! (`external-…`), one per endpoint (`endpoint-…`: hairpin marking, affinity
//! recording, DNAT), one dynamic set per endpoint of an affinity service
//! (`affinity-…`), and the elements of the maps that route a destination to
//! those chains. [`Ruleset`] holds the variable part; [`update_script`]
//! rewrites only the chains, sets and map elements that differ, so a change
//! to one Service touches only that Service's objects.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use super::model::ServicePort;

/// Set: every ClusterIP; traffic to one on a port no Service has is rejected.
const CLUSTER_IPS: &str = "cluster-ips";
/// Set: the node addresses NodePorts are served on.
const NODEPORT_IPS: &str = "nodeport-ips";
/// Verdict map: (ClusterIP or LoadBalancer IP, protocol, port) → the service's chain.
const SERVICE_IPS: &str = "service-ips";
/// Verdict map: (protocol, node port) → the service's external chain.
const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Verdict map: (ClusterIP or LoadBalancer IP, protocol, port) of services without endpoints → reject.
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Verdict map: (protocol, node port) of services without endpoints → reject.
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";

/// Every set and map of the skeleton with its declaration.
const SKELETON_SETS: [(&str, &str); 6] = [
    (CLUSTER_IPS, "type ipv4_addr;"),
    (NODEPORT_IPS, "type ipv4_addr;"),
    (
        SERVICE_IPS,
        "type ipv4_addr . inet_proto . inet_service : verdict;",
    ),
    (
        SERVICE_NODEPORTS,
        "type inet_proto . inet_service : verdict;",
    ),
    (
        NO_ENDPOINT_SERVICES,
        "type ipv4_addr . inet_proto . inet_service : verdict;",
    ),
    (
        NO_ENDPOINT_NODEPORTS,
        "type inet_proto . inet_service : verdict;",
    ),
];

/// The fixed chains: name, base-chain declaration (empty for regular chains)
/// and rules. kube-proxy's priorities: services without endpoints are
/// rejected just before DNAT (-100), unknown ClusterIP ports after it.
const SKELETON_CHAINS: [(&str, &str, &[&str]); 14] = [
    (
        "filter-input",
        "type filter hook input priority -110; policy accept;",
        &[
            "ct state new jump nodeport-endpoints-check",
            "ct state new jump service-endpoints-check",
        ],
    ),
    (
        "filter-forward",
        "type filter hook forward priority -110; policy accept;",
        &[
            "ct state new jump service-endpoints-check",
            "ct state new jump cluster-ips-check",
        ],
    ),
    (
        "filter-output",
        "type filter hook output priority -110; policy accept;",
        &["ct state new jump service-endpoints-check"],
    ),
    // Locally generated traffic is translated in nat-output (-100): only
    // after it is a ClusterIP destination left over an unknown port.
    (
        "filter-output-post-dnat",
        "type filter hook output priority -90; policy accept;",
        &["ct state new jump cluster-ips-check"],
    ),
    (
        "nat-prerouting",
        "type nat hook prerouting priority dstnat; policy accept;",
        &["jump services"],
    ),
    (
        "nat-output",
        "type nat hook output priority -100; policy accept;",
        &["jump services"],
    ),
    (
        "nat-postrouting",
        "type nat hook postrouting priority srcnat; policy accept;",
        &["jump masquerading"],
    ),
    (
        "services",
        "",
        &[
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
        ],
    ),
    (
        "masquerading",
        "",
        &[
            "meta mark & 0x4000 == 0 return",
            "meta mark set meta mark ^ 0x4000",
            "masquerade fully-random",
        ],
    ),
    (
        "mark-for-masquerade",
        "",
        &["meta mark set meta mark | 0x4000"],
    ),
    (
        "service-endpoints-check",
        "",
        &["ip daddr . meta l4proto . th dport vmap @no-endpoint-services"],
    ),
    (
        "nodeport-endpoints-check",
        "",
        &["ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports"],
    ),
    (
        "cluster-ips-check",
        "",
        &["ip daddr @cluster-ips goto reject-chain"],
    ),
    (
        "reject-chain",
        "",
        &["meta l4proto tcp reject with tcp reset", "reject"],
    ),
];

/// Stands in for the unknown rules of a chain found in the kernel, so that
/// every such chain differs from its desired content and is rewritten.
const UNKNOWN_RULES: &str = "\u{0}unknown";

/// The variable part of the proxy's table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Rules of each service, external and endpoint chain, by chain name.
    chains: BTreeMap<String, Vec<String>>,
    /// Elements of each skeleton set or map: key → value (empty for sets).
    elements: BTreeMap<&'static str, BTreeMap<String, String>>,
    /// Dynamic affinity sets, by name, with their timeout in seconds.
    affinity_sets: BTreeMap<String, u32>,
}

impl Ruleset {
    /// The ruleset that sends traffic for `ports` to their endpoints.
    /// Traffic from outside `cluster_cidr` is masqueraded, so that replies
    /// come back through this node; `node_ips` serve the node ports.
    pub fn render(ports: &[ServicePort], cluster_cidr: Ipv4Net, node_ips: &[Ipv4Addr]) -> Ruleset {
        let mut ruleset = Ruleset::default();
        for ip in node_ips {
            ruleset.element(NODEPORT_IPS, ip.to_string(), String::new());
        }
        for port in ports {
            ruleset.add_service_port(port, cluster_cidr);
        }
        ruleset
    }

    /// A ruleset standing for what a table found in the kernel holds: these
    /// chains with unknown rules, these affinity sets, and map contents that
    /// a full update flushes anyway.
    pub fn found(
        chains: impl IntoIterator<Item = String>,
        affinity_sets: impl IntoIterator<Item = String>,
    ) -> Ruleset {
        Ruleset {
            chains: chains
                .into_iter()
                .filter(|name| !is_skeleton_chain(name))
                .map(|name| (name, vec![UNKNOWN_RULES.to_string()]))
                .collect(),
            elements: BTreeMap::new(),
            // A set's timeout is part of its name, so any value matches.
            affinity_sets: affinity_sets
                .into_iter()
                .filter(|name| !SKELETON_SETS.iter().any(|(set, _)| set == name))
                .map(|name| (name, 0))
                .collect(),
        }
    }

    /// How many chains the variable part has (for logs and benchmarks).
    pub fn chain_count(&self) -> usize {
        self.chains.len()
    }

    fn element(&mut self, set: &'static str, key: String, value: String) {
        self.elements.entry(set).or_default().insert(key, value);
    }

    fn add_service_port(&mut self, port: &ServicePort, cluster_cidr: Ipv4Net) {
        let id = port.id();
        let proto = port.protocol;
        self.element(CLUSTER_IPS, port.cluster_ip.to_string(), String::new());
        let virtual_ips =
            std::iter::once(port.cluster_ip).chain(port.load_balancer_ips.iter().copied());
        if port.endpoints.is_empty() {
            for ip in virtual_ips {
                let key = format!("{ip} . {proto} . {}", port.port);
                self.element(NO_ENDPOINT_SERVICES, key, "goto reject-chain".into());
            }
            if let Some(node_port) = port.node_port {
                let key = format!("{proto} . {node_port}");
                self.element(NO_ENDPOINT_NODEPORTS, key, "goto reject-chain".into());
            }
            return;
        }

        let service_chain = object_name("service", &id);
        let mut service_rules = vec![format!(
            "ip daddr {} {proto} dport {} ip saddr != {cluster_cidr} jump mark-for-masquerade",
            port.cluster_ip, port.port
        )];
        let mut spread = Vec::with_capacity(port.endpoints.len());
        for (index, endpoint) in port.endpoints.iter().enumerate() {
            let endpoint_id = format!("{id}__{}/{}", endpoint.ip(), endpoint.port());
            let endpoint_chain = object_name("endpoint", &endpoint_id);
            let mut endpoint_rules = vec![format!(
                "ip saddr {} jump mark-for-masquerade",
                endpoint.ip()
            )];
            if let Some(timeout) = port.affinity_timeout {
                let set = object_name("affinity", &format!("{endpoint_id}@{timeout}"));
                service_rules.push(format!("ip saddr @{set} goto {endpoint_chain}"));
                endpoint_rules.push(format!("update @{set} {{ ip saddr }}"));
                self.affinity_sets.insert(set, timeout);
            }
            endpoint_rules.push(format!("meta l4proto {proto} dnat ip to {endpoint}"));
            self.chains.insert(endpoint_chain.clone(), endpoint_rules);
            spread.push(format!("{index} : goto {endpoint_chain}"));
        }
        service_rules.push(format!(
            "numgen random mod {} vmap {{ {} }}",
            spread.len(),
            spread.join(", ")
        ));
        self.chains.insert(service_chain.clone(), service_rules);
        let cluster_key = format!("{} . {proto} . {}", port.cluster_ip, port.port);
        self.element(SERVICE_IPS, cluster_key, format!("goto {service_chain}"));

        if port.node_port.is_none() && port.load_balancer_ips.is_empty() {
            return;
        }
        // Traffic from outside through a node address is always masqueraded,
        // as kube-proxy does for externalTrafficPolicy: Cluster.
        let external_chain = object_name("external", &id);
        self.chains.insert(
            external_chain.clone(),
            vec![
                "jump mark-for-masquerade".into(),
                format!("goto {service_chain}"),
            ],
        );
        for ip in &port.load_balancer_ips {
            let key = format!("{ip} . {proto} . {}", port.port);
            self.element(SERVICE_IPS, key, format!("goto {external_chain}"));
        }
        if let Some(node_port) = port.node_port {
            let key = format!("{proto} . {node_port}");
            self.element(SERVICE_NODEPORTS, key, format!("goto {external_chain}"));
        }
    }
}

/// A chain or set name: `prefix-HASH-id`, with the id reduced to characters
/// nft accepts in names and the hash of the full id keeping names unique.
fn object_name(prefix: &str, id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let hash: String = digest[..5]
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect();
    let readable: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/') {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    format!("{prefix}-{hash}-{readable}")
}

fn is_skeleton_chain(name: &str) -> bool {
    SKELETON_CHAINS.iter().any(|(chain, _, _)| *chain == name)
}

/// Creates the table's skeleton if missing, resets its fixed chains and
/// empties its maps: the start of a full update, after which [`update_script`]
/// from [`Ruleset::found`] refills everything.
pub fn skeleton_script(table: &str) -> String {
    let mut script = format!(
        "add table inet {table} {{ comment \"Gantry service proxy (kube-proxy nftables mode)\"; }}\n"
    );
    for (set, declaration) in SKELETON_SETS {
        let kind = if declaration.contains(": verdict") {
            "map"
        } else {
            "set"
        };
        let _ = writeln!(script, "add {kind} inet {table} {set} {{ {declaration} }}");
        let _ = writeln!(script, "flush {kind} inet {table} {set}");
    }
    for (chain, declaration, _) in SKELETON_CHAINS {
        let _ = writeln!(script, "add chain inet {table} {chain} {{ {declaration} }}");
        let _ = writeln!(script, "flush chain inet {table} {chain}");
    }
    for (chain, _, rules) in SKELETON_CHAINS {
        for rule in rules {
            let _ = writeln!(script, "add rule inet {table} {chain} {rule}");
        }
    }
    script
}

/// The commands that turn `table` holding `from` into `to`, in an order
/// one `nft -f` transaction accepts: new sets and chains before the rules and
/// map elements that refer to them, and stale chains emptied, then deleted
/// after every reference to them is gone. Empty when nothing changed.
pub fn update_script(table: &str, from: &Ruleset, to: &Ruleset) -> String {
    let mut script = String::new();
    for (set, timeout) in &to.affinity_sets {
        if !from.affinity_sets.contains_key(set) {
            let _ = writeln!(
                script,
                "add set inet {table} {set} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
            );
        }
    }
    for chain in to
        .chains
        .keys()
        .filter(|chain| !from.chains.contains_key(*chain))
    {
        let _ = writeln!(script, "add chain inet {table} {chain}");
    }
    for (chain, rules) in &to.chains {
        match from.chains.get(chain) {
            Some(old) if old == rules => continue,
            Some(_) => {
                let _ = writeln!(script, "flush chain inet {table} {chain}");
            }
            None => {}
        }
        for rule in rules {
            let _ = writeln!(script, "add rule inet {table} {chain} {rule}");
        }
    }
    for (set, _) in SKELETON_SETS {
        update_elements(
            &mut script,
            table,
            set,
            from.elements.get(set),
            to.elements.get(set),
        );
    }
    let stale: Vec<&String> = from
        .chains
        .keys()
        .filter(|chain| !to.chains.contains_key(*chain))
        .collect();
    for chain in &stale {
        let _ = writeln!(script, "flush chain inet {table} {chain}");
    }
    for chain in &stale {
        let _ = writeln!(script, "delete chain inet {table} {chain}");
    }
    for set in from
        .affinity_sets
        .keys()
        .filter(|set| !to.affinity_sets.contains_key(*set))
    {
        let _ = writeln!(script, "delete set inet {table} {set}");
    }
    script
}

/// Deletes the elements of `set` that went away or changed value, then adds
/// the new and changed ones.
fn update_elements(
    script: &mut String,
    table: &str,
    set: &str,
    from: Option<&BTreeMap<String, String>>,
    to: Option<&BTreeMap<String, String>>,
) {
    let empty = BTreeMap::new();
    let (from, to) = (from.unwrap_or(&empty), to.unwrap_or(&empty));
    let removed: Vec<&str> = from
        .iter()
        .filter(|(key, value)| to.get(*key) != Some(value))
        .map(|(key, _)| key.as_str())
        .collect();
    if !removed.is_empty() {
        let _ = writeln!(
            script,
            "delete element inet {table} {set} {{ {} }}",
            removed.join(", ")
        );
    }
    let added: Vec<String> = to
        .iter()
        .filter(|(key, value)| from.get(*key) != Some(value))
        .map(|(key, value)| {
            if value.is_empty() {
                key.clone()
            } else {
                format!("{key} : {value}")
            }
        })
        .collect();
    if !added.is_empty() {
        let _ = writeln!(
            script,
            "add element inet {table} {set} {{ {} }}",
            added.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::Protocol;

    const TABLE: &str = "gantry-proxy";

    fn web(endpoints: &[&str]) -> ServicePort {
        ServicePort {
            namespace: "default".into(),
            service: "web".into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            cluster_ip: "10.43.0.10".parse().unwrap(),
            port: 80,
            node_port: None,
            load_balancer_ips: Vec::new(),
            affinity_timeout: None,
            endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }

    fn render(ports: &[ServicePort]) -> Ruleset {
        Ruleset::render(
            ports,
            "10.42.0.0/16".parse().unwrap(),
            &["192.168.1.1".parse().unwrap()],
        )
    }

    fn lines_with<'a>(script: &'a str, needle: &str) -> Vec<&'a str> {
        script
            .lines()
            .filter(|line| line.contains(needle))
            .collect()
    }

    #[test]
    fn a_service_spreads_over_its_endpoints_with_masquerade_for_outside_and_hairpin() {
        let script = update_script(
            TABLE,
            &Ruleset::default(),
            &render(&[web(&["10.42.0.5:8080", "10.42.0.6:8080"])]),
        );
        let service = object_name("service", "default/web/tcp/http");
        let first = object_name("endpoint", "default/web/tcp/http__10.42.0.5/8080");
        let second = object_name("endpoint", "default/web/tcp/http__10.42.0.6/8080");
        assert!(script.contains(&format!(
            "add rule inet {TABLE} {service} ip daddr 10.43.0.10 tcp dport 80 ip saddr != 10.42.0.0/16 jump mark-for-masquerade"
        )));
        assert!(script.contains(&format!(
            "add rule inet {TABLE} {service} numgen random mod 2 vmap {{ 0 : goto {first}, 1 : goto {second} }}"
        )));
        assert!(script.contains(&format!(
            "add rule inet {TABLE} {first} ip saddr 10.42.0.5 jump mark-for-masquerade"
        )));
        assert!(script.contains(&format!(
            "add rule inet {TABLE} {second} meta l4proto tcp dnat ip to 10.42.0.6:8080"
        )));
        assert!(script.contains(&format!(
            "add element inet {TABLE} service-ips {{ 10.43.0.10 . tcp . 80 : goto {service} }}"
        )));
        assert!(script.contains(&format!(
            "add element inet {TABLE} cluster-ips {{ 10.43.0.10 }}"
        )));
        assert!(lines_with(&script, "reject").is_empty());
    }

    #[test]
    fn a_service_without_endpoints_is_rejected_on_every_address() {
        let mut port = web(&[]);
        port.node_port = Some(30080);
        port.load_balancer_ips = vec!["192.168.1.1".parse().unwrap()];
        let script = update_script(TABLE, &Ruleset::default(), &render(&[port]));
        assert!(script.contains(&format!(
            "add element inet {TABLE} no-endpoint-services {{ 10.43.0.10 . tcp . 80 : goto reject-chain, 192.168.1.1 . tcp . 80 : goto reject-chain }}"
        )));
        assert!(script.contains(&format!(
            "add element inet {TABLE} no-endpoint-nodeports {{ tcp . 30080 : goto reject-chain }}"
        )));
        assert!(lines_with(&script, "add chain").is_empty());
    }

    #[test]
    fn node_ports_and_load_balancers_enter_through_a_masquerading_external_chain() {
        let mut port = web(&["10.42.0.5:8080"]);
        port.node_port = Some(30080);
        port.load_balancer_ips = vec!["192.168.1.1".parse().unwrap()];
        let script = update_script(TABLE, &Ruleset::default(), &render(&[port]));
        let external = object_name("external", "default/web/tcp/http");
        let service = object_name("service", "default/web/tcp/http");
        assert!(script.contains(&format!(
            "add rule inet {TABLE} {external} jump mark-for-masquerade"
        )));
        assert!(script.contains(&format!("add rule inet {TABLE} {external} goto {service}")));
        assert!(script.contains(&format!(
            "add element inet {TABLE} service-nodeports {{ tcp . 30080 : goto {external} }}"
        )));
        assert!(script.contains(&format!("192.168.1.1 . tcp . 80 : goto {external}")));
        assert!(script.contains(&format!(
            "add element inet {TABLE} nodeport-ips {{ 192.168.1.1 }}"
        )));
    }

    #[test]
    fn client_ip_affinity_records_and_follows_the_chosen_endpoint() {
        let mut port = web(&["10.42.0.5:8080"]);
        port.affinity_timeout = Some(60);
        let script = update_script(TABLE, &Ruleset::default(), &render(&[port]));
        let set = object_name("affinity", "default/web/tcp/http__10.42.0.5/8080@60");
        let endpoint = object_name("endpoint", "default/web/tcp/http__10.42.0.5/8080");
        assert!(script.contains(&format!(
            "add set inet {TABLE} {set} {{ type ipv4_addr; flags dynamic,timeout; timeout 60s; }}"
        )));
        assert!(script.contains(&format!("ip saddr @{set} goto {endpoint}")));
        assert!(script.contains(&format!(
            "add rule inet {TABLE} {endpoint} update @{set} {{ ip saddr }}"
        )));
    }

    #[test]
    fn an_update_rewrites_only_what_changed() {
        let mut other = web(&["10.42.0.9:53"]);
        other.service = "other".into();
        other.cluster_ip = "10.43.0.11".parse().unwrap();
        let before = render(&[web(&["10.42.0.5:8080", "10.42.0.6:8080"]), other.clone()]);
        let after = render(&[web(&["10.42.0.5:8080", "10.42.0.7:8080"]), other]);
        let script = update_script(TABLE, &before, &after);
        let service = object_name("service", "default/web/tcp/http");
        let gone = object_name("endpoint", "default/web/tcp/http__10.42.0.6/8080");
        let new = object_name("endpoint", "default/web/tcp/http__10.42.0.7/8080");
        let expected = [
            format!("add chain inet {TABLE} {new}"),
            format!("add rule inet {TABLE} {new} ip saddr 10.42.0.7 jump mark-for-masquerade"),
            format!("add rule inet {TABLE} {new} meta l4proto tcp dnat ip to 10.42.0.7:8080"),
            format!("flush chain inet {TABLE} {service}"),
            format!(
                "add rule inet {TABLE} {service} ip daddr 10.43.0.10 tcp dport 80 ip saddr != 10.42.0.0/16 jump mark-for-masquerade"
            ),
            format!(
                "add rule inet {TABLE} {service} numgen random mod 2 vmap {{ 0 : goto {}, 1 : goto {new} }}",
                object_name("endpoint", "default/web/tcp/http__10.42.0.5/8080")
            ),
            format!("flush chain inet {TABLE} {gone}"),
            format!("delete chain inet {TABLE} {gone}"),
        ];
        let mut lines: Vec<&str> = script.lines().collect();
        lines.sort_unstable();
        let mut expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        expected.sort_unstable();
        assert_eq!(lines, expected, "script:\n{script}");
        assert_eq!(update_script(TABLE, &after, &after), "");
    }

    #[test]
    fn a_full_update_rewrites_found_chains_and_deletes_stale_ones() {
        let desired = render(&[web(&["10.42.0.5:8080"])]);
        let service = object_name("service", "default/web/tcp/http");
        let found = Ruleset::found(
            [
                service.clone(),
                "service-OLD-default/gone/tcp/80".into(),
                "services".into(),
            ],
            ["affinity-OLD".to_string(), "service-ips".into()],
        );
        let script = update_script(TABLE, &found, &desired);
        assert!(script.contains(&format!("flush chain inet {TABLE} {service}\n")));
        assert!(script.contains(&format!(
            "delete chain inet {TABLE} service-OLD-default/gone/tcp/80\n"
        )));
        assert!(script.contains(&format!("delete set inet {TABLE} affinity-OLD\n")));
        assert!(!script.contains("chain inet gantry-proxy services\n"));
        assert!(!script.contains("set inet gantry-proxy service-ips"));
    }

    #[test]
    fn the_skeleton_never_touches_other_tables() {
        let script = skeleton_script(TABLE);
        assert!(script.starts_with("add table inet gantry-proxy"));
        assert!(
            script
                .lines()
                .all(|line| line.contains(" inet gantry-proxy "))
        );
        assert!(!script.contains("flush ruleset") && !script.contains("delete table"));
    }
}
