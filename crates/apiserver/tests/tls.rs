//! The TLS listener against real clients: the unmodified kubectl with a kubeconfig written by
//! `ClusterPki`, and curl with no certificate, a bearer token, a valid client certificate and
//! a certificate from a foreign CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Extension;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use gantry_apiserver::auth::{Authenticator, UserInfo};
use gantry_apiserver::pki::ClusterPki;
use gantry_apiserver::tls::{PeerCertificates, serve_tls};
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Answers `/whoami` with the authenticated user, or 401 naming what the TLS layer saw.
fn whoami_router(authenticator: Arc<Authenticator>) -> axum::Router {
    axum::Router::new().route(
        "/whoami",
        get(
            move |Extension(peer): Extension<PeerCertificates>, headers: HeaderMap| async move {
                let authorization = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                let certificates = peer.0.as_deref().map(Vec::as_slice);
                match authenticator.authenticate(certificates, authorization) {
                    Ok(user) => (
                        StatusCode::OK,
                        format!("user={} groups={}", user.name, user.groups.join(",")),
                    ),
                    Err(_) => (
                        StatusCode::UNAUTHORIZED,
                        format!("unauthenticated certificate={}", peer.0.is_some()),
                    ),
                }
            },
        ),
    )
}

struct Server {
    url: String,
    pki: ClusterPki,
    dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let pki = ClusterPki::load_or_create(&dir.path().join("pki"), &[], &[]).unwrap();
        let authenticator = Arc::new(Authenticator::new(None).unwrap());
        authenticator.add_token(
            "s3cret-token",
            UserInfo {
                name: "token-user".into(),
                uid: Some("42".into()),
                groups: vec!["tokens".into()],
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_tls(
            listener,
            pki.server_tls_config().unwrap(),
            whoami_router(authenticator),
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            url,
            pki,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("serve_tls did not return after shutdown");
        result.unwrap().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

async fn run(program: &str, args: &[&str]) -> Output {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(program).args(args).kill_on_drop(true).output(),
    )
    .await
    .expect("client timed out")
    .expect("client failed to start");
    Output {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn have(program: &str) -> bool {
    std::process::Command::new("which")
        .arg(program)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn str_path(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_authenticates_with_the_written_kubeconfig() {
    assert!(have("kubectl"), "kubectl is required for this test");
    let server = Server::start().await;
    let kubeconfig = server.path("kubeconfig");
    server
        .pki
        .write_kubeconfig(&kubeconfig, &server.url, "admin", &["system:masters"])
        .unwrap();

    let out = run(
        "kubectl",
        &[
            "--kubeconfig",
            str_path(&kubeconfig),
            "get",
            "--raw",
            "/whoami",
        ],
    )
    .await;
    assert!(out.success, "kubectl failed: {}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        "user=admin groups=system:masters,system:authenticated"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sees_certificates_tokens_and_foreign_cas_handled() {
    if !have("curl") {
        eprintln!("curl not installed; skipping");
        return;
    }
    let server = Server::start().await;
    let ca = server.write("ca.crt", server.pki.ca_pem());
    let url = format!("{}/whoami", server.url);
    let curl = |extra: Vec<String>| {
        let mut args: Vec<String> = vec![
            "--silent".into(),
            "--show-error".into(),
            "--cacert".into(),
            str_path(&ca).into(),
            "--write-out".into(),
            " status=%{http_code} http=%{http_version}".into(),
        ];
        args.extend(extra);
        args.push(url.clone());
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run("curl", &args).await
        }
    };

    // No certificate, no token: the handshake succeeds and the router sees no certificate.
    let anonymous = curl(vec![]).await;
    assert!(anonymous.success, "{}", anonymous.stderr);
    assert_eq!(
        anonymous.stdout,
        "unauthenticated certificate=false status=401 http=2"
    );

    // Bearer token over HTTP/1.1.
    let token = curl(vec![
        "--http1.1".into(),
        "--header".into(),
        "Authorization: Bearer s3cret-token".into(),
    ])
    .await;
    assert_eq!(
        token.stdout,
        "user=token-user groups=tokens,system:authenticated status=200 http=1.1"
    );

    // A client certificate issued by the cluster CA.
    let (cert, key) = server
        .pki
        .issue_client_certificate("system:node:n1", &["system:nodes"])
        .unwrap();
    let cert = server.write("node.crt", &cert);
    let key = server.write("node.key", &key);
    let node = curl(vec![
        "--cert".into(),
        str_path(&cert).into(),
        "--key".into(),
        str_path(&key).into(),
    ])
    .await;
    assert_eq!(
        node.stdout,
        "user=system:node:n1 groups=system:nodes,system:authenticated status=200 http=2"
    );

    // A certificate from another CA is rejected during the handshake.
    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign = ClusterPki::load_or_create(foreign_dir.path(), &[], &[]).unwrap();
    let (cert, key) = foreign
        .issue_client_certificate("admin", &["system:masters"])
        .unwrap();
    let cert = server.write("foreign.crt", &cert);
    let key = server.write("foreign.key", &key);
    let rejected = curl(vec![
        "--cert".into(),
        str_path(&cert).into(),
        "--key".into(),
        str_path(&key).into(),
    ])
    .await;
    assert!(
        !rejected.success,
        "foreign certificate accepted: {}",
        rejected.stdout
    );
    assert!(!rejected.stdout.contains("user="), "{}", rejected.stdout);

    // The failed handshake did not stop the accept loop.
    let after = curl(vec![]).await;
    assert!(after.stdout.contains("status=401"), "{}", after.stdout);

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_clients_stuck_in_the_handshake() {
    let server = Server::start().await;
    // A client that connects and never handshakes must not hold shutdown open.
    let addr = server.url.trim_start_matches("https://").to_string();
    let _idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    server.shutdown().await;
    // Nothing is in flight, so shutdown must not wait out the 5 s grace period.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "still listening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_in_flight_request_finish() {
    if !have("curl") {
        eprintln!("curl not installed; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(&dir.path().join("pki"), &[], &[]).unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let (entered_tx, entered_rx) = oneshot::channel::<()>();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let gates = Arc::new(std::sync::Mutex::new(Some((entered_tx, release_rx))));
    let router = axum::Router::new().route(
        "/slow",
        get(move || {
            let gates = gates.lock().unwrap().take();
            async move {
                let (entered, release) = gates.expect("one request only");
                let _ = entered.send(());
                let _ = release.await;
                "finished"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener_addr = listener.local_addr().unwrap().to_string();
    let url = format!("https://{listener_addr}/slow");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_tls(
        listener,
        pki.server_tls_config().unwrap(),
        router,
        async move {
            let _ = stopped.await;
        },
    ));
    let ca_arg = str_path(&ca).to_string();
    let client = tokio::spawn(async move {
        run(
            "curl",
            &["--silent", "--show-error", "--cacert", &ca_arg, &url],
        )
        .await
    });

    tokio::time::timeout(Duration::from_secs(10), entered_rx)
        .await
        .expect("request never reached the handler")
        .unwrap();
    stop.send(()).unwrap();
    // Release the handler only once the server has stopped accepting, so the request is
    // really in flight during shutdown.
    let addr = listener_addr.clone();
    tokio::time::timeout(Duration::from_secs(10), async move {
        while tokio::net::TcpStream::connect(&addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("listener still open after shutdown");
    release_tx.send(()).unwrap();

    let out = client.await.unwrap();
    assert!(out.success, "{}", out.stderr);
    assert_eq!(out.stdout, "finished");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve_tls did not return")
        .unwrap()
        .unwrap();
}
