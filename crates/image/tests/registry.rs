//! Pull and push through `oci-client` against Debian's `docker-registry` on 127.0.0.1.

use gantry_image::test_support::{BUSYBOX_TAG, TestRegistry, import_busybox};
use gantry_image::{Credentials, ImageError, ImageStore, PullOptions};
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

fn new_store() -> (tempfile::TempDir, ImageStore) {
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    (root, store)
}

/// Pushes an index with the given platforms, each pointing at `manifest`.
async fn push_index(
    registry: &TestRegistry,
    repository: &str,
    tag: &str,
    manifest: &str,
    size: u64,
    platforms: &[(&str, &str)],
) {
    let manifests: Vec<serde_json::Value> = platforms
        .iter()
        .map(|(os, arch)| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest, "size": size,
                "platform": {"os": os, "architecture": arch}
            })
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![registry.host()]),
        ..Default::default()
    });
    let reference: oci_client::Reference = format!("{}/{repository}:{tag}", registry.host())
        .parse()
        .unwrap();
    client
        .store_auth_if_needed(reference.resolve_registry(), &RegistryAuth::Anonymous)
        .await;
    client
        .push_manifest_raw(
            &reference,
            serde_json::to_vec(&index).unwrap(),
            http::HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_pull_selects_the_host_platform_or_explains_the_mismatch() {
    let registry = TestRegistry::start().unwrap();
    let (_root, store) = new_store();
    let id = import_busybox(&store).unwrap();
    let name = format!("{}/multi/busybox:single", registry.host());
    store.tag(BUSYBOX_TAG, &name).unwrap();
    let manifest = store.push(&name, &PullOptions::default()).await.unwrap();
    let manifest_size = store.blob_size(&manifest).unwrap();

    push_index(
        &registry,
        "multi/busybox",
        "all",
        manifest.as_str(),
        manifest_size,
        &[("linux", "arm64"), ("linux", "amd64")],
    )
    .await;
    push_index(
        &registry,
        "multi/busybox",
        "arm",
        manifest.as_str(),
        manifest_size,
        &[("linux", "arm64")],
    )
    .await;

    let (_root2, fresh) = new_store();
    let pulled = fresh
        .pull(
            &format!("{}/multi/busybox:all", registry.host()),
            &PullOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(pulled, id);
    let image = fresh
        .resolve(&format!("{}/multi/busybox:all", registry.host()))
        .unwrap();
    assert!(image.layers[0].join("bin/busybox").is_file());
    // Not yet local under this name: resolve_or_pull fetches it (the blobs are shared).
    let single = fresh
        .resolve_or_pull(&name, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(single.id, id);
    let pinned = format!("{}/multi/busybox@{manifest}", registry.host());
    assert!(
        single.repo_digests.contains(&pinned),
        "{:?}",
        single.repo_digests
    );

    let error = fresh
        .pull(
            &format!("{}/multi/busybox:arm", registry.host()),
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "image platform linux/arm64 does not match the host linux/amd64"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_registries_need_the_right_credentials() {
    let registry = TestRegistry::start_with_basic_auth("alice", "s3cret").unwrap();
    let (_root, store) = new_store();
    let id = import_busybox(&store).unwrap();
    let name = format!("{}/private/busybox:1", registry.host());
    store.tag(BUSYBOX_TAG, &name).unwrap();

    let anonymous = store
        .push(&name, &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(anonymous, ImageError::Registry(_)), "{anonymous}");

    let good = PullOptions {
        credentials: Some(Credentials {
            username: "alice".into(),
            password: "s3cret".into(),
        }),
        ..Default::default()
    };
    store.push(&name, &good).await.unwrap();

    let (_root2, fresh) = new_store();
    let wrong = PullOptions {
        credentials: Some(Credentials {
            username: "alice".into(),
            password: "nope".into(),
        }),
        ..Default::default()
    };
    let denied = fresh.pull(&name, &wrong).await.unwrap_err();
    assert!(denied.to_string().contains("denied"), "{denied}");
    assert_eq!(fresh.pull(&name, &good).await.unwrap(), id);
}

/// A one-file layer tar.
fn layer_tar(path: &str, content: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    builder.append_data(&mut header, path, content).unwrap();
    builder.into_inner().unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    gantry_image::Digest::of(bytes).to_string()
}

/// Pushes an image built by hand, the way other tools would have pushed it.
async fn push_raw_image(
    registry: &TestRegistry,
    name: &str,
    manifest_type: &str,
    config_type: &str,
    layers: &[(&str, Vec<u8>, Vec<u8>)], // (media type, blob, uncompressed tar)
) {
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![registry.host()]),
        ..Default::default()
    });
    let reference: oci_client::Reference = name.parse().unwrap();
    client
        .store_auth_if_needed(reference.resolve_registry(), &RegistryAuth::Anonymous)
        .await;
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(_, _, tar)| sha256(tar)).collect::<Vec<_>>()},
    });
    let config = serde_json::to_vec(&config).unwrap();
    client
        .push_blob(&reference, config.clone(), &sha256(&config))
        .await
        .unwrap();
    for (_, blob, _) in layers {
        client
            .push_blob(&reference, blob.clone(), &sha256(blob))
            .await
            .unwrap();
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type, "size": config.len(), "digest": sha256(&config)},
        "layers": layers.iter().map(|(media_type, blob, _)| serde_json::json!({
            "mediaType": media_type, "size": blob.len(), "digest": sha256(blob)
        })).collect::<Vec<_>>(),
    });
    client
        .push_manifest_raw(
            &reference,
            serde_json::to_vec(&manifest).unwrap(),
            http::HeaderValue::from_str(manifest_type).unwrap(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_schema2_gzip_and_oci_zstd_images_pull_and_stack() {
    let registry = TestRegistry::start().unwrap();
    let base = layer_tar("hello", b"from the base layer");
    let gzip = {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, &base).unwrap();
        encoder.finish().unwrap()
    };
    let top = layer_tar("top", b"from the top layer");
    let zstd = zstd::encode_all(&top[..], 3).unwrap();

    let docker_name = format!("{}/raw/docker:1", registry.host());
    push_raw_image(
        &registry,
        &docker_name,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.container.image.v1+json",
        &[(
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            gzip.clone(),
            base.clone(),
        )],
    )
    .await;
    let oci_name = format!("{}/raw/oci:1", registry.host());
    push_raw_image(
        &registry,
        &oci_name,
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.config.v1+json",
        &[
            ("application/vnd.oci.image.layer.v1.tar+gzip", gzip, base),
            ("application/vnd.oci.image.layer.v1.tar+zstd", zstd, top),
        ],
    )
    .await;

    let (_root, store) = new_store();
    store
        .pull(&docker_name, &PullOptions::default())
        .await
        .unwrap();
    store
        .pull(&oci_name, &PullOptions::default())
        .await
        .unwrap();
    let docker = store.resolve(&docker_name).unwrap();
    let oci = store.resolve(&oci_name).unwrap();
    assert_eq!(
        std::fs::read(docker.layers[0].join("hello")).unwrap(),
        b"from the base layer"
    );
    assert_eq!(oci.layers.len(), 2);
    assert_eq!(
        oci.layers[0], docker.layers[0],
        "the shared base layer is unpacked once"
    );
    assert_eq!(
        std::fs::read(oci.layers[1].join("top")).unwrap(),
        b"from the top layer"
    );

    // A Docker-format image goes back out with its own media type and digest.
    let renamed = format!("{}/raw/copy:1", registry.host());
    store.tag(&docker_name, &renamed).unwrap();
    let pushed = store.push(&renamed, &PullOptions::default()).await.unwrap();
    assert_eq!(pushed, docker.manifest);
}
