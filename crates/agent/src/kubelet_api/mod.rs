//! The kubelet API (port 10250): what the API server calls for `kubectl logs`,
//! `exec`, `attach`, `cp` and `port-forward`.
//!
//! It serves HTTPS with a self-signed certificate (the API server does not verify
//! kubelets by default) and requires a client certificate from the cluster CA whose
//! subject is the API server's kubelet client or a `system:masters` member, so only the
//! control plane reads containers' output.

pub mod attach;
pub mod exec;
pub mod logs;
pub mod port_forward;
pub mod spdy;
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
    engine_root: PathBuf,
    gantry: PathBuf,
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
            engine_root: config.engine_root.clone(),
            gantry: config.shim.program.clone(),
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
        let app = router(
            logs::LogService {
                runtime: self.runtime.clone(),
                tasks: streams.clone(),
                shutdown: shutdown.clone(),
            },
            exec::StreamService {
                runtime: self.runtime,
                engine_root: self.engine_root,
                gantry: self.gantry,
                tasks: streams.clone(),
                shutdown: shutdown.clone(),
            },
        );
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

/// The kubelet's paths that Gantry serves. Exec and attach accept POST too, as the
/// kubelet does for SPDY clients (which are then told to use WebSocket).
fn router(logs: logs::LogService, streams: exec::StreamService) -> Router {
    let streaming = Router::new()
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(exec::exec).post(exec::exec),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(attach::attach).post(attach::attach),
        )
        // The kubelet's path, and the API server relay's lowercase one.
        .route(
            "/portForward/{namespace}/{pod}",
            get(port_forward::port_forward).post(port_forward::port_forward),
        )
        .route(
            "/portforward/{namespace}/{pod}",
            get(port_forward::port_forward).post(port_forward::port_forward),
        )
        .with_state(streams);
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(logs::container_logs),
        )
        .with_state(logs)
        .merge(streaming)
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

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, Issuer, KeyPair};
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    struct ClusterCa {
        der: Vec<u8>,
        issuer: Issuer<'static, KeyPair>,
    }

    impl ClusterCa {
        fn new() -> ClusterCa {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, "test-ca");
            let der = params.self_signed(&key).unwrap().der().to_vec();
            ClusterCa {
                der,
                issuer: Issuer::new(params, key),
            }
        }

        fn client(&self, cn: &str, organization: Option<&str>) -> (String, String) {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            if let Some(o) = organization {
                params.distinguished_name.push(DnType::OrganizationName, o);
            }
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }

    /// GETs `path` over TLS as the holder of `identity`; returns the status line, or
    /// `None` when the handshake or the request is refused.
    async fn get(root: &Path, port: u16, identity: (String, String), path: &str) -> Option<String> {
        let mut roots = rustls::RootCertStore::empty();
        let serving = std::fs::read(root.join("agent").join("kubelet.crt")).unwrap();
        roots
            .add(CertificateDer::from_pem_slice(&serving).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(identity.0.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(identity.1.as_bytes()).unwrap(),
        )
        .unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        let server_name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(server_name, tcp).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        tls.read_to_string(&mut response).await.ok()?;
        response.lines().next().map(str::to_owned)
    }

    #[tokio::test]
    async fn only_the_control_planes_certificates_reach_container_logs() {
        let root = tempfile::tempdir().unwrap();
        let ca = ClusterCa::new();
        let shim = gantry_runtime::ShimCommand {
            program: "/bin/false".into(),
            args: Vec::new(),
        };
        let mut config = AgentConfig::new("n1", root.path(), shim);
        config.kubelet_port = 0;
        assert!(matches!(
            KubeletApi::bind(&config).await,
            Err(KubeletApiError::NoClientCa)
        ));
        config.kubelet_client_ca = vec![ca.der.clone()];
        let api = KubeletApi::bind(&config).await.unwrap();
        let port = api.port();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(api.serve(shutdown.clone()));
        let path = "/containerLogs/default/web/app";

        let apiserver = ca.client(tls::APISERVER_CLIENT_USER, None);
        let status = get(root.path(), port, apiserver, path).await;
        assert_eq!(status.as_deref(), Some("HTTP/1.1 404 Not Found"));
        let admin = ca.client("admin", Some(tls::MASTERS_GROUP));
        let status = get(root.path(), port, admin, path).await;
        assert_eq!(status.as_deref(), Some("HTTP/1.1 404 Not Found"));
        let node = ca.client("system:node:n2", Some("system:nodes"));
        let status = get(root.path(), port, node, path).await;
        assert_eq!(status.as_deref(), Some("HTTP/1.1 403 Forbidden"));
        let stranger = ClusterCa::new().client(tls::APISERVER_CLIENT_USER, None);
        assert_eq!(get(root.path(), port, stranger, path).await, None);

        shutdown.cancel();
        server.await.unwrap();
    }
}
