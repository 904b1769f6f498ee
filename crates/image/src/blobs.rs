//! Content-addressed blob storage: `blobs/sha256/<hex>`, verified and atomically written.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingWriter};
use crate::error::{ImageError, Result};

/// The blob directory of an image store.
#[derive(Clone, Debug)]
pub(crate) struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    pub(crate) fn open(images_dir: &Path) -> Result<BlobStore> {
        let dir = images_dir.join("blobs").join("sha256");
        let tmp = images_dir.join("tmp");
        for d in [&dir, &tmp] {
            fs::create_dir_all(d).map_err(ImageError::io(format!("creating {}", d.display())))?;
        }
        Ok(BlobStore { dir, tmp })
    }

    pub(crate) fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    pub(crate) fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// A scratch directory on the same filesystem, so renames into the store are atomic.
    pub(crate) fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    pub(crate) fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        fs::read(self.path(digest)).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => ImageError::NotFound(format!("blob {digest}")),
            _ => ImageError::Io {
                context: format!("reading blob {digest}"),
                source,
            },
        })
    }

    pub(crate) fn open_blob(&self, digest: &Digest) -> Result<File> {
        File::open(self.path(digest)).map_err(ImageError::io(format!("opening blob {digest}")))
    }

    pub(crate) fn size(&self, digest: &Digest) -> Result<u64> {
        Ok(fs::metadata(self.path(digest))
            .map_err(ImageError::io(format!("reading blob {digest}")))?
            .len())
    }

    /// Stores bytes, returning their digest.
    pub(crate) fn put(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        self.put_verified(&mut &bytes[..], Some(&digest))
    }

    /// Streams `reader` into the store, refusing the content unless it hashes to `expected`
    /// (when given). Returns the digest. The blob appears only complete and synced.
    pub(crate) fn put_verified(
        &self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
    ) -> Result<Digest> {
        if let Some(digest) = expected.filter(|d| self.contains(d)) {
            io::copy(reader, &mut io::sink()).map_err(ImageError::io("reading blob content"))?;
            return Ok(digest.clone());
        }
        let temp = tempfile::NamedTempFile::new_in(&self.tmp)
            .map_err(ImageError::io("creating a temporary blob"))?;
        let mut writer = HashingWriter::new(io::BufWriter::new(temp));
        io::copy(reader, &mut writer).map_err(ImageError::io("writing blob"))?;
        let (buffered, digest, _) = writer.finish();
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(ImageError::DigestMismatch {
                what: "blob".into(),
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        let temp = buffered.into_inner().map_err(|e| ImageError::Io {
            context: "flushing blob".into(),
            source: e.into_error(),
        })?;
        self.commit(temp, &digest)?;
        Ok(digest)
    }

    /// Moves a fully written and verified temp file into place.
    pub(crate) fn commit(&self, temp: tempfile::NamedTempFile, digest: &Digest) -> Result<()> {
        temp.as_file()
            .sync_all()
            .map_err(ImageError::io("syncing blob"))?;
        let target = self.path(digest);
        temp.persist(&target).map_err(|e| ImageError::Io {
            context: format!("storing blob {digest}"),
            source: e.error,
        })?;
        sync_dir(&self.dir)
    }

    pub(crate) fn new_temp(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::NamedTempFile::new_in(&self.tmp)
            .map_err(ImageError::io("creating a temporary blob"))
    }

    /// Every stored digest, for garbage collection.
    pub(crate) fn list(&self) -> Result<Vec<Digest>> {
        let entries = fs::read_dir(&self.dir).map_err(ImageError::io("listing blobs"))?;
        Ok(entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                Digest::parse(&format!("sha256:{}", entry.file_name().to_string_lossy())).ok()
            })
            .collect())
    }

    pub(crate) fn remove(&self, digest: &Digest) -> Result<u64> {
        let path = self.path(digest);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(source) => Err(ImageError::Io {
                context: format!("removing blob {digest}"),
                source,
            }),
        }
    }
}

/// Makes a rename durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ImageError::io(format!("syncing {}", dir.display())))
}

/// Writes a small file atomically (temp file, fsync, rename, fsync dir).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .map_err(ImageError::io(format!("writing {}", path.display())))?;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(ImageError::io(format!("writing {}", path.display())))?;
    temp.persist(path).map_err(|e| ImageError::Io {
        context: format!("writing {}", path.display()),
        source: e.error,
    })?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_before_they_appear() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        let digest = blobs.put(b"hello").unwrap();
        assert_eq!(blobs.read(&digest).unwrap(), b"hello");

        let wrong = Digest::of(b"other");
        let error = blobs
            .put_verified(&mut &b"hello!"[..], Some(&wrong))
            .unwrap_err();
        assert!(matches!(error, ImageError::DigestMismatch { .. }));
        assert!(!blobs.contains(&wrong));
        assert_eq!(
            fs::read_dir(blobs.tmp_dir()).unwrap().count(),
            0,
            "temp file left behind"
        );
    }
}
