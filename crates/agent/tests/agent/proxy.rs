//! The service proxy on real nftables and real sockets (root only). Each test
//! builds a node stand-in as a throwaway network namespace: a "node" address
//! on a veth link, "pod" addresses with TCP servers on loopback, a default
//! route so ClusterIPs are routable, and where needed a pod stand-in (its own
//! namespace behind a veth pair) to test traffic from pods. Services and EndpointSlices are
//! written to a real API server; the proxy programs the namespace's nftables
//! while its watches run in the test's own namespace. Dropping the namespace
//! guard deletes the namespace and, with it, the proxy's table.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_agent::ProxySettings;
use gantry_agent::proxy::ServiceProxy;
use gantry_apiserver::testing::TestServer;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::PostParams;
use nix::sched::CloneFlags;
use tokio_util::sync::CancellationToken;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const POD_IPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 42, 0, 2),
    Ipv4Addr::new(10, 42, 0, 3),
    Ipv4Addr::new(10, 42, 0, 4),
];
const POD_PORT: u16 = 8080;
/// The node's end of a pod stand-in's veth pair.
const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 1);
const TABLE: &str = "gantry-proxy";
/// The node the proxy runs on, as EndpointSlices name it.
const THIS_NODE: &str = "here";
const WAIT: Duration = Duration::from_secs(15);

/// Runs `ip` with `args`, panicking with its stderr if it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A network namespace made with `ip netns add`, deleted on drop (which takes
/// its links, addresses and nftables tables with it).
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("gantry-proxy-{}-{tag}", std::process::id());
        ip(&["netns", "add", &name]);
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    /// A node stand-in: the node address on a veth link with the default
    /// route (so ClusterIPs are routable), the pod addresses on loopback.
    fn node(tag: &str) -> Netns {
        let node = Netns::new(tag);
        node.ip(&[
            "link",
            "add",
            "node0",
            "type",
            "veth",
            "peer",
            "name",
            "node0-peer",
        ]);
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "node0"]);
        node.ip(&["link", "set", "node0-peer", "up"]);
        node.ip(&["link", "set", "node0", "up"]);
        node.ip(&["route", "add", "default", "dev", "node0"]);
        for pod in POD_IPS {
            node.ip(&["addr", "add", &format!("{pod}/32"), "dev", "lo"]);
        }
        node
    }

    /// A pod stand-in with address `pod_ip`, attached to this node by a veth
    /// pair whose node end ([`POD_GATEWAY`]) is its default gateway; the
    /// node forwards, as a real node does.
    fn attach_pod(&self, tag: &str, pod_ip: Ipv4Addr) -> Netns {
        self.attach(tag, pod_ip, POD_GATEWAY)
    }

    /// A machine with address `address` (a /24 with `gateway`) attached to
    /// this node by a veth pair whose node end is its default gateway.
    fn attach(&self, tag: &str, address: Ipv4Addr, gateway: Ipv4Addr) -> Netns {
        let pod = Netns::new(tag);
        let host_end = format!("veth-{tag}");
        self.ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", "eth0",
        ]);
        self.ip(&["link", "set", "eth0", "netns", &pod.name]);
        self.ip(&["addr", "add", &format!("{gateway}/24"), "dev", &host_end]);
        self.ip(&["link", "set", &host_end, "up"]);
        pod.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"]);
        pod.ip(&["link", "set", "eth0", "up"]);
        pod.ip(&["route", "add", "default", "via", &gateway.to_string()]);
        let status = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])
            .status()
            .expect("run sysctl");
        assert!(status.success(), "enable forwarding");
        pod
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// Runs `work` on a fresh thread inside the namespace.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        let (done, result) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open network namespace");
            nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("enter namespace");
            let _ = done.send(work());
        });
        result.await.expect("the namespace thread finished")
    }

    /// Starts one TCP server per address on [`POD_PORT`]; each answers with its address.
    async fn serve(&self, addresses: &[Ipv4Addr]) {
        self.serve_answering(addresses, false).await;
    }

    /// Like [`Netns::serve`]; with `report_peer` the answer is
    /// `"ADDRESS from PEER"`, PEER being the client address the server saw.
    async fn serve_answering(&self, addresses: &[Ipv4Addr], report_peer: bool) {
        let addresses = addresses.to_vec();
        let listeners = self
            .run({
                let addresses = addresses.clone();
                move || {
                    addresses
                        .iter()
                        .map(|pod| {
                            let listener =
                                std::net::TcpListener::bind((*pod, POD_PORT)).expect("bind");
                            listener.set_nonblocking(true).expect("non-blocking");
                            listener
                        })
                        .collect::<Vec<_>>()
                }
            })
            .await;
        for (pod, listener) in addresses.into_iter().zip(listeners) {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            tokio::spawn(async move {
                while let Ok((mut stream, peer)) = listener.accept().await {
                    use tokio::io::AsyncWriteExt;
                    let answer = if report_peer {
                        format!("{pod} from {}", peer.ip())
                    } else {
                        pod.to_string()
                    };
                    let _ = stream.write_all(answer.as_bytes()).await;
                }
            });
        }
    }

    /// Connects to `target` from inside the namespace and reads the answer.
    async fn request(&self, target: SocketAddrV4) -> std::io::Result<String> {
        self.run(move || {
            let mut stream =
                TcpStream::connect_timeout(&SocketAddr::V4(target), Duration::from_secs(3))?;
            stream.set_read_timeout(Some(Duration::from_secs(3)))?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        })
        .await
    }

    /// Waits until requests to `target` have been answered by every pod in `expected`.
    async fn wait_for_backends(&self, target: SocketAddrV4, expected: &BTreeSet<String>) {
        let mut seen = BTreeSet::new();
        let deadline = Instant::now() + WAIT;
        while &seen != expected {
            assert!(
                Instant::now() < deadline,
                "{target}: saw {seen:?}, expected {expected:?}"
            );
            match self.request(target).await {
                Ok(answer) => {
                    seen.insert(answer);
                }
                // Not programmed yet: fails at once, so do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// The proxy's table, or one chain of it, with rule handles.
    fn nft_list(&self, what: &[&str]) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-a", "list"])
            .args(what)
            .output()
            .expect("run nft");
        assert!(
            output.status.success(),
            "nft list: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts the proxy programming this namespace; it stops with `shutdown`.
    async fn start_proxy(&self, client: kube::Client, shutdown: &CancellationToken) {
        let mut settings = ProxySettings::new("10.42.0.0/16".parse().expect("cidr"));
        settings.nft_table = TABLE.into();
        let proxy = self
            .run(move || ServiceProxy::new(client, settings, vec![NODE_IP]))
            .await
            .expect("proxy")
            .with_node_name(THIS_NODE);
        tokio::spawn(proxy.run(shutdown.clone()));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A Service from YAML-ish JSON in namespace default, created on the server.
async fn create_service(client: &kube::Client, json: serde_json::Value) -> Service {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(json).expect("service");
    api.create(&PostParams::default(), &service)
        .await
        .expect("create service")
}

/// Writes (creates or replaces) the one EndpointSlice of `service`, listing
/// the pods in `ready` as ready and the other pods as not ready.
async fn write_slice(client: &kube::Client, service: &str, port_name: &str, ready: &[Ipv4Addr]) {
    let endpoints: Vec<serde_json::Value> = POD_IPS
        .iter()
        .map(|pod| {
            serde_json::json!({
                "addresses": [pod.to_string()],
                "conditions": {"ready": ready.contains(pod)},
            })
        })
        .collect();
    let slice = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": port_name, "port": POD_PORT, "protocol": "TCP"}],
    });
    put_slice(client, service, slice).await;
}

/// Creates or replaces the EndpointSlice `{service}-1` with `slice` (JSON).
async fn put_slice(client: &kube::Client, service: &str, slice: serde_json::Value) {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let mut slice: EndpointSlice = serde_json::from_value(slice).expect("slice");
    let name = format!("{service}-1");
    match api.get_opt(&name).await.expect("get slice") {
        Some(existing) => {
            slice.metadata.resource_version = existing.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &slice)
                .await
                .expect("replace slice");
        }
        None => {
            api.create(&PostParams::default(), &slice)
                .await
                .expect("create slice");
        }
    }
}

/// Writes the one EndpointSlice of `service` listing `ready` (any addresses) as ready.
async fn write_endpoints(
    client: &kube::Client,
    service: &str,
    port_name: &str,
    ready: &[Ipv4Addr],
) {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice = serde_json::json!({
        "metadata": {"name": format!("{service}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": ready.iter().map(|ip| serde_json::json!({"addresses": [ip.to_string()]})).collect::<Vec<_>>(),
        "ports": [{"name": port_name, "port": POD_PORT, "protocol": "TCP"}],
    });
    let slice: EndpointSlice = serde_json::from_value(slice).expect("slice");
    api.create(&PostParams::default(), &slice)
        .await
        .expect("create slice");
}

fn cluster_ip(service: &Service) -> Ipv4Addr {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.cluster_ip.as_deref())
        .expect("cluster IP")
        .parse()
        .expect("IPv4 cluster IP")
}

fn node_port(service: &Service) -> u16 {
    let port = service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_ref())
        .expect("ports")[0]
        .node_port
        .expect("node port");
    u16::try_from(port).expect("port")
}

fn all_pods() -> BTreeSet<String> {
    POD_IPS.iter().map(Ipv4Addr::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_service_reaches_every_ready_pod_and_fails_fast_without_any() {
    let server = TestServer::start();
    let client: kube::Client = server.client().await;
    let node = Netns::node("lb");
    node.serve(&POD_IPS).await;
    let service = create_service(
        &client,
        serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}
        }),
    )
    .await;
    write_slice(&client, "web", "http", &POD_IPS).await;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    node.start_proxy(client.clone(), &shutdown).await;

    let vip = SocketAddrV4::new(cluster_ip(&service), 80);
    node.wait_for_backends(vip, &all_pods()).await;
    node.wait_for_backends(SocketAddrV4::new(NODE_IP, node_port(&service)), &all_pods())
        .await;
    node.wait_for_backends(SocketAddrV4::new(NODE_IP, 80), &all_pods())
        .await;

    // The built-in load balancer publishes the node's address.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + WAIT;
    loop {
        let service = services.get("web").await.expect("get service");
        let ingress = gantry_agent::proxy::model::load_balancer_ingress_ips(&service);
        if ingress == [NODE_IP] {
            break;
        }
        assert!(Instant::now() < deadline, "ingress is {ingress:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One pod left ready: only it answers.
    write_slice(&client, "web", "http", &POD_IPS[1..2]).await;
    let only = BTreeSet::from([POD_IPS[1].to_string()]);
    let deadline = Instant::now() + WAIT;
    loop {
        let answers: BTreeSet<String> =
            futures::future::join_all((0..6).map(|_| node.request(vip)))
                .await
                .into_iter()
                .filter_map(Result::ok)
                .collect();
        if answers == only {
            break;
        }
        assert!(Instant::now() < deadline, "answers {answers:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // No ready pod: refused at once on every address, not a timeout.
    write_slice(&client, "web", "http", &[]).await;
    for target in [
        vip,
        SocketAddrV4::new(NODE_IP, node_port(&service)),
        SocketAddrV4::new(NODE_IP, 80),
    ] {
        let deadline = Instant::now() + WAIT;
        loop {
            let started = Instant::now();
            match node.request(target).await {
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                    assert!(
                        started.elapsed() < Duration::from_secs(1),
                        "{target} refused slowly"
                    );
                    break;
                }
                outcome => {
                    assert!(Instant::now() < deadline, "{target}: {outcome:?}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_affinity_sticks_to_one_pod() {
    let server = TestServer::start();
    let client: kube::Client = server.client().await;
    let node = Netns::node("aff");
    node.serve(&POD_IPS).await;
    let service = create_service(
        &client,
        serde_json::json!({
            "metadata": {"name": "sticky", "namespace": "default"},
            "spec": {"selector": {"app": "sticky"}, "sessionAffinity": "ClientIP",
                     "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                     "ports": [{"port": 80, "targetPort": POD_PORT}]}
        }),
    )
    .await;
    write_slice(&client, "sticky", "", &POD_IPS).await;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    node.start_proxy(client.clone(), &shutdown).await;

    let vip = SocketAddrV4::new(cluster_ip(&service), 80);
    let deadline = Instant::now() + WAIT;
    let first = loop {
        match node.request(vip).await {
            Ok(answer) => break answer,
            Err(err) => {
                assert!(Instant::now() < deadline, "{vip}: {err}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    for _ in 0..20 {
        assert_eq!(node.request(vip).await.expect("request"), first);
    }
    let table = node.nft_list(&["table", "inet", TABLE]);
    assert!(
        table.contains("flags dynamic,timeout") && table.contains("timeout 10m"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_rewrites_only_the_changed_service_and_a_restart_removes_stale_rules() {
    let server = TestServer::start();
    let client: kube::Client = server.client().await;
    let node = Netns::node("upd");
    node.serve(&POD_IPS).await;
    let mut vips = Vec::new();
    for name in ["alpha", "beta"] {
        let service = create_service(
            &client,
            serde_json::json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"selector": {"app": name},
                         "ports": [{"name": "http", "port": 80, "targetPort": POD_PORT}]}
            }),
        )
        .await;
        write_slice(&client, name, "http", &POD_IPS[..2]).await;
        vips.push(SocketAddrV4::new(cluster_ip(&service), 80));
    }
    let shutdown = CancellationToken::new();
    node.start_proxy(client.clone(), &shutdown).await;
    let first_two: BTreeSet<String> = POD_IPS[..2].iter().map(Ipv4Addr::to_string).collect();
    node.wait_for_backends(vips[0], &first_two).await;
    node.wait_for_backends(vips[1], &first_two).await;

    let beta_chains = |table: &str| -> String {
        table
            .split("\n\tchain ")
            // Each piece after the first starts with its chain's name.
            .skip(1)
            .filter(|chain| chain.contains("default/beta/"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let before = node.nft_list(&["table", "inet", TABLE]);
    assert!(beta_chains(&before).contains("# handle"), "{before}");
    write_slice(&client, "alpha", "http", &POD_IPS).await;
    node.wait_for_backends(vips[0], &all_pods()).await;
    let after = node.nft_list(&["table", "inet", TABLE]);
    // Same rules with the same handles: beta's chains were not rewritten.
    assert_eq!(beta_chains(&before), beta_chains(&after));

    // Deleted while no proxy runs: the next proxy's full sync removes its rules.
    shutdown.cancel();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    services
        .delete("beta", &Default::default())
        .await
        .expect("delete beta");
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    node.start_proxy(client.clone(), &shutdown).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let table = node.nft_list(&["table", "inet", TABLE]);
        if !table.contains("default/beta/") && !table.contains(&vips[1].ip().to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "beta still programmed:\n{table}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.wait_for_backends(vips[0], &all_pods()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_services_through_the_node_including_their_own_hairpin() {
    let server = TestServer::start();
    let client: kube::Client = server.client().await;
    let node = Netns::node("pods");
    node.serve(&POD_IPS).await;
    let pod_ip = Ipv4Addr::new(10, 42, 0, 9);
    let pod = node.attach_pod("pod", pod_ip);
    pod.serve(&[pod_ip]).await;
    let mut vips = Vec::new();
    for name in ["others", "itself", "nobody"] {
        let service = create_service(
            &client,
            serde_json::json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"selector": {"app": name},
                         "ports": [{"name": "http", "port": 80, "targetPort": POD_PORT}]}
            }),
        )
        .await;
        vips.push(SocketAddrV4::new(cluster_ip(&service), 80));
    }
    write_slice(&client, "others", "http", &POD_IPS).await;
    write_endpoints(&client, "itself", "http", &[pod_ip]).await;
    write_slice(&client, "nobody", "http", &[]).await;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    node.start_proxy(client.clone(), &shutdown).await;

    // DNAT in prerouting: from the pod to the other pods' addresses.
    pod.wait_for_backends(vips[0], &all_pods()).await;
    // Hairpin: the pod reaches itself through its Service, masqueraded.
    pod.wait_for_backends(vips[1], &BTreeSet::from([pod_ip.to_string()]))
        .await;
    // No endpoints: the forward hook rejects at once.
    let started = Instant::now();
    match pod.request(vips[2]).await {
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {}
        outcome => panic!("{}: {outcome:?}", vips[2]),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// A client outside the cluster, behind the node.
const OUTSIDE_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 2);
/// The node's address on the outside client's link.
const OUTSIDE_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 88, 1);

/// Writes the EndpointSlice of `service` (TCP port [`POD_PORT`] named
/// `port_name`) with `endpoints` as (address, node name, ready).
async fn write_slice_on_nodes(
    client: &kube::Client,
    service: &str,
    port_name: &str,
    endpoints: &[(Ipv4Addr, &str, bool)],
) {
    let endpoints: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|(address, node, ready)| {
            serde_json::json!({
                "addresses": [address.to_string()],
                "nodeName": node,
                "conditions": {"ready": ready},
            })
        })
        .collect();
    let slice = serde_json::json!({
        "metadata": {"name": format!("{service}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": port_name, "port": POD_PORT, "protocol": "TCP"}],
    });
    put_slice(client, service, slice).await;
}

/// Requests `target` `times` times and collects the distinct answers; a
/// failed request fails the whole collection.
async fn answers(
    from: &Netns,
    target: SocketAddrV4,
    times: usize,
) -> std::io::Result<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    for _ in 0..times {
        seen.insert(from.request(target).await?);
    }
    Ok(seen)
}

/// Waits until `times` requests in a row to `target` give exactly `expected`.
async fn wait_for_answers(
    from: &Netns,
    target: SocketAddrV4,
    times: usize,
    expected: &BTreeSet<String>,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let outcome = answers(from, target, times).await;
        if outcome.as_ref().is_ok_and(|seen| seen == expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{target}: {outcome:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a request to `target` times out: dropped, neither answered nor refused.
async fn wait_until_dropped(from: &Netns, target: SocketAddrV4) {
    let deadline = Instant::now() + WAIT;
    loop {
        match from.request(target).await {
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                return;
            }
            outcome => {
                assert!(
                    Instant::now() < deadline,
                    "{target} not dropped: {outcome:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_traffic_policy_local_keeps_the_client_address_and_this_nodes_endpoints() {
    let server = TestServer::start();
    let client: kube::Client = server.client().await;
    let node = Netns::node("etp");
    node.serve_answering(&POD_IPS, true).await;
    let outside = node.attach("etp-out", OUTSIDE_CLIENT, OUTSIDE_GATEWAY);
    let service = create_service(
        &client,
        serde_json::json!({
            "metadata": {"name": "local", "namespace": "default"},
            "spec": {"type": "NodePort", "externalTrafficPolicy": "Local",
                     "selector": {"app": "local"},
                     "ports": [{"name": "http", "port": 80, "targetPort": POD_PORT}]}
        }),
    )
    .await;
    write_slice_on_nodes(
        &client,
        "local",
        "http",
        &[(POD_IPS[0], THIS_NODE, true), (POD_IPS[1], "there", true)],
    )
    .await;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    node.start_proxy(client.clone(), &shutdown).await;

    // From outside: only this node's endpoint, and it sees the real client.
    let node_port = SocketAddrV4::new(NODE_IP, node_port(&service));
    let local_only = BTreeSet::from([format!("{} from {OUTSIDE_CLIENT}", POD_IPS[0])]);
    wait_for_answers(&outside, node_port, 8, &local_only).await;
    // The ClusterIP still spreads over every endpoint.
    let vip = SocketAddrV4::new(cluster_ip(&service), 80);
    let everywhere: BTreeSet<String> = POD_IPS[..2].iter().map(Ipv4Addr::to_string).collect();
    let deadline = Instant::now() + WAIT;
    let mut seen = BTreeSet::new();
    while seen != everywhere {
        assert!(Instant::now() < deadline, "{vip}: saw {seen:?}");
        match node.request(vip).await {
            Ok(answer) => seen.extend(answer.split(" from ").next().map(str::to_string)),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }

    // No ready endpoint on this node: outside traffic is dropped, not sent elsewhere.
    write_slice_on_nodes(
        &client,
        "local",
        "http",
        &[(POD_IPS[0], THIS_NODE, false), (POD_IPS[1], "there", true)],
    )
    .await;
    wait_until_dropped(&outside, node_port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_ips_are_served_like_the_cluster_ip() {
    let server = TestServer::start();
    let client: kube::Client = server.client().await;
    let node = Netns::node("extip");
    node.serve(&POD_IPS).await;
    let outside = node.attach("extip-out", OUTSIDE_CLIENT, OUTSIDE_GATEWAY);
    let external_ip = Ipv4Addr::new(203, 0, 113, 7);
    create_service(
        &client,
        serde_json::json!({
            "metadata": {"name": "ext", "namespace": "default"},
            "spec": {"selector": {"app": "ext"}, "externalIPs": [external_ip.to_string()],
                     "ports": [{"name": "http", "port": 80, "targetPort": POD_PORT}]}
        }),
    )
    .await;
    write_slice(&client, "ext", "http", &POD_IPS).await;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    node.start_proxy(client.clone(), &shutdown).await;

    let target = SocketAddrV4::new(external_ip, 80);
    outside.wait_for_backends(target, &all_pods()).await;
    node.wait_for_backends(target, &all_pods()).await;
    // Without endpoints the external IP refuses at once, like the ClusterIP.
    write_slice(&client, "ext", "http", &[]).await;
    let deadline = Instant::now() + WAIT;
    loop {
        match outside.request(target).await {
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => break,
            outcome => {
                assert!(Instant::now() < deadline, "{target}: {outcome:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_traffic_policy_local_uses_only_this_nodes_endpoints() {
    let server = TestServer::start();
    let client: kube::Client = server.client().await;
    let node = Netns::node("itp");
    node.serve(&POD_IPS).await;
    let service = create_service(
        &client,
        serde_json::json!({
            "metadata": {"name": "itp", "namespace": "default"},
            "spec": {"internalTrafficPolicy": "Local", "selector": {"app": "itp"},
                     "ports": [{"name": "http", "port": 80, "targetPort": POD_PORT}]}
        }),
    )
    .await;
    write_slice_on_nodes(
        &client,
        "itp",
        "http",
        &[(POD_IPS[0], "there", true), (POD_IPS[1], THIS_NODE, true)],
    )
    .await;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    node.start_proxy(client.clone(), &shutdown).await;

    let vip = SocketAddrV4::new(cluster_ip(&service), 80);
    wait_for_answers(&node, vip, 8, &BTreeSet::from([POD_IPS[1].to_string()])).await;
    write_slice_on_nodes(
        &client,
        "itp",
        "http",
        &[(POD_IPS[0], "there", true), (POD_IPS[1], THIS_NODE, false)],
    )
    .await;
    wait_until_dropped(&node, vip).await;
}

/// Starts one UDP echo-your-address server per address on [`POD_PORT`].
async fn serve_udp(node: &Netns, addresses: &[Ipv4Addr]) {
    let sockets = node
        .run({
            let addresses = addresses.to_vec();
            move || {
                addresses
                    .iter()
                    .map(|pod| {
                        let socket = std::net::UdpSocket::bind((*pod, POD_PORT)).expect("bind udp");
                        socket.set_nonblocking(true).expect("non-blocking");
                        (*pod, socket)
                    })
                    .collect::<Vec<_>>()
            }
        })
        .await;
    for (pod, socket) in sockets {
        let socket = tokio::net::UdpSocket::from_std(socket).expect("tokio socket");
        tokio::spawn(async move {
            let mut buffer = [0u8; 64];
            while let Ok((_, peer)) = socket.recv_from(&mut buffer).await {
                let _ = socket.send_to(pod.to_string().as_bytes(), peer).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_flow_moves_to_a_live_endpoint_when_its_endpoint_is_removed() {
    let server = TestServer::start();
    let client: kube::Client = server.client().await;
    let node = Netns::node("udp");
    serve_udp(&node, &POD_IPS[..2]).await;
    let service = create_service(
        &client,
        serde_json::json!({
            "metadata": {"name": "dns", "namespace": "default"},
            "spec": {"selector": {"app": "dns"},
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": POD_PORT}]}
        }),
    )
    .await;
    let udp_slice = |ready: Ipv4Addr| {
        serde_json::json!({
            "metadata": {"name": "dns-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "dns"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ready.to_string()]}],
            "ports": [{"name": "dns", "port": POD_PORT, "protocol": "UDP"}],
        })
    };
    put_slice(&client, "dns", udp_slice(POD_IPS[0])).await;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    node.start_proxy(client.clone(), &shutdown).await;

    // One client socket, so every datagram is the same conntrack flow.
    let vip = SocketAddrV4::new(cluster_ip(&service), 53);
    let socket = node
        .run(move || {
            let socket = std::net::UdpSocket::bind((NODE_IP, 0)).expect("bind client");
            socket
                .set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            socket.connect(vip).expect("connect");
            socket
        })
        .await;
    let socket = Arc::new(socket);
    let ask = || {
        let socket = socket.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                socket.send(b"who").ok()?;
                let mut buffer = [0u8; 64];
                let length = socket.recv(&mut buffer).ok()?;
                Some(String::from_utf8_lossy(&buffer[..length]).into_owned())
            })
            .await
            .expect("udp client")
        }
    };
    let wait_for = |expected: Ipv4Addr| {
        let ask = &ask;
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                let answer = ask().await;
                if answer.as_deref() == Some(expected.to_string().as_str()) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{vip}: {answer:?}, expected {expected}"
                );
            }
        }
    };
    wait_for(POD_IPS[0]).await;
    // The first endpoint is removed (its server still answers): the same
    // flow must reach the new endpoint, not keep going to the old one.
    put_slice(&client, "dns", udp_slice(POD_IPS[1])).await;
    wait_for(POD_IPS[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_ingress_drops_gone_nodes_and_former_load_balancers() {
    use k8s_openapi::api::core::v1::Node;
    let server = TestServer::start();
    let client: kube::Client = server.client().await;
    let node = Netns::node("lbst");
    let nodes: Api<Node> = Api::all(client.clone());
    let other_ip = "192.168.77.60";
    let other: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "other"},
        "status": {"addresses": [{"type": "InternalIP", "address": other_ip}]}
    }))
    .expect("node");
    nodes
        .create(&PostParams::default(), &other)
        .await
        .expect("create node");
    let addresses =
        serde_json::json!({"status": {"addresses": [{"type": "InternalIP", "address": other_ip}]}});
    nodes
        .patch_status(
            "other",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&addresses),
        )
        .await
        .expect("node addresses");
    let created = create_service(
        &client,
        serde_json::json!({
            "metadata": {"name": "lb", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "lb"},
                     "ports": [{"name": "http", "port": 80, "targetPort": POD_PORT}]}
        }),
    )
    .await;
    // Ingress from before: the other node's address and one of a node long gone.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let mut with_status = created.clone();
    with_status.status = Some(
        serde_json::from_value(serde_json::json!({"loadBalancer": {"ingress": [
            {"ip": other_ip, "ipMode": "VIP"}, {"ip": "192.168.77.50", "ipMode": "VIP"}
        ]}}))
        .expect("status"),
    );
    services
        .replace_status("lb", &PostParams::default(), &with_status)
        .await
        .expect("status");
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    node.start_proxy(client.clone(), &shutdown).await;

    let wait_for_ingress = |expected: Vec<String>| {
        let services = services.clone();
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                let service = services.get("lb").await.expect("get service");
                let ingress: Vec<String> =
                    gantry_agent::proxy::model::load_balancer_ingress_ips(&service)
                        .iter()
                        .map(Ipv4Addr::to_string)
                        .collect();
                if ingress == expected {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "ingress {ingress:?}, expected {expected:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for_ingress(vec![other_ip.into(), NODE_IP.to_string()]).await;
    nodes
        .delete("other", &Default::default())
        .await
        .expect("delete node");
    wait_for_ingress(vec![NODE_IP.to_string()]).await;

    // No longer a LoadBalancer: no ingress at all.
    let patch = serde_json::json!({"spec": {"type": "ClusterIP", "externalTrafficPolicy": null,
        "ports": [{"name": "http", "port": 80, "targetPort": POD_PORT}]}});
    services
        .patch(
            "lb",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("make ClusterIP");
    wait_for_ingress(Vec::new()).await;
}
