//! Terminals and stdin for containers: receiving the pty master libcontainer
//! creates, and the attach socket through which a CLI feeds the container's stdin.

use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use crate::{Error, Result};

/// Accepts libcontainer's connection on the console socket and takes the pty
/// master it sends (as SCM_RIGHTS), the way runc's `--console-socket` works.
pub(crate) fn receive_pty_master(listener: &UnixListener) -> Result<OwnedFd> {
    let (stream, _) = listener
        .accept()
        .map_err(|e| Error::io(Path::new("console socket"), e))?;
    let mut name = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
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
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor for us; we own it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err(Error::Spec(
        "the console socket carried no pty master".into(),
    ))
}

/// Gives the terminal the caller's size so full-screen programs lay out right.
pub(crate) fn set_window_size(master: &OwnedFd, rows: u16, cols: u16) {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize we own from a valid pty descriptor.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
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

/// Serves `<dir>/attach.sock` until the process exits: each client's bytes go to
/// the container's stdin. Without a terminal, a client closing its side closes
/// stdin (so `echo x | gantry run -i … cat` ends); with one, stdin stays open.
pub(crate) fn serve_stdin(listener: UnixListener, input: File, close_on_eof: bool) {
    std::thread::spawn(move || {
        let mut input = Some(input);
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Some(sink) = input.as_mut() else { break };
            copy_until_eof(client, sink);
            if close_on_eof {
                input = None;
            }
        }
    });
}

fn copy_until_eof(mut client: UnixStream, sink: &mut File) {
    let mut buf = [0u8; 8192];
    loop {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if sink.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
