//! Blocking filesystem work on the node: hostPath type checks, tmpfs mounts for
//! memory-backed volumes, and finding and removing the mounts under a pod's
//! directory. Callers run these on tokio's blocking pool.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// What a hostPath volume's `type` requires of its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostPathType {
    /// `""`: no check at all (the default, for backwards compatibility).
    Unset,
    /// Create an empty directory (0755) if nothing is there; else it must be one.
    DirectoryOrCreate,
    /// A directory must exist.
    Directory,
    /// Create an empty file (0644) if nothing is there; else it must be a file.
    FileOrCreate,
    /// A regular file must exist.
    File,
    /// A UNIX socket must exist.
    Socket,
    /// A character device must exist.
    CharDevice,
    /// A block device must exist.
    BlockDevice,
}

impl HostPathType {
    /// Parses the API's spelling; `None` for an unknown type.
    pub fn parse(text: Option<&str>) -> Option<Self> {
        Some(match text.unwrap_or_default() {
            "" => Self::Unset,
            "DirectoryOrCreate" => Self::DirectoryOrCreate,
            "Directory" => Self::Directory,
            "FileOrCreate" => Self::FileOrCreate,
            "File" => Self::File,
            "Socket" => Self::Socket,
            "CharDevice" => Self::CharDevice,
            "BlockDevice" => Self::BlockDevice,
            _ => return None,
        })
    }
}

/// Checks (and for the `...OrCreate` types creates) a hostPath like the kubelet's
/// `hostPathTypeChecker`; the error text is the reason to report.
pub fn check_host_path(path: &Path, kind: HostPathType) -> Result<(), String> {
    let metadata = match fs::metadata(path) {
        Ok(metadata) => Some(metadata),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(error.to_string()),
    };
    let file_type = metadata.as_ref().map(fs::Metadata::file_type);
    let (is_wanted, what): (fn(&fs::FileType) -> bool, &str) = match kind {
        HostPathType::Unset => return Ok(()),
        HostPathType::DirectoryOrCreate | HostPathType::Directory => {
            (fs::FileType::is_dir, "a directory")
        }
        HostPathType::FileOrCreate | HostPathType::File => (fs::FileType::is_file, "a file"),
        HostPathType::Socket => (FileTypeExt::is_socket, "a socket file"),
        HostPathType::CharDevice => (FileTypeExt::is_char_device, "a character device"),
        HostPathType::BlockDevice => (FileTypeExt::is_block_device, "a block device"),
    };
    match (file_type, kind) {
        (Some(file_type), _) if is_wanted(&file_type) => Ok(()),
        (Some(_), _) => Err(format!(
            "hostPath type check failed: {} is not {what}",
            path.display()
        )),
        (None, HostPathType::DirectoryOrCreate) => DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(|error| format!("creating directory {}: {error}", path.display())),
        (None, HostPathType::FileOrCreate) => OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map(drop)
            .map_err(|error| format!("creating file {}: {error}", path.display())),
        (None, _) => Err(format!(
            "hostPath type check failed: {} does not exist",
            path.display()
        )),
    }
}

/// Creates a volume directory world-writable, as the kubelet does for emptyDir
/// (containers may run as any user).
pub fn create_volume_dir(path: &Path, mode: u32) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(mode).create(path)?;
    fs::set_permissions(path, Permissions::from_mode(mode))
}

/// Mounts a tmpfs on `path` unless one is already there (so preparing again after
/// an agent restart is harmless). `size_bytes` caps it; `None` is the kernel's
/// default (half of RAM).
pub fn mount_tmpfs(path: &Path, size_bytes: Option<u128>, mode: u32) -> io::Result<()> {
    // mountinfo shows canonical paths.
    let path = &fs::canonicalize(path)?;
    if mount_points_under(path)?.iter().any(|point| point == path) {
        return Ok(());
    }
    let mut options = format!("mode={mode:o}");
    if let Some(size) = size_bytes {
        options.push_str(&format!(",size={size}"));
    }
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(io::Error::from)
}

/// Every mount point at or below `dir` in this process's mount namespace, deepest
/// first (the order to unmount them in).
pub fn mount_points_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mountinfo = fs::read("/proc/self/mountinfo")?;
    let mut points: Vec<PathBuf> = mount_points(&mountinfo)
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    points.dedup();
    Ok(points)
}

/// The mount points (fifth field) of a mountinfo file, with the kernel's octal
/// escapes (`\040` for a space, `\011`, `\012`, `\134`) undone.
fn mount_points(mountinfo: &[u8]) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo
        .split(|byte| *byte == b'\n')
        .filter_map(|line| line.split(|byte| *byte == b' ').nth(4))
        .map(|field| PathBuf::from(OsString::from_vec(unescape_octal(field))))
}

fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(field.len());
    let mut rest = field;
    while let Some((&byte, tail)) = rest.split_first() {
        let escaped = match tail {
            [a, b, c, ..]
                if byte == b'\\' && [a, b, c].iter().all(|d| (b'0'..=b'7').contains(d)) =>
            {
                u8::try_from(
                    u32::from(a - b'0') * 64 + u32::from(b - b'0') * 8 + u32::from(c - b'0'),
                )
                .ok()
            }
            _ => None,
        };
        match escaped {
            Some(value) => {
                bytes.push(value);
                rest = &tail[3..];
            }
            None => {
                bytes.push(byte);
                rest = tail;
            }
        }
    }
    bytes
}

/// Unmounts everything at or below `dir`, then removes `dir`. Refuses to remove
/// anything while a mount remains, so a failed unmount can never turn into deleting
/// the contents of a mounted filesystem.
pub fn unmount_and_remove(dir: &Path) -> io::Result<()> {
    let dir = match fs::canonicalize(dir) {
        Ok(dir) => dir,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for point in mount_points_under(&dir)? {
        // Detach: a container that still holds the mount keeps it until it exits.
        match umount2(&point, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(error) => return Err(io::Error::from(error)),
        }
    }
    if let Some(point) = mount_points_under(&dir)?.first() {
        return Err(io::Error::other(format!(
            "{} is still mounted",
            point.display()
        )));
    }
    fs::remove_dir_all(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_or_create_creates_and_directory_requires() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b");
        assert!(check_host_path(&target, HostPathType::Directory).is_err());
        check_host_path(&target, HostPathType::DirectoryOrCreate).unwrap();
        assert!(target.is_dir());
        check_host_path(&target, HostPathType::Directory).unwrap();
        let error = check_host_path(&target, HostPathType::File).unwrap_err();
        assert!(error.contains("is not a file"), "{error}");
    }

    #[test]
    fn file_or_create_creates_an_empty_file_and_keeps_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        check_host_path(&target, HostPathType::FileOrCreate).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"");
        fs::write(&target, "kept").unwrap();
        check_host_path(&target, HostPathType::FileOrCreate).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "kept");
        assert!(check_host_path(&target, HostPathType::Socket).is_err());
        assert!(
            check_host_path(&dir.path().join("missing/f"), HostPathType::FileOrCreate).is_err()
        );
    }

    #[test]
    fn mountinfo_mount_points_are_unescaped() {
        let mountinfo = b"22 1 0:21 / / rw - ext4 /dev/sda1 rw\n\
            98 22 0:50 / /var/lib/a\\040b\\134c rw,nosuid - tmpfs tmpfs rw,size=16384k\n";
        let points: Vec<PathBuf> = mount_points(mountinfo).collect();
        assert_eq!(
            points,
            [PathBuf::from("/"), PathBuf::from("/var/lib/a b\\c")]
        );
        assert_eq!(unescape_octal(b"\\777x\\9"), b"\\777x\\9");
    }

    #[test]
    fn unset_type_checks_nothing_and_unknown_types_are_refused() {
        check_host_path(Path::new("/does/not/exist"), HostPathType::Unset).unwrap();
        assert_eq!(HostPathType::parse(Some("Bogus")), None);
        assert_eq!(HostPathType::parse(None), Some(HostPathType::Unset));
    }
}
