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
//! `status.loadBalancer.ingress`; every node also removes the addresses no
//! Node has any more, and the whole list once a Service stops being a
//! LoadBalancer (Services with a `loadBalancerClass` belong to another
//! controller and are left alone).
//!
//! After each sync the conntrack entries of UDP flows to removed endpoints
//! are deleted ([`conntrack`]).

pub mod conntrack;
pub mod model;
pub mod nft;
pub mod ruleset;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Node, Service, ServiceStatus,
};
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
use model::{ServicePort, service_ports};
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
    /// `conntrack` could not delete the entries of stale UDP flows.
    #[error("conntrack: {0}")]
    Conntrack(String),
}

/// The proxy of one node.
pub struct ServiceProxy {
    client: kube::Client,
    settings: ProxySettings,
    node_ips: Vec<Ipv4Addr>,
    /// This node's name: endpoints on it are the local ones `Local` traffic
    /// policies keep to; without it no endpoint is local.
    node_name: Option<String>,
    table: NftTable,
    /// The service ports of the last applied sync, to find removed UDP endpoints.
    applied_ports: Option<Vec<ServicePort>>,
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
            node_name: None,
            table,
            applied_ports: None,
        })
    }

    /// The proxy of the node `name`, whose endpoints are the local ones.
    pub fn with_node_name(mut self, name: impl Into<String>) -> ServiceProxy {
        self.node_name = Some(name.into());
        self
    }

    /// Watches Services and EndpointSlices and keeps the table in step until
    /// `shutdown`; failed syncs are retried with backoff.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let changed = Arc::new(Notify::new());
        let watches = TaskTracker::new();
        let caches = Caches {
            services: spawn_reflector(
                &watches,
                Api::all(self.client.clone()),
                &changed,
                &shutdown,
                |_| true,
            ),
            slices: spawn_reflector(
                &watches,
                Api::all(self.client.clone()),
                &changed,
                &shutdown,
                |_| true,
            ),
            // Node status changes every heartbeat: only a changed address
            // set is worth a sync.
            nodes: spawn_reflector(
                &watches,
                Api::all(self.client.clone()),
                &changed,
                &shutdown,
                {
                    let mut known = BTreeSet::new();
                    move |nodes: &Store<Node>| {
                        let addresses = node_addresses(&nodes.state());
                        std::mem::replace(&mut known, addresses) != known
                    }
                },
            ),
        };
        watches.close();
        // Syncing from a half-filled cache would drop the rules of the Services
        // not listed yet, or the ingress addresses of Nodes not listed yet.
        let caches_ready = tokio::select! {
            _ = shutdown.cancelled() => false,
            ready = caches.wait_until_ready() => ready,
        };
        if caches_ready {
            self.sync_loop(&caches, &changed, &shutdown).await;
        }
        watches.wait().await;
    }

    async fn sync_loop(&mut self, caches: &Caches, changed: &Notify, shutdown: &CancellationToken) {
        let mut retry_after: Option<Duration> = None;
        loop {
            let started = tokio::time::Instant::now();
            retry_after = match self.sync(caches).await {
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

    /// Programs the table from the caches, forgets UDP flows to removed
    /// endpoints, then brings the load-balancer status of Services up to date.
    async fn sync(&mut self, caches: &Caches) -> Result<(), ProxyError> {
        let services = caches.services.state();
        let slices = caches.slices.state();
        let ports = service_ports(
            services.iter().map(Arc::as_ref),
            slices.iter().map(Arc::as_ref),
            &self.node_ips,
            self.node_name.as_deref(),
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
        self.forget_stale_udp_flows(ports).await;
        let node_addresses = node_addresses(&caches.nodes.state());
        for service in services.iter() {
            self.update_load_balancer_status(service, &node_addresses)
                .await?;
        }
        Ok(())
    }

    /// Deletes the conntrack entries of UDP flows to endpoints that left
    /// their service port since the last sync. Failing only logs: the flows
    /// then end when their entries time out.
    async fn forget_stale_udp_flows(&mut self, ports: Vec<ServicePort>) {
        let Some(before) = self.applied_ports.replace(ports) else {
            return;
        };
        let after = self.applied_ports.as_deref().unwrap_or_default();
        let stale = conntrack::stale_udp_flows(&before, after);
        if stale.is_empty() {
            return;
        }
        let count = stale.len();
        match conntrack::forget(self.table.namespace(), stale).await {
            Ok(()) => tracing::debug!(count, "forgot UDP flows to removed endpoints"),
            Err(err) => tracing::warn!(%err, "could not forget UDP flows to removed endpoints"),
        }
    }

    /// Writes the Service's ingress list if it should change (see
    /// [`desired_ingress`]). The write replaces the status at the cached
    /// resourceVersion, so a concurrent write by another node fails (409)
    /// rather than being lost; the watch then brings the newer object and the
    /// next sync merges again.
    async fn update_load_balancer_status(
        &self,
        service: &Service,
        node_addresses: &BTreeSet<String>,
    ) -> Result<(), ProxyError> {
        let Some(ingress) = desired_ingress(service, &self.node_ips, node_addresses) else {
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
            ingress: (!ingress.is_empty()).then_some(ingress),
        });
        let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        match api
            .replace_status(name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            // Changed or deleted meanwhile: the watch brings the news and a new sync.
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => return Ok(()),
            Err(err) => return Err(err.into()),
        }
        tracing::info!(namespace, name, node_ips = ?self.node_ips, "load balancer status updated");
        Ok(())
    }
}

/// The caches a sync reads.
struct Caches {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
}

impl Caches {
    /// Whether every cache has been filled (false when a watch ended first).
    async fn wait_until_ready(&self) -> bool {
        self.services.wait_until_ready().await.is_ok()
            && self.slices.wait_until_ready().await.is_ok()
            && self.nodes.wait_until_ready().await.is_ok()
    }
}

/// Every address of every Node, as written in its status.
fn node_addresses(nodes: &[Arc<Node>]) -> BTreeSet<String> {
    nodes
        .iter()
        .filter_map(|node| node.status.as_ref()?.addresses.as_ref())
        .flatten()
        .map(|address| address.address.clone())
        .collect()
}

/// The ingress list the built-in load balancer wants for `service`, or
/// `None` when its status already has it or is not ours to manage (a
/// `loadBalancerClass` names another implementation). A LoadBalancer keeps
/// the addresses of existing Nodes (`node_addresses`) and entries without an
/// IP, loses other IPs, and gains this node's `node_ips`; any other Service
/// type has no ingress.
fn desired_ingress(
    service: &Service,
    node_ips: &[Ipv4Addr],
    node_addresses: &BTreeSet<String>,
) -> Option<Vec<LoadBalancerIngress>> {
    let spec = service.spec.as_ref()?;
    if spec.load_balancer_class.is_some() {
        return None;
    }
    let current: Vec<LoadBalancerIngress> = service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default();
    let desired = if spec.type_.as_deref() == Some("LoadBalancer") {
        let own: Vec<String> = node_ips.iter().map(Ipv4Addr::to_string).collect();
        let mut kept: Vec<LoadBalancerIngress> = current
            .iter()
            .filter(|entry| {
                entry
                    .ip
                    .as_ref()
                    .is_none_or(|ip| own.contains(ip) || node_addresses.contains(ip))
            })
            .cloned()
            .collect();
        for ip in own {
            if !kept.iter().any(|entry| entry.ip.as_ref() == Some(&ip)) {
                kept.push(LoadBalancerIngress {
                    ip: Some(ip),
                    ip_mode: Some("VIP".into()),
                    ..Default::default()
                });
            }
        }
        kept
    } else {
        Vec::new()
    };
    (desired != current).then_some(desired)
}

/// Watches every `K` into a cache until `shutdown`, waking `changed` after
/// each event for which `worth_a_sync` (given the updated cache) says so.
fn spawn_reflector<K>(
    tasks: &TaskTracker,
    api: Api<K>,
    changed: &Arc<Notify>,
    shutdown: &CancellationToken,
    mut worth_a_sync: impl FnMut(&Store<K>) -> bool + Send + 'static,
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
    let cache = store.clone();
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
                Some(Ok(_)) => {
                    if worth_a_sync(&cache) {
                        changed.notify_one();
                    }
                }
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

    fn service(json: serde_json::Value) -> Service {
        serde_json::from_value(json).expect("service")
    }

    fn ingress_ips(ingress: &[LoadBalancerIngress]) -> Vec<&str> {
        ingress.iter().filter_map(|i| i.ip.as_deref()).collect()
    }

    #[test]
    fn the_node_adds_its_addresses_once_and_keeps_other_nodes() {
        let lb = service(serde_json::json!({
            "metadata": {"name": "lb", "namespace": "default"},
            "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.2"}]}}
        }));
        let nodes = BTreeSet::from(["192.168.1.2".to_string()]);
        let own: Ipv4Addr = "192.168.1.1".parse().unwrap();
        let merged = desired_ingress(&lb, &[own], &nodes).expect("missing address added");
        assert_eq!(ingress_ips(&merged), ["192.168.1.2", "192.168.1.1"]);
        assert!(desired_ingress(&lb, &["192.168.1.2".parse().unwrap()], &nodes).is_none());
    }

    #[test]
    fn addresses_of_nodes_that_are_gone_leave_the_ingress() {
        let lb = service(serde_json::json!({
            "metadata": {"name": "lb", "namespace": "default"},
            "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [
                {"ip": "192.168.1.1"}, {"ip": "192.168.1.9"}, {"hostname": "lb.example"}
            ]}}
        }));
        let nodes = BTreeSet::from(["192.168.1.1".to_string()]);
        let pruned = desired_ingress(&lb, &["192.168.1.1".parse().unwrap()], &nodes)
            .expect("stale address removed");
        assert_eq!(ingress_ips(&pruned), ["192.168.1.1"]);
        assert_eq!(pruned[1].hostname.as_deref(), Some("lb.example"));
    }

    #[test]
    fn a_service_that_is_no_longer_a_load_balancer_loses_its_ingress() {
        let former = service(serde_json::json!({
            "metadata": {"name": "lb", "namespace": "default"},
            "spec": {"type": "ClusterIP"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.1"}]}}
        }));
        let own = ["192.168.1.1".parse().unwrap()];
        assert_eq!(
            desired_ingress(&former, &own, &BTreeSet::new()),
            Some(Vec::new())
        );
        let plain = service(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "ClusterIP"}
        }));
        assert_eq!(desired_ingress(&plain, &own, &BTreeSet::new()), None);
        let foreign = service(serde_json::json!({
            "metadata": {"name": "lb", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"}
        }));
        assert_eq!(desired_ingress(&foreign, &own, &BTreeSet::new()), None);
    }
}
