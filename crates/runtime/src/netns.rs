//! Network namespaces: loopback inside a container's fresh one, as `--network none`
//! promises, and persistent ones that several containers (a pod) join.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
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

/// Creates a persistent network namespace at `path` (a bind mount of the
/// namespace, like `ip netns add`) with only loopback up, for containers to
/// join with [`crate::NetworkMode::Join`]. The namespace lives until
/// [`remove_network_namespace`], whatever happens to its containers.
pub fn create_network_namespace(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    File::create(path).map_err(|e| Error::io(path, e))?;
    let target = path.to_owned();
    // unshare(CLONE_NEWNET) moves only the calling thread: do it on a thread of
    // its own that ends once the namespace is pinned by the bind mount.
    let created = std::thread::spawn(move || -> std::io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)?;
        set_interface_up("lo")?;
        let tid = nix::unistd::gettid();
        let own = format!("/proc/self/task/{tid}/ns/net");
        mount(
            Some(own.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(())
    })
    .join()
    .map_err(|_| Error::Network("network namespace thread panicked".into()))?;
    if let Err(error) = created {
        let _ = std::fs::remove_file(path);
        return Err(Error::Network(format!(
            "creating network namespace {}: {error}",
            path.display()
        )));
    }
    Ok(())
}

/// Releases a namespace made by [`create_network_namespace`]; harmless when it
/// is already gone. The kernel frees it once no process is left inside.
pub fn remove_network_namespace(path: &Path) -> Result<()> {
    while umount2(path, MntFlags::MNT_DETACH).is_ok() {}
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_namespace_is_distinct_and_removable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pod");
        create_network_namespace(&path).unwrap();
        let ours = std::fs::metadata("/proc/self/ns/net").unwrap();
        let theirs = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(
            ours.ino(),
            theirs.ino(),
            "a new namespace is pinned at the path"
        );
        remove_network_namespace(&path).unwrap();
        assert!(!path.exists());
        remove_network_namespace(&path).unwrap();
    }
}
