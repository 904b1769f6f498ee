//! Gantry's controller manager: each controller lists and watches through the API
//! and writes back through it, never touching the store, so it could run elsewhere.
//!
//! Every controller module exposes `pub async fn run(client: kube::Client, shutdown:
//! CancellationToken)`; [`run_all`] starts them together under one leader election.
pub mod node_ipam;
pub mod endpoint_slices;
pub mod endpoints;
pub mod garbage_collector;
mod informer;
pub mod node_lifecycle;
pub mod deployment;
pub mod replicaset;
mod workload;
