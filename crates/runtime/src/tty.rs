//! Terminals for containers: receiving the pty master libcontainer creates,
//! passing it on to whoever relays it (a console socket), sizing it, and
//! relaying it to the CLI's own stdio.

use std::fs::File;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use crate::{Error, Result};

/// Accepts libcontainer's connection on the console socket and takes the pty
/// master it sends (as SCM_RIGHTS), the way runc's `--console-socket` works.
pub(crate) fn receive_pty_master(listener: &UnixListener) -> Result<OwnedFd> {
    let (stream, _) = listener
        .accept()
        .map_err(|e| Error::io(Path::new("console socket"), e))?;
    receive_terminal(&stream)
}

/// Takes the pty master a peer sent over `stream` as SCM_RIGHTS: the receiving
/// end of a console socket (`gantry exec --console-socket`), so the caller owns
/// the terminal, relays it and resizes it.
pub fn receive_terminal(stream: &UnixStream) -> Result<OwnedFd> {
    let mut name = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let message = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| Error::io(Path::new("console socket"), e.into()))?;
    for cmsg in message
        .cmsgs()
        .map_err(|e| Error::io(Path::new("console socket"), e.into()))?
    {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel just installed these descriptors for us; we own them.
            let mut owned = fds
                .into_iter()
                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
            if let Some(master) = owned.next() {
                return Ok(master);
            }
        }
    }
    Err(Error::Spec(
        "the console socket carried no pty master".into(),
    ))
}

/// Sends `master` to the console socket at `path` (as runc does to its
/// `--console-socket`), so the listener there owns the terminal.
pub(crate) fn send_terminal(path: &Path, master: &OwnedFd) -> Result<()> {
    let stream = crate::attach::connect(path).map_err(|e| Error::io(path, e))?;
    let fds = [master.as_raw_fd()];
    let name = b"pty";
    let iov = [IoSlice::new(name)];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| Error::io(path, e.into()))?;
    Ok(())
}

/// Sets a terminal's size (TIOCSWINSZ on its pty master), so programs on it
/// lay out right; the kernel tells its foreground process group by SIGWINCH.
pub fn set_terminal_size(terminal: BorrowedFd<'_>, rows: u16, cols: u16) -> std::io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize we own; the descriptor is borrowed, so open.
    if unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &size) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A terminal's size (TIOCGWINSZ), from either side of the pty.
#[cfg(test)]
pub(crate) fn window_size(terminal: &OwnedFd) -> std::io::Result<libc::winsize> {
    // SAFETY: all-zero is a valid winsize.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize we own; the descriptor is open.
    if unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } == 0 {
        Ok(size)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Gives the terminal the caller's size so full-screen programs lay out right;
/// a failure only costs layout, so it is logged, not returned.
pub(crate) fn set_window_size(master: &OwnedFd, rows: u16, cols: u16) {
    if let Err(error) = set_terminal_size(master.as_fd(), rows, cols) {
        tracing::debug!(%error, "setting a terminal's size");
    }
}

/// Copies the terminal's output to our stdout (and, when `interactive`, our
/// stdin to the terminal); the returned thread ends once the terminal closes.
pub(crate) fn relay_terminal(
    master: OwnedFd,
    interactive: bool,
) -> Result<std::thread::JoinHandle<()>> {
    if interactive {
        let mut input = File::from(
            master
                .try_clone()
                .map_err(|e| Error::io(Path::new("pty"), e))?,
        );
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut input);
        });
    }
    let mut output = File::from(master);
    Ok(std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut stdout = std::io::stdout();
        // EIO once the last process holding the terminal exits.
        while let Ok(n) = output.read(&mut buf) {
            if n == 0
                || stdout
                    .write_all(&buf[..n])
                    .and_then(|()| stdout.flush())
                    .is_err()
            {
                break;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_sent_over_a_console_socket_is_the_same_terminal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        send_terminal(&path, &pty.master).unwrap();
        let received = receive_pty_master(&listener).unwrap();
        set_terminal_size(received.as_fd(), 12, 34).unwrap();
        let size = window_size(&pty.slave).unwrap();
        assert_eq!((size.ws_row, size.ws_col), (12, 34));
    }

    #[test]
    fn a_console_socket_closed_without_a_terminal_is_an_error() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        assert!(receive_terminal(&ours).is_err());
    }
}
