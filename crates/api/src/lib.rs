//! Gantry's model of the Kubernetes API, shared by every component that
//! speaks it: which resources exist and how they are addressed
//! ([`registry`]). Types come from `k8s-openapi`; this crate adds the
//! knowledge the API server needs on top of them.

pub mod registry;

pub use registry::{GroupVersion, ResourceInfo, Subresource};
