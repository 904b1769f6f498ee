//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go's
//! `leaderelection` package does it.
//!
//! A candidate takes the Lease when it is absent, released or expired (its
//! `renewTime + leaseDurationSeconds` has passed), and keeps it by renewing it every
//! `retry_period`. Every write is a compare-and-swap on the Lease's resourceVersion, so
//! two candidates racing for it cannot both win. A leader that fails to renew within
//! `renew_deadline` stops leading before anyone else may take over.

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;

/// How long a Lease lasts and how often it is retried, kube-controller-manager's defaults.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    /// How long others wait after the last renewal before taking over.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// Time between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One candidate for one Lease.
#[derive(Clone)]
pub struct LeaderElection {
    leases: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
}

impl LeaderElection {
    /// A candidate called `identity` for the Lease `namespace/name`
    /// (upstream components use `kube-system/<component>`).
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: LeaseTiming,
    ) -> Self {
        LeaderElection {
            leases: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
        }
    }

    /// Waits for leadership, then runs `lead` with a token that is cancelled when
    /// leadership is lost or `shutdown` is cancelled; returns when `lead` returns, after
    /// releasing the Lease so a successor need not wait for it to expire.
    pub async fn run<F, Fut>(&self, shutdown: CancellationToken, lead: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        if !self.acquire(&shutdown).await {
            return;
        }
        tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
        let leading = shutdown.child_token();
        let work = lead(leading.clone());
        tokio::pin!(work);
        tokio::select! {
            () = &mut work => {}
            () = self.keep_renewing(&leading) => {
                tracing::warn!(lease = %self.name, "lost leadership");
                leading.cancel();
                work.await;
            }
        }
        leading.cancel();
        self.release().await;
    }

    /// Retries until the Lease is ours; false if shut down first.
    async fn acquire(&self, shutdown: &CancellationToken) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(err) => tracing::debug!(lease = %self.name, %err, "acquiring the lease"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(self.timing.retry_period) => {}
            }
        }
    }

    /// Renews until a renewal fails for longer than the renew deadline, or `leading` is
    /// cancelled (then it never returns, letting the caller's work finish).
    async fn keep_renewing(&self, leading: &CancellationToken) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = leading.cancelled() => std::future::pending::<()>().await,
                () = tokio::time::sleep(self.timing.retry_period) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(err) => tracing::warn!(lease = %self.name, %err, "renewing the lease"),
            }
            if last_renewal.elapsed() > self.timing.renew_deadline {
                return;
            }
        }
    }

    /// One compare-and-swap round: true if we hold the Lease afterwards.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.leases.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.held_spec(now, 0, now)),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(err) => Err(err),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !ours && !is_free(&spec, now) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = match (&spec.acquire_time, ours) {
            (Some(MicroTime(acquired)), true) => *acquired,
            _ => now,
        };
        lease.spec = Some(self.held_spec(now, transitions, acquired));
        match self
            .leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn held_spec(&self, now: Timestamp, transitions: i32, acquired: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Gives the Lease up (empty holder), as client-go does with `ReleaseOnCancel`.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.leases.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        if let Err(err) = self
            .leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::debug!(lease = %self.name, %err, "releasing the lease");
        }
    }
}

/// A Lease anyone may take: released (no holder) or not renewed within its duration.
fn is_free(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(holder) = spec.holder_identity.as_deref() else {
        return true;
    };
    if holder.is_empty() {
        return true;
    }
    let (Some(MicroTime(renewed)), Some(duration)) = (&spec.renew_time, spec.lease_duration_seconds)
    else {
        return true;
    };
    let expiry = renewed.saturating_add(jiff::SignedDuration::from_secs(i64::from(duration)));
    expiry.map_or(true, |expiry| expiry < now)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use gantry_apiserver::testing::TestServer;

    use super::*;

    fn fast() -> LeaseTiming {
        LeaseTiming {
            lease_duration: Duration::from_secs(2),
            renew_deadline: Duration::from_millis(1500),
            retry_period: Duration::from_millis(100),
        }
    }

    #[tokio::test]
    async fn only_one_candidate_leads_and_the_other_takes_over_after_release() {
        let server = TestServer::start();
        let client = server.client().await;
        let leading = Arc::new(AtomicUsize::new(0));
        let first = LeaderElection::new(client.clone(), "kube-system", "test", "a", fast());
        let second = LeaderElection::new(client.clone(), "kube-system", "test", "b", fast());
        let stop_first = CancellationToken::new();
        let (first_leads_tx, first_leads) = tokio::sync::oneshot::channel();
        let first_task = {
            let leading = leading.clone();
            let stop = stop_first.clone();
            tokio::spawn(async move {
                first
                    .run(stop, |token| async move {
                        leading.fetch_add(1, Ordering::SeqCst);
                        let _ = first_leads_tx.send(());
                        token.cancelled().await;
                        leading.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
            })
        };
        first_leads.await.expect("the first candidate leads");
        let stop_second = CancellationToken::new();
        let (second_leads_tx, mut second_leads) = tokio::sync::oneshot::channel();
        let second_task = {
            let leading = leading.clone();
            let stop = stop_second.clone();
            tokio::spawn(async move {
                second
                    .run(stop, |token| async move {
                        assert_eq!(leading.fetch_add(1, Ordering::SeqCst), 0, "two leaders");
                        let _ = second_leads_tx.send(());
                        token.cancelled().await;
                    })
                    .await
            })
        };
        // While the first renews, the second must not lead (several retry periods pass).
        let early = tokio::time::timeout(Duration::from_millis(800), &mut second_leads).await;
        assert!(early.is_err(), "the second candidate led while the first held the lease");
        stop_first.cancel();
        first_task.await.expect("first candidate task");
        tokio::time::timeout(Duration::from_secs(5), second_leads)
            .await
            .expect("the second candidate takes over promptly after release")
            .expect("second leads");
        stop_second.cancel();
        second_task.await.expect("second candidate task");
        let lease: Lease = Api::namespaced(client, "kube-system")
            .get("test")
            .await
            .expect("lease");
        let spec = lease.spec.expect("spec");
        assert_eq!(spec.lease_transitions, Some(1));
        assert_eq!(spec.holder_identity, None, "released on shutdown");
    }

    #[test]
    fn an_unrenewed_lease_is_free_and_a_fresh_one_is_not() {
        let now = Timestamp::now();
        let held = |renewed: Timestamp| LeaseSpec {
            holder_identity: Some("x".into()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        assert!(!is_free(&held(now), now));
        let stale = now - jiff::SignedDuration::from_secs(16);
        assert!(is_free(&held(stale), now));
        assert!(is_free(&LeaseSpec::default(), now));
    }
}
