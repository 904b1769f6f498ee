//! The service proxy (kube-proxy in nftables mode): makes traffic to a
//! Service's ClusterIP, NodePorts and load-balancer addresses reach its ready
//! endpoints.
//!
//! Services and EndpointSlices are watched into caches; every change wakes the
//! sync loop, which renders the whole desired ruleset from the caches
//! ([`model`] → [`ruleset`]) and applies only its differences to the
//! proxy's own `inet` table in one `nft -f` transaction ([`nft`]). Bursts of
//! changes are coalesced: syncs start at most once per
//! [`ProxySettings::min_sync_interval`]. The table is kept across restarts and
//! fully re-synced at start, so traffic keeps flowing while the agent restarts.
//!
//! LoadBalancer Services get a built-in load balancer, as in k3s: each node
//! serves the Service port on its own addresses and adds them to the Service's
//! `status.loadBalancer.ingress`.

pub mod model;
pub mod nft;
pub mod ruleset;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::PostParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ProxySettings;
use crate::network::NetworkError;
use model::service_ports;
use nft::NftTable;
use ruleset::Ruleset;

/// The first wait before retrying a failed sync; doubled per failure.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between retries.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Why the proxy could not program the data path.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The table name cannot be spliced into an nft script.
    #[error("invalid nftables table name {0:?}")]
    InvalidTableName(String),
    /// `nft` refused a command.
    #[error("nft: {0}")]
    Nft(String),
    /// `nft -j list` printed something that is not its JSON.
    #[error("reading the nft table listing: {0}")]
    Listing(#[source] serde_json::Error),
    /// Running `nft` in the network namespace failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// Writing a Service's load-balancer status failed.
    #[error("updating a Service's load-balancer status: {0}")]
    Api(#[from] kube::Error),
}

/// The proxy of one node.
pub struct ServiceProxy {
    client: kube::Client,
    settings: ProxySettings,
    node_ips: Vec<Ipv4Addr>,
    table: NftTable,
}

impl ServiceProxy {
    /// A proxy programming `settings.nft_table` in the calling thread's
    /// network namespace; `node_ips` are the addresses NodePorts and load
    /// balancers are served on.
    pub fn new(
        client: kube::Client,
        settings: ProxySettings,
        node_ips: Vec<Ipv4Addr>,
    ) -> Result<ServiceProxy, ProxyError> {
        let table = NftTable::in_current_namespace(&settings.nft_table)?;
        Ok(ServiceProxy {
            client,
            settings,
            node_ips,
            table,
        })
    }

    /// Watches Services and EndpointSlices and keeps the table in step until
    /// `shutdown`; failed syncs are retried with backoff.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let changed = Arc::new(Notify::new());
        let watches = TaskTracker::new();
        let services: Store<Service> =
            spawn_reflector(&watches, Api::all(self.client.clone()), &changed, &shutdown);
        let slices: Store<EndpointSlice> =
            spawn_reflector(&watches, Api::all(self.client.clone()), &changed, &shutdown);
        watches.close();
        // Syncing from a half-filled cache would drop the rules of the Services
        // not listed yet.
        let caches_ready = tokio::select! {
            _ = shutdown.cancelled() => false,
            ready = async { services.wait_until_ready().await.is_ok() && slices.wait_until_ready().await.is_ok() } => ready,
        };
        if caches_ready {
            self.sync_loop(&services, &slices, &changed, &shutdown)
                .await;
        }
        watches.wait().await;
    }

    async fn sync_loop(
        &mut self,
        services: &Store<Service>,
        slices: &Store<EndpointSlice>,
        changed: &Notify,
        shutdown: &CancellationToken,
    ) {
        let mut retry_after: Option<Duration> = None;
        loop {
            let started = tokio::time::Instant::now();
            retry_after = match self.sync(services, slices).await {
                Ok(()) => None,
                Err(err) => {
                    let wait = retry_after.map_or(FIRST_RETRY, |last| (last * 2).min(MAX_RETRY));
                    tracing::warn!(%err, retry_in = ?wait, "service proxy sync failed");
                    Some(wait)
                }
            };
            let retry = async {
                match retry_after {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changed.notified() => {}
                _ = retry => {}
            }
            // Coalesce: changes arriving until the interval is over join this sync.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(started + self.settings.min_sync_interval) => {}
            }
        }
    }

    /// Programs the table from the caches, then claims this node's addresses
    /// in the load-balancer status of LoadBalancer Services.
    async fn sync(
        &mut self,
        services: &Store<Service>,
        slices: &Store<EndpointSlice>,
    ) -> Result<(), ProxyError> {
        let services = services.state();
        let slices = slices.state();
        let ports = service_ports(
            services.iter().map(Arc::as_ref),
            slices.iter().map(Arc::as_ref),
            &self.node_ips,
        );
        let desired = Ruleset::render(&ports, self.settings.cluster_cidr, &self.node_ips);
        let chains = desired.chain_count();
        let report = self.table.apply(desired).await?;
        if report.script_lines > 0 {
            tracing::debug!(
                service_ports = ports.len(),
                chains,
                full = report.full,
                script_lines = report.script_lines,
                render = ?report.render,
                nft = ?report.nft,
                "service proxy synced"
            );
        }
        for service in services.iter() {
            self.claim_load_balancer(service).await?;
        }
        Ok(())
    }

    /// Adds this node's addresses to a LoadBalancer Service's ingress list if
    /// missing. The write replaces the status at the cached resourceVersion,
    /// so a concurrent write by another node fails (409) rather than being
    /// lost; the watch then brings the newer object and the next sync merges
    /// again.
    async fn claim_load_balancer(&self, service: &Service) -> Result<(), ProxyError> {
        let is_load_balancer = service
            .spec
            .as_ref()
            .is_some_and(|spec| spec.type_.as_deref() == Some("LoadBalancer"));
        if !is_load_balancer {
            return Ok(());
        }
        let Some(merged) = merged_ingress(service, &self.node_ips) else {
            return Ok(());
        };
        let (Some(namespace), Some(name)) = (
            service.meta().namespace.as_deref(),
            service.meta().name.as_deref(),
        ) else {
            return Ok(());
        };
        let mut updated = service.clone();
        let status = updated.status.get_or_insert_with(ServiceStatus::default);
        status.load_balancer = Some(LoadBalancerStatus {
            ingress: Some(merged),
        });
        let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        api.replace_status(name, &PostParams::default(), &updated)
            .await?;
        tracing::info!(namespace, name, node_ips = ?self.node_ips, "load balancer served on this node");
        Ok(())
    }
}

/// The Service's ingress list with `node_ips` added (other entries kept, in
/// order); `None` when every node IP is already listed.
fn merged_ingress(service: &Service, node_ips: &[Ipv4Addr]) -> Option<Vec<LoadBalancerIngress>> {
    let listed = model::load_balancer_ingress_ips(service);
    let missing: Vec<&Ipv4Addr> = node_ips.iter().filter(|ip| !listed.contains(ip)).collect();
    if missing.is_empty() {
        return None;
    }
    let mut ingress: Vec<LoadBalancerIngress> = service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default();
    ingress.extend(missing.into_iter().map(|ip| LoadBalancerIngress {
        ip: Some(ip.to_string()),
        ip_mode: Some("VIP".into()),
        ..Default::default()
    }));
    Some(ingress)
}

/// Watches every `K` into a cache, waking `changed` on each event, until
/// `shutdown`.
fn spawn_reflector<K>(
    tasks: &TaskTracker,
    api: Api<K>,
    changed: &Arc<Notify>,
    shutdown: &CancellationToken,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let changed = changed.clone();
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        let mut events = std::pin::pin!(events);
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.next() => event,
            };
            match event {
                Some(Ok(_)) => changed.notify_one(),
                Some(Err(err)) => {
                    tracing::warn!(%err, kind = %K::kind(&()), "proxy watch failed; retrying")
                }
                None => return,
            }
        }
    });
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_adds_its_addresses_once_and_keeps_the_others() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "lb", "namespace": "default"},
            "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.2"}]}}
        }))
        .expect("service");
        let own: Ipv4Addr = "192.168.1.1".parse().unwrap();
        let merged = merged_ingress(&service, &[own]).expect("missing address added");
        let ips: Vec<_> = merged.iter().filter_map(|i| i.ip.as_deref()).collect();
        assert_eq!(ips, ["192.168.1.2", "192.168.1.1"]);
        assert!(merged_ingress(&service, &["192.168.1.2".parse().unwrap()]).is_none());
    }
}
