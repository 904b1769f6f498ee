//! The proxy's nftables ruleset, laid out after kube-proxy's nftables mode,
//! and the `nft` scripts that move a table from one ruleset to the next.
//!
//! The table has a fixed skeleton (base chains on the netfilter hooks and the
//! sets and verdict maps they look up) and a variable part: one chain per
//! service port (`service-…`: `numgen random` spread over its endpoints with
//! DNAT in the same rule), one per port whose `Local` traffic policy needs
//! only this node's endpoints (`local-…`), one per NodePort, load-balancer or
//! external IP entry point (`external-…`), one dynamic set per endpoint of an
//! affinity service (`affinity-…`), and the elements of the maps that route a
//! destination to those chains. [`Ruleset`] holds the variable part;
//! [`update_script`] rewrites only the chains, sets and map elements that
//! differ, so a change to one Service touches only that Service's objects.
//!
//! Unlike kube-proxy there are no per-endpoint chains and no anonymous
//! `numgen … vmap { … }` maps: measured on Linux 6.18 with nft 1.0.6, adding
//! an anonymous set costs time proportional to the sets and the transaction
//! already there (`__nft_set_trans_bind`, set name allocation), which made a
//! 10,000-service transaction take 100 s. Each endpoint is instead one rule
//! of a probability cascade (`numgen random mod N-i 0`, as kube-proxy's
//! iptables mode does with `statistic`), hairpin masquerade is one element
//! of the `hairpin` set, and masquerading traffic to ClusterIPs from outside
//! the cluster is one rule shared by all Services.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use super::model::{Endpoint, Protocol, ServicePort};

/// Set: every ClusterIP; traffic to one on a port no Service has is rejected.
const CLUSTER_IPS: &str = "cluster-ips";
/// Set: the node addresses NodePorts are served on.
const NODEPORT_IPS: &str = "nodeport-ips";
/// Set: (endpoint IP . endpoint IP): a pod sent to its own Service and was
/// given itself, which only works masqueraded.
const HAIRPIN: &str = "hairpin";
/// Verdict map: (ClusterIP, LoadBalancer or external IP, protocol, port) → the service's chain.
const SERVICE_IPS: &str = "service-ips";
/// Verdict map: (protocol, node port) → the service's external chain.
const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Verdict map: (ClusterIP, LoadBalancer or external IP, protocol, port) of
/// services without endpoints → reject (drop when only a `Local` policy
/// leaves none).
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Verdict map: (protocol, node port) of services without endpoints → reject.
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// The chain every service destination is looked up from; its rules are
/// rendered (they name the cluster CIDR), the chain itself is skeleton.
const SERVICES: &str = "services";

/// Every set and map of the skeleton with its declaration.
const SKELETON_SETS: [(&str, &str); 7] = [
    (CLUSTER_IPS, "type ipv4_addr;"),
    (NODEPORT_IPS, "type ipv4_addr;"),
    (HAIRPIN, "type ipv4_addr . ipv4_addr;"),
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
    (SERVICES, "", &[]),
    (
        "masquerading",
        "",
        &[
            "ip saddr . ip daddr @hairpin jump mark-for-masquerade",
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
    /// Rules of the `services` chain and of each service, local and
    /// external chain, by chain name.
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
        ruleset.chains.insert(
            SERVICES.into(),
            vec![
                format!(
                    "ip daddr @{CLUSTER_IPS} ip saddr != {cluster_cidr} jump mark-for-masquerade"
                ),
                format!("ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
                format!(
                    "ip daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"
                ),
            ],
        );
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
        let cluster_key = format!("{} . {proto} . {}", port.cluster_ip, port.port);
        let external_keys: Vec<String> = port
            .load_balancer_ips
            .iter()
            .chain(&port.external_ips)
            .map(|ip| format!("{ip} . {proto} . {}", port.port))
            .collect();
        let node_port_key = port
            .node_port
            .map(|node_port| format!("{proto} . {node_port}"));
        if port.endpoints.is_empty() {
            for key in std::iter::once(cluster_key).chain(external_keys) {
                self.element(NO_ENDPOINT_SERVICES, key, "goto reject-chain".into());
            }
            if let Some(key) = node_port_key {
                self.element(NO_ENDPOINT_NODEPORTS, key, "goto reject-chain".into());
            }
            return;
        }
        for endpoint in &port.endpoints {
            let ip = endpoint.address.ip();
            self.element(HAIRPIN, format!("{ip} . {ip}"), String::new());
        }

        let service_chain = object_name("service", &id);
        let rules = self.spread_rules(&id, port, port.endpoints.iter());
        self.chains.insert(service_chain.clone(), rules);
        let local: Vec<&Endpoint> = port.endpoints.iter().filter(|e| e.is_local).collect();
        let local_chain = (!local.is_empty()
            && (port.internal_traffic_local || port.external_traffic_local))
            .then(|| {
                let chain = object_name("local", &id);
                let rules = self.spread_rules(&id, port, local.iter().copied());
                self.chains.insert(chain.clone(), rules);
                chain
            });

        // ClusterIP traffic, by the internal policy.
        match (port.internal_traffic_local, &local_chain) {
            (false, _) => self.element(SERVICE_IPS, cluster_key, format!("goto {service_chain}")),
            (true, Some(local)) => self.element(SERVICE_IPS, cluster_key, format!("goto {local}")),
            // Endpoints, but none here: dropped, as kube-proxy does.
            (true, None) => self.element(NO_ENDPOINT_SERVICES, cluster_key, "drop".into()),
        }

        if external_keys.is_empty() && node_port_key.is_none() {
            return;
        }
        let external_chain = object_name("external", &id);
        let external_rules = if port.external_traffic_local {
            local_policy_rules(cluster_cidr, &service_chain, local_chain.as_deref())
        } else {
            // Masqueraded so that replies return through this node.
            vec![
                "jump mark-for-masquerade".into(),
                format!("goto {service_chain}"),
            ]
        };
        self.chains.insert(external_chain.clone(), external_rules);
        for key in external_keys {
            self.element(SERVICE_IPS, key, format!("goto {external_chain}"));
        }
        if let Some(key) = node_port_key {
            self.element(SERVICE_NODEPORTS, key, format!("goto {external_chain}"));
        }
    }

    /// The rules that pick one of `endpoints` and DNAT to it: with ClientIP
    /// affinity first a rule per endpoint for clients it served recently,
    /// then the cascade where endpoint `i` of `n` is taken with probability
    /// `1/(n-i)`, which makes every endpoint equally likely.
    fn spread_rules<'a>(
        &mut self,
        id: &str,
        port: &ServicePort,
        endpoints: impl ExactSizeIterator<Item = &'a Endpoint> + Clone,
    ) -> Vec<String> {
        let proto = port.protocol;
        let count = endpoints.len();
        let mut rules = Vec::with_capacity(count * 2);
        let mut recorders = Vec::with_capacity(count);
        for endpoint in endpoints.clone() {
            let record = match port.affinity_timeout {
                Some(timeout) => {
                    let set = affinity_set_name(id, endpoint.address, timeout);
                    self.affinity_sets.insert(set.clone(), timeout);
                    rules.push(format!(
                        "ip saddr @{set} {}",
                        dnat(proto, endpoint.address, Some(&set))
                    ));
                    Some(set)
                }
                None => None,
            };
            recorders.push((endpoint.address, record));
        }
        for (index, (address, record)) in recorders.iter().enumerate() {
            let remaining = count - index;
            let action = dnat(proto, *address, record.as_deref());
            rules.push(if remaining > 1 {
                format!("numgen random mod {remaining} 0 {action}")
            } else {
                action
            });
        }
        rules
    }
}

/// DNAT to `address`, first recording the client in the affinity `set`.
fn dnat(proto: Protocol, address: SocketAddrV4, set: Option<&str>) -> String {
    let record = set
        .map(|set| format!("update @{set} {{ ip saddr }} "))
        .unwrap_or_default();
    format!("meta l4proto {proto} {record}dnat ip to {address}")
}

/// The external chain of `externalTrafficPolicy: Local`, after kube-proxy:
/// pods and this host may still use every endpoint (pods unmasqueraded, the
/// host masqueraded); traffic from outside goes only to this node's
/// endpoints, unmasqueraded, and is dropped when there are none.
fn local_policy_rules(
    cluster_cidr: Ipv4Net,
    service_chain: &str,
    local_chain: Option<&str>,
) -> Vec<String> {
    vec![
        format!("ip saddr {cluster_cidr} goto {service_chain}"),
        "fib saddr type local jump mark-for-masquerade".into(),
        format!("fib saddr type local goto {service_chain}"),
        match local_chain {
            Some(local) => format!("goto {local}"),
            None => "drop".into(),
        },
    ]
}

/// The dynamic set recording the clients an endpoint of service port `id`
/// served; the timeout is part of the name, so a changed timeout makes a new set.
fn affinity_set_name(id: &str, endpoint: SocketAddrV4, timeout: u32) -> String {
    object_name(
        "affinity",
        &format!("{id}__{}/{}@{timeout}", endpoint.ip(), endpoint.port()),
    )
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

    const TABLE: &str = "gantry-proxy";

    fn endpoints(addresses: &[&str]) -> Vec<Endpoint> {
        addresses
            .iter()
            .map(|address| Endpoint::remote(address.parse().unwrap()))
            .collect()
    }

    fn web(addresses: &[&str]) -> ServicePort {
        ServicePort {
            namespace: "default".into(),
            service: "web".into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            cluster_ip: "10.43.0.10".parse().unwrap(),
            port: 80,
            node_port: None,
            load_balancer_ips: Vec::new(),
            external_ips: Vec::new(),
            external_traffic_local: false,
            internal_traffic_local: false,
            affinity_timeout: None,
            endpoints: endpoints(addresses),
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
    fn a_service_spreads_evenly_over_its_endpoints_and_marks_hairpins() {
        let script = update_script(
            TABLE,
            &Ruleset::default(),
            &render(&[web(&["10.42.0.5:8080", "10.42.0.6:8080", "10.42.0.7:8080"])]),
        );
        let service = object_name("service", "default/web/tcp/http");
        assert_eq!(
            lines_with(&script, &format!("add rule inet {TABLE} {service} ")),
            [
                format!(
                    "add rule inet {TABLE} {service} numgen random mod 3 0 meta l4proto tcp dnat ip to 10.42.0.5:8080"
                ),
                format!(
                    "add rule inet {TABLE} {service} numgen random mod 2 0 meta l4proto tcp dnat ip to 10.42.0.6:8080"
                ),
                format!(
                    "add rule inet {TABLE} {service} meta l4proto tcp dnat ip to 10.42.0.7:8080"
                ),
            ]
        );
        assert!(script.contains(&format!(
            "add element inet {TABLE} service-ips {{ 10.43.0.10 . tcp . 80 : goto {service} }}"
        )));
        assert!(script.contains(&format!(
            "add element inet {TABLE} cluster-ips {{ 10.43.0.10 }}"
        )));
        assert!(script.contains(&format!(
            "add element inet {TABLE} hairpin {{ 10.42.0.5 . 10.42.0.5, 10.42.0.6 . 10.42.0.6, 10.42.0.7 . 10.42.0.7 }}"
        )));
        assert!(script.contains(&format!(
            "add rule inet {TABLE} services ip daddr @cluster-ips ip saddr != 10.42.0.0/16 jump mark-for-masquerade"
        )));
        assert!(lines_with(&script, "reject").is_empty());
        // One chain per service port and no anonymous sets.
        assert_eq!(lines_with(&script, "add chain").len(), 2, "{script}");
        assert!(lines_with(&script, "vmap {").is_empty());
    }

    #[test]
    fn a_service_without_endpoints_is_rejected_on_every_address() {
        let mut port = web(&[]);
        port.node_port = Some(30080);
        port.load_balancer_ips = vec!["192.168.1.1".parse().unwrap()];
        port.external_ips = vec!["203.0.113.7".parse().unwrap()];
        let script = update_script(TABLE, &Ruleset::default(), &render(&[port]));
        assert!(script.contains(&format!(
            "add element inet {TABLE} no-endpoint-services {{ 10.43.0.10 . tcp . 80 : goto reject-chain, 192.168.1.1 . tcp . 80 : goto reject-chain, 203.0.113.7 . tcp . 80 : goto reject-chain }}"
        )));
        assert!(script.contains(&format!(
            "add element inet {TABLE} no-endpoint-nodeports {{ tcp . 30080 : goto reject-chain }}"
        )));
        assert_eq!(
            lines_with(&script, "add chain"),
            [format!("add chain inet {TABLE} services")]
        );
    }

    #[test]
    fn node_ports_load_balancers_and_external_ips_enter_through_a_masquerading_external_chain() {
        let mut port = web(&["10.42.0.5:8080"]);
        port.node_port = Some(30080);
        port.load_balancer_ips = vec!["192.168.1.1".parse().unwrap()];
        port.external_ips = vec!["203.0.113.7".parse().unwrap()];
        let script = update_script(TABLE, &Ruleset::default(), &render(&[port]));
        let external = object_name("external", "default/web/tcp/http");
        let service = object_name("service", "default/web/tcp/http");
        assert_eq!(
            lines_with(&script, &format!("add rule inet {TABLE} {external} ")),
            [
                format!("add rule inet {TABLE} {external} jump mark-for-masquerade"),
                format!("add rule inet {TABLE} {external} goto {service}"),
            ]
        );
        assert!(script.contains(&format!(
            "add element inet {TABLE} service-nodeports {{ tcp . 30080 : goto {external} }}"
        )));
        assert!(script.contains(&format!("192.168.1.1 . tcp . 80 : goto {external}")));
        assert!(script.contains(&format!("203.0.113.7 . tcp . 80 : goto {external}")));
        assert!(script.contains(&format!(
            "add element inet {TABLE} nodeport-ips {{ 192.168.1.1 }}"
        )));
    }

    #[test]
    fn external_traffic_policy_local_keeps_outside_traffic_on_this_nodes_endpoints() {
        let mut port = web(&["10.42.0.5:8080", "10.42.1.5:8080"]);
        port.node_port = Some(30080);
        port.external_traffic_local = true;
        port.endpoints[0].is_local = true;
        let script = update_script(TABLE, &Ruleset::default(), &render(&[port.clone()]));
        let external = object_name("external", "default/web/tcp/http");
        let service = object_name("service", "default/web/tcp/http");
        let local = object_name("local", "default/web/tcp/http");
        assert_eq!(
            lines_with(&script, &format!("add rule inet {TABLE} {external} ")),
            [
                format!("add rule inet {TABLE} {external} ip saddr 10.42.0.0/16 goto {service}"),
                format!(
                    "add rule inet {TABLE} {external} fib saddr type local jump mark-for-masquerade"
                ),
                format!("add rule inet {TABLE} {external} fib saddr type local goto {service}"),
                format!("add rule inet {TABLE} {external} goto {local}"),
            ]
        );
        assert_eq!(
            lines_with(&script, &format!("add rule inet {TABLE} {local} ")),
            [format!(
                "add rule inet {TABLE} {local} meta l4proto tcp dnat ip to 10.42.0.5:8080"
            )]
        );
        // ClusterIP traffic still uses every endpoint.
        assert!(script.contains(&format!("10.43.0.10 . tcp . 80 : goto {service}")));

        port.endpoints[0].is_local = false;
        let script = update_script(TABLE, &Ruleset::default(), &render(&[port]));
        assert!(script.contains(&format!("add rule inet {TABLE} {external} drop")));
        assert!(!script.contains(&local));
    }

    #[test]
    fn internal_traffic_policy_local_sends_cluster_ip_traffic_to_this_node_or_drops_it() {
        let mut port = web(&["10.42.0.5:8080", "10.42.1.5:8080"]);
        port.internal_traffic_local = true;
        port.endpoints[1].is_local = true;
        let script = update_script(TABLE, &Ruleset::default(), &render(&[port.clone()]));
        let local = object_name("local", "default/web/tcp/http");
        assert!(script.contains(&format!("10.43.0.10 . tcp . 80 : goto {local}")));
        assert!(script.contains(&format!(
            "add rule inet {TABLE} {local} meta l4proto tcp dnat ip to 10.42.1.5:8080"
        )));

        port.endpoints[1].is_local = false;
        let script = update_script(TABLE, &Ruleset::default(), &render(&[port]));
        assert!(script.contains(&format!(
            "add element inet {TABLE} no-endpoint-services {{ 10.43.0.10 . tcp . 80 : drop }}"
        )));
    }

    #[test]
    fn client_ip_affinity_records_and_follows_the_chosen_endpoint() {
        let mut port = web(&["10.42.0.5:8080"]);
        port.affinity_timeout = Some(60);
        let script = update_script(TABLE, &Ruleset::default(), &render(&[port]));
        let set = object_name("affinity", "default/web/tcp/http__10.42.0.5/8080@60");
        let service = object_name("service", "default/web/tcp/http");
        assert!(script.contains(&format!(
            "add set inet {TABLE} {set} {{ type ipv4_addr; flags dynamic,timeout; timeout 60s; }}"
        )));
        assert_eq!(
            lines_with(&script, &format!("add rule inet {TABLE} {service} ")),
            [
                format!(
                    "add rule inet {TABLE} {service} ip saddr @{set} meta l4proto tcp update @{set} {{ ip saddr }} dnat ip to 10.42.0.5:8080"
                ),
                format!(
                    "add rule inet {TABLE} {service} meta l4proto tcp update @{set} {{ ip saddr }} dnat ip to 10.42.0.5:8080"
                ),
            ]
        );
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
        let expected = [
            format!("flush chain inet {TABLE} {service}"),
            format!(
                "add rule inet {TABLE} {service} numgen random mod 2 0 meta l4proto tcp dnat ip to 10.42.0.5:8080"
            ),
            format!("add rule inet {TABLE} {service} meta l4proto tcp dnat ip to 10.42.0.7:8080"),
            format!("delete element inet {TABLE} hairpin {{ 10.42.0.6 . 10.42.0.6 }}"),
            format!("add element inet {TABLE} hairpin {{ 10.42.0.7 . 10.42.0.7 }}"),
        ];
        let mut lines: Vec<&str> = script.lines().collect();
        lines.sort_unstable();
        let mut expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        expected.sort_unstable();
        assert_eq!(lines, expected, "script:\n{script}");
        assert_eq!(update_script(TABLE, &after, &after), "");
    }

    #[test]
    fn a_removed_service_loses_its_map_elements_before_its_chains() {
        let mut port = web(&["10.42.0.5:8080"]);
        port.node_port = Some(30080);
        let script = update_script(TABLE, &render(&[port]), &render(&[]));
        let external = object_name("external", "default/web/tcp/http");
        let position = |needle: &str| {
            script
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} missing in:\n{script}"))
        };
        assert!(
            position("delete element inet gantry-proxy service-nodeports")
                < position(&format!("delete chain inet {TABLE} {external}"))
        );
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
        assert!(!script.contains("delete chain inet gantry-proxy services\n"));
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
