//! Gantry's node agent (the kubelet and kube-proxy): registers its Node,
//! renews its Lease, and drives the pods bound to it on the container engine.
//!
//! [`run`] owns three kinds of background work, all stopped by one
//! [`CancellationToken`]: the node heartbeat ([`node`]), the pod watch and one
//! worker per pod ([`pods`]), each worker's probes ([`probes`]), and the service
//! proxy's watches and sync loop ([`proxy`]). Stopping the
//! agent leaves containers running: their monitors (the engine's shims) keep them,
//! and the next agent adopts them.

pub mod dns;
pub mod kubelet_api;
pub mod network;
pub mod node;
pub mod pods;
pub mod probes;
pub mod proxy;
pub mod volumes;

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the agent needs to know about its node and engine.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The Node's name (and the pods' `spec.nodeName`).
    pub node_name: String,
    /// The engine's root (images and containers, shared with `gantry run`): /var/lib/gantry by default.
    pub engine_root: PathBuf,
    /// How to start the per-container monitor: `<current exe> --root <root> container-shim`.
    pub shim: gantry_runtime::ShimCommand,
    /// Where pods' network namespaces are pinned (one file per pod UID).
    pub netns_dir: PathBuf,
    /// How often the node Lease is renewed.
    pub lease_renew_interval: Duration,
    /// How often the Node's status (and its heartbeat times) is rewritten.
    pub status_update_interval: Duration,
    /// The kubelet API's port (10250; 0 picks a free one, advertised in the Node status).
    pub kubelet_port: u16,
    /// The address other nodes and the API server reach this node on (its InternalIP);
    /// `None` picks the address of the default route, as the kubelet does.
    pub node_ip: Option<std::net::IpAddr>,
    /// The CA certificates (DER) that sign the kubelet API's callers: the cluster CA,
    /// from the agent's kubeconfig ([`kubelet_api::cluster_ca`]).
    pub kubelet_client_ca: Vec<Vec<u8>>,
    /// The node's pod network (a bridge with an address per pod); `None` gives
    /// pods a loopback-only namespace and no `podIP`.
    pub pod_network: Option<PodNetworkSettings>,
    /// The service proxy (kube-proxy's job): Services' virtual addresses
    /// programmed in nftables; `None` leaves Services to another proxy.
    pub proxy: Option<ProxySettings>,
    /// The cluster DNS service's address (the kubelet's `--cluster-dns`): the
    /// nameserver of `dnsPolicy: ClusterFirst` pods. `None` gives them the host's
    /// resolvers.
    pub cluster_dns: Option<std::net::Ipv4Addr>,
    /// The cluster's DNS domain (`--cluster-domain`), for pods' search paths and
    /// fully qualified hostnames.
    pub cluster_domain: String,
    /// Where the local-path provisioner's volumes live on this node (the
    /// controller manager's setting must agree): released ones are removed here.
    pub local_storage_dir: PathBuf,
}

/// How the agent sets up the node's pod network once the Node has a `spec.podCIDR`.
#[derive(Clone, Debug)]
pub struct PodNetworkSettings {
    /// The range of every pod address in the cluster.
    pub cluster_cidr: ipnet::Ipv4Net,
    /// The bridge the pods attach to.
    pub bridge: String,
    /// Gantry's own nftables table.
    pub nft_table: String,
}

impl PodNetworkSettings {
    /// k3s-like defaults: `gantry0` in 10.42.0.0/16, table `gantry`.
    pub fn new(cluster_cidr: ipnet::Ipv4Net) -> PodNetworkSettings {
        PodNetworkSettings {
            cluster_cidr,
            bridge: "gantry0".into(),
            nft_table: "gantry".into(),
        }
    }
}

/// How the node's service proxy programs the data path.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// The range of every pod address: traffic to a Service from outside it is
    /// masqueraded, so that replies return through this node.
    pub cluster_cidr: ipnet::Ipv4Net,
    /// The node addresses that serve NodePorts and load balancers; empty means
    /// the node's InternalIP.
    pub node_ips: Vec<std::net::Ipv4Addr>,
    /// The proxy's own nftables table (family inet).
    pub nft_table: String,
    /// The shortest time between two syncs: changes arriving meanwhile are
    /// applied together.
    pub min_sync_interval: Duration,
}

impl ProxySettings {
    /// Table `gantry-proxy`, syncs at most every 100 ms, NodePorts on the InternalIP.
    pub fn new(cluster_cidr: ipnet::Ipv4Net) -> ProxySettings {
        ProxySettings {
            cluster_cidr,
            node_ips: Vec::new(),
            nft_table: "gantry-proxy".into(),
            min_sync_interval: Duration::from_millis(100),
        }
    }
}

impl AgentConfig {
    /// The upstream kubelet's defaults for `node_name` on the engine at `engine_root`.
    pub fn new(
        node_name: impl Into<String>,
        engine_root: impl Into<PathBuf>,
        shim: gantry_runtime::ShimCommand,
    ) -> AgentConfig {
        let engine_root = engine_root.into();
        AgentConfig {
            node_name: node_name.into(),
            netns_dir: engine_root.join("netns"),
            local_storage_dir: engine_root.join("storage"),
            engine_root,
            shim,
            lease_renew_interval: Duration::from_secs(10),
            status_update_interval: Duration::from_secs(20),
            kubelet_port: kubelet_api::DEFAULT_PORT,
            node_ip: None,
            kubelet_client_ca: Vec::new(),
            pod_network: None,
            proxy: None,
            cluster_dns: None,
            cluster_domain: "cluster.local".into(),
        }
    }
}

/// Why the agent stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The API server refused or failed a request the agent cannot do without.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// The container engine could not be opened.
    #[error("container runtime: {0}")]
    Runtime(#[from] gantry_runtime::Error),
    /// The image store could not be opened.
    #[error("image store: {0}")]
    Image(#[from] gantry_image::ImageError),
    /// The pod network could not be set up.
    #[error("pod network: {0}")]
    Network(#[from] network::NetworkError),
    /// The kubelet API could not start.
    #[error(transparent)]
    KubeletApi(#[from] kubelet_api::KubeletApiError),
    /// The service proxy could not start.
    #[error("service proxy: {0}")]
    Proxy(#[from] proxy::ProxyError),
}

/// Registers the node and runs the agent until `shutdown` is cancelled.
///
/// Fails only when the node cannot be registered or the engine cannot be
/// opened; later API errors are retried, as the kubelet does.
pub async fn run(
    client: kube::Client,
    mut config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let engine = pods::Engine::open(&config)?;
    let kubelet_api = kubelet_api::KubeletApi::bind(&config).await?;
    config.kubelet_port = kubelet_api.port();
    let node = node::NodeAgent::new(client.clone(), &config);
    node.register().await?;
    tracing::info!(node = %config.node_name, "node registered");

    let proxy = match config.proxy.clone() {
        Some(settings) => {
            let node_ips = proxy_node_ips(&settings, node.host_ip());
            let proxy = proxy::ServiceProxy::new(client.clone(), settings, node_ips)?
                .with_node_name(&config.node_name);
            Some(proxy)
        }
        None => None,
    };

    let tasks = TaskTracker::new();
    tasks.spawn(node.clone().run_heartbeat(shutdown.clone()));
    tasks.spawn(kubelet_api.serve(shutdown.clone()));
    tasks.spawn(volumes::reclaimer::run(
        client.clone(),
        config.node_name.clone(),
        config.local_storage_dir.clone(),
        shutdown.clone(),
    ));
    if let Some(proxy) = proxy {
        tasks.spawn(proxy.run(shutdown.clone()));
    }
    if let (Some(_), Some(cluster_dns)) = (&config.pod_network, config.cluster_dns) {
        let dns = dns::DnsConfig::node_local(cluster_dns, config.cluster_domain.clone()).await;
        tasks.spawn(dns::run_node_local(client.clone(), dns, shutdown.clone()));
    }
    let Some(sandboxes) = sandboxes(&client, &config, &tasks, &shutdown).await? else {
        tasks.close();
        tasks.wait().await;
        return Ok(());
    };
    let host_ip = node.host_ip().to_string();
    tasks.spawn(pods::run(
        client,
        config,
        engine,
        sandboxes,
        host_ip,
        shutdown.clone(),
    ));
    tasks.close();
    shutdown.cancelled().await;
    tasks.wait().await;
    Ok(())
}

/// The configured node addresses for NodePorts, or else the node's own IPv4 address.
fn proxy_node_ips(settings: &ProxySettings, host_ip: std::net::IpAddr) -> Vec<std::net::Ipv4Addr> {
    match host_ip {
        _ if !settings.node_ips.is_empty() => settings.node_ips.clone(),
        std::net::IpAddr::V4(ip) => vec![ip],
        std::net::IpAddr::V6(_) => Vec::new(),
    }
}

/// Where pods' sandboxes come from: the pod network on the Node's `spec.podCIDR`
/// (waited for: the node IPAM controller assigns it), or loopback-only
/// namespaces. `None` when shut down while waiting. With the pod network, the
/// routes to the other nodes' pods are kept on `tasks`.
async fn sandboxes(
    client: &kube::Client,
    config: &AgentConfig,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<Option<pods::Sandboxes>, AgentError> {
    let Some(settings) = &config.pod_network else {
        return Ok(Some(pods::Sandboxes::new(config.netns_dir.clone())));
    };
    let Some(pod_cidr) = node::wait_for_pod_cidr(client, &config.node_name, shutdown).await? else {
        return Ok(None);
    };
    let state_dir = config.engine_root.join("network");
    let network = network::PodNetwork::new(network::PodNetworkConfig {
        bridge: settings.bridge.clone(),
        pod_cidr,
        cluster_cidr: settings.cluster_cidr,
        state_dir: state_dir.clone(),
        nft_table: settings.nft_table.clone(),
    })
    .await?;
    let network = std::sync::Arc::new(network);
    tasks.spawn(network::sync_peer_routes(
        client.clone(),
        network.clone(),
        config.node_name.clone(),
        shutdown.clone(),
    ));
    Ok(Some(pods::Sandboxes::with_network(
        state_dir.join("netns"),
        network,
    )))
}
