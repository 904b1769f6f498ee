//! `/portForward/{namespace}/{pod}`: `kubectl port-forward`.
//!
//! The protocol is SPDY/3.1 with the `portforward.k8s.io` sub-protocol, as the
//! kubelet speaks it. kubectl 1.31+ sends it inside a WebSocket (subprotocol
//! `SPDY/3.1+portforward.k8s.io`, the SPDY byte stream cut into binary messages) and
//! falls back to a plain `Upgrade: SPDY/3.1` connection; both are served here.
//!
//! For every local connection kubectl opens two streams with the same `requestID`
//! header: an `error` stream, on which the server writes why forwarding failed, and a
//! `data` stream carrying the bytes. Once both exist, a connection to
//! `localhost:<port>` inside the pod's network namespace is made and the bytes are
//! copied both ways; the server closes both streams when the pod's side ends.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts as _, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt as _, StreamExt as _};
use gantry_runtime::{NetworkMode, Runtime, Status};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::exec::StreamService;
use super::spdy::{self, Frame, FrameDecoder, FrameEncoder, Headers};
use crate::pods::naming::ContainerName;

/// The SPDY sub-protocol of port forwarding (`X-Stream-Protocol-Version`).
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// kubectl's WebSocket subprotocol: SPDY/3.1 tunnelled in binary messages.
pub const WEBSOCKET_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The `Upgrade` token of a plain SPDY connection.
pub const SPDY_UPGRADE: &str = "SPDY/3.1";
/// The header naming the sub-protocols of a plain SPDY upgrade.
const PROTOCOL_VERSION_HEADER: &str = "x-stream-protocol-version";
/// Per-stream headers, lowercase as SPDY/3 carries them.
const STREAM_TYPE_HEADER: &str = "streamtype";
const PORT_HEADER: &str = "port";
const REQUEST_ID_HEADER: &str = "requestid";
/// How much of the pod's output goes into one DATA frame.
const CHUNK_SIZE: usize = 32 * 1024;
/// Frames waiting for the connection; the bound makes the pods' output wait for a
/// slow client instead of piling up.
const OUTBOUND_QUEUE: usize = 64;
/// Client data waiting for a pod socket, per stream.
const INBOUND_QUEUE: usize = 16;
/// Connecting to the pod's localhost is refused or accepted at once unless a
/// firewall in the pod drops it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a port-forward request was refused before the upgrade.
#[derive(Debug, thiserror::Error)]
pub enum PortForwardError {
    /// No running container of the pod on this node.
    #[error("pod {pod:?} in namespace {namespace:?} has no running container on this node")]
    PodNotRunning {
        /// The pod's namespace.
        namespace: String,
        /// The pod.
        pod: String,
    },
    /// Neither a WebSocket nor a SPDY upgrade this server speaks.
    #[error(
        "port forwarding needs a WebSocket upgrade with subprotocol {WEBSOCKET_PROTOCOL} or an `Upgrade: {SPDY_UPGRADE}` with {PROTOCOL_VERSION_HEADER} {PORT_FORWARD_PROTOCOL}: {0}"
    )]
    NotUpgrade(String),
    /// The engine failed to read its state.
    #[error("reading the container state: {0}")]
    Runtime(#[from] gantry_runtime::Error),
}

impl IntoResponse for PortForwardError {
    fn into_response(self) -> Response {
        let code = match self {
            PortForwardError::PodNotRunning { .. } => StatusCode::NOT_FOUND,
            PortForwardError::NotUpgrade(_) => StatusCode::BAD_REQUEST,
            PortForwardError::Runtime(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (code, self.to_string()).into_response()
    }
}

/// The handler: finds the pod's network, then upgrades to SPDY (tunnelled in a
/// WebSocket, or plain) and serves the session.
pub async fn port_forward(
    State(service): State<StreamService>,
    Path((namespace, pod)): Path<(String, String)>,
    request: Request,
) -> Result<Response, PortForwardError> {
    let connector = pod_connector(&service.runtime, &namespace, &pod).await?;
    let session = Session {
        connector,
        pod: format!("{namespace}/{pod}").into(),
        tasks: service.tasks.clone(),
        shutdown: service.shutdown.clone(),
    };
    let (mut parts, body) = request.into_parts();
    let upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if upgrade.eq_ignore_ascii_case("websocket") {
        let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .map_err(|rejection| PortForwardError::NotUpgrade(rejection.body_text()))?
            .protocols([WEBSOCKET_PROTOCOL]);
        if upgrade.selected_protocol().is_none() {
            let offered: Vec<&str> = upgrade
                .requested_protocols()
                .filter_map(|p| p.to_str().ok())
                .collect();
            return Err(PortForwardError::NotUpgrade(format!(
                "the client offered {offered:?}"
            )));
        }
        let tasks = service.tasks.clone();
        return Ok(upgrade.on_upgrade(move |socket| tasks.track_future(session.websocket(socket))));
    }
    if upgrade.eq_ignore_ascii_case(SPDY_UPGRADE) {
        if !offers_port_forward(&parts.headers) {
            return Err(PortForwardError::NotUpgrade(format!(
                "the request does not offer {PORT_FORWARD_PROTOCOL}"
            )));
        }
        let upgraded = hyper::upgrade::on(Request::from_parts(parts, body));
        service.tasks.spawn(async move {
            match upgraded.await {
                Ok(upgraded) => session.serve(TokioIo::new(upgraded)).await,
                Err(error) => tracing::debug!(%error, "port-forward: SPDY upgrade failed"),
            }
        });
        return Ok(spdy_switching_protocols());
    }
    Err(PortForwardError::NotUpgrade(format!(
        "the request asks to upgrade to {upgrade:?}"
    )))
}

/// Whether a plain SPDY upgrade lists `portforward.k8s.io` among its sub-protocols
/// (one per header, or comma-separated).
fn offers_port_forward(headers: &HeaderMap) -> bool {
    headers
        .get_all(PROTOCOL_VERSION_HEADER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim() == PORT_FORWARD_PROTOCOL)
}

/// The kubelet's answer to a plain SPDY upgrade.
fn spdy_switching_protocols() -> Response {
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(SPDY_UPGRADE));
    headers.insert(
        PROTOCOL_VERSION_HEADER,
        HeaderValue::from_static(PORT_FORWARD_PROTOCOL),
    );
    response
}

/// The connector for a pod's ports: the network namespace of a running container of
/// the newest instance (UID) of the pod.
async fn pod_connector(
    runtime: &Runtime,
    namespace: &str,
    pod: &str,
) -> Result<PodConnector, PortForwardError> {
    let runtime = runtime.clone();
    let containers = tokio::task::spawn_blocking(move || runtime.list())
        .await
        .map_err(|e| gantry_runtime::Error::Spec(format!("engine task failed: {e}")))??;
    // Newest first, so the first match belongs to the current pod instance.
    let of_pod: Vec<_> = containers
        .into_iter()
        .filter_map(|c| ContainerName::parse(&c.config.name).map(|name| (name, c)))
        .filter(|(name, _)| name.namespace == namespace && name.pod == pod)
        .collect();
    let not_running = || PortForwardError::PodNotRunning {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
    };
    let uid = of_pod
        .first()
        .map(|(name, _)| name.uid.clone())
        .ok_or_else(not_running)?;
    let running = of_pod
        .into_iter()
        .map(|(name, container)| (name.uid, container))
        .find(|(container_uid, c)| *container_uid == uid && c.state.status == Status::Running)
        .map(|(_, container)| container)
        .ok_or_else(not_running)?;
    let netns = match running.config.network {
        NetworkMode::Join(path) => Some(path),
        NetworkMode::Host => None,
        NetworkMode::None => {
            let pid = running.state.pid.ok_or_else(not_running)?;
            Some(PathBuf::from(format!("/proc/{pid}/ns/net")))
        }
    };
    Ok(PodConnector { netns })
}

/// Opens TCP connections to a pod's localhost.
#[derive(Clone, Debug)]
pub struct PodConnector {
    /// The pod's network namespace file; `None` for the agent's own (host network).
    pub netns: Option<PathBuf>,
}

impl PodConnector {
    /// Connects to `localhost:port` (IPv4, then IPv6) in the pod. The socket is made
    /// by a thread of its own that enters the namespace and ends with the work, so no
    /// runtime thread ever changes namespace.
    pub async fn connect(&self, port: u16) -> io::Result<TcpStream> {
        let netns = self.netns.clone();
        let (sender, receiver) = oneshot::channel();
        std::thread::Builder::new()
            .name("port-forward-connect".into())
            .spawn(move || {
                let _ = sender.send(connect_in_namespace(netns.as_deref(), port));
            })?;
        let stream = receiver
            .await
            .map_err(|_| io::Error::other("the connecting thread ended without a result"))??;
        TcpStream::from_std(stream)
    }
}

/// Moves the calling thread into `netns` for good, then connects; only for a
/// throwaway thread.
fn connect_in_namespace(netns: Option<&FsPath>, port: u16) -> io::Result<std::net::TcpStream> {
    if let Some(path) = netns {
        let namespace = File::open(path)?;
        nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)?;
    }
    let connect =
        |address: SocketAddr| std::net::TcpStream::connect_timeout(&address, CONNECT_TIMEOUT);
    let stream = connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).or_else(|v4_error| {
        connect(SocketAddr::from((Ipv6Addr::LOCALHOST, port))).map_err(|_| v4_error)
    })?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// One port-forward connection and what it needs.
#[derive(Clone)]
pub struct Session {
    /// Where the pod's ports are.
    pub connector: PodConnector,
    /// `namespace/name`, for messages.
    pub pod: Arc<str>,
    /// Owns the forwarding tasks so the agent waits for them on shutdown.
    pub tasks: TaskTracker,
    /// Ends the session when the agent stops.
    pub shutdown: CancellationToken,
}

impl Session {
    /// Serves SPDY tunnelled in a WebSocket.
    async fn websocket(self, socket: WebSocket) {
        let (session_end, bridge_end) = tokio::io::duplex(2 * CHUNK_SIZE);
        tokio::join!(
            self.serve(session_end),
            bridge_websocket(socket, bridge_end)
        );
    }

    /// Runs the SPDY connection until the client closes or ends it, the connection
    /// breaks, or the agent stops; every forwarded connection ends with it.
    pub async fn serve<IO>(self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(io);
        let (outbound, queue) = mpsc::channel(OUTBOUND_QUEUE);
        let ended = self.shutdown.child_token();
        let mut dispatcher = Dispatcher {
            session: self,
            outbound,
            ended: ended.clone(),
            pending: HashMap::new(),
            data_streams: HashMap::new(),
        };
        let reading = dispatcher.run(FramedRead::new(reader, FrameDecoder::default()));
        let writing = write_frames(FramedWrite::new(writer, FrameEncoder::default()), queue);
        tokio::select! {
            () = reading => {}
            () = writing => {}
            () = ended.cancelled() => {}
        }
        ended.cancel();
    }
}

/// Sends queued frames, flushing whenever the queue runs dry, until every sender is
/// gone or the connection fails.
async fn write_frames<W>(mut sink: FramedWrite<W, FrameEncoder>, mut queue: mpsc::Receiver<Frame>)
where
    W: AsyncWrite + Unpin,
{
    while let Some(frame) = queue.recv().await {
        let mut written = sink.feed(frame).await;
        while let (Ok(()), Ok(frame)) = (&written, queue.try_recv()) {
            written = sink.feed(frame).await;
        }
        if let Err(error) = written.and(sink.flush().await) {
            tracing::debug!(%error, "port-forward: writing to the client failed");
            return;
        }
    }
}

/// Carries the SPDY byte stream in binary WebSocket messages, as kubectl's tunneling
/// connection does (any message boundaries in, one message per read out).
async fn bridge_websocket(socket: WebSocket, spdy: DuplexStream) {
    let (mut sink, mut messages) = socket.split();
    let (mut from_spdy, mut to_spdy) = tokio::io::split(spdy);
    let client_to_server = async {
        while let Some(Ok(message)) = messages.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                // Pings are answered by the WebSocket layer.
                _ => continue,
            };
            if to_spdy.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = to_spdy.shutdown().await;
    };
    let server_to_client = async {
        let mut buffer = BytesMut::with_capacity(CHUNK_SIZE);
        loop {
            buffer.reserve(CHUNK_SIZE);
            match from_spdy.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if sink
                        .send(Message::Binary(buffer.split().freeze()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        // A normal closure: kubectl reports any other end as an error.
        let close = CloseFrame {
            code: close_code::NORMAL,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
        let _ = sink.close().await;
    };
    tokio::pin!(server_to_client);
    tokio::select! {
        () = &mut server_to_client => return,
        () = client_to_server => {}
    }
    // The client is done sending; the session ends on that EOF and closes its side.
    server_to_client.await;
}

/// What a stream is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamKind {
    /// The server reports forwarding failures on it.
    Error,
    /// The forwarded bytes.
    Data,
}

/// The headers kubectl puts on each stream it opens.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StreamHeaders {
    kind: StreamKind,
    port: u16,
    request_id: String,
}

impl StreamHeaders {
    /// Reads `streamType`, `port` and `requestID`; the errors are the kubelet's words.
    fn parse(headers: &Headers) -> Result<StreamHeaders, String> {
        let get = |name: &str| {
            headers
                .iter()
                .find(|(header, _)| header.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        };
        let kind = match get(STREAM_TYPE_HEADER) {
            Some("error") => StreamKind::Error,
            Some("data") => StreamKind::Data,
            Some(other) => return Err(format!("invalid stream type {other:?}")),
            None => return Err("\"streamType\" header is required".into()),
        };
        let port = get(PORT_HEADER).ok_or("\"port\" header is required")?;
        let port = match port.parse::<u16>() {
            Ok(0) => return Err(format!("port {port:?} must be > 0")),
            Ok(number) => number,
            Err(error) => return Err(format!("unable to parse {port:?} as a port: {error}")),
        };
        let request_id = get(REQUEST_ID_HEADER)
            .ok_or("\"requestID\" header is required")?
            .to_owned();
        Ok(StreamHeaders {
            kind,
            port,
            request_id,
        })
    }
}

/// The streams of one request ID seen so far.
#[derive(Default)]
struct HalfPair {
    error_stream: Option<u32>,
    data_stream: Option<(u32, u16, mpsc::Receiver<Bytes>)>,
}

impl HalfPair {
    /// Both streams, once both are here.
    fn complete(&mut self) -> Option<StreamPair> {
        let error_stream = self.error_stream?;
        let (data_stream, port, inbound) = self.data_stream.take()?;
        Some(StreamPair {
            error_stream,
            data_stream,
            port,
            inbound,
        })
    }
}

/// A data stream the client may still send on.
struct DataStream {
    /// Where the client's bytes go; `None` once the client finished.
    inbound: Option<mpsc::Sender<Bytes>>,
    /// Whether its pair is forwarding (before, a full queue is the client's fault).
    started: bool,
    /// Stops the forwarding (client reset, session end).
    cancel: CancellationToken,
}

/// Both streams of a request: what one forwarded connection needs.
struct StreamPair {
    error_stream: u32,
    data_stream: u32,
    port: u16,
    inbound: mpsc::Receiver<Bytes>,
}

/// The session's frame reader: opens and pairs streams, routes client data, answers
/// pings.
struct Dispatcher {
    session: Session,
    outbound: mpsc::Sender<Frame>,
    ended: CancellationToken,
    pending: HashMap<String, HalfPair>,
    data_streams: HashMap<u32, DataStream>,
}

impl Dispatcher {
    async fn run<R: AsyncRead + Unpin>(&mut self, mut frames: FramedRead<R, FrameDecoder>) {
        while let Some(frame) = frames.next().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(error) => {
                    tracing::debug!(%error, pod = %self.session.pod, "port-forward: bad frame");
                    let _ = self
                        .send(Frame::GoAway {
                            last_good_stream_id: 0,
                            status: 1,
                        })
                        .await;
                    return;
                }
            };
            if !self.handle(frame).await {
                return;
            }
        }
    }

    /// Handles one frame; false when the session is over.
    async fn handle(&mut self, frame: Frame) -> bool {
        match frame {
            Frame::SynStream {
                stream_id, headers, ..
            } => self.open_stream(stream_id, &headers).await,
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                self.client_data(stream_id, fin, data).await;
                true
            }
            Frame::RstStream { stream_id, .. } => {
                self.reset(stream_id);
                true
            }
            // Odd IDs are the client's pings, to echo; this server sends none.
            Frame::Ping(id) if id % 2 == 1 => self.send(Frame::Ping(id)).await,
            Frame::GoAway { .. } => false,
            // This server opens no streams and, like kubectl's spdystream, does no
            // flow control.
            Frame::Ping(_)
            | Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings(_)
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => true,
        }
    }

    /// Queues a frame; false when the writer is gone.
    async fn send(&self, frame: Frame) -> bool {
        self.outbound.send(frame).await.is_ok()
    }

    async fn refuse(&self, stream_id: u32, status: u32, reason: &str) -> bool {
        tracing::debug!(stream_id, reason, pod = %self.session.pod, "port-forward: refusing a stream");
        self.send(Frame::RstStream { stream_id, status }).await
    }

    /// Accepts a stream and, once its request has both, starts forwarding.
    async fn open_stream(&mut self, stream_id: u32, headers: &Headers) -> bool {
        let request = match StreamHeaders::parse(headers) {
            Ok(request) => request,
            Err(reason) => {
                return self
                    .refuse(stream_id, spdy::RST_PROTOCOL_ERROR, &reason)
                    .await;
            }
        };
        let half = self.pending.entry(request.request_id.clone()).or_default();
        let duplicate = match request.kind {
            StreamKind::Error => half.error_stream.is_some(),
            StreamKind::Data => half.data_stream.is_some(),
        };
        if duplicate {
            let reason = format!(
                "a second {:?} stream for request {}",
                request.kind, request.request_id
            );
            return self
                .refuse(stream_id, spdy::RST_PROTOCOL_ERROR, &reason)
                .await;
        }
        match request.kind {
            StreamKind::Error => half.error_stream = Some(stream_id),
            StreamKind::Data => {
                let (sender, receiver) = mpsc::channel(INBOUND_QUEUE);
                half.data_stream = Some((stream_id, request.port, receiver));
                self.data_streams.insert(
                    stream_id,
                    DataStream {
                        inbound: Some(sender),
                        started: false,
                        cancel: self.ended.child_token(),
                    },
                );
            }
        }
        let reply = Frame::SynReply {
            stream_id,
            fin: false,
            headers: Headers::new(),
        };
        if !self.send(reply).await {
            return false;
        }
        let complete = self
            .pending
            .get_mut(&request.request_id)
            .and_then(HalfPair::complete);
        if let Some(pair) = complete {
            self.pending.remove(&request.request_id);
            self.start(pair);
        }
        true
    }

    /// Spawns the forwarding of a complete pair.
    fn start(&mut self, pair: StreamPair) {
        let Some(stream) = self.data_streams.get_mut(&pair.data_stream) else {
            return;
        };
        stream.started = true;
        self.session.tasks.spawn(forward_pair(
            self.session.connector.clone(),
            self.session.pod.clone(),
            pair,
            self.outbound.clone(),
            stream.cancel.clone(),
        ));
    }

    /// Hands client bytes to the stream's forwarding; FIN ends the client's half.
    async fn client_data(&mut self, stream_id: u32, fin: bool, data: Bytes) {
        let Some(stream) = self.data_streams.get_mut(&stream_id) else {
            return;
        };
        if let (Some(inbound), false) = (&stream.inbound, data.is_empty()) {
            let delivered = if stream.started {
                tokio::select! {
                    sent = inbound.send(data) => sent.is_ok(),
                    () = stream.cancel.cancelled() => false,
                }
            } else {
                // Before its error stream arrives a pair cannot drain its queue; a
                // client that fills it would stall every stream of the connection.
                inbound.try_send(data).is_ok()
            };
            if !delivered {
                stream.inbound = None;
            }
        }
        if fin {
            stream.inbound = None;
        }
    }

    /// The client abandoned a stream: stop its forwarding, forget its pairing.
    fn reset(&mut self, stream_id: u32) {
        if let Some(stream) = self.data_streams.remove(&stream_id) {
            stream.cancel.cancel();
        }
        self.pending.retain(|_, half| {
            half.error_stream != Some(stream_id)
                && half.data_stream.as_ref().map(|(id, _, _)| *id) != Some(stream_id)
        });
    }
}

/// Forwards one connection, reports a failure on the error stream, then closes both
/// streams.
async fn forward_pair(
    connector: PodConnector,
    pod: Arc<str>,
    mut pair: StreamPair,
    outbound: mpsc::Sender<Frame>,
    cancel: CancellationToken,
) {
    let forwarded = tokio::select! {
        forwarded = forward(&connector, &mut pair, &outbound) => forwarded,
        () = cancel.cancelled() => Ok(()),
    };
    if let Err(error) = forwarded {
        let message = format!("error forwarding port {} to pod {pod}: {error}", pair.port);
        tracing::debug!(%message, "port-forward");
        let report = Frame::Data {
            stream_id: pair.error_stream,
            fin: false,
            data: Bytes::from(message),
        };
        let _ = outbound.send(report).await;
    }
    for stream_id in [pair.data_stream, pair.error_stream] {
        let fin = Frame::Data {
            stream_id,
            fin: true,
            data: Bytes::new(),
        };
        let _ = outbound.send(fin).await;
    }
}

/// Connects to the pod's port and copies bytes both ways until the pod's side ends
/// (a client that finished sending half-closes the socket so the pod sees EOF).
/// Only a failed connect is an error: once connected, a reset ends the stream as EOF.
async fn forward(
    connector: &PodConnector,
    pair: &mut StreamPair,
    outbound: &mpsc::Sender<Frame>,
) -> io::Result<()> {
    let socket = connector.connect(pair.port).await?;
    let (mut from_pod, mut to_pod) = socket.into_split();
    let inbound = &mut pair.inbound;
    let upstream = async move {
        while let Some(chunk) = inbound.recv().await {
            if to_pod.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
        std::future::pending::<()>().await;
    };
    let data_stream = pair.data_stream;
    let downstream = async move {
        let mut buffer = BytesMut::with_capacity(CHUNK_SIZE);
        loop {
            buffer.reserve(CHUNK_SIZE);
            match from_pod.read_buf(&mut buffer).await {
                Ok(0) => return,
                Err(error) => {
                    tracing::debug!(%error, "port-forward: reading from the pod failed");
                    return;
                }
                Ok(_) => {
                    let data = Frame::Data {
                        stream_id: data_stream,
                        fin: false,
                        data: buffer.split().freeze(),
                    };
                    if outbound.send(data).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = downstream => {}
        () = upstream => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tokio::io::{ReadHalf, WriteHalf};
    use tokio::net::TcpListener;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A pinned network namespace with only loopback, released on drop.
    struct Netns {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    impl Netns {
        fn new() -> Netns {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("pod");
            gantry_runtime::create_network_namespace(&path).unwrap();
            Netns { _dir: dir, path }
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = gantry_runtime::remove_network_namespace(&self.path);
        }
    }

    /// Binds `127.0.0.1:0` inside `netns`, from a thread that enters it and ends.
    fn listen_in(netns: &FsPath) -> TcpListener {
        let path = netns.to_owned();
        let listener = std::thread::spawn(move || -> io::Result<std::net::TcpListener> {
            let namespace = File::open(&path)?;
            nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .join()
        .unwrap()
        .unwrap();
        TcpListener::from_std(listener).unwrap()
    }

    /// Answers every connection with `echo:` and all the client sent before its EOF.
    async fn echo_after_eof(listener: TcpListener) {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut received = Vec::new();
                socket.read_to_end(&mut received).await?;
                socket.write_all(b"echo:").await?;
                socket.write_all(&received).await?;
                io::Result::Ok(())
            });
        }
    }

    /// The kubectl side of a session, speaking the same codec.
    struct Client {
        frames: FramedRead<ReadHalf<DuplexStream>, FrameDecoder>,
        sink: FramedWrite<WriteHalf<DuplexStream>, FrameEncoder>,
    }

    impl Client {
        async fn send(&mut self, frame: Frame) {
            self.sink.send(frame).await.unwrap();
        }

        async fn next(&mut self) -> Option<Frame> {
            tokio::time::timeout(TIMEOUT, self.frames.next())
                .await
                .expect("a frame in time")
                .map(Result::unwrap)
        }

        async fn open(&mut self, stream_id: u32, kind: &str, port: u16, request_id: &str) {
            let headers = [
                ("streamtype", kind.to_owned()),
                ("port", port.to_string()),
                ("requestid", request_id.to_owned()),
            ];
            self.send(Frame::SynStream {
                stream_id,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: headers.map(|(n, v)| (n.to_owned(), v)).to_vec(),
            })
            .await;
        }

        async fn send_last(&mut self, stream_id: u32, data: &'static [u8]) {
            self.send(Frame::Data {
                stream_id,
                fin: true,
                data: Bytes::from_static(data),
            })
            .await;
        }

        /// Reads until the server finished every stream in `streams`, returning what
        /// each carried and the streams it replied to.
        async fn read_until_finished(
            &mut self,
            streams: &[u32],
        ) -> (BTreeMap<u32, Vec<u8>>, Vec<u32>) {
            let mut received: BTreeMap<u32, Vec<u8>> =
                streams.iter().map(|s| (*s, Vec::new())).collect();
            let mut replied = Vec::new();
            let mut open = streams.len();
            while open > 0 {
                match self.next().await {
                    Some(Frame::SynReply { stream_id, .. }) => replied.push(stream_id),
                    Some(Frame::Data {
                        stream_id,
                        fin,
                        data,
                    }) => {
                        received
                            .get_mut(&stream_id)
                            .expect("a known stream")
                            .extend_from_slice(&data);
                        open -= usize::from(fin);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            replied.sort_unstable();
            (received, replied)
        }
    }

    /// A session for pod `default/web` over an in-memory connection.
    fn start_session(
        netns: Option<PathBuf>,
    ) -> (Client, tokio::task::JoinHandle<()>, CancellationToken) {
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        let shutdown = CancellationToken::new();
        let session = Session {
            connector: PodConnector { netns },
            pod: "default/web".into(),
            tasks: TaskTracker::new(),
            shutdown: shutdown.clone(),
        };
        let served = tokio::spawn(session.serve(server_end));
        let (reader, writer) = tokio::io::split(client_end);
        let client = Client {
            frames: FramedRead::new(reader, FrameDecoder::default()),
            sink: FramedWrite::new(writer, FrameEncoder::default()),
        };
        (client, served, shutdown)
    }

    #[tokio::test]
    async fn connections_are_forwarded_inside_the_pods_namespace() {
        let netns = Netns::new();
        let listener = listen_in(&netns.path);
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(echo_after_eof(listener));
        let (mut client, served, _shutdown) = start_session(Some(netns.path.clone()));

        // Two requests at once, their streams interleaved: pairing goes by requestID.
        client.open(1, "error", port, "0").await;
        client.open(3, "error", port, "1").await;
        client.open(5, "data", port, "1").await;
        client.open(7, "data", port, "0").await;
        client.send_last(5, b"second").await;
        client.send_last(7, b"first").await;
        let (received, replied) = client.read_until_finished(&[1, 3, 5, 7]).await;
        assert_eq!(replied, [1, 3, 5, 7]);
        assert_eq!(received[&7], b"echo:first");
        assert_eq!(received[&5], b"echo:second");
        assert!(received[&1].is_empty() && received[&3].is_empty());

        client.send(Frame::Ping(1)).await;
        assert_eq!(client.next().await, Some(Frame::Ping(1)));
        client
            .send(Frame::GoAway {
                last_good_stream_id: 0,
                status: 0,
            })
            .await;
        tokio::time::timeout(TIMEOUT, served)
            .await
            .unwrap()
            .unwrap();
        server.abort();
    }

    #[tokio::test]
    async fn a_port_nobody_listens_on_is_reported_on_the_error_stream() {
        // Nothing listens in a fresh namespace.
        let netns = Netns::new();
        let (mut client, served, shutdown) = start_session(Some(netns.path.clone()));
        client.open(1, "error", 80, "0").await;
        client.open(3, "data", 80, "0").await;
        let (received, _) = client.read_until_finished(&[1, 3]).await;
        assert!(received[&3].is_empty());
        let error = String::from_utf8(received[&1].clone()).unwrap();
        assert!(
            error.starts_with("error forwarding port 80 to pod default/web: ")
                && error.contains("refused"),
            "{error}"
        );
        shutdown.cancel();
        tokio::time::timeout(TIMEOUT, served)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn streams_kubectl_would_not_open_are_refused() {
        let (mut client, served, shutdown) = start_session(None);
        client
            .send(Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "data".into())],
            })
            .await;
        let refused = |stream_id| Frame::RstStream {
            stream_id,
            status: spdy::RST_PROTOCOL_ERROR,
        };
        assert_eq!(client.next().await, Some(refused(1)));
        client.open(3, "error", 8080, "0").await;
        client.open(5, "error", 8080, "0").await;
        assert!(matches!(
            client.next().await,
            Some(Frame::SynReply { stream_id: 3, .. })
        ));
        assert_eq!(client.next().await, Some(refused(5)));
        shutdown.cancel();
        tokio::time::timeout(TIMEOUT, served)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn stream_headers_are_read_as_the_kubelet_reads_them() {
        let headers = |pairs: &[(&str, &str)]| -> Headers {
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            StreamHeaders::parse(&headers(&[
                ("streamtype", "data"),
                ("port", "80"),
                ("requestid", "4")
            ])),
            Ok(StreamHeaders {
                kind: StreamKind::Data,
                port: 80,
                request_id: "4".into()
            })
        );
        let error = |pairs| StreamHeaders::parse(&headers(pairs)).unwrap_err();
        assert_eq!(
            error(&[("port", "80")]),
            "\"streamType\" header is required"
        );
        assert_eq!(
            error(&[("streamtype", "log")]),
            "invalid stream type \"log\""
        );
        assert_eq!(
            error(&[("streamtype", "error")]),
            "\"port\" header is required"
        );
        assert_eq!(
            error(&[("streamtype", "error"), ("port", "0")]),
            "port \"0\" must be > 0"
        );
        assert!(
            error(&[("streamtype", "error"), ("port", "http")])
                .starts_with("unable to parse \"http\" as a port")
        );
        assert_eq!(
            error(&[("streamtype", "error"), ("port", "80")]),
            "\"requestID\" header is required"
        );
    }

    #[test]
    fn a_spdy_upgrade_must_offer_port_forwarding() {
        let mut headers = HeaderMap::new();
        assert!(!offers_port_forward(&headers));
        headers.append(
            PROTOCOL_VERSION_HEADER,
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        assert!(!offers_port_forward(&headers));
        headers.append(
            PROTOCOL_VERSION_HEADER,
            HeaderValue::from_static(PORT_FORWARD_PROTOCOL),
        );
        assert!(offers_port_forward(&headers));
        let response = spdy_switching_protocols();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers()[header::UPGRADE], SPDY_UPGRADE);
        assert_eq!(
            response.headers()[PROTOCOL_VERSION_HEADER],
            PORT_FORWARD_PROTOCOL
        );
    }
}
