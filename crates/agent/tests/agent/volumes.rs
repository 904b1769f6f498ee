//! Pod volumes against a real API server: contents written from ConfigMaps,
//! Secrets and the downward API, updates seen through the path a container would
//! bind-mount, tmpfs-backed emptyDirs, hostPaths and claims. Runs as root (mounts);
//! no containers needed.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use gantry_agent::volumes::{ObjectKind, PodVolumes, VolumeError, VolumeManager, VolumeWatcher};
use gantry_apiserver::testing::TestServer;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, Container, DownwardAPIProjection,
    DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource,
    KeyToPath, ObjectFieldSelector, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, Pod,
    PodSpec, ProjectedVolumeSource, Secret, SecretProjection, SecretVolumeSource,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// A manager rooted in a scratch directory, with a guard that unmounts and
/// deletes every pod it prepared even when the test fails.
struct Fixture {
    manager: VolumeManager,
    client: kube::Client,
    prepared_uids: Vec<String>,
    // Dropped after the guard above has cleaned up (fields drop in order).
    root: TempDir,
    _server: TestServer,
}

impl Fixture {
    async fn start() -> Fixture {
        let server = TestServer::start();
        let client = server.client().await;
        let root = tempfile::tempdir().expect("scratch root");
        let manager = VolumeManager::new(client.clone(), root.path().join("pods"));
        Fixture {
            manager,
            client,
            prepared_uids: Vec::new(),
            root,
            _server: server,
        }
    }

    async fn prepare(&mut self, pod: &Pod) -> Result<PodVolumes, VolumeError> {
        self.prepared_uids
            .push(pod.metadata.uid.clone().expect("test pods have uids"));
        self.manager.prepare(pod).await
    }

    fn pod_dir(&self, pod: &Pod) -> PathBuf {
        self.root
            .path()
            .join("pods")
            .join(pod.metadata.uid.as_deref().expect("uid"))
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), "default")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let manager = self.manager.clone();
        let uids = std::mem::take(&mut self.prepared_uids);
        // Cleanup is async; run it on a runtime of its own, off the test's runtime.
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            for uid in uids {
                if let Err(error) = runtime.block_on(manager.cleanup(&uid)) {
                    eprintln!("cleanup of pod {uid} failed: {error}");
                }
            }
        })
        .join();
        if cleaned.is_err() {
            eprintln!("volume cleanup panicked");
        }
    }
}

fn unique_uid() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn pod_with(volumes: Vec<Volume>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some(unique_uid()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                ..Default::default()
            }],
            volumes: Some(volumes),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn config_map_volume(name: &str, config_map: &str, optional: Option<bool>) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.into(),
            optional,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(key, value)| ((*key).into(), (*value).into()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o7777
}

/// The `/proc/self/mountinfo` entry of `path`: (filesystem type, super options).
fn mount_entry(path: &Path) -> Option<(String, String)> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let wanted = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    mountinfo.lines().rev().find_map(|line| {
        let (mount, filesystem) = line.split_once(" - ")?;
        let mount_point = mount.split(' ').nth(4)?;
        if Path::new(mount_point) != wanted {
            return None;
        }
        let mut filesystem = filesystem.split(' ');
        let fs_type = filesystem.next()?.to_owned();
        let super_options = filesystem.nth(1)?.to_owned();
        Some((fs_type, super_options))
    })
}

fn user_visible_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("volume dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| !name.starts_with(".."))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn config_map_updates_show_through_the_same_path() {
    let mut fixture = Fixture::start().await;
    let config_maps = fixture.config_maps();
    let created = config_maps
        .create(
            &PostParams::default(),
            &config_map("app", &[("app.conf", "v1")]),
        )
        .await
        .expect("create configmap");
    let pod = pod_with(vec![config_map_volume("config", "app", None)]);

    let volumes = fixture.prepare(&pod).await.expect("prepare");
    let volume = volumes.get("config").expect("prepared volume");
    let expected_path = fixture
        .pod_dir(&pod)
        .join("volumes/kubernetes.io~configmap/config");
    assert_eq!(volume.path, expected_path);
    assert!(volume.read_only);
    let file = volume.path.join("app.conf");
    assert_eq!(fs::read_to_string(&file).unwrap(), "v1");
    assert_eq!(mode_of(&file), 0o644);
    assert_eq!(
        fs::read_link(&file).unwrap(),
        PathBuf::from("..data/app.conf")
    );
    let inode_before = fs::metadata(&volume.path).unwrap().ino();

    let mut updated = created;
    updated.data = Some(BTreeMap::from([
        ("app.conf".into(), "v2".into()),
        ("extra".into(), "new key".into()),
    ]));
    config_maps
        .replace("app", &PostParams::default(), &updated)
        .await
        .expect("update configmap");
    fixture
        .manager
        .refresh(&pod, &volumes)
        .await
        .expect("refresh");

    assert_eq!(fs::read_to_string(&file).unwrap(), "v2");
    assert_eq!(
        fs::read_to_string(volume.path.join("extra")).unwrap(),
        "new key"
    );
    assert_eq!(
        fs::metadata(&volume.path).unwrap().ino(),
        inode_before,
        "the bind-mounted directory must stay the same"
    );

    // Preparing again (an agent restart) changes nothing.
    let again = fixture.prepare(&pod).await.expect("prepare again");
    assert_eq!(again, volumes);
    assert_eq!(user_visible_names(&volume.path), ["app.conf", "extra"]);
}

#[tokio::test]
async fn secret_items_get_their_modes_on_a_tmpfs() {
    let mut fixture = Fixture::start().await;
    let secrets: Api<Secret> = Api::namespaced(fixture.client.clone(), "default");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("creds".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("user".into(), ByteString(b"admin".to_vec())),
            ("password".into(), ByteString(b"s3cret\n".to_vec())),
            ("token".into(), ByteString(vec![0, 159, 146, 150])),
        ])),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let item = |key: &str, path: &str, mode: Option<i32>| KeyToPath {
        key: key.into(),
        path: path.into(),
        mode,
    };
    let pod = pod_with(vec![Volume {
        name: "creds".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some("creds".into()),
            default_mode: Some(0o400),
            items: Some(vec![
                item("password", "db/password", None),
                item("token", "token.bin", Some(0o440)),
            ]),
            optional: None,
        }),
        ..Default::default()
    }]);

    let volumes = fixture.prepare(&pod).await.expect("prepare");
    let dir = &volumes.get("creds").expect("volume").path;
    assert_eq!(
        fs::read_to_string(dir.join("db/password")).unwrap(),
        "s3cret\n"
    );
    assert_eq!(fs::read(dir.join("token.bin")).unwrap(), [0, 159, 146, 150]);
    assert_eq!(mode_of(&dir.join("db/password")), 0o400);
    assert_eq!(mode_of(&dir.join("token.bin")), 0o440);
    assert_eq!(user_visible_names(dir), ["db", "token.bin"]);
    let (fs_type, _) = mount_entry(dir).expect("secret volumes are mounted");
    assert_eq!(fs_type, "tmpfs");

    // A refresh racing the pod's teardown must not bring the volume back.
    let dir = fs::canonicalize(dir).unwrap();
    let uid = pod.metadata.uid.as_deref().unwrap();
    fixture.manager.cleanup(uid).await.expect("cleanup");
    fixture
        .manager
        .refresh(&pod, &volumes)
        .await
        .expect("refresh after cleanup");
    assert!(!fixture.pod_dir(&pod).exists());
    assert_eq!(mount_entry(&dir), None);
}

#[tokio::test]
async fn items_naming_missing_keys_fail_unless_optional() {
    let mut fixture = Fixture::start().await;
    fixture
        .config_maps()
        .create(
            &PostParams::default(),
            &config_map("partial", &[("present", "x")]),
        )
        .await
        .expect("create configmap");
    let with_items = |optional: Option<bool>| {
        let mut volume = config_map_volume("config", "partial", optional);
        if let Some(source) = volume.config_map.as_mut() {
            source.items = Some(vec![
                KeyToPath {
                    key: "present".into(),
                    path: "p".into(),
                    mode: None,
                },
                KeyToPath {
                    key: "absent".into(),
                    path: "a".into(),
                    mode: None,
                },
            ]);
        }
        pod_with(vec![volume])
    };

    let error = fixture.prepare(&with_items(None)).await.unwrap_err();
    assert!(
        matches!(&error, VolumeError::MissingKey { key, .. } if key == "absent"),
        "{error}"
    );
    assert!(error.is_config_error());

    let volumes = fixture
        .prepare(&with_items(Some(true)))
        .await
        .expect("optional");
    let dir = &volumes.get("config").expect("volume").path;
    assert_eq!(user_visible_names(dir), ["p"]);
}

#[tokio::test]
async fn projected_volumes_merge_their_sources() {
    let mut fixture = Fixture::start().await;
    fixture
        .config_maps()
        .create(
            &PostParams::default(),
            &config_map("settings", &[("mode", "fast"), ("unused", "-")]),
        )
        .await
        .expect("create configmap");
    let secrets: Api<Secret> = Api::namespaced(fixture.client.clone(), "default");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("keys".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("api-key".into(), "k-123".into())])),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let projected = |sources: Vec<VolumeProjection>| {
        pod_with(vec![Volume {
            name: "all".into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o440),
                sources: Some(sources),
            }),
            ..Default::default()
        }])
    };
    let sources = vec![
        VolumeProjection {
            config_map: Some(ConfigMapProjection {
                name: "settings".into(),
                items: Some(vec![KeyToPath {
                    key: "mode".into(),
                    path: "config/mode".into(),
                    mode: None,
                }]),
                optional: None,
            }),
            ..Default::default()
        },
        VolumeProjection {
            secret: Some(SecretProjection {
                name: "keys".into(),
                items: None,
                optional: None,
            }),
            ..Default::default()
        },
        VolumeProjection {
            downward_api: Some(DownwardAPIProjection {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: "pod-name".into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        api_version: None,
                    }),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        },
    ];

    let pod = projected(sources);
    let volumes = fixture.prepare(&pod).await.expect("prepare");
    let dir = &volumes.get("all").expect("volume").path;
    assert_eq!(user_visible_names(dir), ["api-key", "config", "pod-name"]);
    assert_eq!(fs::read_to_string(dir.join("config/mode")).unwrap(), "fast");
    assert_eq!(fs::read_to_string(dir.join("api-key")).unwrap(), "k-123");
    assert_eq!(fs::read_to_string(dir.join("pod-name")).unwrap(), "web");
    assert_eq!(mode_of(&dir.join("api-key")), 0o440);

    let with_token = projected(vec![VolumeProjection {
        service_account_token: Some(ServiceAccountTokenProjection {
            path: "token".into(),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    let error = fixture.prepare(&with_token).await.unwrap_err();
    assert!(error.to_string().contains("serviceAccountToken"), "{error}");
}

#[tokio::test]
async fn memory_empty_dir_is_a_sized_tmpfs_until_cleanup() {
    let mut fixture = Fixture::start().await;
    let pod = pod_with(vec![Volume {
        name: "scratch".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity("16Mi".into())),
        }),
        ..Default::default()
    }]);

    let volumes = fixture.prepare(&pod).await.expect("prepare");
    let dir = volumes.get("scratch").expect("volume").path.clone();
    let (fs_type, options) = mount_entry(&dir).expect("a mount on the emptyDir");
    assert_eq!(fs_type, "tmpfs");
    assert!(
        options.split(',').any(|option| option == "size=16384k"),
        "{options}"
    );
    assert_eq!(mode_of(&dir), 0o777);
    fixture.prepare(&pod).await.expect("prepare again");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let canonical = fs::canonicalize(&dir).unwrap();
    let count = mounts
        .lines()
        .filter(|line| line.split(' ').nth(4) == canonical.to_str())
        .count();
    assert_eq!(count, 1, "preparing twice must not mount twice");

    let uid = pod.metadata.uid.as_deref().unwrap();
    fixture.manager.cleanup(uid).await.expect("cleanup");
    assert_eq!(mount_entry(&canonical), None);
    assert!(!fixture.pod_dir(&pod).exists());
    fixture
        .manager
        .cleanup(uid)
        .await
        .expect("cleanup is idempotent");
}

#[tokio::test]
async fn host_path_directory_or_create_creates_the_directory() {
    let mut fixture = Fixture::start().await;
    let host = tempfile::tempdir().unwrap();
    let wanted = host.path().join("data/app");
    let host_path = |path: &Path, kind: &str| Volume {
        name: "host".into(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_string_lossy().into_owned(),
            type_: Some(kind.into()),
        }),
        ..Default::default()
    };

    let missing = pod_with(vec![host_path(&wanted, "Directory")]);
    let error = fixture.prepare(&missing).await.unwrap_err();
    assert!(matches!(error, VolumeError::HostPath { .. }), "{error}");

    let pod = pod_with(vec![host_path(&wanted, "DirectoryOrCreate")]);
    let volumes = fixture.prepare(&pod).await.expect("prepare");
    assert!(wanted.is_dir());
    let container = Container {
        name: "main".into(),
        volume_mounts: Some(vec![VolumeMount {
            name: "host".into(),
            mount_path: "/data".into(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let mounts = fixture
        .manager
        .mounts_for(&volumes, &container)
        .expect("mounts");
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].source, wanted);
    assert_eq!(mounts[0].destination, Path::new("/data"));
    assert!(!mounts[0].read_only);
}

#[tokio::test]
async fn volume_names_cannot_escape_the_pod_directory() {
    let mut fixture = Fixture::start().await;
    let pod = pod_with(vec![Volume {
        name: "../../../escaped".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }]);
    let error = fixture.prepare(&pod).await.unwrap_err();
    assert!(matches!(error, VolumeError::InvalidPath(_)), "{error}");
    assert!(!fixture.root.path().join("escaped").exists());
    assert!(!fixture.root.path().join("pods/escaped").exists());
}

#[tokio::test]
async fn missing_config_maps_are_empty_if_optional_and_an_error_if_not() {
    let mut fixture = Fixture::start().await;
    let optional = pod_with(vec![config_map_volume("config", "absent", Some(true))]);
    let volumes = fixture.prepare(&optional).await.expect("optional");
    let dir = &volumes.get("config").expect("volume").path;
    assert!(dir.is_dir());
    assert!(user_visible_names(dir).is_empty());

    let required = pod_with(vec![config_map_volume("config", "absent", None)]);
    let error = fixture.prepare(&required).await.unwrap_err();
    assert!(
        matches!(
            &error,
            VolumeError::ObjectNotFound { kind: ObjectKind::ConfigMap, name } if name == "absent"
        ),
        "{error}"
    );
    assert!(error.is_config_error());
    assert_eq!(error.to_string(), "configmap \"absent\" not found");
}

#[tokio::test]
async fn downward_api_writes_labels_the_kubelet_way() {
    let mut fixture = Fixture::start().await;
    let field = |path: &str, field_path: &str| DownwardAPIVolumeFile {
        path: path.into(),
        field_ref: Some(ObjectFieldSelector {
            field_path: field_path.into(),
            api_version: None,
        }),
        ..Default::default()
    };
    let mut pod = pod_with(vec![Volume {
        name: "info".into(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![
                field("labels", "metadata.labels"),
                field("meta/name", "metadata.name"),
            ]),
            default_mode: None,
        }),
        ..Default::default()
    }]);
    pod.metadata.labels = Some(BTreeMap::from([
        ("tier".into(), "front".into()),
        ("app".into(), "shop".into()),
    ]));

    let volumes = fixture.prepare(&pod).await.expect("prepare");
    let dir = volumes.get("info").expect("volume").path.clone();
    assert_eq!(
        fs::read_to_string(dir.join("labels")).unwrap(),
        "app=\"shop\"\ntier=\"front\""
    );
    assert_eq!(fs::read_to_string(dir.join("meta/name")).unwrap(), "web");

    // A relabelled pod shows up on refresh.
    pod.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("tier".into(), "back".into());
    fixture
        .manager
        .refresh(&pod, &volumes)
        .await
        .expect("refresh");
    assert_eq!(
        fs::read_to_string(dir.join("labels")).unwrap(),
        "app=\"shop\"\ntier=\"back\""
    );
}

#[tokio::test]
async fn claims_mount_their_bound_host_path_volume() {
    let mut fixture = Fixture::start().await;
    let host = tempfile::tempdir().unwrap();
    let volumes_api: Api<PersistentVolume> = Api::all(fixture.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(fixture.client.clone(), "default");
    let storage = BTreeMap::from([("storage".to_owned(), Quantity("1Gi".into()))]);
    let volume = PersistentVolume {
        metadata: ObjectMeta {
            name: Some("pv-data".into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(storage.clone()),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            host_path: Some(HostPathVolumeSource {
                path: host.path().to_string_lossy().into_owned(),
                type_: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    volumes_api
        .create(&PostParams::default(), &volume)
        .await
        .expect("create pv");
    let claim = |name: &str, volume_name: Option<&str>| PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(storage.clone()),
                ..Default::default()
            }),
            volume_name: volume_name.map(str::to_owned),
            // No class (not the cluster's default one): static volumes only.
            storage_class_name: Some(String::new()),
            ..Default::default()
        }),
        ..Default::default()
    };
    claims
        .create(&PostParams::default(), &claim("data", Some("pv-data")))
        .await
        .expect("create bound claim");
    claims
        .create(&PostParams::default(), &claim("pending", None))
        .await
        .expect("create unbound claim");
    let claim_volume = |claim: &str| Volume {
        name: "data".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.into(),
            read_only: None,
        }),
        ..Default::default()
    };

    let pod = pod_with(vec![claim_volume("data")]);
    let volumes = fixture.prepare(&pod).await.expect("prepare");
    let container = Container {
        name: "main".into(),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: "/var/lib/data".into(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let mounts = fixture
        .manager
        .mounts_for(&volumes, &container)
        .expect("mounts");
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].source, host.path());

    let unbound = pod_with(vec![claim_volume("pending")]);
    let error = fixture.prepare(&unbound).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "persistentvolumeclaim pending is not bound"
    );
}

#[tokio::test]
async fn watcher_refreshes_config_maps_without_being_asked() {
    let mut fixture = Fixture::start().await;
    let config_maps = fixture.config_maps();
    let created = config_maps
        .create(
            &PostParams::default(),
            &config_map("live", &[("level", "info")]),
        )
        .await
        .expect("create configmap");
    let pod = pod_with(vec![config_map_volume("config", "live", None)]);
    let volumes = fixture.prepare(&pod).await.expect("prepare");
    let file = volumes.get("config").expect("volume").path.join("level");
    assert_eq!(fs::read_to_string(&file).unwrap(), "info");

    let shutdown = CancellationToken::new();
    let watcher = VolumeWatcher::new(fixture.client.clone(), fixture.manager.clone());
    watcher.track(pod.clone(), volumes.clone());
    let running = tokio::spawn(watcher.clone().run(shutdown.clone()));
    watcher.wait_until_watching().await;

    let mut updated = created;
    updated.data = Some(BTreeMap::from([("level".into(), "debug".into())]));
    config_maps
        .replace("live", &PostParams::default(), &updated)
        .await
        .expect("update configmap");

    let seen = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if fs::read_to_string(&file).is_ok_and(|content| content == "debug") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    shutdown.cancel();
    running.await.expect("watcher task ends cleanly");
    assert!(
        seen.is_ok(),
        "the update did not reach the volume within 2 s"
    );
}
