//! The API server's HTTPS listener: TLS via rustls, HTTP/1.1 and h2 via hyper, with each
//! request carrying the client certificates verified during the handshake so the
//! authentication layer can map them to a user.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// The client certificate chain of the connection a request came in on (leaf first), as
/// verified against the cluster CA; `None` when the client presented no certificate.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificates(pub Option<Arc<Vec<CertificateDer<'static>>>>);

/// A client that opens a connection but never finishes the handshake must not hold a task
/// forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may run after shutdown starts; long-lived watches are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after an accept error such as EMFILE so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` over TLS on `listener` until `shutdown` completes, then stops accepting,
/// gives in-flight requests [`SHUTDOWN_GRACE`] to finish and aborts what remains.
///
/// Every request gets [`PeerCertificates`] and `ConnectInfo<SocketAddr>` extensions. HTTP
/// upgrades (exec, attach, port-forward) are supported.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(config);
    let graceful = GracefulShutdown::new();
    // Connections still handshaking are not yet known to `graceful`; this tells them to quit.
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    connections.spawn(serve_connection(
                        stream,
                        remote,
                        acceptor.clone(),
                        app.clone(),
                        graceful.watcher(),
                        closing_rx.clone(),
                    ));
                }
                Err(error) if is_fatal_accept_error(&error) => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }

    drop(listener);
    let _ = closing.send(true);
    tracing::debug!(
        connections = connections.len(),
        "API server stopped accepting; draining connections"
    );
    let drained = async {
        graceful.shutdown().await;
        while connections.join_next().await.is_some() {}
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::debug!("shutdown grace period over; closing remaining connections");
    }
    connections.shutdown().await;
    Ok(())
}

/// Handshakes one connection and serves HTTP on it until the client goes away or graceful
/// shutdown closes it.
async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    app: axum::Router,
    watcher: Watcher,
    mut closing: watch::Receiver<bool>,
) {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let outcome = tokio::select! {
        outcome = handshake => outcome,
        _ = closing.wait_for(|closing| *closing) => return,
    };
    let tls = match outcome {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%remote, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return;
        }
    };
    let peer = PeerCertificates(
        tls.get_ref()
            .1
            .peer_certificates()
            .filter(|chain| !chain.is_empty())
            .map(|chain| Arc::new(chain.iter().map(|c| c.clone().into_owned()).collect())),
    );
    let service = app.map_request(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(peer.clone());
        request.extensions_mut().insert(ConnectInfo(remote));
        request
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(service))
        .into_owned();
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%remote, %error, "connection closed with error");
    }
}

/// Errors that mean the listener itself is broken, as opposed to one failed connection or
/// temporary resource exhaustion.
fn is_fatal_accept_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    !matches!(
        error.kind(),
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionRefused
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
    ) && !matches!(error.raw_os_error(), Some(code) if is_resource_exhaustion(code))
}

fn is_resource_exhaustion(code: i32) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the process is out of something, not the listener.
    matches!(code, 24 | 23 | 105 | 12)
}
