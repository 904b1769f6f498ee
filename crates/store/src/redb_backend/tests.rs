use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use tempfile::TempDir;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn open() -> (TempDir, RedbStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("store.redb")).unwrap();
    (dir, store)
}

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn keys(result: &ListResult) -> Vec<&str> {
    result.items.iter().map(|kv| kv.key.as_str()).collect()
}

async fn next_event(stream: &mut WatchStream) -> Event {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("event in time")
        .expect("stream open")
        .unwrap()
}

#[tokio::test]
async fn revisions_follow_etcd() {
    let (_dir, store) = open();
    assert_eq!(store.current_revision().await.unwrap(), 0);
    assert_eq!(store.create("/a", bytes("1")).await.unwrap().revision, 1);
    assert_eq!(store.create("/b", bytes("1")).await.unwrap().revision, 2);
    assert_eq!(
        store
            .update("/a", bytes("2"), Some(1))
            .await
            .unwrap()
            .revision,
        3
    );
    let a = store.get("/a").await.unwrap().unwrap();
    assert_eq!(
        (a.create_revision, a.mod_revision, &a.value[..]),
        (1, 3, &b"2"[..])
    );
    let (prev, deleted) = store.delete("/a", None).await.unwrap();
    assert_eq!(
        (prev.mod_revision, &prev.value[..], deleted.revision),
        (3, &b"2"[..], 4)
    );
    assert_eq!(store.get("/a").await.unwrap(), None);
    // Recreating starts a new incarnation.
    assert_eq!(store.create("/a", bytes("3")).await.unwrap().revision, 5);
    assert_eq!(store.get("/a").await.unwrap().unwrap().create_revision, 5);
    assert_eq!(store.current_revision().await.unwrap(), 5);
}

#[tokio::test]
async fn write_errors_change_nothing() {
    let (_dir, store) = open();
    store.create("/a", bytes("1")).await.unwrap();
    assert!(
        matches!(store.create("/a", bytes("x")).await, Err(StoreError::AlreadyExists(key)) if key == "/a")
    );
    assert!(matches!(
        store.update("/missing", bytes("x"), None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.delete("/missing", None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.update("/a", bytes("x"), Some(7)).await,
        Err(StoreError::Conflict {
            expected: 7,
            current: 1,
            ..
        })
    ));
    assert!(matches!(
        store.delete("/a", Some(7)).await,
        Err(StoreError::Conflict { current: 1, .. })
    ));
    assert_eq!(store.current_revision().await.unwrap(), 1);
    assert_eq!(&store.get("/a").await.unwrap().unwrap().value[..], b"1");
    // Unconditional writes ignore the revision.
    assert_eq!(
        store.update("/a", bytes("2"), None).await.unwrap().revision,
        2
    );
}

#[tokio::test]
async fn list_selects_prefix_and_pages() {
    let (_dir, store) = open();
    for key in ["/p/a", "/p/b", "/p/c", "/pz", "/q/a", "/o"] {
        store.create(key, bytes(key)).await.unwrap();
    }
    let all = store.list("/p/", ListOptions::default()).await.unwrap();
    assert_eq!(keys(&all), ["/p/a", "/p/b", "/p/c"]);
    assert_eq!((all.revision, all.more), (6, false));
    let first = store
        .list(
            "/p/",
            ListOptions {
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((keys(&first), first.more), (vec!["/p/a", "/p/b"], true));
    let second = store
        .list(
            "/p/",
            ListOptions {
                limit: Some(2),
                start_after: Some("/p/b".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((keys(&second), second.more), (vec!["/p/c"], false));
    let exact = store
        .list(
            "/p/",
            ListOptions {
                limit: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!exact.more);
}

#[tokio::test]
async fn list_at_old_revision_sees_that_snapshot() {
    let (_dir, store) = open();
    store.create("/p/a", bytes("a1")).await.unwrap(); // 1
    store.create("/p/b", bytes("b1")).await.unwrap(); // 2
    store.update("/p/a", bytes("a2"), None).await.unwrap(); // 3
    store.delete("/p/b", None).await.unwrap(); // 4
    store.create("/p/c", bytes("c1")).await.unwrap(); // 5
    let at = |revision| ListOptions {
        revision: Some(revision),
        ..Default::default()
    };
    let values = |result: ListResult| {
        result
            .items
            .into_iter()
            .map(|kv| (kv.key, kv.value, kv.mod_revision))
            .collect::<Vec<_>>()
    };
    assert_eq!(values(store.list("/p/", at(0)).await.unwrap()), []);
    assert_eq!(
        values(store.list("/p/", at(2)).await.unwrap()),
        [
            ("/p/a".into(), bytes("a1"), 1),
            ("/p/b".into(), bytes("b1"), 2)
        ]
    );
    assert_eq!(
        values(store.list("/p/", at(4)).await.unwrap()),
        [("/p/a".into(), bytes("a2"), 3)]
    );
    let result = store.list("/p/", at(3)).await.unwrap();
    assert_eq!(result.revision, 3);
    assert!(matches!(
        store.list("/p/", at(6)).await,
        Err(StoreError::FutureRevision {
            requested: 6,
            current: 5
        })
    ));
}

#[tokio::test]
async fn pagination_at_pinned_revision_ignores_concurrent_writes() {
    let (_dir, store) = open();
    for i in 0..50 {
        store
            .create(&format!("/items/{i:03}"), bytes("v0"))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut options = ListOptions {
        limit: Some(7),
        ..Default::default()
    };
    loop {
        let page = store.list("/items/", options.clone()).await.unwrap();
        assert!(page.items.iter().all(|kv| &kv.value[..] == b"v0"));
        seen.extend(page.items.iter().map(|kv| kv.key.clone()));
        // Writes between pages: changes, deletions and new keys.
        let n = seen.len();
        store
            .update(&format!("/items/{:03}", n % 50), bytes("v1"), None)
            .await
            .unwrap();
        store
            .delete(&format!("/items/{:03}", 49 - n / 7), None)
            .await
            .ok();
        store
            .create(&format!("/items/{n:03}x"), bytes("new"))
            .await
            .unwrap();
        if !page.more {
            break;
        }
        options.revision = Some(page.revision);
        options.start_after = seen.last().cloned();
    }
    let expected: Vec<String> = (0..50).map(|i| format!("/items/{i:03}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn compaction_keeps_latest_values_and_rejects_old_reads() {
    let (_dir, store) = open();
    store.create("/a", bytes("a1")).await.unwrap(); // 1
    store.update("/a", bytes("a2"), None).await.unwrap(); // 2
    store.create("/b", bytes("b1")).await.unwrap(); // 3
    store.delete("/b", None).await.unwrap(); // 4
    store.create("/c", bytes("c1")).await.unwrap(); // 5
    store.update("/c", bytes("c2"), None).await.unwrap(); // 6
    assert_eq!(store.compact(5).await.unwrap(), 5);
    assert_eq!(store.compacted_revision().await.unwrap(), 5);
    assert!(matches!(
        store
            .list(
                "/",
                ListOptions {
                    revision: Some(4),
                    ..Default::default()
                }
            )
            .await,
        Err(StoreError::Compacted {
            requested: 4,
            compacted: 5
        })
    ));
    let at5 = store
        .list(
            "/",
            ListOptions {
                revision: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        at5.items
            .iter()
            .map(|kv| (kv.key.as_str(), &kv.value[..]))
            .collect::<Vec<_>>(),
        [("/a", &b"a2"[..]), ("/c", &b"c1"[..])]
    );
    assert_eq!(
        keys(&store.list("/", ListOptions::default()).await.unwrap()),
        ["/a", "/c"]
    );
    assert!(matches!(
        store.compact(3).await,
        Err(StoreError::Compacted {
            requested: 3,
            compacted: 5
        })
    ));
    assert!(matches!(
        store.compact(9).await,
        Err(StoreError::FutureRevision {
            requested: 9,
            current: 6
        })
    ));
    assert_eq!(store.compact(5).await.unwrap(), 5);
    // The update of /c after the compaction point still carries its prev.
    let mut watch = store.watch("/c", 5).await.unwrap();
    match next_event(&mut watch).await {
        Event::Put {
            kv,
            prev: Some(prev),
        } => {
            assert_eq!((&kv.value[..], kv.mod_revision), (&b"c2"[..], 6));
            assert_eq!((&prev.value[..], prev.mod_revision), (&b"c1"[..], 5));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        store.watch("/", 4).await,
        Err(StoreError::Compacted {
            requested: 4,
            compacted: 5
        })
    ));
    assert!(matches!(
        store.watch("/", 7).await,
        Err(StoreError::FutureRevision { .. })
    ));
}

#[tokio::test]
async fn compaction_drops_old_versions_from_disk() {
    let (_dir, store) = open();
    store.create("/a", bytes("0")).await.unwrap();
    for i in 1..100 {
        store
            .update("/a", bytes(&i.to_string()), None)
            .await
            .unwrap();
    }
    store.create("/gone", bytes("x")).await.unwrap();
    store.delete("/gone", None).await.unwrap();
    store
        .compact(store.current_revision().await.unwrap())
        .await
        .unwrap();
    let txn = store.db.begin_read().unwrap();
    let versions = txn.open_table(schema::VERSIONS).unwrap();
    let history = txn.open_table(schema::HISTORY).unwrap();
    use redb::ReadableTableMetadata;
    assert_eq!(
        versions.len().unwrap(),
        1,
        "only /a's latest version remains"
    );
    assert_eq!(history.len().unwrap(), 0);
}

#[tokio::test]
async fn watch_replays_then_follows_in_order() {
    let (_dir, store) = open();
    store.create("/w/a", bytes("1")).await.unwrap(); // 1
    store.create("/other", bytes("1")).await.unwrap(); // 2
    store.update("/w/a", bytes("2"), None).await.unwrap(); // 3
    let mut watch = store.watch("/w/", 0).await.unwrap();
    store.create("/w/b", bytes("1")).await.unwrap(); // 4
    store.delete("/w/a", None).await.unwrap(); // 5
    store.create("/other2", bytes("1")).await.unwrap(); // 6
    store.update("/w/b", bytes("2"), Some(4)).await.unwrap(); // 7

    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(next_event(&mut watch).await);
    }
    let summary: Vec<(Revision, &str)> = got
        .iter()
        .map(|event| (event.revision(), event.key()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "/w/a"),
            (3, "/w/a"),
            (4, "/w/b"),
            (5, "/w/a"),
            (7, "/w/b")
        ]
    );
    assert!(matches!(&got[0], Event::Put { prev: None, .. }));
    assert!(matches!(&got[1], Event::Put { prev: Some(prev), .. } if prev.mod_revision == 1));
    assert!(
        matches!(&got[3], Event::Delete { prev, .. } if &prev.value[..] == b"2" && prev.mod_revision == 3)
    );
    assert!(matches!(&got[4], Event::Put { kv, prev: Some(_) } if kv.create_revision == 4));
    // Nothing else is pending.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), watch.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn watch_has_no_gap_or_duplicate_under_concurrent_writes() {
    let (_dir, store) = open();
    let store = Arc::new(store);
    for i in 0..20 {
        store.create(&format!("/k/{i}"), bytes("x")).await.unwrap();
    }
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 20..220 {
                store.create(&format!("/k/{i}"), bytes("x")).await.unwrap();
            }
        })
    };
    // Start watching while the writer runs; replay and live overlap.
    let mut watch = store.watch("/k/", 10).await.unwrap();
    let mut revisions = Vec::new();
    while revisions.len() < 210 {
        revisions.push(next_event(&mut watch).await.revision());
    }
    writer.await.unwrap();
    assert_eq!(revisions, (11..=220).collect::<Vec<_>>());
}

#[tokio::test]
async fn lagging_watcher_catches_up_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let options = RedbOptions {
        watch_buffer: 4,
        ..Default::default()
    };
    let store = RedbStore::open_with(dir.path().join("s.redb"), options).unwrap();
    let mut watch = store.watch("/", 0).await.unwrap();
    for i in 0..50 {
        store.create(&format!("/{i:02}"), bytes("x")).await.unwrap();
    }
    let mut revisions = Vec::new();
    while revisions.len() < 50 {
        revisions.push(next_event(&mut watch).await.revision());
    }
    assert_eq!(revisions, (1..=50).collect::<Vec<_>>());
}

#[tokio::test]
async fn lagging_watcher_past_compaction_gets_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let options = RedbOptions {
        watch_buffer: 4,
        ..Default::default()
    };
    let store = RedbStore::open_with(dir.path().join("s.redb"), options).unwrap();
    let mut watch = store.watch("/", 0).await.unwrap();
    for i in 0..50 {
        store.create(&format!("/{i:02}"), bytes("x")).await.unwrap();
    }
    store.compact(40).await.unwrap();
    let outcome = tokio::time::timeout(WAIT, watch.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            outcome,
            Err(StoreError::Compacted {
                requested: 0,
                compacted: 40
            })
        ),
        "{outcome:?}"
    );
    assert!(
        tokio::time::timeout(WAIT, watch.next())
            .await
            .unwrap()
            .is_none(),
        "the stream ends"
    );
}

#[tokio::test]
async fn shutdown_ends_watches_and_refuses_writes() {
    let (_dir, store) = open();
    let mut watch = store.watch("/", 0).await.unwrap();
    store.create("/a", bytes("1")).await.unwrap();
    store.shutdown();
    assert_eq!(next_event(&mut watch).await.revision(), 1);
    assert!(
        tokio::time::timeout(WAIT, watch.next())
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.create("/b", bytes("1")).await,
        Err(StoreError::Backend(_))
    ));
    assert_eq!(
        store.get("/a").await.unwrap().unwrap().mod_revision,
        1,
        "reads still work"
    );
    store.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_get_unique_increasing_revisions_in_few_transactions() {
    let (_dir, store) = open();
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut revisions = Vec::new();
                for i in 0..8 {
                    revisions.push(
                        store
                            .create(&format!("/c/{task}/{i}"), bytes("x"))
                            .await
                            .unwrap()
                            .revision,
                    );
                }
                revisions
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let revisions = task.await.unwrap();
        assert!(
            revisions.windows(2).all(|pair| pair[0] < pair[1]),
            "each writer sees increasing revisions"
        );
        all.extend(revisions);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=512).collect::<Vec<_>>(),
        "every revision used exactly once"
    );
    let stats = store.commit_stats();
    assert_eq!(stats.writes, 512);
    assert!(
        stats.transactions < stats.writes / 4,
        "group commit batched: {stats:?}"
    );
    let listed = store.list("/c/", ListOptions::default()).await.unwrap();
    assert_eq!(listed.items.len(), 512);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conflict_in_a_batch_fails_only_that_request() {
    let (_dir, store) = open();
    let store = Arc::new(store);
    store.create("/x", bytes("0")).await.unwrap();
    // Many writers race to CAS the same key from revision 1: exactly one wins,
    // the rest conflict, and unrelated creates in the same batches succeed.
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let cas = store.update("/x", bytes(&i.to_string()), Some(1)).await;
                let create = store.create(&format!("/y/{i}"), bytes("y")).await;
                (
                    cas.is_ok(),
                    matches!(cas, Err(StoreError::Conflict { .. })),
                    create.is_ok(),
                )
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        let (won, conflicted, created) = task.await.unwrap();
        assert!(won ^ conflicted);
        assert!(created);
        wins += usize::from(won);
    }
    assert_eq!(wins, 1);
    assert_eq!(store.current_revision().await.unwrap(), 1 + 1 + 32);
}

#[tokio::test]
async fn reopening_keeps_data_and_revision_counter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        store.create("/a", bytes("1")).await.unwrap();
        store.create("/b", bytes("1")).await.unwrap();
        store.delete("/b", None).await.unwrap();
        store.compact(1).await.unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.current_revision().await.unwrap(), 3);
    assert_eq!(store.compacted_revision().await.unwrap(), 1);
    assert_eq!(store.create("/c", bytes("1")).await.unwrap().revision, 4);
    let mut watch = store.watch("/", 1).await.unwrap();
    let summary: Vec<_> = [
        next_event(&mut watch).await,
        next_event(&mut watch).await,
        next_event(&mut watch).await,
    ]
    .iter()
    .map(|event| (event.revision(), event.key().to_owned()))
    .collect();
    assert_eq!(
        summary,
        [
            (2, "/b".to_owned()),
            (3, "/b".to_owned()),
            (4, "/c".to_owned())
        ]
    );
}

#[tokio::test]
async fn auto_compaction_keeps_the_last_n_revisions_and_stops() {
    let (_dir, store) = open();
    for i in 0..30 {
        store.create(&format!("/{i}"), bytes("x")).await.unwrap();
    }
    store
        .enable_auto_compaction(CompactionPolicy {
            retention: Retention::Revisions(10),
            interval: Duration::from_millis(20),
        })
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while store.compacted_revision().await.unwrap() != 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "compactor never compacted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    store.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown joins the compactor promptly"
    );
}

#[tokio::test]
async fn keys_are_independent_of_each_other() {
    // A model check: random-ish operations against a BTreeMap.
    let (_dir, store) = open();
    let mut model: BTreeMap<String, (Revision, Revision, Bytes)> = BTreeMap::new();
    let mut revision = 0;
    for step in 0u64..300 {
        let key = format!("/m/{}", (step * 7919) % 23);
        let value = bytes(&step.to_string());
        match model.get(&key).cloned() {
            None => {
                revision += 1;
                assert_eq!(
                    store.create(&key, value.clone()).await.unwrap().revision,
                    revision
                );
                model.insert(key, (revision, revision, value));
            }
            Some((create, modified, _)) if step % 3 == 0 => {
                revision += 1;
                let (prev, result) = store.delete(&key, Some(modified)).await.unwrap();
                assert_eq!((prev.create_revision, result.revision), (create, revision));
                model.remove(&key);
            }
            Some((create, modified, _)) => {
                revision += 1;
                store
                    .update(&key, value.clone(), Some(modified))
                    .await
                    .unwrap();
                model.insert(key, (create, revision, value));
            }
        }
    }
    let listed = store.list("/m/", ListOptions::default()).await.unwrap();
    let actual: Vec<_> = listed
        .items
        .into_iter()
        .map(|kv| (kv.key, (kv.create_revision, kv.mod_revision, kv.value)))
        .collect();
    assert_eq!(actual, model.into_iter().collect::<Vec<_>>());
}
