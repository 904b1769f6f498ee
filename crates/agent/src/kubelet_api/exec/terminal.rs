//! The agent's end of `gantry exec -t --console-socket PATH`: a socket on which the
//! exec'd process's pty master arrives (as runc hands one to containerd-shim), so
//! this server owns the terminal: it relays it and applies the client's sizes.
//! Dropping every handle on the master hangs the terminal up, which ends the
//! process on it when the client goes away.

use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use tokio::io::AsyncWrite;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::TerminalSize;

/// How long a peer that connected may take to send the terminal.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Names console sockets apart within this process.
static NEXT_SOCKET: AtomicU64 = AtomicU64::new(0);

/// A listening console socket in the temporary directory (short, so it fits
/// `sun_path`); its file is removed when it is dropped.
pub(crate) struct ConsoleSocket {
    listener: tokio::net::UnixListener,
    /// The same socket, non-blocking, for taking a connection already queued.
    queued: std::os::unix::net::UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    /// Listens on a fresh path.
    pub(crate) fn bind() -> io::Result<ConsoleSocket> {
        let path = std::env::temp_dir().join(format!(
            "gantry-exec-{}-{}.sock",
            std::process::id(),
            NEXT_SOCKET.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let queued = std::os::unix::net::UnixListener::bind(&path)?;
        queued.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(queued.try_clone()?)?;
        Ok(ConsoleSocket {
            listener,
            queued,
            path,
        })
    }

    /// Where `gantry exec` sends the terminal.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for `gantry exec` to connect. Cancel-safe: a connection is never lost.
    pub(crate) async fn accept(&self) -> io::Result<UnixStream> {
        let (stream, _) = self.listener.accept().await?;
        stream.into_std()
    }

    /// A connection already queued: for when `gantry exec` has exited, so nothing
    /// more can arrive.
    pub(crate) fn accept_queued(&self) -> io::Result<Option<UnixStream>> {
        match self.queued.accept() {
            Ok((stream, _)) => Ok(Some(stream)),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(error) => Err(error),
        }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Takes the terminal `gantry exec` sends over `stream`; fails when it closes the
/// connection without one.
pub(crate) async fn receive_terminal(stream: UnixStream) -> io::Result<Terminal> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(RECEIVE_TIMEOUT))?;
    let master = tokio::task::spawn_blocking(move || gantry_runtime::receive_terminal(&stream))
        .await
        .map_err(io::Error::other)?
        .map_err(io::Error::other)?;
    Ok(Terminal { master })
}

/// A pty master received from `gantry exec`.
pub(crate) struct Terminal {
    master: OwnedFd,
}

/// The async handles on a terminal, and the descriptor sizes are applied to.
pub(crate) struct TerminalRelay {
    /// Writes to the terminal, when the client's stdin is relayed.
    pub input: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// What the processes on the terminal write; fails with EIO once they all exit.
    pub output: pipe::Receiver,
    /// The master itself.
    pub terminal: OwnedFd,
}

impl Terminal {
    /// Makes the master non-blocking and registers it with the async runtime.
    pub(crate) fn relay(self, with_input: bool) -> io::Result<TerminalRelay> {
        let flags = fcntl(&self.master, FcntlArg::F_GETFL)?;
        let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
        fcntl(&self.master, FcntlArg::F_SETFL(flags))?;
        let output = pipe::Receiver::from_owned_fd_unchecked(self.master.try_clone()?)?;
        let input = if with_input {
            let sender = pipe::Sender::from_owned_fd_unchecked(self.master.try_clone()?)?;
            Some(Box::new(sender) as Box<dyn AsyncWrite + Send + Unpin>)
        } else {
            None
        };
        Ok(TerminalRelay {
            input,
            output,
            terminal: self.master,
        })
    }
}

/// Applies each size from `sizes` to `terminal` until the sender is dropped
/// (the session ended); without a terminal the sizes are dropped.
pub(crate) async fn apply_sizes(
    terminal: Option<OwnedFd>,
    mut sizes: mpsc::Receiver<TerminalSize>,
) {
    while let Some(size) = sizes.recv().await {
        let Some(terminal) = &terminal else { continue };
        if let Err(error) =
            gantry_runtime::set_terminal_size(terminal.as_fd(), size.height, size.width)
        {
            tracing::debug!(%error, "kubelet API: resizing a terminal");
        }
    }
}
