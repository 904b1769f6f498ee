//! Gantry's Kubernetes-compatible API server: HTTPS, authentication, admission and the REST verbs over the store.

pub mod allocators;
pub mod auth;
pub mod authz;
pub mod bootstrap;
pub mod namespaces;
pub mod objects;
pub mod pki;
pub mod proxy;
pub mod rest;
pub mod selectors;
pub mod server;
pub mod storage_classes;
pub mod tls;
pub mod tokens;

pub use server::{Component, OnListening, ServerConfig, ServerError, run};

#[cfg(feature = "test-support")]
pub mod testing;
