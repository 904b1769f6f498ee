//! The node IPAM controller: gives every Node its own slice of the cluster's pod
//! address range (`spec.podCIDR`), which the node's pod network hands out to pods
//! and which the other nodes route to (host-gw).
//!
//! The Node objects are the only record of which slices are taken: the controller
//! rebuilds the used set from them whenever its watch (re)starts, so nothing is
//! lost across restarts or leader changes. A single task owns the allocator and
//! the view of the nodes, so picking a free slice and marking it taken can never
//! interleave (the lock is exclusive ownership); the write itself is a `replace`
//! carrying the node's resourceVersion, so a node changed meanwhile is re-read
//! rather than overwritten, and a node that already got a CIDR keeps it.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::TryStreamExt;
use gantry_client::{EventRecorder, EventType, object_reference};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

/// The component name on the Events this controller records.
const COMPONENT: &str = "node-ipam-controller";

/// Reason of the Warning Event recorded when the cluster range has no free slice.
pub const CIDR_NOT_AVAILABLE: &str = "CIDRNotAvailable";

/// How many times a node is re-read and rewritten when its resourceVersion moved
/// under us before the controller gives up until the next event or resync.
const WRITE_ATTEMPTS: usize = 5;

/// Where the pod CIDRs come from: k3s's defaults are a 10.42.0.0/16 cluster range
/// cut into one /24 per node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIpamConfig {
    /// The range every pod address in the cluster comes from.
    pub cluster_cidr: Ipv4Net,
    /// The prefix length of each node's slice of `cluster_cidr`.
    pub node_prefix_len: u8,
    /// How often nodes still waiting for a CIDR (range exhausted, failed writes)
    /// are retried even when nothing in the cluster changed.
    pub resync_interval: Duration,
}

impl Default for NodeIpamConfig {
    fn default() -> Self {
        NodeIpamConfig {
            cluster_cidr: Ipv4Net::new_assert(Ipv4Addr::new(10, 42, 0, 0), 16),
            node_prefix_len: 24,
            resync_interval: Duration::from_secs(30),
        }
    }
}

/// Runs the controller with k3s's defaults until `shutdown` is cancelled.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    run_with(client, NodeIpamConfig::default(), shutdown).await;
}

/// Runs the controller with `config` until `shutdown` is cancelled. A config whose
/// node prefix does not fit inside the cluster range is logged and nothing runs,
/// since no node could ever get a CIDR from it.
pub async fn run_with(client: kube::Client, config: NodeIpamConfig, shutdown: CancellationToken) {
    let Some(allocator) = CidrAllocator::new(config.cluster_cidr, config.node_prefix_len) else {
        tracing::error!(
            cluster_cidr = %config.cluster_cidr,
            node_prefix_len = config.node_prefix_len,
            "node IPAM: the node prefix length does not fit the cluster CIDR"
        );
        return;
    };
    let mut controller = NodeIpam {
        nodes: Api::all(client.clone()),
        recorder: EventRecorder::new(client, COMPONENT, None),
        allocator,
        assigned: HashMap::new(),
        relisted: None,
        synced: false,
    };
    let events = watcher(controller.nodes.clone(), watcher::Config::default()).default_backoff();
    let mut events = std::pin::pin!(events);
    let mut resync = tokio::time::interval(config.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.try_next() => match event {
                Ok(Some(event)) => controller.handle(event).await,
                Ok(None) => return,
                Err(err) => tracing::warn!(%err, "node IPAM: watching nodes"),
            },
            _ = resync.tick() => controller.allocate_waiting().await,
        }
    }
}

/// The controller's state, owned by the one task that runs it.
struct NodeIpam {
    nodes: Api<Node>,
    recorder: EventRecorder,
    allocator: CidrAllocator,
    /// Every node the watch has shown, by name, with its parsed pod CIDR.
    assigned: HashMap<String, PodCidr>,
    /// Nodes seen since the watch (re)started its list; they replace `assigned`
    /// at `InitDone`. Until then both count as taken, so a relist never frees a
    /// CIDR early.
    relisted: Option<HashMap<String, PodCidr>>,
    /// Whether a complete list has been seen; nothing is allocated before it.
    synced: bool,
}

impl NodeIpam {
    async fn handle(&mut self, event: watcher::Event<Node>) {
        match event {
            watcher::Event::Init => self.relisted = Some(HashMap::new()),
            watcher::Event::InitApply(node) => {
                let (name, cidr) = name_and_cidr(&node);
                self.relisted.get_or_insert_default().insert(name, cidr);
            }
            watcher::Event::InitDone => {
                self.assigned = self.relisted.take().unwrap_or_default();
                self.synced = true;
                self.allocate_waiting().await;
            }
            watcher::Event::Apply(node) => {
                let (name, cidr) = name_and_cidr(&node);
                self.assigned.insert(name, cidr);
                if cidr == PodCidr::Unassigned && self.synced {
                    self.allocate(node).await;
                }
            }
            watcher::Event::Delete(node) => {
                let (name, _) = name_and_cidr(&node);
                if let Some(PodCidr::Ipv4(_)) = self.assigned.remove(&name) {
                    // A slice came free: a node waiting on an exhausted range can have it.
                    self.allocate_waiting().await;
                }
            }
        }
    }

    /// Tries every known node still without a CIDR, reading each afresh.
    async fn allocate_waiting(&mut self) {
        if !self.synced {
            return;
        }
        let waiting: BTreeSet<String> = self
            .assigned
            .iter()
            .filter(|(_, cidr)| **cidr == PodCidr::Unassigned)
            .map(|(name, _)| name.clone())
            .collect();
        for name in waiting {
            match self.nodes.get_opt(&name).await {
                Ok(Some(node)) => self.allocate(node).await,
                Ok(None) => {
                    self.assigned.remove(&name);
                }
                Err(err) => tracing::warn!(%err, node = name, "node IPAM: reading node"),
            }
        }
    }

    /// Gives `node` a free CIDR unless it has one, retrying on write conflicts.
    async fn allocate(&mut self, mut node: Node) {
        for _ in 0..WRITE_ATTEMPTS {
            let (name, existing) = name_and_cidr(&node);
            if existing != PodCidr::Unassigned {
                self.assigned.insert(name, existing);
                return;
            }
            let Some(cidr) = self
                .allocator
                .next_free(taken(&self.assigned, &self.relisted))
            else {
                self.report_exhausted(&node).await;
                return;
            };
            set_pod_cidr(&mut node, cidr);
            match self
                .nodes
                .replace(&name, &PostParams::default(), &node)
                .await
            {
                Ok(written) => {
                    tracing::info!(node = name, %cidr, "node IPAM: allocated pod CIDR");
                    let (name, cidr) = name_and_cidr(&written);
                    self.assigned.insert(name, cidr);
                    return;
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    self.assigned.remove(&name);
                    return;
                }
                Err(err) => {
                    tracing::warn!(%err, node = name, "node IPAM: writing pod CIDR");
                    return;
                }
            }
            node = match self.nodes.get_opt(&name).await {
                Ok(Some(fresh)) => fresh,
                Ok(None) => {
                    self.assigned.remove(&name);
                    return;
                }
                Err(err) => {
                    tracing::warn!(%err, node = name, "node IPAM: re-reading node");
                    return;
                }
            };
        }
        tracing::warn!(node = ?node.metadata.name, "node IPAM: node kept changing; retrying later");
    }

    async fn report_exhausted(&self, node: &Node) {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        tracing::warn!(
            node = name,
            cluster_cidr = %self.allocator.cluster,
            "node IPAM: no pod CIDR left in the cluster range"
        );
        let message = format!("Node {name} status is now: {CIDR_NOT_AVAILABLE}");
        self.recorder
            .record(
                &object_reference(node),
                EventType::Warning,
                CIDR_NOT_AVAILABLE,
                &message,
            )
            .await;
    }
}

/// Every CIDR a node holds, including nodes only seen by a relist in progress.
fn taken<'a>(
    assigned: &'a HashMap<String, PodCidr>,
    relisted: &'a Option<HashMap<String, PodCidr>>,
) -> impl Iterator<Item = Ipv4Net> + Clone + 'a {
    let relisted = relisted.iter().flat_map(|nodes| nodes.values());
    assigned
        .values()
        .chain(relisted)
        .filter_map(|cidr| match cidr {
            PodCidr::Ipv4(net) => Some(*net),
            PodCidr::Unassigned | PodCidr::Foreign => None,
        })
}

/// What a node's `spec.podCIDR` holds, as far as allocation is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodCidr {
    /// Nothing yet: the node waits for one.
    Unassigned,
    /// An IPv4 range; taken if it overlaps the cluster range.
    Ipv4(Ipv4Net),
    /// Something else (IPv6, unparsable): never overwritten, never colliding.
    Foreign,
}

/// The node's name and what its `spec.podCIDR` holds.
fn name_and_cidr(node: &Node) -> (String, PodCidr) {
    let name = node.metadata.name.clone().unwrap_or_default();
    let cidr = match node.spec.as_ref().and_then(|spec| spec.pod_cidr.as_deref()) {
        None | Some("") => PodCidr::Unassigned,
        Some(text) => text.parse().map_or(PodCidr::Foreign, PodCidr::Ipv4),
    };
    (name, cidr)
}

fn set_pod_cidr(node: &mut Node, cidr: Ipv4Net) {
    let spec = node.spec.get_or_insert_default();
    spec.pod_cidr = Some(cidr.to_string());
    spec.pod_cidrs = Some(vec![cidr.to_string()]);
}

/// Cuts the cluster range into equal slices and finds one no node overlaps.
/// It keeps a cursor past the last slice handed out, as Kubernetes' cidrset does,
/// so a slice just released is the last to be reused.
#[derive(Debug)]
struct CidrAllocator {
    cluster: Ipv4Net,
    prefix_len: u8,
    next: u32,
}

impl CidrAllocator {
    fn new(cluster: Ipv4Net, prefix_len: u8) -> Option<Self> {
        (prefix_len >= cluster.prefix_len() && prefix_len <= 32).then_some(CidrAllocator {
            cluster: cluster.trunc(),
            prefix_len,
            next: 0,
        })
    }

    fn slice_count(&self) -> u64 {
        1u64 << (self.prefix_len - self.cluster.prefix_len())
    }

    fn slice(&self, index: u64) -> Ipv4Net {
        let start =
            u64::from(u32::from(self.cluster.network())) + (index << (32 - self.prefix_len));
        // No truncation: index < slice_count, so the slice starts inside the cluster range.
        Ipv4Net::new_assert(Ipv4Addr::from(start as u32), self.prefix_len)
    }

    /// The first slice at or after the cursor that overlaps nothing in `taken`.
    fn next_free(&mut self, taken: impl Iterator<Item = Ipv4Net> + Clone) -> Option<Ipv4Net> {
        let count = self.slice_count();
        (0..count)
            .map(|offset| (u64::from(self.next) + offset) % count)
            .find(|&index| {
                let candidate = self.slice(index);
                !taken.clone().any(|used| overlaps(used, candidate))
            })
            .map(|index| {
                self.next = u32::try_from((index + 1) % count).unwrap_or(0);
                self.slice(index)
            })
    }
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().expect("test CIDR")
    }

    #[test]
    fn hands_out_slices_in_order_skipping_taken_ones() {
        let mut allocator = CidrAllocator::new(net("10.42.0.0/16"), 24).expect("fits");
        let taken = [net("10.42.0.0/24"), net("10.42.2.0/23")];
        assert_eq!(
            allocator.next_free(taken.into_iter()),
            Some(net("10.42.1.0/24"))
        );
        assert_eq!(
            allocator.next_free(taken.into_iter()),
            Some(net("10.42.4.0/24"))
        );
    }

    #[test]
    fn a_wider_taken_range_blocks_every_slice_inside_it() {
        let mut allocator = CidrAllocator::new(net("10.42.0.0/22"), 24).expect("fits");
        let taken = [net("10.42.0.0/23"), net("10.42.3.0/24")];
        assert_eq!(
            allocator.next_free(taken.into_iter()),
            Some(net("10.42.2.0/24"))
        );
    }

    #[test]
    fn an_exhausted_range_has_nothing_and_a_release_is_reused_last() {
        let mut allocator = CidrAllocator::new(net("10.42.0.0/23"), 24).expect("fits");
        let all = [net("10.42.0.0/24"), net("10.42.1.0/24")];
        assert_eq!(allocator.next_free(all.into_iter()), None);
        assert_eq!(
            allocator.next_free(std::iter::empty()),
            Some(net("10.42.0.0/24"))
        );
        // The cursor moved on: the slice just handed out (then released) comes last.
        assert_eq!(
            allocator.next_free(std::iter::empty()),
            Some(net("10.42.1.0/24"))
        );
    }

    #[test]
    fn a_node_prefix_wider_than_the_cluster_is_refused() {
        assert!(CidrAllocator::new(net("10.42.0.0/16"), 8).is_none());
        assert!(CidrAllocator::new(net("10.42.0.0/16"), 33).is_none());
    }
}
