//! The kubelet API (port 10250): what the API server calls for `kubectl logs`.
//!
//! It serves HTTPS with a self-signed certificate (the API server does not verify
//! kubelets by default) and requires a client certificate from the cluster CA whose
//! subject is the API server's kubelet client or a `system:masters` member, so only the
//! control plane reads containers' output.

pub mod logs;
pub mod tls;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::AgentConfig;

/// The kubelet's default port.
pub const DEFAULT_PORT: u16 = 10250;
/// A client that connects but never finishes the handshake must not hold a task.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after an accept error such as EMFILE so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Why the kubelet API could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeletApiError {
    /// The agent was given no CA to verify callers with.
    #[error(
        "no cluster CA to verify kubelet API clients (the kubeconfig has no certificate authority)"
    )]
    NoClientCa,
    /// The kubeconfig could not be read.
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: kube::config::KubeconfigError,
    },
    /// Certificates or keys could not be built or loaded.
    #[error("kubelet TLS: {0}")]
    Tls(String),
    /// Generating the serving certificate failed.
    #[error("generating the kubelet serving certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The port could not be bound.
    #[error("binding the kubelet API to {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// The cluster CA certificates (DER) of a kubeconfig's current cluster: who the agent
/// trusts to sign its callers' certificates, as the kubelet's `--client-ca-file`.
pub async fn cluster_ca(kubeconfig: &Path) -> Result<Vec<Vec<u8>>, KubeletApiError> {
    let read_error = |source| KubeletApiError::Kubeconfig {
        path: kubeconfig.to_owned(),
        source,
    };
    let parsed = kube::config::Kubeconfig::read_from(kubeconfig).map_err(read_error)?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .map_err(read_error)?;
    match config.root_cert {
        Some(certificates) if !certificates.is_empty() => Ok(certificates),
        _ => Err(KubeletApiError::NoClientCa),
    }
}

/// A bound, not yet serving kubelet API; binding first lets the agent advertise the
/// real port (`kubelet_port` 0 picks a free one) in its Node status.
pub struct KubeletApi {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    runtime: gantry_runtime::Runtime,
}

impl KubeletApi {
    /// Loads (or creates) the serving certificate and binds `0.0.0.0:<kubelet_port>`.
    pub async fn bind(config: &AgentConfig) -> Result<KubeletApi, KubeletApiError> {
        if config.kubelet_client_ca.is_empty() {
            return Err(KubeletApiError::NoClientCa);
        }
        let agent_dir = config.engine_root.join("agent");
        let (node_name, client_ca) = (config.node_name.clone(), config.kubelet_client_ca.clone());
        let tls = tokio::task::spawn_blocking(move || {
            tls::server_config(&agent_dir, &node_name, &client_ca)
        })
        .await
        .map_err(|e| KubeletApiError::Tls(format!("certificate task failed: {e}")))??;
        let runtime = gantry_runtime::Runtime::open(&config.engine_root, config.shim.clone())
            .map_err(|e| KubeletApiError::Tls(format!("opening the container runtime: {e}")))?;
        let address = SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.kubelet_port));
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| KubeletApiError::Bind { address, source })?;
        Ok(KubeletApi {
            listener,
            tls,
            runtime,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map_or(0, |address| address.port())
    }

    /// Serves until `shutdown`, then closes every connection and waits for the log
    /// streams to end.
    pub async fn serve(self, shutdown: CancellationToken) {
        let streams = TaskTracker::new();
        let app = router(logs::LogService {
            runtime: self.runtime,
            tasks: streams.clone(),
            shutdown: shutdown.clone(),
        });
        let acceptor = TlsAcceptor::from(self.tls);
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, remote)) => {
                        connections.spawn(serve_connection(stream, remote, acceptor.clone(), app.clone()));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "kubelet API: accepting a connection failed");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                },
            }
        }
        connections.shutdown().await;
        streams.close();
        streams.wait().await;
    }
}

/// The kubelet's paths that Gantry serves.
fn router(logs: logs::LogService) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(logs::container_logs),
        )
        .with_state(logs)
}

/// Callers with a valid certificate but the wrong identity get 403, as from the
/// kubelet's authorizer.
fn forbidden() -> Router {
    Router::new().fallback(|| async {
        (
            StatusCode::FORBIDDEN,
            "Forbidden: only the API server's kubelet client and system:masters may use the kubelet API",
        )
    })
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%remote, %error, "kubelet API: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "kubelet API: TLS handshake timed out");
            return;
        }
    };
    let authorized = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .is_some_and(|leaf| tls::is_authorized(leaf));
    let app = if authorized { app } else { forbidden() };
    let connection = auto::Builder::new(TokioExecutor::new());
    if let Err(error) = connection
        .serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(app))
        .await
    {
        tracing::debug!(%remote, %error, "kubelet API: connection closed with error");
    }
}
