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
    assert!(single.repo_digests.contains(&pinned), "{:?}", single.repo_digests);

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
