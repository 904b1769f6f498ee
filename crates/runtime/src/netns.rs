//! Loopback inside a container's fresh network namespace, as `--network none` promises.

use std::fs::File;
use std::os::fd::AsRawFd;

use nix::sched::{CloneFlags, setns};
use nix::unistd::Pid;

use crate::{Error, Result};

/// Sets `lo` up in the network namespace of `pid`. Runs on a short-lived thread
/// because setns(CLONE_NEWNET) moves only the calling thread.
pub(crate) fn bring_up_loopback(pid: Pid) -> Result<()> {
    let path = format!("/proc/{pid}/ns/net");
    let netns = File::open(&path).map_err(|e| Error::io(std::path::Path::new(&path), e))?;
    std::thread::spawn(move || -> std::io::Result<()> {
        setns(&netns, CloneFlags::CLONE_NEWNET)?;
        set_interface_up("lo")
    })
    .join()
    .map_err(|_| Error::Network("loopback thread panicked".into()))?
    .map_err(|e| Error::Network(format!("bringing up lo: {e}")))
}

fn set_interface_up(name: &str) -> std::io::Result<()> {
    // SAFETY: a plain datagram socket used only for interface ioctls, closed on drop.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let socket: File = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
