//! Unpacking layer tarballs into overlayfs "diff" directories.
//!
//! Each layer is extracted on its own, into an empty directory, so that the
//! directories of an image's layers stacked as overlay `lowerdir`s give the
//! image's filesystem. OCI/AUFS whiteouts are translated to what overlayfs
//! understands: `.wh.NAME` becomes a 0/0 character device `NAME`, and
//! `.wh..wh..opq` becomes the `trusted.overlay.opaque=y` xattr on its directory.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek};
use std::os::unix::fs::{PermissionsExt, lchown};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use crate::digest::{Digest, HashingReader};
use crate::error::{ImageError, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const AUFS_META_PREFIX: &str = ".wh..wh.";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// How a layer blob is compressed, told by its first bytes rather than its
/// media type, which registries and archives do not always get right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub(crate) fn sniff(file: &mut File) -> io::Result<Compression> {
        let mut magic = [0u8; 4];
        let mut filled = 0;
        while filled < magic.len() {
            match file.read(&mut magic[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        file.rewind()?;
        Ok(match magic {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
            _ => Compression::None,
        })
    }
}

/// The uncompressed tar stream of a layer blob.
pub(crate) fn open_layer(mut file: File) -> Result<Box<dyn Read + Send>> {
    let compression = Compression::sniff(&mut file).map_err(ImageError::io("reading layer"))?;
    let buffered = BufReader::new(file);
    Ok(match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::Decoder::with_buffer(buffered).map_err(ImageError::io("reading zstd layer"))?,
        ),
    })
}

/// Extracts one layer into `dest` (an existing empty directory) and returns the
/// digest and size of the uncompressed tar stream, i.e. its diff ID.
pub fn unpack_layer(tar_stream: impl Read, dest: &Path) -> Result<(Digest, u64)> {
    let mut hashing = HashingReader::new(tar_stream);
    {
        let mut archive = tar::Archive::new(&mut hashing);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_unpack_xattrs(true);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(true);
        let entries = archive.entries().map_err(ImageError::io("reading layer"))?;
        for entry in entries {
            let mut entry = entry.map_err(ImageError::io("reading layer"))?;
            unpack_entry(&mut entry, dest)?;
        }
    }
    hashing.finish().map_err(ImageError::io("reading layer"))
}

fn unpack_entry<R: Read>(entry: &mut tar::Entry<'_, R>, dest: &Path) -> Result<()> {
    let raw_path = entry
        .path()
        .map_err(ImageError::io("reading layer entry"))?
        .into_owned();
    let relative = confined_path(&raw_path)?;
    let Some(name) = relative
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
    else {
        return Ok(()); // the layer's root directory itself
    };
    let parent_rel = relative.parent().unwrap_or(Path::new(""));

    if name == OPAQUE_MARKER {
        let dir = create_dirs_inside(dest, parent_rel)?;
        return xattr::set(&dir, OPAQUE_XATTR, b"y")
            .map_err(ImageError::io(format!("marking {} opaque", dir.display())));
    }
    let in_aufs_metadata = relative
        .iter()
        .any(|part| part.to_string_lossy().starts_with(AUFS_META_PREFIX));
    if in_aufs_metadata {
        return Ok(()); // AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): no meaning outside AUFS
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.is_empty() {
            return Err(ImageError::InvalidContent(format!(
                "whiteout {} names no file",
                raw_path.display()
            )));
        }
        let dir = create_dirs_inside(dest, parent_rel)?;
        return make_whiteout(&dir.join(hidden));
    }

    let kind = entry.header().entry_type();
    if kind.is_hard_link() {
        let target = entry
            .link_name()
            .map_err(ImageError::io("reading hard link"))?
            .unwrap_or_default();
        confined_path(&target)?;
    }
    if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
        let dir = create_dirs_inside(dest, parent_rel)?;
        return make_special_file(entry.header(), &dir.join(&name));
    }
    match entry.unpack_in(dest) {
        Ok(_) => Ok(()),
        Err(error) if error.to_string().contains("outside of") => Err(ImageError::UnsafePath {
            path: raw_path,
            reason: error.to_string(),
        }),
        Err(source) => Err(ImageError::Io {
            context: format!("extracting {}", raw_path.display()),
            source,
        }),
    }
}

/// A path from an archive, made relative; `..` anywhere is refused outright.
pub(crate) fn confined_path(path: &Path) -> Result<PathBuf> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ImageError::UnsafePath {
                    path: path.to_owned(),
                    reason: "it climbs out of the destination with ..".into(),
                });
            }
        }
    }
    Ok(clean)
}

/// Creates `relative` under `root` one component at a time, refusing to pass
/// through symlinks (which could point anywhere on the host).
fn create_dirs_inside(root: &Path, relative: &Path) -> Result<PathBuf> {
    let mut current = root.to_path_buf();
    for component in relative.components() {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(ImageError::UnsafePath {
                    path: relative.to_owned(),
                    reason: format!("{} is not a directory", current.display()),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&current)
                    .map_err(ImageError::io(format!("creating {}", current.display())))?;
                fs::set_permissions(&current, fs::Permissions::from_mode(0o755))
                    .map_err(ImageError::io(format!("creating {}", current.display())))?;
            }
            Err(source) => {
                return Err(ImageError::Io {
                    context: format!("inspecting {}", current.display()),
                    source,
                });
            }
        }
    }
    Ok(current)
}

fn remove_existing(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    }
    .map_err(ImageError::io(format!("replacing {}", path.display())))
}

/// An overlayfs whiteout: a character device with device number 0/0.
fn make_whiteout(path: &Path) -> Result<()> {
    remove_existing(path)?;
    mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(|errno| ImageError::Io {
        context: format!("creating whiteout {}", path.display()),
        source: errno.into(),
    })
}

fn make_special_file(header: &tar::Header, path: &Path) -> Result<()> {
    let kind = header.entry_type();
    let flag = if kind.is_character_special() {
        SFlag::S_IFCHR
    } else if kind.is_block_special() {
        SFlag::S_IFBLK
    } else {
        SFlag::S_IFIFO
    };
    let context = || format!("creating device node {}", path.display());
    let major = header
        .device_major()
        .map_err(ImageError::io(context()))?
        .unwrap_or(0);
    let minor = header
        .device_minor()
        .map_err(ImageError::io(context()))?
        .unwrap_or(0);
    let mode = header.mode().map_err(ImageError::io(context()))? & 0o7777;
    remove_existing(path)?;
    mknod(
        path,
        flag,
        Mode::from_bits_truncate(mode),
        makedev(major.into(), minor.into()),
    )
    .map_err(|errno| ImageError::Io {
        context: context(),
        source: errno.into(),
    })?;
    let uid = header.uid().ok().and_then(|u| u32::try_from(u).ok());
    let gid = header.gid().ok().and_then(|g| u32::try_from(g).ok());
    lchown(path, uid, gid).map_err(ImageError::io(context()))?;
    // mknod honours the umask; set the exact mode afterwards.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(ImageError::io(context()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use super::*;

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    /// A header with every numeric field filled in, as real archivers write them.
    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header
    }

    fn file(builder: &mut tar::Builder<Vec<u8>>, path: &str, content: &[u8]) {
        let mut header = header(tar::EntryType::Regular, content.len() as u64, 0o644);
        builder.append_data(&mut header, path, content).unwrap();
    }

    /// Writes a raw name into the header, bypassing the builder's own `..` check,
    /// as a malicious archive would.
    fn raw_entry(
        builder: &mut tar::Builder<Vec<u8>>,
        kind: tar::EntryType,
        name: &str,
        link: Option<&str>,
    ) {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_mode(0o777);
        header.set_size(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(kind);
        header.set_cksum();
        builder.append(&header, io::empty()).unwrap();
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts_and_opaque_xattrs() {
        let dest = tempfile::tempdir().unwrap();
        let layer = tar_of(|b| {
            file(b, "etc/.wh.motd", b"");
            file(b, "var/cache/.wh..wh..opq", b"");
            file(b, "var/cache/new", b"fresh");
        });
        let (diff_id, size) = unpack_layer(&layer[..], dest.path()).unwrap();
        assert_eq!(diff_id, Digest::of(&layer));
        assert_eq!(size, layer.len() as u64);

        let whiteout = fs::symlink_metadata(dest.path().join("etc/motd")).unwrap();
        assert!(whiteout.file_type().is_char_device());
        assert_eq!(whiteout.rdev(), 0);
        assert!(!dest.path().join("etc/.wh.motd").exists());
        let opaque = xattr::get(dest.path().join("var/cache"), OPAQUE_XATTR).unwrap();
        assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
        assert_eq!(
            fs::read(dest.path().join("var/cache/new")).unwrap(),
            b"fresh"
        );
    }

    #[test]
    fn aufs_metadata_is_skipped_and_empty_whiteouts_refused() {
        let dest = tempfile::tempdir().unwrap();
        let layer = tar_of(|b| {
            file(b, ".wh..wh.plnk/123.456", b"");
            file(b, "keep", b"k");
        });
        unpack_layer(&layer[..], dest.path()).unwrap();
        assert!(!dest.path().join(".wh..wh.plnk").exists());
        assert!(dest.path().join("keep").is_file());

        let dest = tempfile::tempdir().unwrap();
        fs::create_dir(dest.path().join("etc")).unwrap();
        let empty = tar_of(|b| file(b, "etc/.wh.", b""));
        assert!(unpack_layer(&empty[..], dest.path()).is_err());
        assert!(
            dest.path().join("etc").is_dir(),
            "an empty whiteout must not delete its directory"
        );
    }

    #[test]
    fn ownership_modes_links_and_devices_are_preserved() {
        let dest = tempfile::tempdir().unwrap();
        let layer = tar_of(|b| {
            let mut tool = header(tar::EntryType::Regular, 2, 0o4750);
            tool.set_uid(1234);
            tool.set_gid(4321);
            b.append_data(&mut tool, "bin/tool", &b"#!"[..]).unwrap();
            let mut link = header(tar::EntryType::Link, 0, 0o4750);
            b.append_link(&mut link, "bin/tool-again", "bin/tool")
                .unwrap();
            let mut sym = header(tar::EntryType::Symlink, 0, 0o777);
            b.append_link(&mut sym, "bin/sh", "/bin/tool").unwrap();
            let mut dev = header(tar::EntryType::Char, 0, 0o666);
            dev.set_device_major(1).unwrap();
            dev.set_device_minor(3).unwrap();
            b.append_data(&mut dev, "dev/null", io::empty()).unwrap();
        });
        unpack_layer(&layer[..], dest.path()).unwrap();
        let tool = fs::metadata(dest.path().join("bin/tool")).unwrap();
        assert_eq!(
            (tool.uid(), tool.gid(), tool.mode() & 0o7777),
            (1234, 4321, 0o4750)
        );
        let again = fs::metadata(dest.path().join("bin/tool-again")).unwrap();
        assert_eq!(again.ino(), tool.ino(), "hard link lost");
        assert_eq!(
            fs::read_link(dest.path().join("bin/sh")).unwrap(),
            Path::new("/bin/tool")
        );
        let null = fs::symlink_metadata(dest.path().join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!((null.rdev(), null.mode() & 0o777), (makedev(1, 3), 0o666));
    }

    #[test]
    fn xattrs_written_by_gnu_tar_are_restored() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        fs::create_dir_all(source.join("bin")).unwrap();
        fs::write(source.join("bin/ping"), b"ping").unwrap();
        xattr::set(source.join("bin/ping"), "user.gantry", b"kept").unwrap();
        let layer = dir.path().join("layer.tar");
        let status = std::process::Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "-C"])
            .arg(&source)
            .arg("-cf")
            .arg(&layer)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let dest = dir.path().join("dest");
        fs::create_dir(&dest).unwrap();
        unpack_layer(File::open(&layer).unwrap(), &dest).unwrap();
        let value = xattr::get(dest.join("bin/ping"), "user.gantry").unwrap();
        assert_eq!(value.as_deref(), Some(&b"kept"[..]));
    }

    #[test]
    fn parent_directory_traversal_is_refused() {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let layer = tar_of(|b| raw_entry(b, tar::EntryType::Regular, "../escaped", None));
        let error = unpack_layer(&layer[..], &dest).unwrap_err();
        assert!(matches!(error, ImageError::UnsafePath { .. }), "{error}");
        assert!(!outer.path().join("escaped").exists());
    }

    #[test]
    fn writing_through_an_absolute_symlink_is_refused() {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("dest");
        let victim = outer.path().join("victim");
        fs::create_dir_all(&dest).unwrap();
        fs::create_dir_all(&victim).unwrap();
        let layer = tar_of(|b| {
            raw_entry(
                b,
                tar::EntryType::Symlink,
                "escape",
                Some(victim.to_str().unwrap()),
            );
            raw_entry(b, tar::EntryType::Regular, "escape/pwned", None);
        });
        let error = unpack_layer(&layer[..], &dest).unwrap_err();
        assert!(matches!(error, ImageError::UnsafePath { .. }), "{error}");
        assert!(!victim.join("pwned").exists());

        let whiteout_escape = tar_of(|b| {
            raw_entry(
                b,
                tar::EntryType::Symlink,
                "w",
                Some(victim.to_str().unwrap()),
            );
            raw_entry(b, tar::EntryType::Regular, "w/.wh.x", None);
        });
        let dest2 = outer.path().join("dest2");
        fs::create_dir(&dest2).unwrap();
        assert!(unpack_layer(&whiteout_escape[..], &dest2).is_err());
        assert!(!victim.join("x").exists());
    }

    #[test]
    fn compression_is_detected_from_content() {
        let dir = tempfile::tempdir().unwrap();
        let layer = tar_of(|b| file(b, "hello", b"world"));
        let gz = {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            io::Write::write_all(&mut enc, &layer).unwrap();
            enc.finish().unwrap()
        };
        let zst = zstd::encode_all(&layer[..], 1).unwrap();
        for (name, bytes) in [("plain", &layer), ("gz", &gz), ("zst", &zst)] {
            let path = dir.path().join(name);
            fs::write(&path, bytes).unwrap();
            let dest = dir.path().join(format!("{name}-out"));
            fs::create_dir(&dest).unwrap();
            let (diff_id, _) =
                unpack_layer(open_layer(File::open(&path).unwrap()).unwrap(), &dest).unwrap();
            assert_eq!(diff_id, Digest::of(&layer), "{name}");
            assert_eq!(fs::read(dest.join("hello")).unwrap(), b"world");
        }
    }
}
