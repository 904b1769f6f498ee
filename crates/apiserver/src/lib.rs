//! Gantry's Kubernetes-compatible API server: HTTPS, authentication, admission and the REST verbs over the store.
