//! Writes a set of files into a volume directory so that a reader never sees a mix of
//! old and new contents, the way the kubelet's `AtomicWriter` does:
//!
//! ```text
//! <volume>/..2024_01_01_00_00_00.123456789/   the files, written once, never changed
//! <volume>/..data -> ..2024_01_01_00_00_00.123456789
//! <volume>/<key>  -> ..data/<key>             one per top-level name of the payload
//! ```
//!
//! An update writes a new timestamped directory, points a fresh `..data_tmp` symlink
//! at it and renames that over `..data` (rename(2) is atomic), then removes the old
//! directory. The volume directory itself never changes identity, so a container
//! that bind-mounted it sees every update live.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use jiff::Timestamp;

/// The symlink naming the current timestamped directory.
pub const DATA_DIR_NAME: &str = "..data";
/// The symlink that is renamed over `..data`.
const NEW_DATA_DIR_NAME: &str = "..data_tmp";
/// Mode of the volume and timestamped directories (readable by any container user).
const DIR_MODE: u32 = 0o755;

/// One file of a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProjection {
    /// The file's bytes.
    pub data: Vec<u8>,
    /// Its permission bits (e.g. `0o644`).
    pub mode: u32,
}

/// Files by relative path; paths must have been checked with
/// [`validate_item_path`](super::paths::validate_item_path).
pub type Payload = BTreeMap<PathBuf, FileProjection>;

/// Writes payloads into one volume directory.
pub struct AtomicWriter {
    target: PathBuf,
}

impl AtomicWriter {
    /// A writer for the volume directory `target` (created if missing).
    pub fn new(target: impl Into<PathBuf>) -> Self {
        Self {
            target: target.into(),
        }
    }

    /// Makes the volume show exactly `payload`. Returns whether anything changed;
    /// writing an identical payload again is a cheap no-op, so callers can re-sync
    /// on every tick.
    pub fn write(&self, payload: &Payload) -> io::Result<bool> {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&self.target)?;
        let current = self.current_data_dir()?;
        if let Some(current) = &current
            && directory_holds(&self.target.join(current), payload)?
        {
            self.link_user_visible_names(payload)?;
            return Ok(false);
        }
        let fresh = self.new_timestamped_dir()?;
        let fresh_path = self.target.join(&fresh);
        if let Err(error) = write_files(&fresh_path, payload) {
            let _ = fs::remove_dir_all(&fresh_path);
            return Err(error);
        }
        self.swap_data_dir(&fresh)?;
        self.link_user_visible_names(payload)?;
        self.remove_stale_names(payload)?;
        self.remove_old_data_dirs(&fresh)?;
        Ok(true)
    }

    /// The directory `..data` points at, if the volume has been written before.
    fn current_data_dir(&self) -> io::Result<Option<OsString>> {
        match fs::read_link(self.target.join(DATA_DIR_NAME)) {
            Ok(target) => Ok(Some(target.into_os_string())),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates `..<UTC timestamp>.<nanoseconds>` (unique even for writes in the same
    /// nanosecond, by retrying).
    fn new_timestamped_dir(&self) -> io::Result<OsString> {
        loop {
            let now = Timestamp::now();
            let name = format!(
                "..{}.{:09}",
                now.strftime("%Y_%m_%d_%H_%M_%S"),
                now.subsec_nanosecond()
            );
            match DirBuilder::new()
                .mode(DIR_MODE)
                .create(self.target.join(&name))
            {
                Ok(()) => {
                    // The mode given to mkdir is filtered by the umask.
                    fs::set_permissions(self.target.join(&name), Permissions::from_mode(DIR_MODE))?;
                    return Ok(name.into());
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// Points `..data` at `fresh` atomically.
    fn swap_data_dir(&self, fresh: &OsStr) -> io::Result<()> {
        let staging = self.target.join(NEW_DATA_DIR_NAME);
        remove_if_present(&staging)?;
        symlink(fresh, &staging)?;
        fs::rename(&staging, self.target.join(DATA_DIR_NAME))
    }

    /// Ensures `<name> -> ..data/<name>` for every top-level name of the payload.
    fn link_user_visible_names(&self, payload: &Payload) -> io::Result<()> {
        for name in top_level_names(payload) {
            let link = self.target.join(&name);
            let wanted = Path::new(DATA_DIR_NAME).join(&name);
            match fs::read_link(&link) {
                Ok(existing) if existing == wanted => continue,
                Ok(_) => fs::remove_file(&link)?,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                // Something that is not a symlink sits in the way: replace it.
                Err(_) => remove_any(&link)?,
            }
            symlink(&wanted, &link)?;
        }
        Ok(())
    }

    /// Removes user-visible names that the new payload no longer has.
    fn remove_stale_names(&self, payload: &Payload) -> io::Result<()> {
        let wanted = top_level_names(payload);
        for entry in fs::read_dir(&self.target)? {
            let name = entry?.file_name();
            if is_private_name(&name) || wanted.contains(&name) {
                continue;
            }
            remove_any(&self.target.join(&name))?;
        }
        Ok(())
    }

    /// Removes every timestamped directory but `keep`, including ones left behind
    /// by a writer that crashed midway.
    fn remove_old_data_dirs(&self, keep: &OsStr) -> io::Result<()> {
        for entry in fs::read_dir(&self.target)? {
            let name = entry?.file_name();
            if name == keep || name == DATA_DIR_NAME || !is_private_name(&name) {
                continue;
            }
            remove_any(&self.target.join(&name))?;
        }
        Ok(())
    }
}

/// Names starting with `..` belong to the writer; validated payload paths never do.
fn is_private_name(name: &OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b"..")
}

fn top_level_names(payload: &Payload) -> BTreeSet<OsString> {
    payload
        .keys()
        .filter_map(|path| path.iter().next())
        .map(OsStr::to_os_string)
        .collect()
}

/// Whether `dir` holds exactly the payload's files, contents and modes.
fn directory_holds(dir: &Path, payload: &Payload) -> io::Result<bool> {
    let mut on_disk = Vec::new();
    if let Err(error) = list_files(dir, Path::new(""), &mut on_disk) {
        return if error.kind() == io::ErrorKind::NotFound {
            Ok(false)
        } else {
            Err(error)
        };
    }
    if on_disk.len() != payload.len() {
        return Ok(false);
    }
    for relative in on_disk {
        let Some(wanted) = payload.get(&relative) else {
            return Ok(false);
        };
        let path = dir.join(&relative);
        let mode = fs::symlink_metadata(&path)?.permissions().mode() & 0o7777;
        if mode != wanted.mode || fs::read(&path)? != wanted.data {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Collects the relative paths of the regular files below `dir`.
fn list_files(dir: &Path, prefix: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let relative = prefix.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            list_files(&entry.path(), &relative, files)?;
        } else {
            files.push(relative);
        }
    }
    Ok(())
}

fn write_files(dir: &Path, payload: &Payload) -> io::Result<()> {
    for (relative, file) in payload {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(parent)?;
        }
        let mut handle = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode)
            .open(&path)?;
        handle.write_all(&file.data)?;
        // The mode given to open(2) is filtered by the umask; the payload's is exact.
        handle.set_permissions(Permissions::from_mode(file.mode))?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Removes a file, symlink or directory tree (never following symlinks).
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    fn payload(files: &[(&str, &str, u32)]) -> Payload {
        files
            .iter()
            .map(|(path, data, mode)| (PathBuf::from(path), file(data, *mode)))
            .collect()
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn names_in(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn first_write_creates_data_dir_and_key_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("vol");
        let writer = AtomicWriter::new(&volume);
        let changed = writer
            .write(&payload(&[("a", "1", 0o644), ("sub/b", "2", 0o400)]))
            .unwrap();
        assert!(changed);

        assert_eq!(fs::read_to_string(volume.join("a")).unwrap(), "1");
        assert_eq!(fs::read_to_string(volume.join("sub/b")).unwrap(), "2");
        assert_eq!(
            fs::read_link(volume.join("a")).unwrap(),
            PathBuf::from("..data/a")
        );
        assert_eq!(
            fs::read_link(volume.join("sub")).unwrap(),
            PathBuf::from("..data/sub")
        );
        let data_target = fs::read_link(volume.join(DATA_DIR_NAME)).unwrap();
        let name = data_target.to_string_lossy();
        assert!(name.starts_with("..") && name.len() == "..2024_01_01_00_00_00.123456789".len());
        assert_eq!(mode_of(&volume.join("a")), 0o644);
        assert_eq!(mode_of(&volume.join("sub/b")), 0o400);
        assert_eq!(mode_of(&volume.join(&data_target)), DIR_MODE);
    }

    #[test]
    fn update_replaces_content_and_removes_old_keys_and_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(dir.path());
        writer
            .write(&payload(&[("a", "old", 0o644), ("gone", "x", 0o644)]))
            .unwrap();
        let old_data = fs::read_link(dir.path().join(DATA_DIR_NAME)).unwrap();

        let changed = writer
            .write(&payload(&[("a", "new", 0o600), ("added", "y", 0o644)]))
            .unwrap();
        assert!(changed);

        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "new");
        assert_eq!(mode_of(&dir.path().join("a")), 0o600);
        assert_eq!(fs::read_to_string(dir.path().join("added")).unwrap(), "y");
        let new_data = fs::read_link(dir.path().join(DATA_DIR_NAME)).unwrap();
        assert_ne!(old_data, new_data);
        let expected: BTreeSet<String> = [
            "..data".to_owned(),
            new_data.to_string_lossy().into_owned(),
            "a".to_owned(),
            "added".to_owned(),
        ]
        .into();
        assert_eq!(names_in(dir.path()), expected);
    }

    #[test]
    fn identical_payload_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(dir.path());
        let files = payload(&[("a", "1", 0o644)]);
        writer.write(&files).unwrap();
        let data = fs::read_link(dir.path().join(DATA_DIR_NAME)).unwrap();
        assert!(!writer.write(&files).unwrap());
        assert_eq!(fs::read_link(dir.path().join(DATA_DIR_NAME)).unwrap(), data);

        // A mode change alone is a change.
        assert!(writer.write(&payload(&[("a", "1", 0o600)])).unwrap());
    }

    #[test]
    fn empty_payload_leaves_only_the_data_link() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(dir.path());
        writer.write(&payload(&[("a", "1", 0o644)])).unwrap();
        writer.write(&Payload::new()).unwrap();
        let names = names_in(dir.path());
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.contains(DATA_DIR_NAME));
    }

    #[test]
    fn leftovers_of_a_crashed_write_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("..2020_01_01_00_00_00.000000001")).unwrap();
        symlink("..nowhere", dir.path().join(NEW_DATA_DIR_NAME)).unwrap();
        let writer = AtomicWriter::new(dir.path());
        writer.write(&payload(&[("a", "1", 0o644)])).unwrap();
        assert_eq!(names_in(dir.path()).len(), 3);
    }
}
