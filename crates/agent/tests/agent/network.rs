//! The pod network on real kernel objects (root only): each test builds its
//! "nodes" as throwaway network namespaces, so bridges, routes, nft tables and
//! ip_forward never touch the machine's own network, and a guard deletes them
//! (and unpins every pod namespace) even when an assertion fails.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gantry_agent::network::{NetworkError, PodInterface, PodNetwork, PodNetworkConfig};
use ipnet::Ipv4Net;
use nix::sched::CloneFlags;
use tempfile::TempDir;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const CLUSTER_CIDR: &str = "10.42.0.0/16";

/// Runs `ip` with `args`, panicking with its stderr if it fails.
fn ip(args: &[&str]) -> String {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A node stand-in: a network namespace (under /run/netns, made with `ip netns
/// add`) plus the pod network's state directory. Dropping it unpins the pod
/// namespaces left in the state directory and deletes the node's namespace,
/// which takes its bridge, veths, routes and nft table with it.
struct TestHost {
    name: String,
    state: TempDir,
}

impl TestHost {
    fn new(tag: &str) -> TestHost {
        let name = format!("gantry-test-{}-{tag}", std::process::id());
        ip(&["netns", "add", &name]);
        let host = TestHost {
            name,
            state: tempfile::tempdir().expect("state dir"),
        };
        ip(&["-n", &host.name, "link", "set", "lo", "up"]);
        host
    }

    fn netns(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    fn config(&self, tag: &str, pod_cidr: &str) -> PodNetworkConfig {
        PodNetworkConfig {
            bridge: format!("gbr-{tag}"),
            pod_cidr: pod_cidr.parse().expect("pod CIDR"),
            cluster_cidr: CLUSTER_CIDR.parse().expect("cluster CIDR"),
            state_dir: self.state.path().to_path_buf(),
            nft_table: format!("gantry_test_{tag}"),
        }
    }

    /// Creates a pod network acting in this host's namespace.
    async fn network(&self, config: PodNetworkConfig) -> Result<PodNetwork, NetworkError> {
        let runtime = tokio::runtime::Handle::current();
        in_netns(self.netns(), move || {
            runtime.block_on(PodNetwork::new(config))
        })
        .await
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    fn nft_table_exists(&self, table: &str) -> bool {
        Command::new("ip")
            .args([
                "netns", "exec", &self.name, "nft", "list", "table", "ip", table,
            ])
            .output()
            .expect("run nft")
            .status
            .success()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.state.path().join("netns")) {
            for entry in entries.flatten() {
                let _ = nix::mount::umount2(&entry.path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `work` on a fresh thread inside the network namespace at `netns`.
async fn in_netns<T: Send + 'static>(
    netns: PathBuf,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).expect("open network namespace");
        nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("enter network namespace");
        let _ = done.send(work());
    });
    result.await.expect("the namespace thread finished")
}

/// A TCP listener inside `netns` on any port of `address`.
async fn listen_in(netns: PathBuf, address: Ipv4Addr) -> TcpListener {
    in_netns(netns, move || {
        TcpListener::bind((address, 0)).expect("listen")
    })
    .await
}

/// Connects from inside `netns` to `target`, returning the connected stream.
async fn connect_from(netns: PathBuf, target: SocketAddr) -> std::io::Result<TcpStream> {
    in_netns(netns, move || {
        TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
    })
    .await
}

/// Connects from `from` to a listener in `to` on `to_ip`, exchanges a message and
/// returns the source address the listener saw.
async fn source_seen(from: PathBuf, to: PathBuf, to_ip: Ipv4Addr) -> IpAddr {
    let listener = listen_in(to, to_ip).await;
    let target = listener.local_addr().expect("listener address");
    let mut client = connect_from(from, target)
        .await
        .unwrap_or_else(|err| panic!("connecting to {target}: {err}"));
    let (mut server, peer) = tokio::task::spawn_blocking(move || listener.accept())
        .await
        .expect("accept thread")
        .expect("accept");
    client.write_all(b"ping").expect("send");
    let mut received = [0u8; 4];
    server.read_exact(&mut received).expect("receive");
    assert_eq!(&received, b"ping");
    peer.ip()
}

fn assert_in_cidr(pod: &PodInterface, cidr: &str) {
    let cidr: Ipv4Net = cidr.parse().expect("CIDR");
    assert!(cidr.contains(&pod.ip), "{} lies in {cidr}", pod.ip);
    assert_eq!(pod.gateway, Ipv4Addr::from(u32::from(cidr.network()) + 1));
    assert_eq!(pod.interface, "eth0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_get_distinct_ips_and_reach_each_other_and_the_host_reaches_them() {
    let host = TestHost::new("pair");
    let network = host
        .network(host.config("pair", "10.42.1.0/24"))
        .await
        .expect("network");

    let a = network.attach("pod-a").await.expect("attach a");
    let b = network.attach("pod-b").await.expect("attach b");
    assert_ne!(a.ip, b.ip);
    assert_in_cidr(&a, "10.42.1.0/24");
    assert_in_cidr(&b, "10.42.1.0/24");
    assert_ne!(a.netns, b.netns);

    // Pod to pod across the bridge, without address translation.
    let seen = source_seen(a.netns.clone(), b.netns.clone(), b.ip).await;
    assert_eq!(seen, IpAddr::V4(a.ip));
    // The node reaches its pods through the bridge address.
    let seen = source_seen(host.netns(), a.netns.clone(), a.ip).await;
    assert_eq!(seen, IpAddr::V4(a.gateway));
    // Pod ports hairpin on the bridge.
    let ports = host.ip(&["-d", "link", "show", "master", "gbr-pair"]);
    assert_eq!(ports.matches("hairpin on").count(), 2, "{ports}");
    assert!(host.nft_table_exists("gantry_test_pair"));

    network.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_is_idempotent_and_survives_a_restart() {
    let host = TestHost::new("restart");
    let config = host.config("restart", "10.42.2.0/24");
    let network = host.network(config.clone()).await.expect("network");
    let first = network.attach("pod-a").await.expect("attach");
    assert_eq!(network.attach("pod-a").await.expect("attach again"), first);
    drop(network);

    // A restarted agent: a new PodNetwork over the same state and kernel objects.
    let network = host.network(config).await.expect("network after restart");
    assert_eq!(network.attach("pod-a").await.expect("re-attach"), first);
    let other = network.attach("pod-b").await.expect("attach another pod");
    assert_ne!(other.ip, first.ip);
    let mut attached = network.attached_pods().await;
    attached.sort();
    assert_eq!(
        attached,
        vec![
            ("pod-a".to_string(), first.ip),
            ("pod-b".to_string(), other.ip)
        ]
    );
    let seen = source_seen(other.netns.clone(), first.netns.clone(), first.ip).await;
    assert_eq!(seen, IpAddr::V4(other.ip));

    network.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_frees_the_ip_and_removes_the_veth_and_namespace() {
    let host = TestHost::new("detach");
    // A /29: the bridge plus five pod addresses.
    let network = host
        .network(host.config("detach", "10.42.3.0/29"))
        .await
        .expect("network");
    let mut pods = Vec::new();
    for i in 0..5 {
        pods.push(network.attach(&format!("pod-{i}")).await.expect("attach"));
    }
    assert!(matches!(
        network.attach("one-too-many").await,
        Err(NetworkError::PodCidrExhausted(_))
    ));

    let freed = pods.remove(2);
    network.detach("pod-2").await.expect("detach");
    network.detach("pod-2").await.expect("detach is idempotent");
    assert!(!freed.netns.exists(), "the namespace file is gone");
    let ports = host.ip(&["-o", "link", "show", "master", "gbr-detach"]);
    assert_eq!(
        ports.lines().count(),
        4,
        "one veth left the bridge: {ports}"
    );

    let reused = network
        .attach("one-too-many")
        .await
        .expect("attach after a detach");
    assert_eq!(reused.ip, freed.ip);
    network.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_removes_the_bridge_table_routes_and_pods() {
    let host = TestHost::new("teardown");
    let config = host.config("teardown", "10.42.4.0/24");
    let network = host.network(config.clone()).await.expect("network");
    let pod = network.attach("pod-a").await.expect("attach");
    host.ip(&[
        "link",
        "add",
        "uplink",
        "type",
        "veth",
        "peer",
        "name",
        "uplink-peer",
    ]);
    host.ip(&["addr", "add", "10.99.4.1/24", "dev", "uplink"]);
    host.ip(&["link", "set", "uplink", "up"]);
    let peer: (Ipv4Net, Ipv4Addr) = ("10.42.5.0/24".parse().unwrap(), Ipv4Addr::new(10, 99, 4, 2));
    network.set_peer_routes(&[peer]).await.expect("peer routes");

    network.teardown().await.expect("teardown");
    let links = host.ip(&["-o", "link", "show"]);
    assert!(!links.contains("gbr-teardown"), "bridge removed: {links}");
    assert!(!links.contains("veth"), "veths removed: {links}");
    assert!(!host.ip(&["route", "show"]).contains("10.42.5.0/24"));
    assert!(!host.nft_table_exists("gantry_test_teardown"));
    assert!(!pod.netns.exists());
    assert!(!config.state_dir.join("ipam.json").exists());
    assert!(!config.state_dir.join("netns").exists());
}

/// Two nodes joined by a veth "wire" (10.99.0.1 and 10.99.0.2), each with its
/// own pod CIDR and host-gw routes to the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_two_nodes_reach_each_other_over_host_gw_routes() {
    let node_a = TestHost::new("node-a");
    let node_b = TestHost::new("node-b");
    let wire_a = format!("gw{}a", std::process::id() % 100_000);
    let wire_b = format!("gw{}b", std::process::id() % 100_000);
    ip(&[
        "link",
        "add",
        &wire_a,
        "netns",
        &node_a.name,
        "type",
        "veth",
        "peer",
        "name",
        &wire_b,
        "netns",
        &node_b.name,
    ]);
    node_a.ip(&["addr", "add", "10.99.0.1/24", "dev", &wire_a]);
    node_b.ip(&["addr", "add", "10.99.0.2/24", "dev", &wire_b]);
    node_a.ip(&["link", "set", &wire_a, "up"]);
    node_b.ip(&["link", "set", &wire_b, "up"]);

    let network_a = node_a
        .network(node_a.config("a", "10.42.1.0/24"))
        .await
        .expect("network a");
    let network_b = node_b
        .network(node_b.config("b", "10.42.2.0/24"))
        .await
        .expect("network b");
    let pod_a = network_a.attach("pod-a").await.expect("attach a");
    let pod_b = network_b.attach("pod-b").await.expect("attach b");

    // A stale route this network owns (a node that left) and one it does not.
    node_a.ip(&["route", "add", "10.42.9.0/24", "via", "10.99.0.2"]);
    network_a
        .set_peer_routes(&[
            ("10.42.2.0/24".parse().unwrap(), Ipv4Addr::new(10, 99, 0, 2)),
            ("10.42.7.0/24".parse().unwrap(), Ipv4Addr::new(10, 99, 0, 2)),
        ])
        .await
        .expect("peer routes a");
    network_a
        .set_peer_routes(&[("10.42.2.0/24".parse().unwrap(), Ipv4Addr::new(10, 99, 0, 2))])
        .await
        .expect("peer routes a, one node fewer");
    network_b
        .set_peer_routes(&[("10.42.1.0/24".parse().unwrap(), Ipv4Addr::new(10, 99, 0, 1))])
        .await
        .expect("peer routes b");
    // A peer behind an unreachable address fails alone.
    let unreachable = network_a
        .set_peer_routes(&[
            ("10.42.2.0/24".parse().unwrap(), Ipv4Addr::new(10, 99, 0, 2)),
            ("10.42.8.0/24".parse().unwrap(), Ipv4Addr::new(10, 77, 0, 1)),
        ])
        .await;
    assert!(
        matches!(unreachable, Err(NetworkError::Netlink { .. })),
        "{unreachable:?}"
    );
    let routes = node_a.ip(&["route", "show"]);
    assert!(routes.contains("10.42.2.0/24 via 10.99.0.2"), "{routes}");
    assert!(!routes.contains("10.42.7.0/24"), "replaced away: {routes}");
    assert!(
        routes.contains("10.42.9.0/24 via 10.99.0.2"),
        "someone else's route stays: {routes}"
    );

    // Pod to pod across nodes keeps the pod address.
    let seen = source_seen(pod_a.netns.clone(), pod_b.netns.clone(), pod_b.ip).await;
    assert_eq!(seen, IpAddr::V4(pod_a.ip));
    let seen = source_seen(pod_b.netns.clone(), pod_a.netns.clone(), pod_a.ip).await;
    assert_eq!(seen, IpAddr::V4(pod_b.ip));
    // Leaving the cluster range, a pod is masqueraded to its node's address.
    let seen = source_seen(
        pod_a.netns.clone(),
        node_b.netns(),
        Ipv4Addr::new(10, 99, 0, 2),
    )
    .await;
    assert_eq!(seen, IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1)));

    network_a.teardown().await.expect("teardown a");
    network_b.teardown().await.expect("teardown b");
    assert!(!node_a.ip(&["route", "show"]).contains("10.42.2.0/24"));
}

/// Creates Node `name` with `pod_cidr` and an InternalIP, as an agent and the node
/// IPAM controller would leave it.
async fn create_node(
    nodes: &kube::Api<k8s_openapi::api::core::v1::Node>,
    name: &str,
    pod_cidr: &str,
    ip: &str,
) {
    let node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"podCIDR": pod_cidr},
    }))
    .expect("a Node");
    nodes
        .create(&kube::api::PostParams::default(), &node)
        .await
        .expect("create the node");
    set_internal_ip(nodes, name, ip).await;
}

async fn set_internal_ip(
    nodes: &kube::Api<k8s_openapi::api::core::v1::Node>,
    name: &str,
    ip: &str,
) {
    let status =
        serde_json::json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}]}});
    nodes
        .patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(status),
        )
        .await
        .expect("set the node's address");
}

/// Waits until the host's gantry-owned pod routes are `want`; panics with the table.
async fn wait_for_routes(host: &TestHost, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let table = host.ip(&["-4", "route", "show", "root", "10.42.0.0/16"]);
        let mut routes: Vec<String> = table
            .lines()
            .filter(|line| line.contains(" via "))
            .map(|line| {
                line.split(" dev ")
                    .next()
                    .unwrap_or(line)
                    .trim()
                    .to_string()
            })
            .collect();
        routes.sort();
        if routes == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "routes {routes:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The agent's route sync against a real API server: routes appear for Nodes
/// with a pod CIDR and an InternalIP, move when a Node's address changes, and go
/// when the Node is deleted; the node's own CIDR is never routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_routes_follow_the_nodes() {
    let host = TestHost::new("sync");
    // Next hops must be on a link: a veth pair inside the host carries 10.99.0.0/24.
    let (wire, wire_peer) = ("gsync0", "gsync1");
    host.ip(&[
        "link", "add", wire, "type", "veth", "peer", "name", wire_peer,
    ]);
    host.ip(&["addr", "add", "10.99.0.1/24", "dev", wire]);
    host.ip(&["link", "set", wire, "up"]);
    host.ip(&["link", "set", wire_peer, "up"]);
    let network = std::sync::Arc::new(
        host.network(host.config("sync", "10.42.1.0/24"))
            .await
            .expect("network"),
    );
    let api = gantry_apiserver::testing::TestServer::start();
    let client = api.client().await;
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    create_node(&nodes, "self", "10.42.1.0/24", "10.99.0.1").await;
    create_node(&nodes, "b", "10.42.2.0/24", "10.99.0.2").await;

    let shutdown = tokio_util::sync::CancellationToken::new();
    let sync = tokio::spawn(gantry_agent::network::sync_peer_routes(
        client,
        network.clone(),
        "self".into(),
        shutdown.clone(),
    ));
    wait_for_routes(&host, &["10.42.2.0/24 via 10.99.0.2"]).await;

    create_node(&nodes, "c", "10.42.3.0/24", "10.99.0.3").await;
    wait_for_routes(
        &host,
        &["10.42.2.0/24 via 10.99.0.2", "10.42.3.0/24 via 10.99.0.3"],
    )
    .await;

    set_internal_ip(&nodes, "b", "10.99.0.4").await;
    wait_for_routes(
        &host,
        &["10.42.2.0/24 via 10.99.0.4", "10.42.3.0/24 via 10.99.0.3"],
    )
    .await;

    nodes
        .delete("c", &kube::api::DeleteParams::default())
        .await
        .expect("delete node c");
    wait_for_routes(&host, &["10.42.2.0/24 via 10.99.0.4"]).await;

    shutdown.cancel();
    sync.await.expect("the route sync stops");
    let network = std::sync::Arc::into_inner(network).expect("the sync released the network");
    network.teardown().await.expect("teardown");
    wait_for_routes(&host, &[]).await;
}
