//! What every Gantry control-plane component needs to be a well-behaved API client.
//!
//! The scheduler, the controllers and the node agent talk to the API server only
//! through the Kubernetes API, like their upstream counterparts; this crate holds the
//! two things they share: building a client from a kubeconfig, and leader election
//! through a `coordination.k8s.io` Lease so that several servers can run without two
//! copies of a component acting at once.

pub mod events;
pub mod join;
pub mod leader;

use std::path::Path;

pub use join::{JoinError, request_node_kubeconfig};
pub use events::{EventRecorder, EventType, object_reference};
pub use leader::{LeaderElection, LeaseTiming};

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig could not be read or parsed.
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What went wrong.
        source: kube::config::KubeconfigError,
    },
    /// The client could not be set up (TLS, URL).
    #[error("building the API client: {0}")]
    Client(#[from] kube::Error),
}

/// Builds a client from a kubeconfig file, as `kubectl --kubeconfig` would.
pub async fn connect(kubeconfig: &Path) -> Result<kube::Client, ClientError> {
    install_crypto_provider();
    let read_error = |source| ClientError::Kubeconfig {
        path: kubeconfig.display().to_string(),
        source,
    };
    let parsed = kube::config::Kubeconfig::read_from(kubeconfig).map_err(read_error)?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .map_err(read_error)?;
    Ok(kube::Client::try_from(config)?)
}

/// Makes ring the process's rustls provider. The binary links two (the registry client
/// brings aws-lc-rs), and kube asks rustls for the process default, which is ambiguous
/// until one is installed. Installing twice is harmless: the first one stays.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
