//! Gantry's Kubernetes-compatible API server: HTTPS, authentication, admission and the REST verbs over the store.

pub mod auth;
pub mod pki;
pub mod tls;
pub mod namespaces;
pub mod objects;
pub mod rest;
pub mod selectors;
pub mod server;

pub use server::{OnListening, ServerConfig, ServerError, run};
