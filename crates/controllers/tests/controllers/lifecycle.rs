//! The garbage collector, node lifecycle, Endpoints and EndpointSlice
//! controllers against a real API server. There is no node agent: the tests
//! write Nodes, Leases and pod statuses themselves, as an agent would.

use std::future::Future;
use std::time::Duration;

use gantry_apiserver::testing::TestServer;
use gantry_controllers::node_lifecycle::{self, NodeLifecycleConfig, UNREACHABLE_TAINT};
use gantry_controllers::{endpoint_slices, endpoints, garbage_collector};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Event, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(20);

/// A server plus controllers, all stopped when dropped.
struct Cluster {
    client: Client,
    shutdown: CancellationToken,
    controllers: JoinSet<()>,
    // Dropped last: the controllers stop before their server does.
    _server: TestServer,
}

impl Cluster {
    async fn start() -> Cluster {
        // `RUST_LOG=gantry_controllers=debug` shows what the controllers do.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let server = TestServer::start();
        let client = server.client().await;
        Cluster {
            client,
            shutdown: CancellationToken::new(),
            controllers: JoinSet::new(),
            _server: server,
        }
    }

    /// Runs a controller (`run(client, shutdown)`) for the life of the cluster.
    fn run<F, Fut>(&mut self, controller: F)
    where
        F: FnOnce(Client, CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.controllers
            .spawn(controller(self.client.clone(), self.shutdown.clone()));
    }

    /// Stops the controllers and checks they all return once told to.
    async fn stop(mut self) {
        self.shutdown.cancel();
        let all_stopped = async {
            while let Some(result) = self.controllers.join_next().await {
                result.expect("controller task");
            }
        };
        tokio::time::timeout(Duration::from_secs(10), all_stopped)
            .await
            .expect("controllers stop after shutdown");
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), "default")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `check` until it holds, or fails the test naming `what`.
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create<K>(api: &Api<K>, object: Value) -> K
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).expect("valid object");
    api.create(&PostParams::default(), &object)
        .await
        .expect("created")
}

async fn exists<K>(api: &Api<K>, name: &str) -> bool
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.expect("get").is_some()
}

fn owned_by<K: Resource<DynamicType = ()>>(owner: &K, block: bool) -> Value {
    json!([{
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "name": owner.meta().name,
        "uid": owner.meta().uid,
        "blockOwnerDeletion": block,
    }])
}

fn configmap(name: &str, owners: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "ownerReferences": owners}})
}

fn pod(name: &str, labels: Value, spec: Value) -> Value {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "app", "image": "busybox:test",
        "ports": [{"name": "http", "containerPort": 8080}]}]);
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels}, "spec": spec})
}

// ---- garbage collector ----

#[tokio::test]
async fn background_deletion_of_an_owner_removes_its_dependents() {
    let mut cluster = Cluster::start().await;
    cluster.run(garbage_collector::run);
    let maps: Api<ConfigMap> = cluster.api();
    let owner: ConfigMap = create(&maps, configmap("owner", json!([]))).await;
    create::<ConfigMap>(&maps, configmap("dependent", owned_by(&owner, false))).await;

    let deployments: Api<Deployment> = cluster.api();
    let replicasets: Api<ReplicaSet> = cluster.api();
    let pods: Api<Pod> = cluster.api();
    let selector = json!({"matchLabels": {"app": "chain"}});
    let template = json!({"metadata": {"labels": {"app": "chain"}},
        "spec": {"containers": [{"name": "app", "image": "busybox:test"}]}});
    let deployment: Deployment = create(
        &deployments,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "chain"},
        "spec": {"replicas": 0, "selector": selector, "template": template}}),
    )
    .await;
    let replicaset: ReplicaSet = create(
        &replicasets,
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "chain-1", "ownerReferences": owned_by(&deployment, true)},
        "spec": {"replicas": 0, "selector": selector, "template": template}}),
    )
    .await;
    for name in ["chain-1-a", "chain-1-b"] {
        let mut pod = pod(name, json!({"app": "chain"}), json!({}));
        pod["metadata"]["ownerReferences"] = owned_by(&replicaset, true);
        create::<Pod>(&pods, pod).await;
    }
    // The collector must not touch dependents whose owners are alive.
    wait_for("the collector to sync", || async {
        exists(&maps, "dependent").await && exists(&pods, "chain-1-a").await
    })
    .await;

    maps.delete("owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    deployments
        .delete("chain", &DeleteParams::background())
        .await
        .expect("delete deployment");

    wait_for("the dependent ConfigMap to go", || async {
        !exists(&maps, "dependent").await
    })
    .await;
    wait_for("the ReplicaSet and its pods to go", || async {
        !exists(&replicasets, "chain-1").await
            && pods
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
                .is_empty()
    })
    .await;
    cluster.stop().await;
}

#[tokio::test]
async fn foreground_deletion_keeps_the_owner_until_its_dependents_are_gone() {
    let mut cluster = Cluster::start().await;
    cluster.run(garbage_collector::run);
    let maps: Api<ConfigMap> = cluster.api();
    let owner: ConfigMap = create(&maps, configmap("owner", json!([]))).await;
    let mut held = configmap("held", owned_by(&owner, true));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    create::<ConfigMap>(&maps, held).await;

    maps.delete("owner", &DeleteParams::foreground())
        .await
        .expect("delete owner");

    wait_for("the dependent to be deleted", || async {
        maps.get("held")
            .await
            .expect("get")
            .meta()
            .deletion_timestamp
            .is_some()
    })
    .await;
    let waiting = maps
        .get("owner")
        .await
        .expect("owner is kept while its dependent exists");
    assert!(waiting.meta().deletion_timestamp.is_some());
    assert!(
        waiting
            .finalizers()
            .iter()
            .any(|f| f == "foregroundDeletion")
    );

    // Foreground deletion cascades down a ReplicaSet-like chain too.
    let replicasets: Api<ReplicaSet> = cluster.api();
    let pods: Api<Pod> = cluster.api();
    let replicaset: ReplicaSet = create(
        &replicasets,
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "front"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "front"}},
                "template": {"metadata": {"labels": {"app": "front"}},
                    "spec": {"containers": [{"name": "app", "image": "busybox:test"}]}}}}),
    )
    .await;
    let mut dependent = pod("front-a", json!({"app": "front"}), json!({}));
    dependent["metadata"]["ownerReferences"] = owned_by(&replicaset, true);
    create::<Pod>(&pods, dependent).await;
    replicasets
        .delete("front", &DeleteParams::foreground())
        .await
        .expect("delete replicaset");
    wait_for("the ReplicaSet and its pod to go", || async {
        !exists(&replicasets, "front").await && !exists(&pods, "front-a").await
    })
    .await;

    let release = json!({"metadata": {"finalizers": null}});
    maps.patch("held", &PatchParams::default(), &Patch::Merge(release))
        .await
        .expect("release the dependent");
    wait_for("the owner to go once the dependent has", || async {
        !exists(&maps, "held").await && !exists(&maps, "owner").await
    })
    .await;
    cluster.stop().await;
}

#[tokio::test]
async fn orphan_deletion_leaves_dependents_without_the_owner_reference() {
    let mut cluster = Cluster::start().await;
    cluster.run(garbage_collector::run);
    let maps: Api<ConfigMap> = cluster.api();
    let owner: ConfigMap = create(&maps, configmap("owner", json!([]))).await;
    let other: ConfigMap = create(&maps, configmap("other-owner", json!([]))).await;
    let mut owners = owned_by(&owner, true);
    owners
        .as_array_mut()
        .expect("list")
        .extend(owned_by(&other, false).as_array().expect("list").clone());
    create::<ConfigMap>(&maps, configmap("dependent", owners)).await;

    maps.delete("owner", &DeleteParams::orphan())
        .await
        .expect("delete owner");

    wait_for("the owner to go", || async {
        !exists(&maps, "owner").await
    })
    .await;
    let dependent = maps.get("dependent").await.expect("the dependent survives");
    let remaining: Vec<&str> = dependent
        .owner_references()
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(remaining, vec!["other-owner"]);
    cluster.stop().await;
}

// ---- node lifecycle ----

/// Renews a node's Lease every 300 ms until `stop`, as an agent would.
fn keep_renewing(
    client: Client,
    node: &str,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let leases: Api<Lease> = Api::namespaced(client, node_lifecycle::NODE_LEASE_NAMESPACE);
    let node = node.to_string();
    tokio::spawn(async move {
        loop {
            let renew = json!({"spec": {"renewTime": MicroTime(Timestamp::now())}});
            if let Err(err) = leases
                .patch(&node, &PatchParams::default(), &Patch::Merge(renew))
                .await
            {
                panic!("renewing the lease: {err}");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        }
    })
}

async fn ready_node(cluster: &Cluster, name: &str) {
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    create::<Node>(
        &nodes,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}),
    )
    .await;
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
        "reason": "KubeletReady", "message": "ready",
        "lastHeartbeatTime": Timestamp::now(), "lastTransitionTime": Timestamp::now()}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("node status");
    let leases: Api<Lease> =
        Api::namespaced(cluster.client.clone(), node_lifecycle::NODE_LEASE_NAMESPACE);
    create::<Lease>(
        &leases,
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                 "renewTime": MicroTime(Timestamp::now())}}),
    )
    .await;
}

fn tolerating_unreachable_for(seconds: i64) -> Value {
    json!([
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds},
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds},
    ])
}

fn fast_node_lifecycle() -> NodeLifecycleConfig {
    NodeLifecycleConfig {
        grace_period: Duration::from_secs(3),
        monitor_period: Duration::from_millis(300),
    }
}

fn condition<'a>(node: &'a Node, kind: &str) -> Option<&'a str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.as_str())
}

fn has_unreachable_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| {
            t.iter()
                .any(|t| t.key == UNREACHABLE_TAINT && t.effect == "NoExecute")
        })
}

#[tokio::test]
async fn a_node_that_stops_renewing_its_lease_is_tainted_and_its_pods_evicted() {
    let mut cluster = Cluster::start().await;
    cluster
        .run(|client, shutdown| node_lifecycle::run_with(client, fast_node_lifecycle(), shutdown));
    ready_node(&cluster, "node-a").await;
    let agent = CancellationToken::new();
    let renewing = keep_renewing(cluster.client.clone(), "node-a", agent.clone());
    let pods: Api<Pod> = cluster.api();
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    create::<Pod>(
        &pods,
        pod(
            "short",
            json!({}),
            json!({"nodeName": "node-a", "tolerations": tolerating_unreachable_for(1)}),
        ),
    )
    .await;
    create::<Pod>(
        &pods,
        pod(
            "patient",
            json!({}),
            json!({"nodeName": "node-a", "tolerations": tolerating_unreachable_for(3600)}),
        ),
    )
    .await;

    // An observation window, not synchronisation: a node renewing its lease
    // for longer than the grace period must stay untouched.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let healthy = nodes.get("node-a").await.expect("node");
    assert_eq!(condition(&healthy, "Ready"), Some("True"));
    assert!(!has_unreachable_taint(&healthy));

    agent.cancel();
    renewing.await.expect("renewal task");
    wait_for("Ready=Unknown and the unreachable taint", || async {
        let node = nodes.get("node-a").await.expect("node");
        condition(&node, "Ready") == Some("Unknown") && has_unreachable_taint(&node)
    })
    .await;
    let node = nodes.get("node-a").await.expect("node");
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        ready.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );

    wait_for("the pod tolerating 1 s to be evicted", || async {
        !exists(&pods, "short").await
    })
    .await;
    assert!(
        exists(&pods, "patient").await,
        "a pod tolerating an hour stays"
    );
    let events: Api<Event> = cluster.api();
    wait_for("a TaintManagerEviction event", || async {
        events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("TaintManagerEviction")
                    && e.involved_object.name.as_deref() == Some("short")
            })
    })
    .await;

    let agent = CancellationToken::new();
    let renewing = keep_renewing(cluster.client.clone(), "node-a", agent.clone());
    wait_for(
        "the taint to be removed once the lease is renewed",
        || async { !has_unreachable_taint(&nodes.get("node-a").await.expect("node")) },
    )
    .await;
    agent.cancel();
    renewing.await.expect("renewal task");
    cluster.stop().await;
}

#[tokio::test]
async fn a_pod_bound_to_a_missing_node_is_deleted() {
    let mut cluster = Cluster::start().await;
    cluster
        .run(|client, shutdown| node_lifecycle::run_with(client, fast_node_lifecycle(), shutdown));
    let pods: Api<Pod> = cluster.api();
    create::<Pod>(&pods, pod("lost", json!({}), json!({"nodeName": "ghost"}))).await;
    wait_for("the pod on a missing node to go", || async {
        !exists(&pods, "lost").await
    })
    .await;
    cluster.stop().await;
}

// ---- Endpoints and EndpointSlices ----

async fn set_pod_status(pods: &Api<Pod>, name: &str, ip: Option<&str>, ready: bool) {
    let ready = if ready { "True" } else { "False" };
    let status = json!({"status": {"phase": "Running", "podIP": ip,
        "podIPs": ip.map(|ip| vec![json!({"ip": ip})]),
        "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": Timestamp::now()}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("pod status");
}

fn addresses(endpoints: &Endpoints) -> (Vec<String>, Vec<String>) {
    let subsets = endpoints.subsets.clone().unwrap_or_default();
    let ips = |list: Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| {
        list.into_iter().flatten().map(|a| a.ip).collect::<Vec<_>>()
    };
    let ready = subsets
        .iter()
        .flat_map(|s| ips(s.addresses.clone()))
        .collect();
    let not_ready = subsets
        .iter()
        .flat_map(|s| ips(s.not_ready_addresses.clone()))
        .collect();
    (ready, not_ready)
}

/// `(ip, ready, serving, terminating)` of every endpoint of the Service's slices.
async fn slice_endpoints(
    slices: &Api<EndpointSlice>,
    service: &str,
) -> Vec<(String, bool, bool, bool)> {
    let selector = format!("{}={service}", endpoint_slices::SERVICE_NAME_LABEL);
    let list = slices
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("slices");
    let mut found: Vec<_> = list
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            (
                e.addresses[0].clone(),
                c.ready == Some(true),
                c.serving == Some(true),
                c.terminating == Some(true),
            )
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn endpoints_and_slices_follow_the_selected_pods() {
    let mut cluster = Cluster::start().await;
    cluster.run(endpoints::run);
    cluster.run(endpoint_slices::run);
    cluster.run(garbage_collector::run);
    let pods: Api<Pod> = cluster.api();
    let services: Api<Service> = cluster.api();
    let all_endpoints: Api<Endpoints> = cluster.api();
    let slices: Api<EndpointSlice> = cluster.api();

    for name in ["web-1", "web-2", "web-3", "web-no-ip"] {
        create::<Pod>(
            &pods,
            pod(name, json!({"app": "web"}), json!({"nodeName": "node-a"})),
        )
        .await;
    }
    create::<Pod>(
        &pods,
        pod(
            "other",
            json!({"app": "other"}),
            json!({"nodeName": "node-a"}),
        ),
    )
    .await;
    set_pod_status(&pods, "web-1", Some("10.42.0.11"), true).await;
    set_pod_status(&pods, "web-2", Some("10.42.0.12"), true).await;
    set_pod_status(&pods, "web-3", Some("10.42.0.13"), false).await;
    set_pod_status(&pods, "web-no-ip", None, true).await;
    set_pod_status(&pods, "other", Some("10.42.0.99"), true).await;
    create::<Service>(&services, json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}))
    .await;
    create::<Service>(
        &services,
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "manual"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .await;
    create::<Endpoints>(
        &all_endpoints,
        json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "manual"},
        "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "ports": [{"port": 80}]}]}),
    )
    .await;

    wait_for("Endpoints with 2 ready and 1 not-ready address", || async {
        all_endpoints
            .get_opt("web")
            .await
            .expect("get")
            .is_some_and(|e| {
                addresses(&e)
                    == (
                        vec!["10.42.0.11".into(), "10.42.0.12".into()],
                        vec!["10.42.0.13".into()],
                    )
            })
    })
    .await;
    let web = all_endpoints.get("web").await.expect("endpoints");
    let subset = &web.subsets.as_ref().expect("subsets")[0];
    let port = &subset.ports.as_ref().expect("ports")[0];
    assert_eq!(
        (port.name.as_deref(), port.port),
        (Some("http"), 8080),
        "named target port resolved"
    );
    let first = &subset.addresses.as_ref().expect("addresses")[0];
    assert_eq!(first.node_name.as_deref(), Some("node-a"));
    assert_eq!(
        first.target_ref.as_ref().and_then(|r| r.name.as_deref()),
        Some("web-1")
    );

    let expected = vec![
        ("10.42.0.11".to_string(), true, true, false),
        ("10.42.0.12".to_string(), true, true, false),
        ("10.42.0.13".to_string(), false, false, false),
    ];
    wait_for("a slice with 3 endpoints", || async {
        slice_endpoints(&slices, "web").await == expected
    })
    .await;
    let slice = &slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .expect("slices")
        .items[0];
    assert!(slice.name_any().starts_with("web-"));
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(slice.ports.as_ref().expect("ports")[0].port, Some(8080));
    assert_eq!(slice.owner_references()[0].kind, "Service");

    set_pod_status(&pods, "web-1", Some("10.42.0.11"), false).await;
    wait_for("web-1 to move to notReadyAddresses", || async {
        addresses(&all_endpoints.get("web").await.expect("endpoints"))
            == (
                vec!["10.42.0.12".into()],
                vec!["10.42.0.11".into(), "10.42.0.13".into()],
            )
    })
    .await;
    wait_for("web-1's slice endpoint to turn unready", || async {
        slice_endpoints(&slices, "web").await[0] == ("10.42.0.11".to_string(), false, false, false)
    })
    .await;

    let manual = all_endpoints
        .get("manual")
        .await
        .expect("selectorless Service's Endpoints are kept");
    assert_eq!(addresses(&manual).0, vec!["192.0.2.1".to_string()]);

    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete service");
    wait_for(
        "the Endpoints and slices to go with the Service",
        || async {
            !exists(&all_endpoints, "web").await
                && slice_endpoints(&slices, "web").await.is_empty()
                && slices
                    .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
                    .await
                    .expect("slices")
                    .items
                    .is_empty()
        },
    )
    .await;
    cluster.stop().await;
}
