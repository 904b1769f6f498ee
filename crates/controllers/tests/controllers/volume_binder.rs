//! The PersistentVolume binder against a real API server: a claim gets the
//! smallest matching Available volume and both become Bound; claims nothing
//! satisfies stay Pending until a volume appears; pre-bound volumes go to their
//! claim; a deleted claim's volume becomes Released.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use gantry_apiserver::testing::TestServer;
use gantry_controllers::volume_binder;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The binder running against a fresh server; stopped (and checked to stop) by `stop`.
struct Binder {
    server: TestServer,
    client: kube::Client,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Binder {
    async fn start() -> Binder {
        let server = TestServer::start();
        let client = server.client().await;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(volume_binder::run(client.clone(), shutdown.clone()));
        Binder {
            server,
            client,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("the binder stops when cancelled")
            .expect("the binder does not panic");
        drop(self.server);
    }

    fn volumes(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn create_volume(&self, volume: PersistentVolume) {
        self.volumes()
            .create(&PostParams::default(), &volume)
            .await
            .expect("create volume");
    }

    async fn create_claim(&self, claim: PersistentVolumeClaim) -> PersistentVolumeClaim {
        self.claims()
            .create(&PostParams::default(), &claim)
            .await
            .expect("create claim")
    }

    async fn volume_phase(&self, name: &str) -> Option<String> {
        let volume = self.volumes().get(name).await.expect("get volume");
        volume.status?.phase
    }

    /// Waits until the claim is Bound and returns it.
    async fn bound_claim(&self, name: &str) -> PersistentVolumeClaim {
        eventually(&format!("claim {name} to be Bound"), || async {
            let claim = self.claims().get(name).await.expect("get claim");
            let phase = claim.status.as_ref().and_then(|s| s.phase.clone());
            (phase.as_deref() == Some("Bound")).then_some(claim)
        })
        .await
    }
}

/// Polls `check` until it yields a value or the timeout passes.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn storage(size: &str) -> BTreeMap<String, Quantity> {
    BTreeMap::from([("storage".to_owned(), Quantity(size.to_owned()))])
}

fn volume(name: &str, size: &str, modes: &[&str]) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(storage(size)),
            access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
            host_path: Some(HostPathVolumeSource {
                path: format!("/tmp/gantry-test-pv/{name}"),
                type_: None,
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn claim(name: &str, size: &str, modes: &[&str]) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(storage(size)),
                ..Default::default()
            }),
            // No class (not the cluster's default one): static volumes only.
            storage_class_name: Some(String::new()),
            ..Default::default()
        }),
        status: None,
    }
}

#[tokio::test]
async fn claims_bind_to_the_smallest_matching_volume() {
    let binder = Binder::start().await;
    binder
        .create_volume(volume("large", "10Gi", &["ReadWriteOnce"]))
        .await;
    binder
        .create_volume(volume("medium", "2Gi", &["ReadWriteOnce"]))
        .await;
    binder
        .create_volume(volume("tiny", "100Mi", &["ReadWriteOnce"]))
        .await;
    binder
        .create_volume(volume("shared", "1Gi", &["ReadWriteMany"]))
        .await;
    let created = binder
        .create_claim(claim("data", "1Gi", &["ReadWriteOnce"]))
        .await;

    let bound = binder.bound_claim("data").await;
    let spec = bound.spec.expect("claim spec");
    assert_eq!(spec.volume_name.as_deref(), Some("medium"));
    let status = bound.status.expect("claim status");
    assert_eq!(status.capacity, Some(storage("2Gi")));
    assert_eq!(
        status.access_modes.as_deref(),
        Some(&["ReadWriteOnce".to_owned()][..])
    );

    let medium = binder.volumes().get("medium").await.expect("get medium");
    let claim_ref = medium.spec.and_then(|s| s.claim_ref).expect("claimRef");
    assert_eq!(claim_ref.name.as_deref(), Some("data"));
    assert_eq!(claim_ref.namespace.as_deref(), Some("default"));
    assert_eq!(claim_ref.uid, created.metadata.uid);
    assert_eq!(
        medium.status.and_then(|s| s.phase).as_deref(),
        Some("Bound")
    );
    for free in ["large", "tiny", "shared"] {
        let phase = eventually(&format!("{free} to be Available"), || async {
            binder
                .volume_phase(free)
                .await
                .filter(|phase| phase == "Available")
        })
        .await;
        assert_eq!(phase, "Available");
    }
    binder.stop().await;
}

#[tokio::test]
async fn unsatisfiable_claims_wait_for_a_volume() {
    let binder = Binder::start().await;
    binder
        .create_volume(volume("small", "1Gi", &["ReadWriteOnce"]))
        .await;
    binder
        .create_claim(claim("big", "5Gi", &["ReadWriteOnce"]))
        .await;
    // The small volume is seen (Available) while the claim stays unbound.
    eventually("the small volume to be Available", || async {
        binder
            .volume_phase("small")
            .await
            .filter(|phase| phase == "Available")
    })
    .await;
    let pending = binder.claims().get("big").await.expect("get claim");
    assert!(pending.spec.and_then(|s| s.volume_name).is_none());

    binder
        .create_volume(volume("enough", "8Gi", &["ReadWriteOnce"]))
        .await;
    let bound = binder.bound_claim("big").await;
    assert_eq!(
        bound.spec.and_then(|s| s.volume_name).as_deref(),
        Some("enough")
    );
    assert_eq!(
        binder.volume_phase("small").await.as_deref(),
        Some("Available")
    );
    binder.stop().await;
}

#[tokio::test]
async fn pre_bound_volumes_go_to_their_claim_and_are_released_after_it() {
    let binder = Binder::start().await;
    // A bigger free volume that would otherwise not win; the reservation decides.
    let mut reserved = volume("reserved", "50Gi", &["ReadWriteOnce"]);
    reserved.spec.as_mut().expect("spec").claim_ref = Some(ObjectReference {
        name: Some("mine".to_owned()),
        namespace: Some("default".to_owned()),
        ..Default::default()
    });
    binder.create_volume(reserved).await;
    binder
        .create_volume(volume("exact", "1Gi", &["ReadWriteOnce"]))
        .await;
    binder
        .create_claim(claim("mine", "1Gi", &["ReadWriteOnce"]))
        .await;
    let bound = binder.bound_claim("mine").await;
    assert_eq!(
        bound.spec.and_then(|s| s.volume_name).as_deref(),
        Some("reserved")
    );

    binder
        .claims()
        .delete("mine", &DeleteParams::default())
        .await
        .expect("delete claim");
    eventually("the volume to be Released", || async {
        binder
            .volume_phase("reserved")
            .await
            .filter(|phase| phase == "Released")
    })
    .await;
    // A Released volume keeps its data for its old claim: a new claim does not get it.
    binder
        .create_claim(claim("next", "1Gi", &["ReadWriteOnce"]))
        .await;
    let next = binder.bound_claim("next").await;
    assert_eq!(
        next.spec.and_then(|s| s.volume_name).as_deref(),
        Some("exact")
    );
    binder.stop().await;
}
