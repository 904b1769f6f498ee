//! `/attach/{namespace}/{pod}/{container}`: `kubectl attach` (and `kubectl run -i`) to a
//! running container, over the same WebSocket channel protocols as exec ([`super::exec`]).
//!
//! The container's monitor owns its stdio; the session connects to the monitor's stdio
//! socket ([`gantry_runtime::AttachFrame`] describes the protocol) and relays the live
//! output to the client, the client's stdin to the container (when it was created with
//! `stdin: true`) and the client's terminal sizes to its pty (with `tty: true`). When the
//! client's stdin ends, or the session does, the monitor is told, so a `stdinOnce`
//! container's stdin closes after its first session.

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use futures::{Stream, StreamExt as _};
use gantry_runtime::{AttachFrame, FRAME_HEADER_LEN, Runtime};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::exec::{
    Channel, Outcome, RESIZE_QUEUE, SessionIo, StreamError, StreamRequest, StreamService,
    TerminalSize, first_channel, negotiate, run_session, running_container,
};

/// How much client stdin is buffered on its way to the monitor.
const STDIN_BUFFER: usize = 64 * 1024;

/// The handler: checks the container and the upgrade, then runs the session.
pub async fn attach(
    State(service): State<StreamService>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, StreamError> {
    let request = StreamRequest::from_query(query.as_deref().unwrap_or_default())?;
    let target = running_container(&service.runtime, &namespace, &pod, &container).await?;
    if request.stdin && !target.config.open_stdin {
        return Err(StreamError::StdinNotOpen { container, pod });
    }
    let upgrade = negotiate(upgrade)?;
    let tasks = service.tasks.clone();
    let tty = target.config.tty;
    Ok(upgrade.on_upgrade(move |socket| {
        tasks.track_future(attach_session(
            service,
            target.config.id,
            tty,
            request,
            socket,
        ))
    }))
}

async fn attach_session(
    service: StreamService,
    id: String,
    tty: bool,
    request: StreamRequest,
    socket: WebSocket,
) {
    let first = first_channel(&request);
    let (from_monitor, mut to_monitor) = match connect(&service.runtime, &id).await {
        Ok(stream) => stream.into_split(),
        Err(error) => {
            let io = SessionIo {
                stdin: None,
                resize: None,
                output: futures::stream::empty(),
                outcome: std::future::ready(Outcome::Failed(format!(
                    "attaching to the container: {error}"
                ))),
            };
            run_session(socket, first, Vec::new(), io, service.shutdown).await;
            return;
        }
    };
    let route = Route::new(tty, &request);
    let output = monitor_frames(from_monitor)
        .filter_map(move |frame| std::future::ready(route.message(frame)));
    let (stdin, typed) = if request.stdin {
        // A duplex, not a simplex: its reader sees EOF when the writer is dropped, so a
        // client that leaves without closing stdin still ends the input forwarding.
        let (typed, stdin) = tokio::io::duplex(STDIN_BUFFER);
        (
            Some(Box::new(stdin) as Box<dyn AsyncWrite + Send + Unpin>),
            Some(typed),
        )
    } else {
        (None, None)
    };
    let (resize, sizes) = mpsc::channel(RESIZE_QUEUE);
    let io = SessionIo {
        stdin,
        resize: tty.then_some(resize),
        output: Box::pin(output),
        outcome: std::future::ready(Outcome::Finished),
    };
    let session = run_session(socket, first, Vec::new(), io, service.shutdown);
    // The connection stays open until the session ends: closing it would end the
    // monitor's side, and with it the output.
    let (_, forwarded) = tokio::join!(session, forward_input(&mut to_monitor, typed, sizes));
    if let Err(error) = forwarded {
        tracing::debug!(%error, "kubelet API: attach input to the monitor");
    }
}

/// The container's stdio socket.
async fn connect(runtime: &Runtime, id: &str) -> Result<UnixStream, gantry_runtime::Error> {
    let (runtime, id) = (runtime.clone(), id.to_owned());
    let stream = tokio::task::spawn_blocking(move || {
        let stream = runtime.attach(&id)?;
        stream
            .set_nonblocking(true)
            .map_err(|e| gantry_runtime::Error::Spec(format!("stdio socket: {e}")))?;
        Ok::<_, gantry_runtime::Error>(stream)
    })
    .await
    .map_err(|e| gantry_runtime::Error::Spec(format!("attach task failed: {e}")))??;
    UnixStream::from_std(stream)
        .map_err(|e| gantry_runtime::Error::Spec(format!("stdio socket: {e}")))
}

/// Reads one frame of the stdio socket protocol; `None` at the end of the stream.
pub(crate) async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
) -> std::io::Result<Option<AttachFrame>> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let (kind, length) = AttachFrame::parse_header(header)?;
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await?;
    Ok(Some(AttachFrame::from_parts(kind, payload)?))
}

/// The monitor's frames until it closes the connection (the container exited).
fn monitor_frames<R>(reader: R) -> impl Stream<Item = AttachFrame>
where
    R: AsyncRead + Send + Unpin,
{
    futures::stream::unfold(reader, |mut reader| async move {
        match read_frame(&mut reader).await {
            Ok(Some(frame)) => Some((frame, reader)),
            Ok(None) => None,
            Err(error) => {
                tracing::debug!(%error, "kubelet API: reading the stdio socket");
                None
            }
        }
    })
}

/// Sends the client's stdin and terminal sizes to the monitor until both end; the end
/// of stdin (the client closed it, or the session is over) is sent as `CloseStdin`.
async fn forward_input<W, R>(
    monitor: &mut W,
    mut stdin: Option<R>,
    sizes: mpsc::Receiver<TerminalSize>,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let mut sizes = Some(sizes);
    let mut buffer = vec![0u8; STDIN_BUFFER];
    while stdin.is_some() || sizes.is_some() {
        tokio::select! {
            read = read_some(&mut stdin, &mut buffer) => {
                let frame = match read {
                    Ok(0) | Err(_) => {
                        stdin = None;
                        AttachFrame::CloseStdin
                    }
                    Ok(n) => AttachFrame::Stdin(buffer[..n].to_vec()),
                };
                monitor.write_all(&frame.encode()).await?;
            }
            size = next_size(&mut sizes) => match size {
                Some(size) => {
                    let frame = AttachFrame::Resize { rows: size.height, cols: size.width };
                    monitor.write_all(&frame.encode()).await?;
                }
                None => sizes = None,
            },
        }
    }
    monitor.flush().await
}

/// Reads from `source`, or waits forever when there is none.
async fn read_some<R: AsyncRead + Unpin>(
    source: &mut Option<R>,
    buffer: &mut [u8],
) -> std::io::Result<usize> {
    match source {
        Some(reader) => reader.read(buffer).await,
        None => std::future::pending().await,
    }
}

/// The next size, `None` once the sender is gone; waits forever when there is none.
async fn next_size(sizes: &mut Option<mpsc::Receiver<TerminalSize>>) -> Option<TerminalSize> {
    match sizes {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// Which channel each of the container's streams goes to, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Route {
    stdout: Option<Channel>,
    stderr: Option<Channel>,
}

impl Route {
    /// A terminal has one stream, stdout; otherwise each goes where it was asked for.
    fn new(tty: bool, request: &StreamRequest) -> Route {
        let stdout = request.stdout.then_some(Channel::Stdout);
        let stderr = if tty {
            stdout
        } else {
            request.stderr.then_some(Channel::Stderr)
        };
        Route { stdout, stderr }
    }

    /// The message for an output frame, if the client asked for its stream.
    fn message(self, frame: AttachFrame) -> Option<(Channel, Bytes)> {
        let (channel, data) = match frame {
            AttachFrame::Stdout(data) => (self.stdout?, data),
            AttachFrame::Stderr(data) => (self.stderr?, data),
            _ => return None,
        };
        Some((channel, Bytes::from(data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<AttachFrame> {
        vec![
            AttachFrame::Stdout(b"out\n".to_vec()),
            AttachFrame::Stderr(b"err\n".to_vec()),
        ]
    }

    fn routed(route: Route) -> Vec<(Channel, Bytes)> {
        frames()
            .into_iter()
            .filter_map(|f| route.message(f))
            .collect()
    }

    #[test]
    fn output_goes_to_the_channels_asked_for() {
        let both = StreamRequest {
            stdout: true,
            stderr: true,
            ..StreamRequest::default()
        };
        assert_eq!(
            routed(Route::new(false, &both)),
            [
                (Channel::Stdout, Bytes::from("out\n")),
                (Channel::Stderr, Bytes::from("err\n"))
            ]
        );
        let stdout_only = StreamRequest {
            stdout: true,
            ..StreamRequest::default()
        };
        assert_eq!(
            routed(Route::new(false, &stdout_only)),
            [(Channel::Stdout, Bytes::from("out\n"))]
        );
        assert_eq!(
            routed(Route::new(true, &stdout_only)).len(),
            2,
            "a terminal's output is all stdout"
        );
    }

    #[tokio::test]
    async fn input_reaches_the_monitor_as_frames_ending_with_close_stdin() {
        let (mut monitor, agent) = tokio::io::duplex(1024);
        let (typed, mut stdin) = tokio::io::duplex(64);
        let (resize, sizes) = mpsc::channel(RESIZE_QUEUE);
        let forwarding = tokio::spawn(async move {
            let mut agent = agent;
            forward_input(&mut agent, Some(typed), sizes).await
        });

        resize
            .send(TerminalSize {
                width: 80,
                height: 24,
            })
            .await
            .unwrap();
        assert_eq!(
            read_frame(&mut monitor).await.unwrap(),
            Some(AttachFrame::Resize { rows: 24, cols: 80 })
        );
        stdin.write_all(b"ls\n").await.unwrap();
        assert_eq!(
            read_frame(&mut monitor).await.unwrap(),
            Some(AttachFrame::Stdin(b"ls\n".to_vec()))
        );
        drop(stdin);
        assert_eq!(
            read_frame(&mut monitor).await.unwrap(),
            Some(AttachFrame::CloseStdin)
        );
        drop(resize);
        forwarding.await.unwrap().unwrap();
        assert_eq!(read_frame(&mut monitor).await.unwrap(), None);
    }

    #[tokio::test]
    async fn monitor_frames_end_with_the_connection() {
        let (agent, mut monitor) = tokio::io::duplex(1024);
        for frame in frames() {
            monitor.write_all(&frame.encode()).await.unwrap();
        }
        drop(monitor);
        let received: Vec<AttachFrame> = monitor_frames(agent).collect().await;
        assert_eq!(received, frames());
    }
}
