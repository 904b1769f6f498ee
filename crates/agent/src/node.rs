//! The Node object and its liveness signals: registration with the host's
//! capacity, addresses and versions; the `kube-node-lease` Lease renewed every
//! few seconds; and the status conditions with their heartbeat times.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

use crate::AgentConfig;

/// The namespace the API server keeps node Leases in.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long a Lease stays valid without renewal (the kubelet's default).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// What `kubectl get nodes` shows as VERSION.
pub const KUBELET_VERSION: &str = "v1.33.0+gantry";
/// The container runtime this agent drives, as `kubectl get nodes -o wide` shows it.
pub const CONTAINER_RUNTIME_VERSION: &str = "gantry://0.1.0";
/// The kubelet's default pod capacity.
pub const MAX_PODS: u32 = 110;

/// Registers and keeps alive one Node.
#[derive(Clone)]
pub struct NodeAgent {
    client: kube::Client,
    name: String,
    engine_root: std::path::PathBuf,
    host_ip: IpAddr,
    lease_renew_interval: Duration,
    status_update_interval: Duration,
    kubelet_port: u16,
}

impl NodeAgent {
    /// Prepares to register `config.node_name` with `config.node_ip`, or else the
    /// host's address, discovered once.
    pub fn new(client: kube::Client, config: &AgentConfig) -> NodeAgent {
        NodeAgent {
            client,
            name: config.node_name.clone(),
            engine_root: config.engine_root.clone(),
            host_ip: config.node_ip.unwrap_or_else(primary_ipv4),
            lease_renew_interval: config.lease_renew_interval,
            status_update_interval: config.status_update_interval,
            kubelet_port: config.kubelet_port,
        }
    }

    /// The node's InternalIP: where its pods' `hostIP` points.
    pub fn host_ip(&self) -> IpAddr {
        self.host_ip
    }

    /// Creates the Node if it does not exist, then writes its status.
    pub async fn register(&self) -> Result<(), kube::Error> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        if nodes.get_opt(&self.name).await?.is_none() {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    labels: Some(node_labels(&self.name)),
                    ..Default::default()
                },
                ..Default::default()
            };
            match nodes.create(&PostParams::default(), &node).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(error),
            }
        }
        self.update_status().await?;
        self.renew_lease().await
    }

    /// Renews the Lease and rewrites the status until `shutdown`, retrying failures.
    pub async fn run_heartbeat(self, shutdown: CancellationToken) {
        let mut lease_timer = tokio::time::interval(self.lease_renew_interval);
        let mut status_timer = tokio::time::interval(self.status_update_interval);
        lease_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        status_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = lease_timer.tick() => {
                    if let Err(error) = self.renew_lease().await {
                        tracing::warn!(%error, "renewing the node lease");
                    }
                }
                _ = status_timer.tick() => {
                    if let Err(error) = self.update_status().await {
                        tracing::warn!(%error, "updating the node status");
                    }
                }
            }
        }
    }

    async fn update_status(&self) -> Result<(), kube::Error> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut status = node_status(
            &self.name,
            self.host_ip,
            &self.engine_root,
            Timestamp::now(),
        );
        status.daemon_endpoints = Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(self.kubelet_port),
            }),
        });
        let patch = serde_json::json!({ "status": status });
        nodes
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    async fn renew_lease(&self) -> Result<(), kube::Error> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), NODE_LEASE_NAMESPACE);
        let now = MicroTime(Timestamp::now());
        match leases.get_opt(&self.name).await? {
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                spec.holder_identity = Some(self.name.clone());
                spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
                spec.renew_time = Some(now);
                leases
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await?;
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(NODE_LEASE_NAMESPACE.into()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.name.clone()),
                        lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        ..Default::default()
                    }),
                };
                leases.create(&PostParams::default(), &lease).await?;
            }
        }
        Ok(())
    }
}

/// Waits until the Node has a `spec.podCIDR` and returns it; `None` on shutdown.
/// A CIDR that does not parse is waited past, as if unassigned.
pub async fn wait_for_pod_cidr(
    client: &kube::Client,
    name: &str,
    shutdown: &CancellationToken,
) -> Result<Option<ipnet::Ipv4Net>, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        let node = nodes.get(name).await?;
        let cidr = node
            .spec
            .and_then(|s| s.pod_cidr)
            .and_then(|c| c.parse::<ipnet::Ipv4Net>().ok());
        if let Some(cidr) = cidr {
            return Ok(Some(cidr));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The well-known labels the kubelet puts on its Node.
fn node_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), name.to_owned()),
        (
            "kubernetes.io/os".to_owned(),
            std::env::consts::OS.to_owned(),
        ),
        ("kubernetes.io/arch".to_owned(), go_arch().to_owned()),
        (
            "beta.kubernetes.io/os".to_owned(),
            std::env::consts::OS.to_owned(),
        ),
        ("beta.kubernetes.io/arch".to_owned(), go_arch().to_owned()),
    ])
}

/// The node's status as the kubelet reports it, read from this host.
pub fn node_status(name: &str, host_ip: IpAddr, engine_root: &Path, now: Timestamp) -> NodeStatus {
    let capacity = host_capacity(engine_root);
    NodeStatus {
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: host_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.to_owned(),
            },
        ]),
        conditions: Some(node_conditions(now)),
        node_info: Some(system_info()),
        ..Default::default()
    }
}

fn node_conditions(now: Timestamp) -> Vec<NodeCondition> {
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    };
    vec![
        condition(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        condition(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        condition(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ]
}

fn host_capacity(engine_root: &Path) -> BTreeMap<String, Quantity> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut capacity = BTreeMap::from([
        ("cpu".to_owned(), Quantity(cpus.to_string())),
        ("pods".to_owned(), Quantity(MAX_PODS.to_string())),
    ]);
    if let Some(kib) = memory_total_kib() {
        capacity.insert("memory".into(), Quantity(format!("{kib}Ki")));
    }
    if let Some(bytes) = filesystem_bytes(engine_root) {
        capacity.insert(
            "ephemeral-storage".into(),
            Quantity(format!("{}Ki", bytes / 1024)),
        );
    }
    capacity
}

fn memory_total_kib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total_kib(&meminfo)
}

/// `MemTotal:  16318412 kB` -> 16318412.
fn parse_mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The size of the filesystem holding `path` (or its nearest existing ancestor).
fn filesystem_bytes(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let stats = nix::sys::statvfs::statvfs(existing).ok()?;
    Some(stats.blocks() as u64 * stats.fragment_size() as u64)
}

fn system_info() -> NodeSystemInfo {
    let uname = nix::sys::utsname::uname().ok();
    let kernel_version = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    NodeSystemInfo {
        architecture: go_arch().into(),
        operating_system: std::env::consts::OS.into(),
        kernel_version,
        os_image: pretty_name(&os_release).unwrap_or_else(|| "Linux".into()),
        container_runtime_version: CONTAINER_RUNTIME_VERSION.into(),
        kubelet_version: KUBELET_VERSION.into(),
        kube_proxy_version: String::new(),
        machine_id: read_trimmed("/etc/machine-id"),
        system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid"),
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        ..Default::default()
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"` from an os-release file.
fn pretty_name(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|value| value.trim().trim_matches('"').to_owned())
}

/// Go's name for this architecture, which Kubernetes uses (`amd64`, `arm64`).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// The address the host would use to reach the outside world, found by routing a
/// UDP socket (no packet is sent); loopback when there is no route.
fn primary_ipv4() -> IpAddr {
    let routed = || -> std::io::Result<IpAddr> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.connect((Ipv4Addr::new(192, 0, 2, 1), 53))?;
        Ok(socket.local_addr()?.ip())
    };
    match routed() {
        Ok(ip) if !ip.is_unspecified() => ip,
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memory_and_os_name() {
        assert_eq!(
            parse_mem_total_kib("MemTotal:       16318412 kB\nMemFree: 1 kB\n"),
            Some(16318412)
        );
        assert_eq!(parse_mem_total_kib("MemFree: 1 kB\n"), None);
        assert_eq!(
            pretty_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            Some("Debian GNU/Linux 12 (bookworm)".into())
        );
    }

    #[test]
    fn status_reports_capacity_addresses_and_readiness() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::now();
        let status = node_status(
            "n1",
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
            dir.path(),
            now,
        );
        let capacity = status.capacity.unwrap();
        assert_eq!(capacity["pods"].0, "110");
        assert!(capacity.contains_key("cpu"));
        assert!(capacity["memory"].0.ends_with("Ki"));
        assert!(capacity["ephemeral-storage"].0.ends_with("Ki"));
        let addresses = status.addresses.unwrap();
        assert_eq!(addresses[0].type_, "InternalIP");
        assert_eq!(addresses[0].address, "10.0.0.5");
        assert_eq!(addresses[1].address, "n1");
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        let info = status.node_info.unwrap();
        assert_eq!(info.kubelet_version, KUBELET_VERSION);
        assert_eq!(info.container_runtime_version, "gantry://0.1.0");
        assert!(!info.kernel_version.is_empty());
    }
}
