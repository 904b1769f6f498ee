//! `/exec/{namespace}/{pod}/{container}`: runs a command in a pod's container for
//! `kubectl exec` (and `kubectl cp`, which execs `tar` there), speaking the WebSocket
//! channel protocols of the kubelet's streaming server (`v5.channel.k8s.io`,
//! `v4.channel.k8s.io`).
//!
//! Every binary message starts with a channel byte: 0 stdin, 1 stdout, 2 stderr,
//! 3 the final `metav1.Status`, 4 terminal resize (`{"Width":..,"Height":..}`), and, in
//! v5 only, 255 = "close channel N" (the client's stdin EOF). The session machinery here
//! is shared with [`super::attach`].
//!
//! The command runs through `gantry exec` in a child process, as the probes do, so no
//! container process is forked from this multi-threaded server. With a terminal,
//! `gantry exec` hands the pty master back over a console socket ([`terminal`])
//! and this server relays and resizes it.

mod terminal;

use std::path::PathBuf;
use std::process::Stdio;

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt as _, Stream, StreamExt as _};
use gantry_runtime::{Container, Runtime, Status};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pods::naming::ContainerName;

/// The channel protocol with stream close (stdin EOF); kubectl 1.30+ prefers it.
pub const V5_PROTOCOL: &str = "v5.channel.k8s.io";
/// The channel protocol before stream close; still offered by older clients.
pub const V4_PROTOCOL: &str = "v4.channel.k8s.io";
/// What this server speaks, best first: the upgrade picks the first one the client offers.
pub const PROTOCOLS: [&str; 2] = [V5_PROTOCOL, V4_PROTOCOL];
/// The v5 pseudo-channel whose one data byte names a channel the sender closed.
const CLOSE_CHANNEL: u8 = 255;
/// How much of a pipe is read into one message.
const CHUNK_SIZE: usize = 32 * 1024;
/// Terminal sizes waiting to be applied; only the latest matters, so a full
/// queue drops the newcomer.
pub(crate) const RESIZE_QUEUE: usize = 8;

/// The streams of a channel protocol session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Client to process.
    Stdin,
    /// Process to client.
    Stdout,
    /// Process to client (never used with a terminal, which merges it into stdout).
    Stderr,
    /// Server to client: the final `metav1.Status`, then the connection closes.
    Error,
    /// Client to server: the terminal's new size.
    Resize,
}

impl Channel {
    /// The byte that prefixes this channel's messages.
    pub fn id(self) -> u8 {
        match self {
            Channel::Stdin => 0,
            Channel::Stdout => 1,
            Channel::Stderr => 2,
            Channel::Error => 3,
            Channel::Resize => 4,
        }
    }
}

/// A terminal size as kubectl sends it on the resize channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// What one message from the client means.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// Bytes for the process's stdin.
    Stdin(Bytes),
    /// The client's stdin ended (v5 close of channel 0).
    CloseStdin,
    /// The client's terminal changed size.
    Resize(TerminalSize),
    /// A frame this server has no use for (empty, another channel, a close of another
    /// channel); upstream ignores these too.
    Ignored,
}

/// A client message that breaks the protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A resize message that is not `{"Width":..,"Height":..}`.
    #[error("invalid resize message: {0}")]
    InvalidResize(String),
}

/// Decodes one binary message from the client.
pub fn decode_client_frame(message: &[u8]) -> Result<ClientFrame, FrameError> {
    let Some((&channel, data)) = message.split_first() else {
        return Ok(ClientFrame::Ignored);
    };
    match channel {
        0 => Ok(ClientFrame::Stdin(Bytes::copy_from_slice(data))),
        4 => serde_json::from_slice(data)
            .map(ClientFrame::Resize)
            .map_err(|e| FrameError::InvalidResize(e.to_string())),
        CLOSE_CHANNEL if data.first() == Some(&Channel::Stdin.id()) => Ok(ClientFrame::CloseStdin),
        _ => Ok(ClientFrame::Ignored),
    }
}

/// One message for the client: the channel byte, then the data.
pub fn encode_frame(channel: Channel, data: &[u8]) -> Bytes {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel.id());
    message.extend_from_slice(data);
    Bytes::from(message)
}

/// The stream options of an exec or attach request (kubelet's `remotecommand.Options`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamRequest {
    /// Relay the client's stdin.
    pub stdin: bool,
    /// Relay the process's stdout.
    pub stdout: bool,
    /// Relay the process's stderr (ignored with a terminal).
    pub stderr: bool,
    /// Run the process on a pseudo-terminal.
    pub tty: bool,
    /// The command and its arguments (exec only).
    pub command: Vec<String>,
}

/// Why a request was refused before the upgrade, worded as the kubelet words it.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A query parameter could not be read.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// Not one of stdin, stdout and stderr was asked for.
    #[error("you must specify at least 1 of stdin, stdout, stderr")]
    NoStreams,
    /// An exec without a command.
    #[error("you must specify at least 1 command")]
    NoCommand,
    /// Not a WebSocket upgrade, or none of the offered subprotocols is spoken here.
    #[error(
        "this kubelet streams only over WebSocket with {V5_PROTOCOL} or {V4_PROTOCOL} (SPDY is not supported): {0}"
    )]
    NotWebSocket(String),
    /// No attempt of that container exists on this node.
    #[error("container not found ({container:?})")]
    ContainerNotFound {
        /// The container's name in the pod.
        container: String,
    },
    /// The container exists but is not running.
    #[error("container {container:?} in pod {pod:?} is not running")]
    NotRunning {
        /// The container's name in the pod.
        container: String,
        /// The pod.
        pod: String,
    },
    /// Attach with stdin to a container that was not created with stdin open.
    #[error("container {container:?} in pod {pod:?} was not started with stdin open")]
    StdinNotOpen {
        /// The container's name in the pod.
        container: String,
        /// The pod.
        pod: String,
    },
    /// The engine failed to read its state.
    #[error("reading the container state: {0}")]
    Runtime(#[from] gantry_runtime::Error),
}

impl IntoResponse for StreamError {
    fn into_response(self) -> Response {
        let code = match self {
            StreamError::ContainerNotFound { .. } => StatusCode::NOT_FOUND,
            StreamError::Runtime(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        (code, self.to_string()).into_response()
    }
}

impl StreamRequest {
    /// Reads the query string: repeated `command`, and Go-style booleans.
    pub fn from_query(query: &str) -> Result<StreamRequest, StreamError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| StreamError::InvalidQuery(e.to_string()))?;
        let mut request = StreamRequest::default();
        for (key, value) in pairs {
            let flag = || {
                parse_go_bool(&value)
                    .ok_or_else(|| StreamError::InvalidQuery(format!("{key}={value:?}")))
            };
            match key.as_str() {
                "command" => request.command.push(value),
                "stdin" | "input" => request.stdin = flag()?,
                "stdout" | "output" => request.stdout = flag()?,
                "stderr" | "error" => request.stderr = flag()?,
                "tty" => request.tty = flag()?,
                _ => {}
            }
        }
        if request.tty {
            // The terminal merges stderr into stdout, as upstream's options do.
            request.stderr = false;
        }
        if !(request.stdin || request.stdout || request.stderr) {
            return Err(StreamError::NoStreams);
        }
        Ok(request)
    }
}

/// Go's `strconv.ParseBool`, which the kubelet uses for these parameters.
fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// How a streamed command ended, for the error channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited with this code (signals as 128 + N).
    Exited(i32),
    /// The session ended normally without an exit code (attach).
    Finished,
    /// The command could not be run.
    Failed(String),
}

/// The `metav1.Status` the kubelet writes on the error channel: Success, a
/// `NonZeroExitCode` failure whose cause carries the code (kubectl exits with it), or
/// an internal error.
pub fn outcome_status(outcome: &Outcome, command: &[String]) -> Value {
    match outcome {
        Outcome::Exited(0) | Outcome::Finished => json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(message) => json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "code": 500,
        }),
    }
}

/// What the streaming endpoints share across requests.
#[derive(Clone)]
pub struct StreamService {
    /// The engine the pods' containers run on.
    pub runtime: Runtime,
    /// The engine's root directory, passed to `gantry exec`.
    pub engine_root: PathBuf,
    /// The `gantry` binary.
    pub gantry: PathBuf,
    /// Owns the sessions so the agent waits for them on shutdown.
    pub tasks: TaskTracker,
    /// Ends every session when the agent stops.
    pub shutdown: CancellationToken,
}

/// The current attempt of `container` in the newest instance (UID) of the pod, which
/// must be running.
pub(crate) async fn running_container(
    runtime: &Runtime,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<Container, StreamError> {
    let runtime = runtime.clone();
    let (namespace, pod, container) = (namespace.to_owned(), pod.to_owned(), container.to_owned());
    let containers = tokio::task::spawn_blocking(move || runtime.list())
        .await
        .map_err(|e| gantry_runtime::Error::Spec(format!("engine task failed: {e}")))??;
    // Newest first, so the first match belongs to the current pod instance.
    let attempts: Vec<(ContainerName, Container)> = containers
        .into_iter()
        .filter_map(|c| ContainerName::parse(&c.config.name).map(|name| (name, c)))
        .filter(|(name, _)| {
            name.namespace == namespace && name.pod == pod && name.container == container
        })
        .collect();
    let Some(uid) = attempts.first().map(|(name, _)| name.uid.clone()) else {
        return Err(StreamError::ContainerNotFound { container });
    };
    let current = attempts
        .into_iter()
        .filter(|(name, _)| name.uid == uid)
        .max_by_key(|(name, _)| name.attempt)
        .map(|(_, c)| c)
        .ok_or_else(|| StreamError::ContainerNotFound {
            container: container.clone(),
        })?;
    if current.state.status != Status::Running {
        return Err(StreamError::NotRunning { container, pod });
    }
    Ok(current)
}

/// Accepts the WebSocket upgrade with the best common subprotocol, or says why not.
pub(crate) fn negotiate(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, StreamError> {
    let upgrade = upgrade
        .map_err(|rejection| StreamError::NotWebSocket(rejection.body_text()))?
        .protocols(PROTOCOLS);
    if upgrade.selected_protocol().is_none() {
        let offered: Vec<String> = upgrade
            .requested_protocols()
            .filter_map(|p| p.to_str().ok().map(str::to_owned))
            .collect();
        return Err(StreamError::NotWebSocket(format!(
            "the client offered {offered:?}"
        )));
    }
    Ok(upgrade)
}

/// The ends of a session that are not the socket: where stdin goes, what to send,
/// and how it ended.
pub(crate) struct SessionIo<O, F> {
    /// The process's stdin, when the client's is relayed.
    pub stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Where terminal sizes go, when the session has a terminal that can be resized.
    pub resize: Option<tokio::sync::mpsc::Sender<TerminalSize>>,
    /// The output to relay; it ends when the process's output does.
    pub output: O,
    /// Resolves, after the output ended, to how the session ended.
    pub outcome: F,
}

/// Runs one session: relays client frames to stdin and resize, output to the client,
/// then the final status, then closes. Ends early (dropping the process side) when the
/// client goes away or the agent stops.
pub(crate) async fn run_session<O, F>(
    socket: WebSocket,
    first_channel: Channel,
    command: Vec<String>,
    io: SessionIo<O, F>,
    shutdown: CancellationToken,
) where
    O: Stream<Item = (Channel, Bytes)> + Send + Unpin,
    F: Future<Output = Outcome> + Send,
{
    let SessionIo {
        mut stdin,
        resize,
        mut output,
        outcome,
    } = io;
    let (mut sink, mut stream) = socket.split();
    let inbound = async {
        while let Some(Ok(message)) = stream.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => return,
                _ => continue,
            };
            match decode_client_frame(&data) {
                Ok(ClientFrame::Stdin(bytes)) => {
                    if let Some(writer) = stdin.as_mut()
                        && writer.write_all(&bytes).await.is_err()
                    {
                        stdin = None;
                    }
                }
                Ok(ClientFrame::CloseStdin) => {
                    if let Some(mut writer) = stdin.take() {
                        let _ = writer.shutdown().await;
                    }
                }
                Ok(ClientFrame::Resize(size)) => {
                    if let Some(resize) = &resize {
                        // Only the latest size matters; a full queue drops this one.
                        let _ = resize.try_send(size);
                    }
                }
                Ok(ClientFrame::Ignored) => {}
                Err(error) => tracing::debug!(%error, "kubelet API: ignoring a client frame"),
            }
        }
    };
    let outbound = async {
        // Upstream announces the session with an empty message on the first
        // writable channel.
        sink.send(Message::Binary(encode_frame(first_channel, &[])))
            .await?;
        while let Some((channel, data)) = output.next().await {
            sink.send(Message::Binary(encode_frame(channel, &data)))
                .await?;
        }
        let status = outcome_status(&outcome.await, &command);
        sink.send(Message::Binary(encode_frame(
            Channel::Error,
            status.to_string().as_bytes(),
        )))
        .await?;
        // A normal closure: kubectl treats any other end as an error of every stream.
        sink.send(Message::Close(Some(CloseFrame {
            code: close_code::NORMAL,
            reason: "".into(),
        })))
        .await?;
        sink.close().await
    };
    tokio::select! {
        () = inbound => tracing::debug!("kubelet API: stream client went away"),
        sent = outbound => if let Err(error) = sent {
            tracing::debug!(%error, "kubelet API: stream closed while sending");
        },
        () = shutdown.cancelled() => {}
    }
}

/// A reader as a stream of messages on `channel`, ending at EOF or a read error.
pub(crate) fn read_chunks<R>(reader: R, channel: Channel) -> impl Stream<Item = (Channel, Bytes)>
where
    R: AsyncRead + Send + Unpin,
{
    futures::stream::unfold(reader, move |mut reader| async move {
        let mut buffer = vec![0u8; CHUNK_SIZE];
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some(((channel, Bytes::from(buffer)), reader))
            }
        }
    })
}

/// The first channel the client will see data on, where upstream announces the session.
pub(crate) fn first_channel(request: &StreamRequest) -> Channel {
    if request.stdout {
        Channel::Stdout
    } else if request.stderr {
        Channel::Stderr
    } else {
        Channel::Error
    }
}

/// The handler: checks the container and the upgrade, then runs the session.
pub async fn exec(
    State(service): State<StreamService>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, StreamError> {
    let request = StreamRequest::from_query(query.as_deref().unwrap_or_default())?;
    if request.command.is_empty() {
        return Err(StreamError::NoCommand);
    }
    let target = running_container(&service.runtime, &namespace, &pod, &container).await?;
    let upgrade = negotiate(upgrade)?;
    let tasks = service.tasks.clone();
    Ok(upgrade.on_upgrade(move |socket| {
        tasks.track_future(async move {
            if request.tty {
                exec_on_terminal(service, target.config.id, request, socket).await;
            } else {
                exec_session(service, target.config.id, request, socket).await;
            }
        })
    }))
}

/// `gantry --root R exec`, the flags for `request`'s streams, then `args`.
fn gantry_exec(service: &StreamService, flags: &[&std::ffi::OsStr]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(&service.gantry);
    command
        .arg("--root")
        .arg(&service.engine_root)
        .arg("exec")
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Ends a session that could not start its command, saying why.
async fn fail_session(
    service: StreamService,
    socket: WebSocket,
    request: StreamRequest,
    message: String,
) {
    let io = SessionIo {
        stdin: None,
        resize: None,
        output: futures::stream::empty(),
        outcome: std::future::ready(Outcome::Failed(message)),
    };
    let first = first_channel(&request);
    run_session(socket, first, request.command, io, service.shutdown).await;
}

/// Runs `gantry exec -t` with its terminal sent back here over a console socket,
/// then relays the terminal itself: the client's stdin in, the output out, and
/// each size from the resize channel applied to it (TIOCSWINSZ), kubectl's
/// initial size included.
async fn exec_on_terminal(
    service: StreamService,
    id: String,
    request: StreamRequest,
    socket: WebSocket,
) {
    let console = match terminal::ConsoleSocket::bind() {
        Ok(console) => console,
        Err(error) => {
            let message = format!("creating a console socket: {error}");
            return fail_session(service, socket, request, message).await;
        }
    };
    let mut command = gantry_exec(
        &service,
        &[
            "-t".as_ref(),
            "--console-socket".as_ref(),
            console.path().as_os_str(),
        ],
    );
    command
        .arg(&id)
        .arg("--")
        .args(&request.command)
        .stdin(Stdio::null());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let message = format!("starting {}: {error}", service.gantry.display());
            return fail_session(service, socket, request, message).await;
        }
    };
    // What `gantry exec` itself says (it could not start the command) goes to
    // stdout, the only channel a terminal has.
    let messages = futures::stream::select(
        futures::stream::iter(child.stdout.take().map(|p| read_chunks(p, Channel::Stdout)))
            .flatten(),
        futures::stream::iter(child.stderr.take().map(|p| read_chunks(p, Channel::Stdout)))
            .flatten(),
    );
    let accepted = tokio::select! {
        biased;
        accepted = console.accept() => accepted.map(Some),
        // It failed before making a terminal, or made one and already finished.
        _ = child.wait() => console.accept_queued(),
    };
    let relay = match accepted {
        Ok(Some(stream)) => terminal::receive_terminal(stream)
            .await
            .and_then(|received| received.relay(request.stdin))
            .map(Some),
        other => other.map(|_| None),
    }
    .unwrap_or_else(|error| {
        tracing::debug!(%error, "kubelet API: exec gave no terminal");
        None
    });
    let (stdin, output, master) = match relay {
        Some(relay) => (relay.input, Some(relay.output), Some(relay.terminal)),
        None => (None, None, None),
    };
    let (resize, sizes) = tokio::sync::mpsc::channel(RESIZE_QUEUE);
    let output = futures::stream::select(
        messages,
        futures::stream::iter(output.map(|o| read_chunks(o, Channel::Stdout))).flatten(),
    );
    let outcome = async {
        match child.wait().await {
            Ok(status) => Outcome::Exited(exit_code(status)),
            Err(error) => Outcome::Failed(format!("waiting for the command: {error}")),
        }
    };
    let io = SessionIo {
        stdin,
        resize: Some(resize),
        output: Box::pin(output),
        outcome,
    };
    let first = first_channel(&request);
    let session = run_session(socket, first, request.command, io, service.shutdown);
    tokio::join!(session, terminal::apply_sizes(master, sizes));
}

/// Runs `gantry exec` without a terminal for one session and relays its pipes.
async fn exec_session(
    service: StreamService,
    id: String,
    request: StreamRequest,
    socket: WebSocket,
) {
    let first = first_channel(&request);
    let flags: &[&std::ffi::OsStr] = if request.stdin { &["-i".as_ref()] } else { &[] };
    let mut command = gantry_exec(&service, flags);
    command
        .arg(&id)
        .arg("--")
        .args(&request.command)
        .stdin(if request.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let message = format!("starting {}: {error}", service.gantry.display());
            return fail_session(service, socket, request, message).await;
        }
    };
    let stdin = child
        .stdin
        .take()
        .map(|pipe| Box::new(pipe) as Box<dyn AsyncWrite + Send + Unpin>);
    let stdout = child
        .stdout
        .take()
        .map(|pipe| read_chunks(pipe, Channel::Stdout));
    let stderr = child
        .stderr
        .take()
        .map(|pipe| read_chunks(pipe, Channel::Stderr));
    let wanted = |channel: Channel| match channel {
        Channel::Stdout => request.stdout,
        Channel::Stderr => request.stderr,
        _ => false,
    };
    let output = futures::stream::select(
        futures::stream::iter(stdout).flatten(),
        futures::stream::iter(stderr).flatten(),
    )
    .filter(move |(channel, _)| std::future::ready(wanted(*channel)));
    let outcome = async {
        match child.wait().await {
            Ok(status) => Outcome::Exited(exit_code(status)),
            Err(error) => Outcome::Failed(format!("waiting for the command: {error}")),
        }
    };
    let io = SessionIo {
        stdin,
        resize: None,
        output: Box::pin(output),
        outcome,
    };
    run_session(socket, first, request.command, io, service.shutdown).await;
}

/// A process's exit code, with death by signal N reported as 128 + N like a shell.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(255)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_decode_by_channel() {
        assert_eq!(
            decode_client_frame(b"\x00hello").unwrap(),
            ClientFrame::Stdin(Bytes::from_static(b"hello"))
        );
        assert_eq!(
            decode_client_frame(&[255, 0]).unwrap(),
            ClientFrame::CloseStdin
        );
        assert_eq!(
            decode_client_frame(b"\x04{\"Width\":80,\"Height\":24}").unwrap(),
            ClientFrame::Resize(TerminalSize {
                width: 80,
                height: 24
            })
        );
        assert!(matches!(
            decode_client_frame(b"\x04{\"Width\":-1}"),
            Err(FrameError::InvalidResize(_))
        ));
        assert_eq!(decode_client_frame(&[]).unwrap(), ClientFrame::Ignored);
        assert_eq!(
            decode_client_frame(&[255, 1]).unwrap(),
            ClientFrame::Ignored
        );
        assert_eq!(
            decode_client_frame(b"\x01out").unwrap(),
            ClientFrame::Ignored
        );
    }

    #[test]
    fn server_frames_start_with_the_channel_byte() {
        assert_eq!(&encode_frame(Channel::Stdout, b"hi")[..], b"\x01hi");
        assert_eq!(&encode_frame(Channel::Stderr, b"")[..], b"\x02");
        assert_eq!(encode_frame(Channel::Error, b"{}")[0], 3);
    }

    #[test]
    fn query_gives_streams_and_the_command_in_order() {
        let request = StreamRequest::from_query(
            "command=sh&command=-c&command=echo+a%26b&container=app&stdin=true&stdout=1&tty=true&stderr=true",
        )
        .unwrap();
        assert_eq!(request.command, ["sh", "-c", "echo a&b"]);
        assert!(request.stdin && request.stdout && request.tty);
        assert!(!request.stderr, "a terminal has no separate stderr");
        assert!(matches!(
            StreamRequest::from_query("command=ls"),
            Err(StreamError::NoStreams)
        ));
        assert!(matches!(
            StreamRequest::from_query("stdout=yes"),
            Err(StreamError::InvalidQuery(_))
        ));
    }

    #[test]
    fn exit_codes_become_upstreams_statuses() {
        let command = vec!["sh".to_owned(), "-c".to_owned(), "exit 3".to_owned()];
        assert_eq!(
            outcome_status(&Outcome::Exited(0), &command)["status"],
            "Success"
        );
        let failed = outcome_status(&Outcome::Exited(3), &command);
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        let internal = outcome_status(&Outcome::Failed("boom".into()), &command);
        assert_eq!(internal["reason"], "InternalError");
        assert_eq!(internal["message"], "boom");
    }
}
