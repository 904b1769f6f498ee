//! Gantry's controller manager: each controller lists and watches through the API
//! and writes back through it, never touching the store, so it could run elsewhere.
//!
//! Every controller module exposes `pub async fn run(client: kube::Client, shutdown:
//! CancellationToken)`; [`run_all`] starts them together under one leader election.
pub mod cron_job;
pub mod daemon_set;
pub mod deployment;
pub mod endpoint_slices;
pub mod endpoints;
pub mod garbage_collector;
pub mod job;
mod informer;
pub mod local_path;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod replicaset;
mod revisions;
pub mod stateful_set;
pub mod volume_binder;
mod workload;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What `gantry server` chooses about the controllers; defaults are k3s's and upstream's.
#[derive(Debug, Clone, Default)]
pub struct ControllerManagerConfig {
    /// Per-node pod CIDRs (`--cluster-cidr`).
    pub node_ipam: node_ipam::NodeIpamConfig,
    /// When unreachable nodes are tainted and their pods evicted.
    pub node_lifecycle: node_lifecycle::NodeLifecycleConfig,
    /// Where the local-path provisioner puts volumes on the nodes.
    pub local_path: local_path::LocalPathConfig,
}

/// Runs every controller with the default configuration until `shutdown` is cancelled.
pub async fn run_all(client: kube::Client, shutdown: CancellationToken) {
    run_all_with(client, ControllerManagerConfig::default(), shutdown).await;
}

/// Runs every controller until `shutdown` is cancelled, then waits for all of them to stop.
pub async fn run_all_with(
    client: kube::Client,
    config: ControllerManagerConfig,
    shutdown: CancellationToken,
) {
    let mut controllers = JoinSet::new();
    controllers.spawn(replicaset::run(client.clone(), shutdown.clone()));
    controllers.spawn(deployment::run(client.clone(), shutdown.clone()));
    controllers.spawn(stateful_set::run(client.clone(), shutdown.clone()));
    controllers.spawn(daemon_set::run(client.clone(), shutdown.clone()));
    controllers.spawn(garbage_collector::run(client.clone(), shutdown.clone()));
    controllers.spawn(job::run(client.clone(), shutdown.clone()));
    controllers.spawn(cron_job::run(client.clone(), shutdown.clone()));
    controllers.spawn(endpoints::run(client.clone(), shutdown.clone()));
    controllers.spawn(endpoint_slices::run(client.clone(), shutdown.clone()));
    controllers.spawn(volume_binder::run(client.clone(), shutdown.clone()));
    controllers.spawn(local_path::run_with(
        client.clone(),
        config.local_path,
        shutdown.clone(),
    ));
    controllers.spawn(node_ipam::run_with(
        client.clone(),
        config.node_ipam,
        shutdown.clone(),
    ));
    controllers.spawn(node_lifecycle::run_with(
        client,
        config.node_lifecycle,
        shutdown.clone(),
    ));
    while let Some(finished) = controllers.join_next().await {
        if let Err(err) = finished {
            tracing::error!(%err, "a controller panicked");
        }
    }
}
