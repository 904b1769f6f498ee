//! Scheduling throughput: the production filters and scores over simulated
//! clusters, and (optionally) end to end through a real API server.
//!
//! Run with `cargo bench -p gantry-scheduler --bench throughput`; pass `--quick`
//! to skip the 10,000-pod case and `--no-e2e` to skip the API server run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_scheduler::framework;
use gantry_scheduler::snapshot::{PodInfo, Snapshot};
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;

/// kube-scheduler's published scheduler_perf figure for SchedulingBasic at
/// 5000 nodes / 10000 pods (upstream perf dashboards, roughly 300-400 pods/s).
const UPSTREAM_PODS_PER_SECOND: &str =
    "~300-400 pods/s (kube-scheduler scheduler_perf SchedulingBasic 5000 nodes/10000 pods)";

/// A node like scheduler_perf's `node-default.yaml`: 4 CPUs, 32Gi, 110 pods.
fn node(index: usize) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": format!("node-{index:05}"), "labels": {
            "kubernetes.io/hostname": format!("node-{index:05}"),
            "topology.kubernetes.io/zone": format!("zone-{}", index % 3),
        }},
        "status": {
            "allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }))
    .expect("node")
}

/// A pod like scheduler_perf's `pod-default.yaml`: 100m CPU, 500Mi memory.
fn pod(index: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{index:05}"), "namespace": "default", "uid": format!("uid-{index}"),
                     "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "main", "image": "busybox:test",
                 "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]},
    }))
    .expect("pod")
}

/// Schedules `pods` pods one after another onto `nodes` simulated nodes, each
/// decision seeing the previous ones, and returns pods per second.
fn simulate(nodes: usize, pods: usize) -> f64 {
    let mut snapshot = Snapshot::new((0..nodes).map(|i| Arc::new(node(i))), [], HashMap::new());
    let pods: Vec<Arc<Pod>> = (0..pods).map(|i| Arc::new(pod(i))).collect();
    let started = Instant::now();
    for pod in &pods {
        let info = Arc::new(PodInfo::new(pod.clone()));
        let decision =
            framework::schedule(&info, &snapshot).expect("the simulated cluster has room");
        snapshot.add_pod(info, &decision.node);
    }
    pods.len() as f64 / started.elapsed().as_secs_f64()
}

/// 1,000 pods on 100 nodes through a real API server: pods are created first,
/// then the scheduler is started and timed until every pod is bound.
fn end_to_end(nodes: usize, pods: usize) -> f64 {
    use gantry_apiserver::testing::TestServer;
    use kube::Api;
    use kube::api::{ListParams, Patch, PatchParams, PostParams};

    let server = TestServer::start();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = server.client().await;
        let node_api: Api<Node> = Api::all(client.clone());
        for i in 0..nodes {
            let node = node(i);
            let name = node.metadata.name.clone().expect("name");
            node_api
                .create(&PostParams::default(), &node)
                .await
                .expect("create node");
            let status = json!({"status": node.status});
            node_api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await
                .expect("node status");
        }
        let pod_api: Api<Pod> = Api::namespaced(client.clone(), "default");
        for i in 0..pods {
            let mut pod = pod(i);
            pod.metadata.uid = None;
            pod_api
                .create(&PostParams::default(), &pod)
                .await
                .expect("create pod");
        }
        let stop = tokio_util::sync::CancellationToken::new();
        let started = Instant::now();
        let scheduler = tokio::spawn(gantry_scheduler::run(client.clone(), stop.clone()));
        let deadline = started + Duration::from_secs(600);
        loop {
            let list = pod_api
                .list(&ListParams::default())
                .await
                .expect("list pods");
            let bound = list
                .items
                .iter()
                .filter(|pod| {
                    pod.spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_ref())
                        .is_some()
                })
                .count();
            if bound == pods {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {bound}/{pods} pods bound in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rate = pods as f64 / started.elapsed().as_secs_f64();
        stop.cancel();
        scheduler.await.expect("no panic").expect("clean stop");
        rate
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|arg| arg == "--quick");
    let e2e = !args.iter().any(|arg| arg == "--no-e2e");
    println!(
        "Scheduling logic only (production filters and scores, every node evaluated, no API round-trips):"
    );
    let mut cases = vec![(500, 1_000)];
    if !quick {
        cases.push((5_000, 10_000));
    }
    for (nodes, pods) in cases {
        let rate = simulate(nodes, pods);
        println!(
            "  {pods:>6} pods on {nodes:>5} nodes: {rate:>9.0} pods/s   vs {UPSTREAM_PODS_PER_SECOND}"
        );
    }
    if e2e {
        let rate = end_to_end(100, 1_000);
        println!(
            "End to end through the API server (watch, pods/binding, events): 1000 pods on 100 nodes: {rate:.0} pods/s"
        );
    }
    println!(
        "Note: upstream's figure is end to end against a real kube-apiserver and etcd, and kube-scheduler \
         scores only a sample of nodes in large clusters (percentageOfNodesToScore); the logic-only figures \
         above evaluate every node but exclude all API round-trips, so they are not like for like."
    );
}
