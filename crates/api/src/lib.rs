//! Gantry's model of the Kubernetes API, shared by every component that
//! speaks it. Object schemas come from `k8s-openapi`; this crate adds what a
//! server needs on top of them: which resources exist and how they are
//! addressed ([`registry`]), errors as `Status` objects ([`status`]),
//! defaulting and validation, the three patch formats, server-side tables,
//! and the discovery and OpenAPI documents clients download.

pub mod cron;
pub mod defaulting;
pub mod discovery;
pub mod join_token;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod quantity;
pub mod registry;
pub mod status;
pub mod table;
pub mod validation;

pub use registry::{GroupVersion, ResourceInfo, Subresource};
pub use status::{ApiError, Cause, Reason};
