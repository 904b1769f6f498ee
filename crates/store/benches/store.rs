//! RedbStore throughput and latency. Every write is fsync'd, so write
//! figures depend on the disk; 64 concurrent writers show group commit.
//!
//! Run: `cargo bench -p gantry-store --bench store`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gantry_store::{ListOptions, RedbStore, Store};

const VALUE: &[u8] = &[b'x'; 512];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn writes(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(dir.path().join("bench.redb")).unwrap());
    let next = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group("writes");
    for writers in [1u64, 64] {
        group.throughput(Throughput::Elements(writers));
        group.bench_function(format!("create/{writers}_concurrent"), |b| {
            b.to_async(&rt).iter(|| {
                let store = Arc::clone(&store);
                let next = Arc::clone(&next);
                async move {
                    let creates = (0..writers).map(|_| {
                        let key = format!("/bench/w/{}", next.fetch_add(1, Ordering::Relaxed));
                        let store = Arc::clone(&store);
                        tokio::spawn(async move {
                            store.create(&key, Bytes::from_static(VALUE)).await.unwrap()
                        })
                    });
                    for create in futures::future::join_all(creates).await {
                        create.unwrap();
                    }
                }
            })
        });
    }
    group.finish();
    let stats = store.commit_stats();
    println!(
        "group commit: {} writes in {} transactions ({:.1} writes per fsync)",
        stats.writes,
        stats.transactions,
        stats.writes as f64 / stats.transactions.max(1) as f64
    );
}

fn reads(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(dir.path().join("bench.redb")).unwrap());
    rt.block_on(async {
        let creates = (0..10_000).map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .create(&format!("/bench/r/{i:05}"), Bytes::from_static(VALUE))
                    .await
            })
        });
        for create in futures::future::join_all(creates).await {
            create.unwrap().unwrap();
        }
    });
    let mut group = c.benchmark_group("reads");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    group.bench_function("get", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 7919) % 10_000;
            let key = format!("/bench/r/{i:05}");
            let store = Arc::clone(&store);
            async move { store.get(&key).await.unwrap().unwrap() }
        })
    });
    group.bench_function("list_10000_keys", |b| {
        b.to_async(&rt).iter(|| {
            let store = Arc::clone(&store);
            async move {
                let listed = store
                    .list("/bench/r/", ListOptions::default())
                    .await
                    .unwrap();
                assert_eq!(listed.items.len(), 10_000);
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = writes, reads
}
criterion_main!(benches);
