//! Gantry's Kubernetes-compatible API server: HTTPS, authentication, admission and the REST verbs over the store.

pub mod auth;
pub mod pki;
pub mod tls;
