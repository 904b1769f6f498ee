//! Network namespaces: creating a pod's (pinned by a bind mount on a file, as
//! `ip netns add` does), removing it, and running work inside one.
//!
//! Switching namespaces changes the calling thread only, so every switch happens on
//! a fresh `std::thread` that exits when its work is done: a tokio worker never
//! changes namespace, and no thread is handed back to a pool inside a pod's network.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::NetworkError;

/// The calling thread's own network namespace, as `/proc/thread-self/ns/net`.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// An open network namespace that work can be sent into.
#[derive(Debug, Clone)]
pub(crate) struct Namespace(Arc<File>);

impl Namespace {
    /// The namespace of the calling thread.
    pub(crate) fn current() -> Result<Self, NetworkError> {
        File::open(THREAD_NETNS)
            .map(|file| Namespace(Arc::new(file)))
            .map_err(|err| NetworkError::io("opening this thread's network namespace", err))
    }

    /// The namespace pinned at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, NetworkError> {
        File::open(path)
            .map(|file| Namespace(Arc::new(file)))
            .map_err(|err| {
                NetworkError::io(format!("opening network namespace {}", path.display()), err)
            })
    }

    /// The open namespace file, e.g. to move a link into it.
    pub(crate) fn file(&self) -> &File {
        &self.0
    }

    /// Runs `work` on a new thread inside this namespace and returns its result.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, NetworkError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, NetworkError> + Send + 'static,
    {
        let namespace = self.clone();
        let (done, result) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("gantry-netns".into())
            .spawn(move || {
                let outcome = nix::sched::setns(namespace.0.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(|err| NetworkError::sys("entering a network namespace", err))
                    .and_then(|()| work());
                let _ = done.send(outcome);
            })
            .map_err(|err| NetworkError::io("starting a namespace thread", err))?;
        result.await.map_err(|_| NetworkError::WorkerLost)?
    }

    /// Creates a new network namespace pinned at `path`; the new namespace's
    /// parent user namespace and owner are those of this one.
    pub(crate) async fn create_pinned(&self, path: PathBuf) -> Result<(), NetworkError> {
        self.run(move || {
            File::create(&path)
                .map_err(|err| NetworkError::io(format!("creating {}", path.display()), err))?;
            let pinned = nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|err| NetworkError::sys("creating a network namespace", err))
                .and_then(|()| {
                    nix::mount::mount(
                        Some(THREAD_NETNS),
                        &path,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(|err| {
                        NetworkError::sys(
                            format!("bind-mounting a network namespace on {}", path.display()),
                            err,
                        )
                    })
                });
            if pinned.is_err() {
                let _ = std::fs::remove_file(&path);
            }
            pinned
        })
        .await
    }
}

/// Whether `path` is a pinned namespace (an nsfs mount), not a plain file left
/// behind by an interrupted create or a reboot.
pub(crate) async fn is_pinned(path: PathBuf) -> Result<bool, NetworkError> {
    blocking(move || match nix::sys::statfs::statfs(&path) {
        Ok(stat) => Ok(stat.filesystem_type() == nix::sys::statfs::NSFS_MAGIC),
        Err(nix::errno::Errno::ENOENT) => Ok(false),
        Err(err) => Err(NetworkError::sys(
            format!("inspecting {}", path.display()),
            err,
        )),
    })
    .await
}

/// Unpins and deletes the namespace file at `path`; missing is fine.
pub(crate) async fn remove_pinned(path: PathBuf) -> Result<(), NetworkError> {
    blocking(move || unpin_and_delete(&path)).await
}

/// Unpins and deletes every namespace file in `dir`, then `dir` itself; a
/// missing directory is fine.
pub(crate) async fn remove_all_pinned(dir: PathBuf) -> Result<(), NetworkError> {
    blocking(move || {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(NetworkError::io(format!("reading {}", dir.display()), err)),
        };
        for entry in entries {
            let entry =
                entry.map_err(|err| NetworkError::io(format!("reading {}", dir.display()), err))?;
            unpin_and_delete(&entry.path())?;
        }
        std::fs::remove_dir(&dir)
            .map_err(|err| NetworkError::io(format!("removing {}", dir.display()), err))
    })
    .await
}

fn unpin_and_delete(path: &Path) -> Result<(), NetworkError> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (already unpinned); ENOENT: already gone.
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(err) => {
            return Err(NetworkError::sys(
                format!("unmounting {}", path.display()),
                err,
            ));
        }
    }
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(NetworkError::io(
            format!("removing {}", path.display()),
            err,
        )),
        _ => Ok(()),
    }
}

/// Runs blocking filesystem work off the async runtime.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, NetworkError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, NetworkError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| NetworkError::WorkerLost)?
}
