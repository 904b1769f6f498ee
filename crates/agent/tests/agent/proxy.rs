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
        let pod = Netns::new(tag);
        let host_end = format!("veth-{tag}");
        self.ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", "eth0",
        ]);
        self.ip(&["link", "set", "eth0", "netns", &pod.name]);
        self.ip(&[
            "addr",
            "add",
            &format!("{POD_GATEWAY}/24"),
            "dev",
            &host_end,
        ]);
        self.ip(&["link", "set", &host_end, "up"]);
        pod.ip(&["addr", "add", &format!("{pod_ip}/24"), "dev", "eth0"]);
        pod.ip(&["link", "set", "eth0", "up"]);
        pod.ip(&["route", "add", "default", "via", &POD_GATEWAY.to_string()]);
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
                while let Ok((mut stream, _)) = listener.accept().await {
                    use tokio::io::AsyncWriteExt;
                    let _ = stream.write_all(pod.to_string().as_bytes()).await;
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
            .expect("proxy");
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
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
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
