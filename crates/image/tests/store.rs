//! The store end to end on a real filesystem: import, tag, remove, prune, save and load.

use std::fs;
use std::os::unix::fs::MetadataExt;

use gantry_image::test_support::{BUSYBOX_TAG, import_busybox};
use gantry_image::{ArchiveFormat, ImageError, ImageStore, Removed};

fn store() -> (tempfile::TempDir, ImageStore) {
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    (root, store)
}

fn blob_count(root: &std::path::Path) -> usize {
    fs::read_dir(root.join("images/blobs/sha256"))
        .unwrap()
        .count()
}

#[test]
fn an_imported_busybox_resolves_to_a_runnable_root_filesystem() {
    let (_root, store) = store();
    let id = import_busybox(&store).unwrap();
    let image = store.resolve(BUSYBOX_TAG).unwrap();
    assert_eq!(image.id, id);
    assert_eq!(image.references, vec!["busybox:test".to_string()]);
    assert_eq!(image.layers.len(), 1);
    let layer = &image.layers[0];
    assert_eq!(
        fs::metadata(layer.join("bin/busybox")).unwrap().len(),
        fs::metadata("/bin/busybox").unwrap().len()
    );
    assert_eq!(
        fs::read_link(layer.join("bin/sh")).unwrap(),
        std::path::Path::new("/bin/busybox")
    );
    assert!(
        fs::read_to_string(layer.join("etc/passwd"))
            .unwrap()
            .starts_with("root:x:0:0:")
    );
    assert_eq!(
        fs::metadata(layer.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    let config = image.config.config().as_ref().unwrap();
    assert_eq!(config.cmd().as_ref().unwrap(), &vec!["/bin/sh".to_string()]);
    assert!(
        config
            .env()
            .as_ref()
            .unwrap()
            .iter()
            .any(|e| e.starts_with("PATH="))
    );

    // By ID prefix too, and inspect speaks Docker's field names.
    assert_eq!(store.resolve(&id.hex()[..12]).unwrap().id, id);
    let inspect = store.inspect(BUSYBOX_TAG).unwrap();
    assert_eq!(inspect["Id"], id.to_string());
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(inspect["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(inspect["Config"]["Cmd"][0], "/bin/sh");
}

#[test]
fn tags_untag_and_removal_follow_docker() {
    let (root, store) = store();
    let id = import_busybox(&store).unwrap();
    store
        .tag(BUSYBOX_TAG, "localhost:5000/tools/box:1")
        .unwrap();
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].repo_tags,
        vec![
            "busybox:test".to_string(),
            "localhost:5000/tools/box:1".to_string()
        ]
    );

    // By ID with two names: refused without force.
    let refused = store.remove(id.as_str(), false).unwrap_err();
    assert!(matches!(refused, ImageError::Conflict(_)), "{refused}");

    // By name: only that name goes.
    assert_eq!(
        store.remove("localhost:5000/tools/box:1", false).unwrap(),
        vec![Removed::Untagged("localhost:5000/tools/box:1".into())]
    );
    assert!(blob_count(root.path()) >= 3);

    // The last name takes the image and its content with it.
    let removed = store.remove(BUSYBOX_TAG, false).unwrap();
    assert_eq!(removed.last(), Some(&Removed::Deleted(id)));
    assert!(matches!(
        store.resolve(BUSYBOX_TAG),
        Err(ImageError::NotFound(_))
    ));
    assert_eq!(blob_count(root.path()), 0);
    assert_eq!(
        fs::read_dir(root.path().join("images/snapshots"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn images_in_use_are_spared_unless_forced() {
    let root = tempfile::tempdir().unwrap();
    let plain = ImageStore::open(root.path()).unwrap();
    let id = import_busybox(&plain).unwrap();
    let used = id.clone();
    let guarded = plain
        .clone()
        .with_usage_check(std::sync::Arc::new(move |candidate| *candidate == used));
    assert!(matches!(
        guarded.remove(BUSYBOX_TAG, false),
        Err(ImageError::Conflict(_))
    ));
    assert!(guarded.prune(true).unwrap().deleted.is_empty());
    assert!(guarded.remove(BUSYBOX_TAG, true).is_ok());
}

#[test]
fn prune_removes_dangling_images_only() {
    let (_root, store) = store();
    let first = import_busybox(&store).unwrap();
    // Re-importing under the same name leaves the first image dangling (its created time differs).
    let second = import_busybox(&store).unwrap();
    assert_ne!(first, second);
    assert_eq!(store.list().unwrap().len(), 2);
    let report = store.prune(false).unwrap();
    assert_eq!(report.deleted, vec![first]);
    assert!(report.reclaimed_bytes > 0);
    assert_eq!(store.list().unwrap().len(), 1);
    assert!(
        store.resolve(BUSYBOX_TAG).unwrap().layers[0]
            .join("bin/busybox")
            .is_file()
    );
}

fn round_trip(format: ArchiveFormat) {
    let (root, store) = store();
    let id = import_busybox(&store).unwrap();
    store.tag(BUSYBOX_TAG, "example.com/a/b:v2").unwrap();
    let archive = root.path().join("image.tar");
    store
        .save(
            &[BUSYBOX_TAG.to_string(), "example.com/a/b:v2".to_string()],
            format,
            fs::File::create(&archive).unwrap(),
        )
        .unwrap();
    store.remove(id.as_str(), true).unwrap();
    assert!(store.list().unwrap().is_empty());

    let loaded = store.load(fs::File::open(&archive).unwrap()).unwrap();
    let ids: Vec<_> = loaded.iter().map(|l| l.id.clone()).collect();
    assert!(
        ids.iter().all(|loaded_id| *loaded_id == id),
        "{ids:?} != {id}"
    );
    let image = store.resolve("example.com/a/b:v2").unwrap();
    assert_eq!(image.id, id);
    assert_eq!(store.resolve(BUSYBOX_TAG).unwrap().id, id);
    assert!(image.layers[0].join("bin/busybox").is_file());
}

#[test]
fn docker_archive_save_and_load_round_trip_keeps_the_image_id() {
    round_trip(ArchiveFormat::DockerArchive);
}

#[test]
fn oci_archive_save_and_load_round_trip_keeps_the_image_id() {
    round_trip(ArchiveFormat::OciArchive);
}

#[test]
fn docker_archive_layout_is_what_docker_load_expects() {
    let (root, store) = store();
    let id = import_busybox(&store).unwrap();
    let archive = root.path().join("image.tar");
    store
        .save(
            &[BUSYBOX_TAG.to_string()],
            ArchiveFormat::DockerArchive,
            fs::File::create(&archive).unwrap(),
        )
        .unwrap();
    let mut names = Vec::new();
    let mut manifest = None;
    for entry in tar::Archive::new(fs::File::open(&archive).unwrap())
        .entries()
        .unwrap()
    {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        if name == "manifest.json" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            manifest = Some(serde_json::from_str::<serde_json::Value>(&text).unwrap());
        }
        names.push(name);
    }
    let manifest = manifest.expect("manifest.json");
    assert_eq!(manifest[0]["Config"], format!("{}.json", id.hex()));
    assert_eq!(manifest[0]["RepoTags"][0], "busybox:test");
    let layer = manifest[0]["Layers"][0].as_str().unwrap();
    assert!(layer.ends_with("/layer.tar") && names.contains(&layer.to_string()));
    assert!(names.contains(&"repositories".to_string()));
}

#[test]
fn archives_with_path_traversal_are_refused() {
    let (root, store) = store();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_old();
    let name = b"../../evil";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_size(4);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    builder.append(&header, &b"evil"[..]).unwrap();
    let bytes = builder.into_inner().unwrap();
    let error = store.load(&bytes[..]).unwrap_err();
    assert!(matches!(error, ImageError::UnsafePath { .. }), "{error}");
    assert!(!root.path().join("evil").exists());
}

#[test]
fn shared_layers_stay_until_the_last_image_using_them_goes() {
    let (root, store) = store();
    let rootfs = tempfile::tempdir().unwrap();
    gantry_image::test_support::busybox_rootfs(rootfs.path()).unwrap();
    let options = gantry_image::ImportOptions::default();
    let a = store.import(rootfs.path(), "a:1", &options).unwrap();
    let b = store.import(rootfs.path(), "b:1", &options).unwrap();
    assert_ne!(a, b, "configs differ by creation time");
    let layer = store.resolve("a:1").unwrap().layers[0].clone();
    assert_eq!(
        store.resolve("b:1").unwrap().layers[0],
        layer,
        "same content, same snapshot"
    );

    store.remove("a:1", false).unwrap();
    assert!(
        layer.join("bin/busybox").is_file(),
        "b:1 still needs the layer"
    );
    assert!(store.resolve("b:1").is_ok());
    store.remove("b:1", false).unwrap();
    assert!(!layer.exists());
    assert_eq!(blob_count(root.path()), 0);
}

#[test]
fn import_keeps_device_nodes_fifos_and_ownership() {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    use std::os::unix::fs::FileTypeExt;

    let (_root, store) = store();
    let rootfs = tempfile::tempdir().unwrap();
    fs::create_dir(rootfs.path().join("dev")).unwrap();
    mknod(
        &rootfs.path().join("dev/null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    mknod(
        &rootfs.path().join("dev/pipe"),
        SFlag::S_IFIFO,
        Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    fs::write(rootfs.path().join("owned"), b"x").unwrap();
    std::os::unix::fs::chown(rootfs.path().join("owned"), Some(1000), Some(2000)).unwrap();

    store
        .import(rootfs.path(), "devices:1", &Default::default())
        .unwrap();
    let layer = store.resolve("devices:1").unwrap().layers[0].clone();
    let null = fs::symlink_metadata(layer.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), makedev(1, 3));
    assert!(
        fs::symlink_metadata(layer.join("dev/pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let owned = fs::metadata(layer.join("owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1000, 2000));
}

#[test]
fn archive_files_linking_outside_the_archive_are_refused() {
    let (_root, store) = store();
    let secret = tempfile::NamedTempFile::new().unwrap();
    fs::write(secret.path(), b"host secret").unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let manifest = br#"[{"Config":"config.json","RepoTags":["stolen:1"],"Layers":["layer.tar"]}]"#;
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    builder
        .append_data(&mut header, "manifest.json", &manifest[..])
        .unwrap();
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    link.set_uid(0);
    link.set_gid(0);
    link.set_mtime(0);
    builder
        .append_link(&mut link, "config.json", secret.path())
        .unwrap();
    let bytes = builder.into_inner().unwrap();

    let error = store.load(&bytes[..]).unwrap_err();
    assert!(matches!(error, ImageError::UnsafePath { .. }), "{error}");
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn import_takes_a_compressed_tarball_too() {
    let (root, store) = store();
    let rootfs = tempfile::tempdir().unwrap();
    gantry_image::test_support::busybox_rootfs(rootfs.path()).unwrap();
    let tarball = tempfile::NamedTempFile::new().unwrap();
    let gz = flate2::write::GzEncoder::new(tarball.reopen().unwrap(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    builder.follow_symlinks(false);
    builder.append_dir_all(".", rootfs.path()).unwrap();
    builder.into_inner().unwrap().finish().unwrap();

    let id = store
        .import(tarball.path(), "fromtar:1", &Default::default())
        .unwrap();
    let image = store.resolve("fromtar:1").unwrap();
    assert_eq!(image.id, id);
    assert!(image.layers[0].join("bin/busybox").is_file());
    let diff_id = &image.config.rootfs().diff_ids()[0];
    let inspect = store.inspect("fromtar:1").unwrap();
    assert_eq!(inspect["RootFS"]["Layers"][0], diff_id.as_str());
    // The stored blob is the gzip file itself; its digest is not the diff ID.
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(
            root.path()
                .join("images/blobs/sha256")
                .join(image.manifest.hex()),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_ne!(manifest["layers"][0]["digest"], diff_id.as_str());
}
