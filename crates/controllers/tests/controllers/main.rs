//! The controllers against a real in-process API server, one binary: each module
//! covers one controller; `common` holds the stand-in kubelet and workload helpers.

mod common;

mod cron_jobs;
mod daemon_sets;
mod deployments;
mod jobs;
mod lifecycle;
mod local_path;
mod node_ipam;
mod stateful_sets;
mod volume_binder;
