//! The pod network: a bridge per node with host-gw routes to the other nodes' pod
//! CIDRs, in the style of k3s's flannel host-gw backend.
//!
//! Each node owns one slice of the cluster range (its Node's `spec.podCIDR`). The
//! bridge holds the slice's first address and is every local pod's gateway; each
//! pod gets its own network namespace joined to the bridge by a veth pair. Other
//! nodes' slices are reached through plain routes via those nodes' addresses, and
//! pod traffic leaving the cluster range is masqueraded in Gantry's own nftables
//! table. Linux only; needs root.
//!
//! A [`PodNetwork`] acts in the network namespace of the thread that created it,
//! whichever thread later calls it: its netlink socket is bound there at creation,
//! and namespace-scoped work (pod namespaces, sysctls, nft) runs on short-lived
//! threads that enter that namespace first.

mod ipam;
mod links;
pub(crate) mod netns;
pub(crate) mod nft;
mod peers;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OwnedMutexGuard};

use ipam::PodIpam;
use links::Links;
use netns::Namespace;

pub use peers::{PeerRoute, peer_routes, sync_peer_routes};

/// The interface name a pod sees.
const POD_INTERFACE: &str = "eth0";

/// The longest interface name Linux accepts (IFNAMSIZ - 1).
const MAX_INTERFACE_NAME: usize = 15;

/// Why a pod network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The configuration cannot work (names too long, CIDRs that do not nest, ...).
    #[error("invalid pod network configuration: {0}")]
    InvalidConfig(String),
    /// The pod uid cannot name a file (it is used as the namespace file name).
    #[error("invalid pod uid {0:?}")]
    InvalidPodUid(String),
    /// Every address of the node's pod CIDR is taken.
    #[error("no free pod address left in {0}")]
    PodCidrExhausted(Ipv4Net),
    /// A link that was just created or configured is missing.
    #[error("network link {0} does not exist")]
    MissingLink(String),
    /// The kernel refused a netlink request.
    #[error("{context}: {source}")]
    Netlink {
        /// What was being done.
        context: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A namespace or mount system call failed.
    #[error("{context}: {source}")]
    Sys {
        /// What was being done.
        context: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// `nft` rejected the ruleset.
    #[error("nft: {0}")]
    Nft(String),
    /// The IPAM state file could not be read or written.
    #[error("pod address state {path}: {source}")]
    State {
        /// The state file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A helper thread died before reporting its result.
    #[error("a network helper thread died")]
    WorkerLost,
}

impl NetworkError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        NetworkError::Io {
            context: context.into(),
            source,
        }
    }

    fn sys(context: impl Into<String>, source: nix::Error) -> Self {
        NetworkError::Sys {
            context: context.into(),
            source,
        }
    }

    fn netlink(context: impl Into<String>, source: rtnetlink::Error) -> Self {
        NetworkError::Netlink {
            context: context.into(),
            source,
        }
    }
}

/// How one node's pod network is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetworkConfig {
    /// The bridge the pods are attached to (k3s: `cni0`; Gantry: `gantry0`).
    pub bridge: String,
    /// This node's slice of the cluster range (its Node's `spec.podCIDR`).
    pub pod_cidr: Ipv4Net,
    /// The range of every pod address in the cluster (k3s: 10.42.0.0/16); traffic
    /// to it is never masqueraded and peer routes must lie in it.
    pub cluster_cidr: Ipv4Net,
    /// Where the address allocations (`ipam.json`) and the pods' namespace files
    /// (`netns/<pod uid>`) live; keep it across agent restarts.
    pub state_dir: PathBuf,
    /// Gantry's own nftables table (family `ip`); no other table is touched.
    pub nft_table: String,
}

impl PodNetworkConfig {
    fn validate(&self) -> Result<(), NetworkError> {
        let invalid = |message: String| Err(NetworkError::InvalidConfig(message));
        if self.bridge.is_empty()
            || self.bridge.len() > MAX_INTERFACE_NAME
            || self.bridge.contains(['/', ' '])
        {
            return invalid(format!(
                "bridge name {:?} is not a valid interface name",
                self.bridge
            ));
        }
        if !nft::is_valid_table_name(&self.nft_table) {
            return invalid(format!(
                "nft table name {:?} is not an identifier",
                self.nft_table
            ));
        }
        if self.pod_cidr.prefix_len() > 30 {
            return invalid(format!("pod CIDR {} has no room for pods", self.pod_cidr));
        }
        if !self.cluster_cidr.contains(&self.pod_cidr) {
            return invalid(format!(
                "pod CIDR {} is not inside cluster CIDR {}",
                self.pod_cidr, self.cluster_cidr
            ));
        }
        Ok(())
    }

    fn netns_dir(&self) -> PathBuf {
        self.state_dir.join("netns")
    }

    fn ipam_file(&self) -> PathBuf {
        self.state_dir.join("ipam.json")
    }
}

/// A pod's place on the network, as the runtime needs it: the namespace to run
/// the pod's containers in, and the address to report in `status.podIP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterface {
    /// The pod's network namespace file (join it with setns or an OCI `path`).
    pub netns: PathBuf,
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The pod's default gateway (the bridge).
    pub gateway: Ipv4Addr,
    /// The interface name inside the pod.
    pub interface: String,
}

/// One node's pod network: the bridge, the pods' namespaces and veths, the
/// address allocations, the peer routes and the masquerade rules.
pub struct PodNetwork {
    config: PodNetworkConfig,
    host: Namespace,
    links: Links,
    bridge_index: u32,
    /// The allocations; held only while they change and are saved, so pods
    /// starting at once set up their namespaces and veths concurrently.
    ipam: Mutex<PodIpam>,
    /// A lock per pod, held across its whole attach or detach so operations on
    /// the same pod never interleave.
    pod_locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl PodNetwork {
    /// Creates (idempotently) the bridge with the first address of `pod_cidr`,
    /// enables ip_forward, and programs masquerading for pod traffic leaving the
    /// cluster CIDR in Gantry's own nftables table.
    pub async fn new(config: PodNetworkConfig) -> Result<Self, NetworkError> {
        config.validate()?;
        let host = Namespace::current()?;
        let links = Links::connect_here()?;
        let netns_dir = config.netns_dir();
        let ipam_file = config.ipam_file();
        let pod_cidr = config.pod_cidr;
        let ipam = netns::blocking(move || {
            std::fs::create_dir_all(&netns_dir).map_err(|err| {
                NetworkError::io(format!("creating {}", netns_dir.display()), err)
            })?;
            PodIpam::load(&ipam_file, pod_cidr)
        })
        .await?;
        let bridge_address = with_prefix(ipam.gateway(), pod_cidr)?;
        let bridge_index = links.ensure_bridge(&config.bridge, bridge_address).await?;
        enable_ip_forward(&host).await?;
        let ruleset =
            nft::masquerade_ruleset(&config.nft_table, config.pod_cidr, config.cluster_cidr);
        nft::apply(&host, ruleset).await?;
        tracing::info!(bridge = config.bridge, pod_cidr = %config.pod_cidr, "pod network ready");
        Ok(PodNetwork {
            config,
            host,
            links,
            bridge_index,
            ipam: Mutex::new(ipam),
            pod_locks: std::sync::Mutex::default(),
        })
    }

    /// Gives the pod (key = pod uid) a network namespace (bind-mounted file under
    /// state_dir/netns/<uid>), a veth pair into the bridge, an IP from pod_cidr
    /// (persisted, so an agent restart re-finds it: attach is idempotent), lo up,
    /// a default route via the bridge address.
    pub async fn attach(&self, pod_uid: &str) -> Result<PodInterface, NetworkError> {
        let netns = self.netns_path(pod_uid)?;
        let _pod = self.lock_pod(pod_uid).await;
        let (ip, gateway) = {
            let mut ipam = self.ipam.lock().await;
            let (ip, new) = ipam.allocate(pod_uid)?;
            if new {
                save(&ipam).await?;
            }
            (ip, ipam.gateway())
        };
        let pod = self.ensure_namespace(&netns).await?;
        let pod_links = Links::connect_in(&pod).await?;
        self.ensure_veth(pod_uid, &pod, &pod_links).await?;
        let address = with_prefix(ip, self.config.pod_cidr)?;
        pod_links.configure("lo", None).await?;
        let eth0 = pod_links.configure(POD_INTERFACE, Some(address)).await?;
        pod_links.set_default_route(gateway, eth0).await?;
        Ok(PodInterface {
            netns,
            ip,
            gateway,
            interface: POD_INTERFACE.to_string(),
        })
    }

    /// Opens the pod's namespace, creating and pinning it unless it already is.
    async fn ensure_namespace(&self, netns: &Path) -> Result<Namespace, NetworkError> {
        if !netns::is_pinned(netns.to_path_buf()).await? {
            self.host.create_pinned(netns.to_path_buf()).await?;
        }
        Namespace::open(netns)
    }

    /// Makes sure the pod has its eth0 and that the host end is a hairpinned,
    /// up port of the bridge (again after a restart, in case the bridge was
    /// recreated meanwhile).
    async fn ensure_veth(
        &self,
        pod_uid: &str,
        pod: &Namespace,
        pod_links: &Links,
    ) -> Result<(), NetworkError> {
        let (host_end, pod_end) = veth_names(pod_uid);
        if pod_links.index(POD_INTERFACE).await?.is_none() {
            self.links
                .create_veth_into(&host_end, &pod_end, pod)
                .await?;
            pod_links.rename(&pod_end, POD_INTERFACE).await?;
        }
        self.links.join_bridge(&host_end, self.bridge_index).await
    }

    /// Removes the veth, unmounts/deletes the netns, releases the IP; idempotent.
    pub async fn detach(&self, pod_uid: &str) -> Result<(), NetworkError> {
        let netns = self.netns_path(pod_uid)?;
        let pod = self.lock_pod(pod_uid).await;
        let (host_end, pod_end) = veth_names(pod_uid);
        self.links.delete(&host_end).await?;
        // Left in the host namespace only if an attach stopped before moving it.
        self.links.delete(&pod_end).await?;
        netns::remove_pinned(netns).await?;
        let mut ipam = self.ipam.lock().await;
        if ipam.release(pod_uid) {
            save(&ipam).await?;
        }
        drop(pod);
        self.pod_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(pod_uid);
        Ok(())
    }

    /// Waits for any other attach or detach of the pod, then holds it off.
    async fn lock_pod(&self, pod_uid: &str) -> OwnedMutexGuard<()> {
        let lock = self
            .pod_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(pod_uid.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Host-gw routes to the other nodes' pod CIDRs: replaces the set of routes
    /// this network owns. Each peer is (that node's pod CIDR, that node's address);
    /// peers outside the cluster CIDR or overlapping this node's are skipped.
    pub async fn set_peer_routes(&self, peers: &[(Ipv4Net, Ipv4Addr)]) -> Result<(), NetworkError> {
        let wanted: std::collections::BTreeMap<Ipv4Net, Ipv4Addr> = peers
            .iter()
            .map(|(cidr, gateway)| (cidr.trunc(), *gateway))
            .filter(|(cidr, gateway)| {
                let usable = self.config.cluster_cidr.contains(cidr)
                    && !cidr.contains(&self.config.pod_cidr)
                    && !self.config.pod_cidr.contains(cidr);
                if !usable {
                    tracing::warn!(%cidr, %gateway, "skipping a peer route outside the cluster CIDR or onto this node");
                }
                usable
            })
            .collect();
        let current = self.links.owned_routes(self.config.cluster_cidr).await?;
        // One unreachable peer must not keep the others' routes stale: apply every
        // change and report the first failure.
        let mut first_error = None;
        for (cidr, gateway) in &current {
            if wanted.get(cidr) != Some(gateway)
                && let Err(err) = self.links.delete_route(*cidr, *gateway).await
            {
                first_error.get_or_insert(err);
            }
        }
        for (cidr, gateway) in &wanted {
            if current.get(cidr) != Some(gateway)
                && let Err(err) = self.links.replace_route(*cidr, *gateway).await
            {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The pods holding an address (uid, address), e.g. for an agent starting up
    /// to detach pods that no longer exist.
    pub async fn attached_pods(&self) -> Vec<(String, Ipv4Addr)> {
        let ipam = self.ipam.lock().await;
        ipam.pods().map(|(uid, ip)| (uid.to_string(), ip)).collect()
    }

    /// Removes everything this network created (bridge, nft table, routes); used by tests and `--disable-agent` cleanups.
    /// Pods still attached are detached first, and the state is deleted.
    pub async fn teardown(self) -> Result<(), NetworkError> {
        let pods: Vec<String> = self
            .attached_pods()
            .await
            .into_iter()
            .map(|(uid, _)| uid)
            .collect();
        for pod_uid in pods {
            self.detach(&pod_uid).await?;
        }
        for (cidr, gateway) in self.links.owned_routes(self.config.cluster_cidr).await? {
            self.links.delete_route(cidr, gateway).await?;
        }
        self.links.delete(&self.config.bridge).await?;
        nft::apply(&self.host, nft::delete_table_script(&self.config.nft_table)).await?;
        netns::remove_all_pinned(self.config.netns_dir()).await?;
        let ipam_file = self.config.ipam_file();
        netns::blocking(move || match std::fs::remove_file(&ipam_file) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(NetworkError::io(
                format!("removing {}", ipam_file.display()),
                err,
            )),
            _ => Ok(()),
        })
        .await
    }

    fn netns_path(&self, pod_uid: &str) -> Result<PathBuf, NetworkError> {
        let valid = !pod_uid.is_empty()
            && pod_uid.len() <= 128
            && pod_uid != "."
            && pod_uid != ".."
            && pod_uid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            return Err(NetworkError::InvalidPodUid(pod_uid.to_string()));
        }
        Ok(self.config.netns_dir().join(pod_uid))
    }
}

/// Saves the allocations off the async runtime. The caller holds the lock, so
/// saves happen in allocation order.
async fn save(ipam: &PodIpam) -> Result<(), NetworkError> {
    let bytes = ipam.encode()?;
    let path = ipam.path().to_path_buf();
    netns::blocking(move || ipam::write_atomically(&path, &bytes)).await
}

async fn enable_ip_forward(host: &Namespace) -> Result<(), NetworkError> {
    host.run(|| {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|err| NetworkError::io("enabling net.ipv4.ip_forward", err))
    })
    .await
}

/// `ip` with the prefix length of `cidr`, as an interface address.
fn with_prefix(ip: Ipv4Addr, cidr: Ipv4Net) -> Result<Ipv4Net, NetworkError> {
    Ipv4Net::new(ip, cidr.prefix_len())
        .map_err(|_| NetworkError::InvalidConfig(format!("pod CIDR {cidr}")))
}

/// The host and (before its rename to eth0) pod ends of a pod's veth pair:
/// derived from the uid so a restarted agent finds them, short enough for IFNAMSIZ.
fn veth_names(pod_uid: &str) -> (String, String) {
    let digest = Sha256::digest(pod_uid.as_bytes());
    let suffix: String = digest
        .iter()
        .take(5)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    (format!("gveth{suffix}"), format!("gpod{suffix}"))
}
