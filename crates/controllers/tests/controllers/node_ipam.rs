//! The node IPAM controller against a real API server: distinct CIDRs under
//! concurrent node creation, existing allocations respected across restarts,
//! exhaustion reported as a Warning Event, and deleted nodes' CIDRs reused.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use gantry_apiserver::testing::TestServer;
use gantry_controllers::node_ipam::{self, CIDR_NOT_AVAILABLE, NodeIpamConfig};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Event, Node, NodeSpec};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(20);

/// A controller running in the test's runtime, stopped through its token.
struct RunningController {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningController {
    fn start(client: kube::Client, config: NodeIpamConfig) -> Self {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(node_ipam::run_with(client, config, shutdown.clone()));
        RunningController { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("the controller stops when cancelled")
            .expect("the controller task does not panic");
    }
}

fn config(cluster_cidr: &str) -> NodeIpamConfig {
    NodeIpamConfig {
        cluster_cidr: cluster_cidr.parse().expect("test CIDR"),
        node_prefix_len: 24,
        resync_interval: Duration::from_secs(1),
    }
}

fn node(name: &str, pod_cidr: Option<&str>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: pod_cidr.map(|cidr| NodeSpec {
            pod_cidr: Some(cidr.to_string()),
            pod_cidrs: Some(vec![cidr.to_string()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn create_nodes(nodes: &Api<Node>, names: &[String]) {
    let creates = names.iter().map(|name| async move {
        nodes
            .create(&PostParams::default(), &node(name, None))
            .await
            .expect("create node")
    });
    futures::future::join_all(creates).await;
}

fn pod_cidr(node: &Node) -> Option<Ipv4Net> {
    let spec = node.spec.as_ref()?;
    let cidr: Ipv4Net = spec.pod_cidr.as_deref()?.parse().ok()?;
    assert_eq!(
        spec.pod_cidrs.as_deref(),
        Some(&[cidr.to_string()][..]),
        "podCIDRs mirrors podCIDR"
    );
    Some(cidr)
}

/// Polls `check` until it yields a value or the timeout passes.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every node has a pod CIDR and returns them by node name.
async fn all_allocated(nodes: &Api<Node>, expected: usize) -> Vec<(String, Ipv4Net)> {
    eventually("every node to get a pod CIDR", || async {
        let list = nodes
            .list(&ListParams::default())
            .await
            .expect("list nodes");
        let allocated: Vec<(String, Ipv4Net)> = list
            .items
            .iter()
            .filter_map(|node| Some((node.metadata.name.clone()?, pod_cidr(node)?)))
            .collect();
        (allocated.len() == expected).then_some(allocated)
    })
    .await
}

async fn cidr_of(nodes: &Api<Node>, name: &str) -> Option<Ipv4Net> {
    pod_cidr(&nodes.get(name).await.expect("get node"))
}

fn assert_distinct_slices(allocated: &[(String, Ipv4Net)], cluster: &str) {
    let cluster: Ipv4Net = cluster.parse().expect("test CIDR");
    let distinct: BTreeSet<Ipv4Net> = allocated.iter().map(|(_, cidr)| *cidr).collect();
    assert_eq!(
        distinct.len(),
        allocated.len(),
        "no CIDR twice: {allocated:?}"
    );
    for (name, cidr) in allocated {
        assert!(cluster.contains(cidr), "{name}'s {cidr} lies in {cluster}");
        assert_eq!(cidr.prefix_len(), 24, "{name} gets a /24");
    }
}

#[tokio::test]
async fn concurrent_nodes_get_distinct_cidrs_and_existing_ones_are_kept() {
    let server = TestServer::start();
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &node("existing", Some("10.42.0.0/24")),
        )
        .await
        .expect("create node with a CIDR");
    nodes
        .create(&PostParams::default(), &node("ipv6", Some("fd00:42::/64")))
        .await
        .expect("create node with an IPv6 CIDR");

    let controller = RunningController::start(client, config("10.42.0.0/16"));
    let names: Vec<String> = (0..16).map(|i| format!("node-{i}")).collect();
    create_nodes(&nodes, &names).await;

    let allocated = all_allocated(&nodes, names.len() + 1).await;
    assert_distinct_slices(&allocated, "10.42.0.0/16");
    let ipv6 = nodes.get("ipv6").await.expect("get ipv6 node");
    let ipv6_cidr = ipv6.spec.and_then(|spec| spec.pod_cidr);
    assert_eq!(
        ipv6_cidr.as_deref(),
        Some("fd00:42::/64"),
        "never overwritten"
    );
    assert_eq!(
        cidr_of(&nodes, "existing").await,
        Some("10.42.0.0/24".parse().unwrap())
    );
    controller.stop().await;
}

#[tokio::test]
async fn a_restarted_controller_rebuilds_the_used_set_from_the_nodes() {
    let server = TestServer::start();
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());

    let first = RunningController::start(client.clone(), config("10.42.0.0/16"));
    create_nodes(&nodes, &["a".to_string(), "b".to_string()]).await;
    all_allocated(&nodes, 2).await;
    first.stop().await;

    // A fresh controller starts its cursor at the range's beginning: only the
    // nodes tell it that the first slices are taken.
    let second = RunningController::start(client, config("10.42.0.0/16"));
    create_nodes(&nodes, &["c".to_string(), "d".to_string()]).await;
    let allocated = all_allocated(&nodes, 4).await;
    assert_distinct_slices(&allocated, "10.42.0.0/16");
    second.stop().await;
}

#[tokio::test]
async fn an_exhausted_range_warns_and_a_deleted_nodes_cidr_is_reused() {
    let server = TestServer::start();
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let events: Api<Event> = Api::namespaced(client.clone(), "default");

    let controller = RunningController::start(client, config("10.99.0.0/23"));
    create_nodes(&nodes, &["a".to_string(), "b".to_string()]).await;
    let allocated = all_allocated(&nodes, 2).await;
    assert_distinct_slices(&allocated, "10.99.0.0/23");

    create_nodes(&nodes, &["c".to_string()]).await;
    let warning = eventually("a CIDRNotAvailable event for node c", || async {
        let list = events
            .list(&ListParams::default())
            .await
            .expect("list events");
        list.items.into_iter().find(|event| {
            event.reason.as_deref() == Some(CIDR_NOT_AVAILABLE)
                && event.involved_object.name.as_deref() == Some("c")
        })
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert_eq!(warning.involved_object.kind.as_deref(), Some("Node"));
    assert_eq!(cidr_of(&nodes, "c").await, None);

    let freed = cidr_of(&nodes, "a").await.expect("a has a CIDR");
    nodes
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete node a");
    let reused = eventually("node c to get the freed CIDR", || async {
        cidr_of(&nodes, "c").await
    })
    .await;
    assert_eq!(reused, freed);
    controller.stop().await;
}
