//! End-to-end API server throughput and latency over HTTPS with a kube
//! client, next to the published kube-apiserver SLOs they compare with.
//!
//! `cargo bench -p gantry-apiserver --bench http`. The server is the
//! in-process `TestServer` (embedded redb store, fsync per acknowledged
//! write), so the process RSS at the end is the server's plus the clients'.

use std::time::{Duration, Instant};

use futures::future::try_join_all;
use gantry_apiserver::testing::TestServer;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};

const NAMESPACE: &str = "bench";
const SEQUENTIAL_CREATES: usize = 500;
const CONCURRENT_CLIENTS: usize = 32;
const CREATES_PER_CLIENT: usize = 50;
const GETS_PER_CLIENT: usize = 200;
const PODS: usize = 10_000;
const LISTS: usize = 5;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let server = TestServer::start();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(&server))
}

async fn run(server: &TestServer) -> Result<(), Error> {
    let client = server.client().await;
    let namespace = Namespace {
        metadata: named(NAMESPACE),
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;

    let (elapsed, latencies) = create_configmaps(&client, "seq", 1, SEQUENTIAL_CREATES).await?;
    report_rate(
        "create ConfigMap, 1 client",
        SEQUENTIAL_CREATES,
        elapsed,
        latencies,
    );

    let (elapsed, latencies) =
        create_configmaps(&client, "par", CONCURRENT_CLIENTS, CREATES_PER_CLIENT).await?;
    report_rate(
        &format!("create ConfigMap, {CONCURRENT_CLIENTS} clients"),
        CONCURRENT_CLIENTS * CREATES_PER_CLIENT,
        elapsed,
        latencies,
    );

    let (elapsed, latencies) = get_configmaps(&client).await?;
    let gets = CONCURRENT_CLIENTS * GETS_PER_CLIENT;
    println!(
        "get ConfigMap, {CONCURRENT_CLIENTS} clients: {:.0}/s, p50 {:.1} ms, p99 {:.1} ms \
         (kube-apiserver SLO: p99 single-object read latency <= 1 s)",
        gets as f64 / elapsed.as_secs_f64(),
        millis(percentile(&latencies, 0.50)),
        millis(percentile(&latencies, 0.99)),
    );

    let started = Instant::now();
    create_pods(&client).await?;
    println!(
        "create {PODS} Pods, {CONCURRENT_CLIENTS} clients: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let mut latencies = Vec::new();
    for _ in 0..LISTS {
        let started = Instant::now();
        let listed = pods.list(&ListParams::default()).await?;
        latencies.push(started.elapsed());
        assert_eq!(listed.items.len(), PODS, "every pod is listed");
    }
    println!(
        "list {PODS} Pods: median {:.0} ms, max {:.0} ms \
         (kube-apiserver SLO: p99 LIST latency <= 5 s per namespace, <= 30 s cluster-wide, at 5000 nodes)",
        millis(percentile(&latencies, 0.50)),
        millis(percentile(&latencies, 1.0)),
    );

    println!(
        "process RSS (server and clients) after the runs above: {} \
         (kube-apiserver publishes no memory SLO to compare with)",
        resident_set_size().unwrap_or_else(|| "unknown".into())
    );
    Ok(())
}

fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..ObjectMeta::default()
    }
}

/// `clients` concurrent loops of `per_client` sequential creates; returns
/// the wall time and every call's latency.
async fn create_configmaps(
    client: &Client,
    prefix: &str,
    clients: usize,
    per_client: usize,
) -> Result<(Duration, Vec<Duration>), Error> {
    let started = Instant::now();
    let loops = (0..clients).map(|worker| {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
        async move {
            let mut latencies = Vec::with_capacity(per_client);
            for index in 0..per_client {
                let configmap = ConfigMap {
                    metadata: named(&format!("{prefix}-{worker}-{index}")),
                    data: Some([("key".to_string(), "value".to_string())].into()),
                    ..ConfigMap::default()
                };
                let call = Instant::now();
                api.create(&PostParams::default(), &configmap).await?;
                latencies.push(call.elapsed());
            }
            Ok::<_, Error>(latencies)
        }
    });
    let latencies = try_join_all(loops).await?.concat();
    Ok((started.elapsed(), latencies))
}

/// Concurrent gets of the ConfigMaps the parallel create run made.
async fn get_configmaps(client: &Client) -> Result<(Duration, Vec<Duration>), Error> {
    let started = Instant::now();
    let loops = (0..CONCURRENT_CLIENTS).map(|worker| {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
        async move {
            let mut latencies = Vec::with_capacity(GETS_PER_CLIENT);
            for index in 0..GETS_PER_CLIENT {
                let name = format!("par-{worker}-{}", index % CREATES_PER_CLIENT);
                let call = Instant::now();
                api.get(&name).await?;
                latencies.push(call.elapsed());
            }
            Ok::<_, Error>(latencies)
        }
    });
    let latencies = try_join_all(loops).await?.concat();
    Ok((started.elapsed(), latencies))
}

async fn create_pods(client: &Client) -> Result<(), Error> {
    let loops = (0..CONCURRENT_CLIENTS).map(|worker| {
        let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        async move {
            for index in (worker..PODS).step_by(CONCURRENT_CLIENTS) {
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("pod-{index}"), "labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "main", "image": "busybox:test"}]},
                }))?;
                api.create(&PostParams::default(), &pod).await?;
            }
            Ok::<_, Error>(())
        }
    });
    try_join_all(loops).await?;
    Ok(())
}

fn report_rate(what: &str, calls: usize, elapsed: Duration, latencies: Vec<Duration>) {
    println!(
        "{what}: {:.0}/s, p50 {:.1} ms, p99 {:.1} ms \
         (kube-apiserver SLO: p99 mutating API call latency <= 1 s)",
        calls as f64 / elapsed.as_secs_f64(),
        millis(percentile(&latencies, 0.50)),
        millis(percentile(&latencies, 0.99)),
    );
}

/// The `fraction` quantile (nearest rank) of `samples`.
fn percentile(samples: &[Duration], fraction: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// `VmRSS` of this process (the in-process server included).
fn resident_set_size() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .map(|value| value.trim().to_string())
}
