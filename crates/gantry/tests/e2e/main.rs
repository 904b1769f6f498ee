//! Gantry's end-to-end tests, one binary: each module starts real `gantry`
//! processes (server, agents, containers) and drives them with the real kubectl.
//! One binary instead of one per file keeps link time and disk use down.

mod common;

mod attach;
mod containers;
mod control_plane;
mod dynamic_volumes;
mod exec;
mod image_cli;
mod image_registry;
mod kubectl;
mod kubectl_create;
mod logs;
mod multi_node;
mod pod_network;
mod pod_volumes;
mod pods;
mod port_forward;
mod rbac;
mod services;
mod services_multi_node;
mod workloads;
