//! A real API server for other crates' tests (feature `test-support`).
//!
//! Components (scheduler, controllers, agent) are API clients; their tests run them
//! against this server over HTTPS with their own certificates, exactly as in production,
//! instead of against a mock. The server runs on its own thread and runtime so a test's
//! runtime can be single-threaded and dropping the server needs no `.await`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use tempfile::TempDir;
use tokio::sync::oneshot;

use crate::ServerConfig;

/// A running API server on a free loopback port, stopped and deleted when dropped.
pub struct TestServer {
    dir: TempDir,
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with an empty store; panics if it cannot (it is a test fixture).
    pub fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = ServerConfig {
            data_dir: dir.path().join("server"),
            bind_address: IpAddr::from([127, 0, 0, 1]),
            https_port: 0,
            token_file: None,
            kubeconfig_output: dir.path().join("admin.kubeconfig"),
            tls_sans: Vec::new(),
            components: Vec::new(),
        };
        let (listening_tx, listening_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            let announce = Box::new(move |address| {
                let _ = listening_tx.send(address);
            });
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(err) = runtime.block_on(crate::run(config, announce, shutdown)) {
                panic!("test API server failed: {err}");
            }
        });
        let address = listening_rx
            .recv()
            .expect("the test API server starts listening");
        TestServer {
            dir,
            address,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The server's `https://` URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    /// The admin kubeconfig (`system:masters`), usable by kubectl and kube clients.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// The cluster's node join token, for agents joining this server.
    pub fn join_token(&self) -> String {
        let path = self.dir.path().join("server").join(crate::bootstrap::TOKEN_FILE);
        std::fs::read_to_string(path)
            .expect("the server wrote its join token")
            .trim()
            .to_string()
    }

    /// A scratch directory that lives as long as the server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A kube client authenticated as the admin.
    pub async fn client(&self) -> kube::Client {
        client_from_kubeconfig(&self.kubeconfig()).await
    }
}

/// A kube client from a kubeconfig file; panics on failure (test fixture).
pub async fn client_from_kubeconfig(path: &Path) -> kube::Client {
    // See gantry_client::install_crypto_provider: the workspace links two rustls providers.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("readable kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("valid kubeconfig");
    kube::Client::try_from(config).expect("kube client")
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
