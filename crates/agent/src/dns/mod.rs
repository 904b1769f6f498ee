//! Cluster DNS served by every node agent (what CoreDNS does in k3s, but
//! node-local): the `kube-system/kube-dns` Service's ClusterIP (10.43.0.10) is
//! put on a dummy interface of each node, and the agent answers on it.
//!
//! Names in the cluster domain are answered from reflectors of Services,
//! EndpointSlices and Pods, read on every query, so a change is visible as
//! soon as its watch event arrives ([`records`]); other names are forwarded to
//! the host's resolvers ([`forward`]). The server is hickory-server with our
//! own request handler ([`handler`]).

pub mod forward;
pub mod handler;
pub mod interface;
pub mod records;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use hickory_proto::rr::Name;
use hickory_server::Server;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::forward::Forwarder;
use self::handler::ClusterDnsHandler;
use self::records::{ClusterState, ClusterZone};

/// The cluster DNS Service's ClusterIP (k3s's choice, in the 10.43.0.0/16 service range).
pub const CLUSTER_DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 10);

/// The dummy interface holding [`CLUSTER_DNS_IP`] on every node.
pub const DNS_INTERFACE: &str = "gantry-dns";

/// How long an idle TCP client may keep its connection.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait before trying again to take the DNS address when another
/// process holds it (an agent of an earlier run, a test's server).
const BIND_RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The cluster domain is not a valid DNS name.
    #[error("invalid cluster domain {domain:?}: {source}")]
    InvalidDomain {
        /// The configured domain.
        domain: String,
        /// Why it does not parse.
        #[source]
        source: hickory_proto::ProtoError,
    },
    /// The listening address could not be bound.
    #[error("binding DNS {protocol} socket {address}: {source}")]
    Bind {
        /// `udp` or `tcp`.
        protocol: &'static str,
        /// The address asked for.
        address: SocketAddr,
        /// The kernel's refusal.
        #[source]
        source: std::io::Error,
    },
    /// The dummy interface holding the DNS address could not be set up.
    #[error("DNS interface: {0}")]
    Interface(String),
    /// The forwarding resolver could not be built.
    #[error("upstream resolver: {0}")]
    Resolver(#[source] hickory_resolver::net::NetError),
}

/// Where and what the DNS server serves.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// The UDP and TCP address to answer on (port 0 picks a free port, for tests).
    pub listen: SocketAddr,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// The resolvers names outside the cluster domain go to; none gives SERVFAIL.
    pub upstreams: Vec<SocketAddr>,
    /// The dummy interface to put the listen address on before binding
    /// (`None` when the address already exists, as 127.0.0.1 in tests).
    pub interface: Option<String>,
}

impl DnsConfig {
    /// A node's cluster DNS: `cluster_dns:53` on [`DNS_INTERFACE`],
    /// forwarding to the resolvers of the host's /etc/resolv.conf.
    pub async fn node_local(cluster_dns: Ipv4Addr, cluster_domain: impl Into<String>) -> DnsConfig {
        let resolv_conf = tokio::fs::read_to_string("/etc/resolv.conf")
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(error = %err, "cannot read /etc/resolv.conf: no DNS forwarding");
                String::new()
            });
        DnsConfig {
            listen: SocketAddr::new(IpAddr::V4(cluster_dns), 53),
            cluster_domain: cluster_domain.into(),
            upstreams: forward::upstreams_from_resolv_conf(&resolv_conf, IpAddr::V4(cluster_dns)),
            interface: Some(DNS_INTERFACE.to_string()),
        }
    }
}

/// A DNS server whose sockets are bound; [`ClusterDns::serve`] answers on them.
pub struct ClusterDns {
    config: DnsConfig,
    domain: Name,
    udp: UdpSocket,
    tcp: TcpListener,
}

impl ClusterDns {
    /// Sets up the interface (if configured) and binds UDP and TCP on the same port.
    pub async fn bind(config: DnsConfig) -> Result<ClusterDns, DnsError> {
        let domain =
            Name::from_ascii(&config.cluster_domain).map_err(|source| DnsError::InvalidDomain {
                domain: config.cluster_domain.clone(),
                source,
            })?;
        if let (Some(interface), IpAddr::V4(address)) = (&config.interface, config.listen.ip()) {
            let link = interface::ensure_dns_address(interface, address).await?;
            tracing::debug!(%address, %link, "cluster DNS address configured");
        }
        let udp = UdpSocket::bind(config.listen)
            .await
            .map_err(|source| DnsError::Bind {
                protocol: "udp",
                address: config.listen,
                source,
            })?;
        let address = udp.local_addr().map_err(|source| DnsError::Bind {
            protocol: "udp",
            address: config.listen,
            source,
        })?;
        let tcp = TcpListener::bind(address)
            .await
            .map_err(|source| DnsError::Bind {
                protocol: "tcp",
                address,
                source,
            })?;
        Ok(ClusterDns {
            config,
            domain,
            udp,
            tcp,
        })
    }

    /// The address (UDP and TCP) the server answers on.
    pub fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr().unwrap_or(self.config.listen)
    }

    /// Watches the cluster and answers queries until `shutdown` is cancelled.
    ///
    /// Queries wait (in the sockets' queues) until the first list of every
    /// watched kind is in, so a starting node never denies a name that exists.
    pub async fn serve(
        self,
        client: kube::Client,
        shutdown: CancellationToken,
    ) -> Result<(), DnsError> {
        let forwarder = Forwarder::new(&self.config.upstreams)?;
        let reflectors = TaskTracker::new();
        let state = ClusterState {
            services: reflect(&reflectors, Api::all(client.clone()), &shutdown),
            slices: reflect(&reflectors, Api::all(client.clone()), &shutdown),
            pods: reflect(&reflectors, Api::all(client), &shutdown),
        };
        reflectors.close();
        let synced = async {
            let _ = state.services.wait_until_ready().await;
            let _ = state.slices.wait_until_ready().await;
            let _ = state.pods.wait_until_ready().await;
        };
        if shutdown.run_until_cancelled(synced).await.is_some() {
            let address = self.local_addr();
            let zone = ClusterZone::new(&self.domain, state);
            let mut server = Server::new(ClusterDnsHandler::new(zone, forwarder));
            server.register_socket(self.udp);
            server.register_listener(self.tcp, TCP_IDLE_TIMEOUT, 64);
            tracing::info!(%address, domain = %self.domain, "cluster DNS serving");
            shutdown.cancelled().await;
            if let Err(err) = server.shutdown_gracefully().await {
                tracing::warn!(error = %err, "cluster DNS server stopped with an error");
            }
        }
        reflectors.wait().await;
        Ok(())
    }
}

/// Runs the node's cluster DNS until `shutdown`: binds `config` (retrying while
/// the address is held elsewhere) and serves. Errors are logged, not fatal:
/// pods still run, only their name lookups fail.
pub async fn run_node_local(client: kube::Client, config: DnsConfig, shutdown: CancellationToken) {
    loop {
        match ClusterDns::bind(config.clone()).await {
            Ok(dns) => {
                if let Err(err) = dns.serve(client, shutdown).await {
                    tracing::error!(error = %err, "cluster DNS failed");
                }
                return;
            }
            Err(err) => tracing::error!(error = %err, "cluster DNS cannot start; retrying"),
        }
        let retry = tokio::time::sleep(BIND_RETRY_INTERVAL);
        if shutdown.run_until_cancelled(retry).await.is_none() {
            return;
        }
    }
}

/// A store of every `K` in the cluster, kept current by a watch owned by
/// `tasks` and stopped by `shutdown`.
fn reflect<K>(tasks: &TaskTracker, api: Api<K>, shutdown: &CancellationToken) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let events = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    )
    .for_each(|event| {
        if let Err(err) = event {
            tracing::warn!(kind = %K::kind(&()), error = %err, "cluster DNS watch failed; retrying");
        }
        std::future::ready(())
    });
    let shutdown = shutdown.clone();
    tasks.spawn(async move { shutdown.run_until_cancelled(events).await });
    store
}
