//! Crash durability with a real `kill -9`: every write the store
//! acknowledged must be on disk after the process dies mid-stream, and the
//! revision counter must not go backwards.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gantry_store::{ListOptions, RedbStore, Store};

/// Kills the helper on every exit path, including a failed assertion.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds the `ack_writer` example with the same profile as this test and
/// returns its path.
fn ack_writer_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "--quiet",
        "-p",
        "gantry-store",
        "--example",
        "ack_writer",
    ]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "building ack_writer failed");
    // target/<profile>/deps/crash_durability-* -> target/<profile>/examples/ack_writer
    let test_binary = std::env::current_exe().unwrap();
    let profile_dir = test_binary.parent().and_then(Path::parent).unwrap();
    profile_dir.join("examples").join("ack_writer")
}

/// Runs the writer until it has acknowledged at least `min_acks` keys, then
/// SIGKILLs it and returns every `(key, revision)` it printed.
fn run_and_kill(binary: &Path, db: &Path, tag: &str, min_acks: usize) -> Vec<(String, u64)> {
    let child = Command::new(binary)
        .arg(db)
        .arg("16")
        .arg(tag)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ack_writer");
    let mut child = KillOnDrop(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.len() < min_acks {
        assert!(
            Instant::now() < deadline,
            "writer too slow: {} acks",
            acked.len()
        );
        let line = lines.next().expect("writer exited early").unwrap();
        acked.push(parse(&line));
    }
    // SIGKILL while writes are in flight; no chance to flush or clean up.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // Lines already in the pipe were acknowledged before the kill too.
    acked.extend(lines.map_while(Result::ok).map(|line| parse(&line)));
    acked
}

fn parse(line: &str) -> (String, u64) {
    let (key, revision) = line.split_once(' ').expect("`key revision`");
    (key.to_owned(), revision.parse().expect("revision"))
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_dash_nine() {
    let binary = ack_writer_binary();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.redb");
    let mut highest_acked = 0;
    for round in 0..3 {
        let acked = run_and_kill(&binary, &db, &format!("round{round}"), 300);
        let store = RedbStore::open(&db).expect("reopen after SIGKILL");
        let current = store.current_revision().await.unwrap();
        for (key, revision) in &acked {
            let kv = store
                .get(key)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: lost {key}"));
            assert_eq!(kv.mod_revision, *revision, "{key}");
            assert_eq!(kv.value, key.as_bytes());
            assert!(
                *revision > highest_acked,
                "round {round}: revision {revision} reused after restart"
            );
        }
        let round_max = acked.iter().map(|(_, revision)| *revision).max().unwrap();
        assert!(
            current >= round_max,
            "revision counter went backwards: {current} < {round_max}"
        );
        // Per writer, acknowledged keys carry increasing revisions.
        let mut by_writer = std::collections::BTreeMap::<&str, Vec<u64>>::new();
        for (key, revision) in &acked {
            by_writer
                .entry(key.rsplit_once('/').unwrap().0)
                .or_default()
                .push(*revision);
        }
        for revisions in by_writer.values() {
            assert!(revisions.windows(2).all(|pair| pair[0] < pair[1]));
        }
        // The surviving history is consistent: listing sees every key once.
        let listed = store.list("/crash/", ListOptions::default()).await.unwrap();
        assert!(listed.items.len() >= acked.len());
        highest_acked = current;
        store.shutdown();
    }
}
