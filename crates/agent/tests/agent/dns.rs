//! The cluster DNS server end to end: a real API server holds the Services,
//! EndpointSlices and Pods; the DNS server listens on 127.0.0.1 (a free port)
//! and forwards to a tiny upstream server of the test's own on 127.0.0.2, never
//! to the internet. Queries go through hickory-resolver over UDP and TCP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use gantry_agent::dns::{ClusterDns, DnsConfig};
use gantry_apiserver::testing::TestServer;
use hickory_proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// How long a change may take to show in answers (the "within a second").
const PROPAGATION: Duration = Duration::from_secs(1);
/// How long the server may take to start answering (initial lists).
const STARTUP: Duration = Duration::from_secs(10);

/// The name and address the upstream knows.
const UPSTREAM_NAME: &str = "www.upstream.test.";
const UPSTREAM_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

/// An upstream resolver: `www.upstream.test.` A 192.0.2.7, NXDOMAIN for the rest.
struct Upstream;

#[async_trait::async_trait]
impl RequestHandler for Upstream {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let mut answers = Vec::new();
        match request.request_info() {
            Ok(info) if info.query.name().to_string() == UPSTREAM_NAME => {
                if info.query.query_type() == RecordType::A {
                    answers.push(Record::from_rdata(
                        Name::from(info.query.name().clone()),
                        60,
                        RData::A(A(UPSTREAM_ADDRESS)),
                    ));
                }
            }
            _ => metadata.response_code = ResponseCode::NXDomain,
        }
        let response = MessageResponseBuilder::new(&request.queries, None).build(
            metadata,
            answers.iter(),
            [],
            [],
            [],
        );
        response_handle
            .send_response(response)
            .await
            .unwrap_or_else(|_| {
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            })
    }
}

/// Serves [`Upstream`] on 127.0.0.2 (UDP and TCP, same free port) until dropped.
struct UpstreamServer {
    address: SocketAddr,
    _task: AbortOnDropHandle<()>,
}

impl UpstreamServer {
    async fn start() -> UpstreamServer {
        let udp = UdpSocket::bind("127.0.0.2:0")
            .await
            .expect("bind upstream udp");
        let address = udp.local_addr().expect("upstream address");
        let tcp = TcpListener::bind(address).await.expect("bind upstream tcp");
        let mut server = Server::new(Upstream);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 16);
        let task = tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        UpstreamServer {
            address,
            _task: AbortOnDropHandle::new(task),
        }
    }
}

/// The API server, the cluster DNS in front of it, and the upstream; the DNS
/// server stops (and its task is awaited) when this is dropped.
struct Fixture {
    _api: TestServer,
    client: kube::Client,
    dns: SocketAddr,
    _upstream: UpstreamServer,
    shutdown: CancellationToken,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl Fixture {
    async fn start() -> Fixture {
        let api = TestServer::start();
        let client = api.client().await;
        let upstream = UpstreamServer::start().await;
        let dns = ClusterDns::bind(DnsConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            cluster_domain: "cluster.local".into(),
            upstreams: vec![upstream.address],
            interface: None,
        })
        .await
        .expect("bind the DNS server");
        let address = dns.local_addr();
        let shutdown = CancellationToken::new();
        let served = tokio::spawn({
            let client = client.clone();
            let shutdown = shutdown.clone();
            async move {
                dns.serve(client, shutdown).await.expect("DNS server runs");
            }
        });
        Fixture {
            _api: api,
            client,
            dns: address,
            _upstream: upstream,
            shutdown,
            served: Some(served),
        }
    }

    /// Asks the server for `name`/`record_type` (UDP, or TCP when `tcp`),
    /// through a fresh resolver so no client cache hides a change.
    async fn query(
        &self,
        name: &str,
        record_type: RecordType,
        tcp: bool,
    ) -> Result<Lookup, NetError> {
        let mut server = if tcp {
            NameServerConfig::tcp(self.dns.ip())
        } else {
            NameServerConfig::udp(self.dns.ip())
        };
        for connection in &mut server.connections {
            connection.port = self.dns.port();
        }
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![server]),
            TokioRuntimeProvider::default(),
        );
        builder.options_mut().cache_size = 0;
        builder.options_mut().ndots = 0;
        builder.options_mut().timeout = Duration::from_secs(2);
        builder.options_mut().attempts = 1;
        let resolver = builder.build().expect("resolver");
        resolver.lookup(name, record_type).await
    }

    /// The sorted answers to `name`/`record_type` over UDP, as text; empty on
    /// any error.
    async fn answers(&self, name: &str, record_type: RecordType) -> Vec<String> {
        answer_texts(self.query(name, record_type, false).await)
    }

    /// Waits up to `timeout` for the answers to `name` to be `expected`.
    async fn wait_for_answers(
        &self,
        timeout: Duration,
        name: &str,
        record_type: RecordType,
        expected: &[&str],
    ) {
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if self.answers(name, record_type).await == expected {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if waited.is_err() {
            panic!(
                "{name} {record_type}: expected {expected:?} within {timeout:?}, still {:?}",
                self.answers(name, record_type).await
            );
        }
    }

    async fn create_service(&self, namespace: &str, service: serde_json::Value) {
        let service: Service = serde_json::from_value(service).expect("valid service");
        Api::<Service>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &service)
            .await
            .expect("create service");
    }

    async fn create_slice(&self, namespace: &str, slice: serde_json::Value) {
        let slice: EndpointSlice = serde_json::from_value(slice).expect("valid slice");
        Api::<EndpointSlice>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &slice)
            .await
            .expect("create endpoint slice");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(served) = self.served.take() {
            served.abort();
        }
    }
}

fn answer_texts(lookup: Result<Lookup, NetError>) -> Vec<String> {
    let mut texts: Vec<String> = lookup
        .map(|lookup| {
            lookup
                .answers()
                .iter()
                .map(|record| record.data.to_string())
                .collect()
        })
        .unwrap_or_default();
    texts.sort();
    texts
}

fn web_service() -> serde_json::Value {
    json!({
        "metadata": {"name": "web"},
        "spec": {"clusterIP": "10.43.0.50", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    })
}

fn headless_service() -> serde_json::Value {
    json!({
        "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "ports": [{"name": "sql", "port": 5432}]},
    })
}

fn db_slice(addresses: &[&str]) -> serde_json::Value {
    let endpoints: Vec<_> = addresses
        .iter()
        .map(|address| json!({"addresses": [address], "conditions": {"ready": true}}))
        .collect();
    json!({
        "metadata": {"name": "db-x1", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_cluster_names_and_forwards_the_rest() {
    let fixture = Fixture::start().await;
    fixture.create_service("default", web_service()).await;
    fixture.create_service("default", headless_service()).await;
    fixture
        .create_slice("default", db_slice(&["10.42.0.11", "10.42.0.12"]))
        .await;
    fixture
        .create_service(
            "default",
            json!({"metadata": {"name": "search"},
                   "spec": {"type": "ExternalName", "externalName": "www.upstream.test"}}),
        )
        .await;

    // ClusterIP A, over UDP and TCP.
    fixture
        .wait_for_answers(
            STARTUP,
            "web.default.svc.cluster.local.",
            RecordType::A,
            &["10.43.0.50"],
        )
        .await;
    let over_tcp = fixture
        .query("web.default.svc.cluster.local.", RecordType::A, true)
        .await;
    assert_eq!(answer_texts(over_tcp), ["10.43.0.50"]);

    // Headless: one A per ready endpoint.
    fixture
        .wait_for_answers(
            PROPAGATION,
            "db.default.svc.cluster.local.",
            RecordType::A,
            &["10.42.0.11", "10.42.0.12"],
        )
        .await;

    // SRV of a named port.
    assert_eq!(
        fixture
            .answers("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV)
            .await,
        ["0 100 80 web.default.svc.cluster.local."]
    );
    assert_eq!(
        fixture
            .answers("_sql._tcp.db.default.svc.cluster.local.", RecordType::SRV)
            .await,
        [
            "0 50 5432 10-42-0-11.db.default.svc.cluster.local.",
            "0 50 5432 10-42-0-12.db.default.svc.cluster.local.",
        ]
    );

    // ExternalName: the CNAME, which the resolver follows through the upstream.
    let external = fixture
        .query("search.default.svc.cluster.local.", RecordType::A, false)
        .await;
    assert_eq!(
        answer_texts(external),
        [UPSTREAM_ADDRESS.to_string(), UPSTREAM_NAME.to_string()]
    );

    // NXDOMAIN in the zone.
    let missing = fixture
        .query("nope.default.svc.cluster.local.", RecordType::A, false)
        .await
        .expect_err("no such service");
    assert!(missing.is_nx_domain(), "expected NXDOMAIN, got {missing}");

    // AAAA of an IPv4 service: NODATA, not NXDOMAIN.
    let nodata = fixture
        .query("web.default.svc.cluster.local.", RecordType::AAAA, false)
        .await
        .expect_err("no IPv6 address");
    assert!(
        nodata.is_no_records_found() && !nodata.is_nx_domain(),
        "expected NODATA, got {nodata}"
    );

    // Forwarding: a name of the upstream, and its NXDOMAIN.
    assert_eq!(
        fixture.answers(UPSTREAM_NAME, RecordType::A).await,
        [UPSTREAM_ADDRESS.to_string()]
    );
    let unknown = fixture
        .query("unknown.upstream.test.", RecordType::A, false)
        .await
        .expect_err("upstream has no such name");
    assert!(unknown.is_nx_domain(), "expected NXDOMAIN, got {unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_show_within_a_second() {
    let fixture = Fixture::start().await;
    fixture.create_service("default", headless_service()).await;
    fixture
        .create_slice("default", db_slice(&["10.42.0.11"]))
        .await;
    fixture
        .wait_for_answers(
            STARTUP,
            "db.default.svc.cluster.local.",
            RecordType::A,
            &["10.42.0.11"],
        )
        .await;

    // A new Service.
    fixture.create_service("default", web_service()).await;
    fixture
        .wait_for_answers(
            PROPAGATION,
            "web.default.svc.cluster.local.",
            RecordType::A,
            &["10.43.0.50"],
        )
        .await;

    // An endpoint added to, then the first removed from, the headless service.
    let slices = Api::<EndpointSlice>::namespaced(fixture.client.clone(), "default");
    let patch = |addresses: &[&str]| {
        let slice = db_slice(addresses);
        Patch::Merge(json!({"endpoints": slice["endpoints"]}))
    };
    slices
        .patch(
            "db-x1",
            &PatchParams::default(),
            &patch(&["10.42.0.11", "10.42.0.13"]),
        )
        .await
        .expect("patch slice");
    fixture
        .wait_for_answers(
            PROPAGATION,
            "db.default.svc.cluster.local.",
            RecordType::A,
            &["10.42.0.11", "10.42.0.13"],
        )
        .await;
    slices
        .patch("db-x1", &PatchParams::default(), &patch(&["10.42.0.13"]))
        .await
        .expect("patch slice");
    fixture
        .wait_for_answers(
            PROPAGATION,
            "db.default.svc.cluster.local.",
            RecordType::A,
            &["10.42.0.13"],
        )
        .await;

    // A deleted Service is gone.
    Api::<Service>::namespaced(fixture.client.clone(), "default")
        .delete("web", &Default::default())
        .await
        .expect("delete service");
    fixture
        .wait_for_answers(
            PROPAGATION,
            "web.default.svc.cluster.local.",
            RecordType::A,
            &[],
        )
        .await;
    let gone = fixture
        .query("web.default.svc.cluster.local.", RecordType::A, false)
        .await
        .expect_err("deleted service");
    assert!(gone.is_nx_domain(), "expected NXDOMAIN, got {gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_upstreams_outside_names_fail_with_servfail() {
    let api = TestServer::start();
    let client = api.client().await;
    let dns = ClusterDns::bind(DnsConfig {
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        cluster_domain: "cluster.local".into(),
        upstreams: Vec::new(),
        interface: None,
    })
    .await
    .expect("bind the DNS server");
    let fixture_address = dns.local_addr();
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(dns.serve(client, shutdown.clone()));

    let mut server = NameServerConfig::udp(fixture_address.ip());
    server.connections[0].port = fixture_address.port();
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![server]),
        TokioRuntimeProvider::default(),
    );
    builder.options_mut().attempts = 1;
    let resolver = builder.build().expect("resolver");
    let failed = tokio::time::timeout(STARTUP, resolver.lookup("example.org.", RecordType::A))
        .await
        .expect("an answer")
        .expect_err("no upstream");
    assert!(
        matches!(
            failed,
            NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail))
        ),
        "expected SERVFAIL, got {failed:?}"
    );

    shutdown.cancel();
    tokio::time::timeout(STARTUP, served)
        .await
        .expect("the server stops when cancelled")
        .expect("server task")
        .expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_bootstraps_the_kube_dns_service() {
    let api = TestServer::start();
    let services = Api::<Service>::namespaced(api.client().await, "kube-system");
    let service = services.get("kube-dns").await.expect("kube-dns exists");
    let spec = service.spec.expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.43.0.10"));
    assert_eq!(
        spec.cluster_ip.as_deref(),
        Some(gantry_agent::dns::CLUSTER_DNS_IP.to_string().as_str())
    );
    assert_eq!(spec.selector, None);
    let ports: Vec<(Option<String>, i32, Option<String>)> = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|port| (port.name, port.port, port.protocol))
        .collect();
    assert_eq!(
        ports,
        [
            (Some("dns".into()), 53, Some("UDP".into())),
            (Some("dns-tcp".into()), 53, Some("TCP".into())),
        ]
    );
    let metadata = service.metadata;
    assert_eq!(
        metadata
            .labels
            .unwrap_or_default()
            .get("k8s-app")
            .map(String::as_str),
        Some("kube-dns")
    );
    assert_eq!(
        metadata
            .annotations
            .unwrap_or_default()
            .get("gantry.dev/node-local-dns")
            .map(String::as_str),
        Some("true")
    );
}

/// A throwaway network namespace (`ip netns add`), deleted with everything in
/// it when dropped, even after a failed assertion.
struct Netns {
    name: String,
}

impl Netns {
    fn create(name: String) -> Netns {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .output();
        let status = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip");
        assert!(status.success(), "ip netns add {name}");
        Netns { name }
    }

    fn ip(&self, args: &[&str]) -> String {
        let output = std::process::Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            output.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[test]
fn the_dns_address_goes_on_a_dummy_interface_idempotently() {
    use std::os::fd::AsFd;

    let netns = Netns::create(format!("gantry-dns-test-{}", std::process::id()));
    let path = format!("/run/netns/{}", netns.name);
    let link = std::thread::spawn(move || {
        let namespace = std::fs::File::open(&path).expect("open the namespace");
        nix::sched::setns(namespace.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("enter the namespace");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut links = Vec::new();
            for _ in 0..2 {
                let link = gantry_agent::dns::interface::ensure_dns_address(
                    gantry_agent::dns::DNS_INTERFACE,
                    gantry_agent::dns::CLUSTER_DNS_IP,
                )
                .await
                .expect("the DNS address is set up");
                links.push(link);
            }
            assert_eq!(links[0], links[1]);
            // The address is local now: the server can bind it.
            UdpSocket::bind("10.43.0.10:53")
                .await
                .expect("bind the DNS address");
            links.remove(0)
        })
    })
    .join()
    .expect("the namespace thread");

    let addresses = netns.ip(&["-4", "-o", "addr", "show"]);
    let holders: Vec<&str> = addresses
        .lines()
        .filter(|line| line.contains(" 10.43.0.10/32 "))
        .collect();
    assert_eq!(holders.len(), 1, "{addresses}");
    // The dummy link where the kernel has them, loopback otherwise.
    assert!(
        holders[0].contains(&format!(" {link} ")),
        "{link}: {addresses}"
    );
    if link == gantry_agent::dns::DNS_INTERFACE {
        let details = netns.ip(&["-d", "link", "show", &link]);
        assert!(details.contains("dummy"), "{details}");
    }
}
