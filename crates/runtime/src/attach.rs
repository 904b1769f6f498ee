//! The container's stdio socket, `<dir>/stdio.sock`: how a client that did not
//! start the container (the node agent serving `kubectl attach`) reaches its
//! stdin, its live output and its terminal size, while the monitor keeps
//! writing the output to the log (like conmon's attach socket).
//!
//! # Protocol
//!
//! Both directions carry frames: one kind byte, the payload length as a
//! big-endian `u32`, then the payload (at most [`MAX_PAYLOAD`] bytes).
//!
//! | kind | direction        | payload                                         |
//! |------|------------------|-------------------------------------------------|
//! | 0    | client → monitor | bytes for the container's stdin                 |
//! | 1    | monitor → client | bytes the container wrote to stdout (or its tty)|
//! | 2    | monitor → client | bytes the container wrote to stderr             |
//! | 4    | client → monitor | terminal size: rows, columns (`u16` BE each)    |
//! | 255  | client → monitor | the client's stdin ended (empty)                |
//!
//! The kinds match the channel numbers of Kubernetes' stream protocol. Every
//! connected client receives the output written after it connected; the
//! monitor closes the connection once the container has exited and its
//! output is drained. When the container was created with `stdin_once` and no
//! terminal, the first "stdin ended" closes the container's stdin for good
//! (the process reads EOF), as the kubelet's `stdinOnce` asks; otherwise stdin
//! stays open for the next client. Stdin frames for a container without
//! stdin, and resizes for one without a terminal, are ignored.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{Error, Result, Runtime, tty};

/// The largest payload a frame may carry; bigger ones are a protocol error
/// (senders split their data).
pub const MAX_PAYLOAD: usize = 1 << 20;
/// The length of every frame's header (kind and payload length), for readers
/// that parse frames themselves.
pub const FRAME_HEADER_LEN: usize = 5;
/// The socket's file name in the container's directory.
pub(crate) const STDIO_SOCKET: &str = "stdio.sock";
/// Output frames queued for one client before it counts as stuck and is dropped
/// (a slow client must never stall the container's output).
const CLIENT_QUEUE_FRAMES: usize = 256;
/// How long a write to a client may block before the client is dropped.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// `sun_path` holds 108 bytes with its NUL; longer paths go through `/proc/self/fd`.
const MAX_SOCKET_PATH: usize = 107;

/// One message of the stdio socket protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachFrame {
    /// Bytes for the container's stdin.
    Stdin(Vec<u8>),
    /// Bytes the container wrote to stdout (everything, with a terminal).
    Stdout(Vec<u8>),
    /// Bytes the container wrote to stderr.
    Stderr(Vec<u8>),
    /// The client's terminal size.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// The client's stdin ended.
    CloseStdin,
}

/// Bytes that are not a frame of this protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The kind byte names no frame.
    #[error("unknown attach frame kind {0}")]
    UnknownKind(u8),
    /// The length exceeds [`MAX_PAYLOAD`].
    #[error("attach frame of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    /// A fixed-size payload has the wrong size.
    #[error("attach frame kind {kind} needs {expected} bytes of payload, got {actual}")]
    BadLength {
        /// The kind byte.
        kind: u8,
        /// The size that kind has.
        expected: usize,
        /// The size received.
        actual: usize,
    },
}

impl From<FrameError> for io::Error {
    fn from(error: FrameError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, error)
    }
}

impl AttachFrame {
    fn kind(&self) -> u8 {
        match self {
            AttachFrame::Stdin(_) => 0,
            AttachFrame::Stdout(_) => 1,
            AttachFrame::Stderr(_) => 2,
            AttachFrame::Resize { .. } => 4,
            AttachFrame::CloseStdin => 255,
        }
    }

    /// The frame as bytes on the wire; data longer than [`MAX_PAYLOAD`] must be
    /// split by the caller.
    pub fn encode(&self) -> Vec<u8> {
        let resize;
        let payload: &[u8] = match self {
            AttachFrame::Stdin(data) | AttachFrame::Stdout(data) | AttachFrame::Stderr(data) => {
                data
            }
            AttachFrame::Resize { rows, cols } => {
                resize = [rows.to_be_bytes(), cols.to_be_bytes()].concat();
                &resize
            }
            AttachFrame::CloseStdin => &[],
        };
        let mut bytes = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
        bytes.push(self.kind());
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// Reads a frame header: the kind and the payload length, checked.
    pub fn parse_header(header: [u8; FRAME_HEADER_LEN]) -> Result<(u8, usize), FrameError> {
        let [kind, length @ ..] = header;
        let length = u32::from_be_bytes(length) as usize;
        if length > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(length));
        }
        Ok((kind, length))
    }

    /// Builds the frame of `kind` from its payload.
    pub fn from_parts(kind: u8, payload: Vec<u8>) -> Result<AttachFrame, FrameError> {
        let exactly = |expected: usize| {
            if payload.len() == expected {
                Ok(())
            } else {
                Err(FrameError::BadLength {
                    kind,
                    expected,
                    actual: payload.len(),
                })
            }
        };
        match kind {
            0 => Ok(AttachFrame::Stdin(payload)),
            1 => Ok(AttachFrame::Stdout(payload)),
            2 => Ok(AttachFrame::Stderr(payload)),
            4 => {
                exactly(4)?;
                Ok(AttachFrame::Resize {
                    rows: u16::from_be_bytes([payload[0], payload[1]]),
                    cols: u16::from_be_bytes([payload[2], payload[3]]),
                })
            }
            255 => {
                exactly(0)?;
                Ok(AttachFrame::CloseStdin)
            }
            other => Err(FrameError::UnknownKind(other)),
        }
    }

    /// Reads one frame; `None` when the stream ends between frames.
    pub fn read_from(reader: &mut impl Read) -> io::Result<Option<AttachFrame>> {
        let mut header = [0u8; FRAME_HEADER_LEN];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let (kind, length) = AttachFrame::parse_header(header)?;
        let mut payload = vec![0u8; length];
        reader.read_exact(&mut payload)?;
        Ok(Some(AttachFrame::from_parts(kind, payload)?))
    }
}

/// A unix socket address for `path` that fits `sun_path`: long paths are
/// reached through an open handle on their directory (`/proc/self/fd/N/name`),
/// which must stay open while the address is used.
struct SocketAddress {
    path: PathBuf,
    _directory: Option<OwnedFd>,
}

impl SocketAddress {
    fn new(path: &Path) -> io::Result<SocketAddress> {
        if path.as_os_str().len() <= MAX_SOCKET_PATH {
            return Ok(SocketAddress {
                path: path.to_owned(),
                _directory: None,
            });
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        let directory: OwnedFd = File::open(parent)?.into();
        Ok(SocketAddress {
            path: Path::new(&format!("/proc/self/fd/{}", directory.as_raw_fd())).join(name),
            _directory: Some(directory),
        })
    }
}

/// Binds a unix socket at `path`, however long it is.
pub(crate) fn bind(path: &Path) -> io::Result<UnixListener> {
    UnixListener::bind(SocketAddress::new(path)?.path)
}

/// Connects to the unix socket at `path`, however long it is.
pub(crate) fn connect(path: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(SocketAddress::new(path)?.path)
}

impl Runtime {
    /// Connects to a running container's stdio socket (see [`crate::AttachFrame`]
    /// for the protocol): the container's output from now on, its stdin when it
    /// was created with `open_stdin`, and its terminal's size when it has one.
    pub fn attach(&self, name_or_id: &str) -> Result<UnixStream> {
        let container = self.get(name_or_id)?;
        if container.state.status != crate::Status::Running {
            return Err(Error::NotRunning(container.config.name));
        }
        let path = self.dir(&container.config.id).path.join(STDIO_SOCKET);
        connect(&path).map_err(|e| Error::io(&path, e))
    }
}

/// Which output stream bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutputStream {
    Stdout,
    Stderr,
}

/// The monitor's side of the stdio socket: fans the container's output out to
/// the connected clients and funnels their input into its stdin and terminal.
pub(crate) struct StdioHub {
    clients: Mutex<Clients>,
    stdin: Mutex<Option<File>>,
    terminal: Option<OwnedFd>,
    close_stdin_once: bool,
}

#[derive(Default)]
struct Clients {
    queues: Vec<SyncSender<Arc<[u8]>>>,
    writers: Vec<JoinHandle<()>>,
    closed: bool,
}

/// A mutex that a panicking holder left behind is still usable here: every
/// critical section leaves the data consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StdioHub {
    /// A hub writing client input to `stdin` (when the container keeps stdin
    /// open) and sizing `terminal` (when it has one); `stdin_once` closes stdin
    /// after the first client's stdin ends (ignored with a terminal, whose
    /// input cannot end without hanging it up, as in containerd's CRI).
    pub(crate) fn new(stdin: Option<File>, terminal: Option<OwnedFd>, stdin_once: bool) -> Self {
        StdioHub {
            clients: Mutex::default(),
            stdin: Mutex::new(stdin),
            close_stdin_once: stdin_once && terminal.is_none(),
            terminal,
        }
    }

    /// Accepts framed clients on `listener` until the process exits.
    pub(crate) fn serve(self: &Arc<Self>, listener: UnixListener) {
        let hub = Arc::clone(self);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let hub = Arc::clone(&hub);
                std::thread::spawn(move || hub.serve_client(client));
            }
        });
    }

    /// Accepts raw-stdin clients on `listener` (the CLI's `run -i`): their bytes
    /// go to stdin, and without a terminal the first one to finish closes it.
    pub(crate) fn serve_raw_stdin(self: &Arc<Self>, listener: UnixListener) {
        let hub = Arc::clone(self);
        let close_on_eof = self.terminal.is_none();
        std::thread::spawn(move || {
            for mut client in listener.incoming().flatten() {
                let mut buf = [0u8; 8192];
                while let Ok(n @ 1..) = client.read(&mut buf) {
                    if !hub.write_stdin(&buf[..n]) {
                        break;
                    }
                }
                if close_on_eof {
                    lock(&hub.stdin).take();
                }
            }
        });
    }

    fn serve_client(&self, client: UnixStream) {
        if !self.subscribe(&client) {
            return;
        }
        let mut reader = io::BufReader::new(&client);
        loop {
            match AttachFrame::read_from(&mut reader) {
                Ok(Some(frame)) => self.receive(frame),
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(%error, "stdio socket: dropping a client");
                    break;
                }
            }
        }
        // Ends this client's writer too.
        let _ = client.shutdown(std::net::Shutdown::Both);
    }

    /// Starts sending output to `client`; false once the hub is closed.
    fn subscribe(&self, client: &UnixStream) -> bool {
        let Ok(mut writer) = client.try_clone() else {
            return false;
        };
        let _ = writer.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT));
        let (queue, frames) = std::sync::mpsc::sync_channel(CLIENT_QUEUE_FRAMES);
        let mut clients = lock(&self.clients);
        if clients.closed {
            return false;
        }
        clients.queues.push(queue);
        clients
            .writers
            .push(std::thread::spawn(move || send_frames(&mut writer, frames)));
        true
    }

    fn receive(&self, frame: AttachFrame) {
        match frame {
            AttachFrame::Stdin(data) => {
                self.write_stdin(&data);
            }
            AttachFrame::CloseStdin if self.close_stdin_once => {
                lock(&self.stdin).take();
            }
            AttachFrame::Resize { rows, cols } => {
                if let Some(terminal) = &self.terminal {
                    tty::set_window_size(terminal, rows, cols);
                }
            }
            AttachFrame::CloseStdin | AttachFrame::Stdout(_) | AttachFrame::Stderr(_) => {}
        }
    }

    /// Writes to the container's stdin; false when it is closed or gone.
    fn write_stdin(&self, data: &[u8]) -> bool {
        let mut stdin = lock(&self.stdin);
        match stdin.as_mut().map(|sink| sink.write_all(data)) {
            Some(Ok(())) => true,
            Some(Err(_)) => {
                // The process closed its stdin: nothing will read it again.
                stdin.take();
                false
            }
            None => false,
        }
    }

    /// Sends output to every client; a client whose queue is full is dropped.
    pub(crate) fn publish(&self, stream: OutputStream, data: &[u8]) {
        let mut clients = lock(&self.clients);
        if clients.queues.is_empty() {
            return;
        }
        let frames: Vec<Arc<[u8]>> = data
            .chunks(MAX_PAYLOAD)
            .map(|chunk| {
                let frame = match stream {
                    OutputStream::Stdout => AttachFrame::Stdout(chunk.to_vec()),
                    OutputStream::Stderr => AttachFrame::Stderr(chunk.to_vec()),
                };
                Arc::from(frame.encode())
            })
            .collect();
        clients.queues.retain(|queue| {
            frames
                .iter()
                .all(|frame| match queue.try_send(frame.clone()) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => {
                        tracing::debug!("stdio socket: dropping a client that does not keep up");
                        false
                    }
                    Err(TrySendError::Disconnected(_)) => false,
                })
        });
    }

    /// Ends every client's connection once the output sent so far reached it
    /// (each write bounded by a timeout), and refuses new clients.
    pub(crate) fn close(&self) {
        let writers = {
            let mut clients = lock(&self.clients);
            clients.closed = true;
            clients.queues.clear();
            std::mem::take(&mut clients.writers)
        };
        for writer in writers {
            let _ = writer.join();
        }
    }
}

/// A client's writer: its queued frames, then the end of the connection.
fn send_frames(writer: &mut UnixStream, frames: Receiver<Arc<[u8]>>) {
    for frame in frames {
        if writer.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = writer.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn frames_round_trip() {
        let frames = [
            AttachFrame::Stdin(b"ls\n".to_vec()),
            AttachFrame::Stdout(Vec::new()),
            AttachFrame::Stderr(b"oops".to_vec()),
            AttachFrame::Resize {
                rows: 40,
                cols: 132,
            },
            AttachFrame::CloseStdin,
        ];
        let wire: Vec<u8> = frames.iter().flat_map(AttachFrame::encode).collect();
        let mut reader = wire.as_slice();
        for expected in frames {
            assert_eq!(AttachFrame::read_from(&mut reader).unwrap(), Some(expected));
        }
        assert_eq!(AttachFrame::read_from(&mut reader).unwrap(), None);
    }

    #[test]
    fn the_wire_format_is_kind_length_payload() {
        assert_eq!(
            AttachFrame::Resize { rows: 24, cols: 80 }.encode(),
            [4, 0, 0, 0, 4, 0, 24, 0, 80]
        );
        assert_eq!(
            AttachFrame::Stdin(b"x".to_vec()).encode(),
            [0, 0, 0, 0, 1, b'x']
        );
        assert_eq!(AttachFrame::CloseStdin.encode(), [255, 0, 0, 0, 0]);
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert_eq!(
            AttachFrame::parse_header([1, 0xff, 0, 0, 0]),
            Err(FrameError::TooLarge(0xff00_0000))
        );
        assert_eq!(
            AttachFrame::from_parts(7, Vec::new()),
            Err(FrameError::UnknownKind(7))
        );
        assert!(matches!(
            AttachFrame::from_parts(4, vec![0, 24]),
            Err(FrameError::BadLength { kind: 4, .. })
        ));
        let truncated = [1u8, 0, 0, 0, 9, b'a'];
        let error = AttachFrame::read_from(&mut truncated.as_slice()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A hub serving a socket in a directory whose path is too long for `sun_path`.
    fn hub_socket(hub: &Arc<StdioHub>) -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("d".repeat(120));
        std::fs::create_dir(&deep).unwrap();
        let path = deep.join(STDIO_SOCKET);
        hub.serve(bind(&path).unwrap());
        (root, path)
    }

    /// Connects once the hub has registered the client, so output published
    /// afterwards is sure to reach it.
    fn connect_subscribed(hub: &StdioHub, path: &Path, clients_before: usize) -> UnixStream {
        let client = connect(path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock(&hub.clients).queues.len() == clients_before {
            assert!(
                Instant::now() < deadline,
                "the hub never registered the client"
            );
            std::thread::yield_now();
        }
        client
    }

    #[test]
    fn clients_get_output_and_feed_stdin_until_stdin_once_closes_it() {
        let (stdin_reader, stdin_writer) = std::io::pipe().unwrap();
        let hub = Arc::new(StdioHub::new(
            Some(File::from(OwnedFd::from(stdin_writer))),
            None,
            true,
        ));
        let (_root, path) = hub_socket(&hub);
        let mut first = connect_subscribed(&hub, &path, 0);
        let mut second = connect_subscribed(&hub, &path, 1);

        hub.publish(OutputStream::Stdout, b"hello\n");
        hub.publish(OutputStream::Stderr, b"warn\n");
        for client in [&mut first, &mut second] {
            assert_eq!(
                AttachFrame::read_from(client).unwrap(),
                Some(AttachFrame::Stdout(b"hello\n".to_vec()))
            );
            assert_eq!(
                AttachFrame::read_from(client).unwrap(),
                Some(AttachFrame::Stderr(b"warn\n".to_vec()))
            );
        }

        first
            .write_all(&AttachFrame::Stdin(b"typed".to_vec()).encode())
            .unwrap();
        first.write_all(&AttachFrame::CloseStdin.encode()).unwrap();
        let mut received = Vec::new();
        let mut stdin_reader = stdin_reader;
        // EOF arrives only because CloseStdin closed the hub's end.
        stdin_reader.read_to_end(&mut received).unwrap();
        assert_eq!(received, b"typed");

        hub.close();
        assert_eq!(AttachFrame::read_from(&mut first).unwrap(), None);
        assert_eq!(AttachFrame::read_from(&mut second).unwrap(), None);
        let mut late = connect(&path).unwrap();
        assert_eq!(
            AttachFrame::read_from(&mut late).unwrap(),
            None,
            "closed hubs refuse clients"
        );
    }

    #[test]
    fn stdin_stays_open_without_stdin_once() {
        let (mut stdin_reader, stdin_writer) = std::io::pipe().unwrap();
        let hub = Arc::new(StdioHub::new(
            Some(File::from(OwnedFd::from(stdin_writer))),
            None,
            false,
        ));
        let (_root, path) = hub_socket(&hub);
        let mut client = connect_subscribed(&hub, &path, 0);
        client
            .write_all(&AttachFrame::Stdin(b"one".to_vec()).encode())
            .unwrap();
        client.write_all(&AttachFrame::CloseStdin.encode()).unwrap();
        drop(client);
        let mut client = connect_subscribed(&hub, &path, 1);
        client
            .write_all(&AttachFrame::Stdin(b"two".to_vec()).encode())
            .unwrap();
        let mut received = [0u8; 6];
        stdin_reader.read_exact(&mut received).unwrap();
        assert_eq!(&received, b"onetwo");
    }

    #[test]
    fn resize_frames_size_the_terminal() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let hub = Arc::new(StdioHub::new(None, Some(pty.master), true));
        let (_root, path) = hub_socket(&hub);
        let mut client = connect_subscribed(&hub, &path, 0);
        client
            .write_all(
                &AttachFrame::Resize {
                    rows: 33,
                    cols: 101,
                }
                .encode(),
            )
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let size = tty::window_size(&pty.slave).unwrap();
            if (size.ws_row, size.ws_col) == (33, 101) {
                break;
            }
            assert!(Instant::now() < deadline, "the terminal was never resized");
            std::thread::yield_now();
        }
    }
}
