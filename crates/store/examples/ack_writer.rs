//! Writes keys to a [`RedbStore`] forever, printing `key revision` for each
//! write once the store acknowledged it (i.e. it is fsync'd). The crash
//! durability test kills this process with SIGKILL mid-stream and checks
//! that every printed key survived.
//!
//! Usage: `ack_writer <database path> <concurrent writers> <run tag>`
//! (the tag keeps keys of successive runs on one database apart)

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use gantry_store::{RedbStore, Store};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: ack_writer <database path> <writers> <run tag>")?;
    let writers: usize = args.next().unwrap_or_else(|| "8".into()).parse()?;
    let tag = args.next().unwrap_or_else(|| "run".into());
    let store = Arc::new(RedbStore::open(&path)?);
    let (acks, mut acked) = mpsc::unbounded_channel::<(String, u64)>();
    for writer in 0..writers {
        let store = Arc::clone(&store);
        let acks = acks.clone();
        let tag = tag.clone();
        tokio::spawn(async move {
            for i in 0u64.. {
                let key = format!("/crash/{tag}/{writer}/{i:08}");
                match store
                    .create(&key, Bytes::from(key.clone().into_bytes()))
                    .await
                {
                    Ok(written) if acks.send((key, written.revision)).is_ok() => {}
                    Ok(_) => return,
                    Err(err) => {
                        eprintln!("write failed: {err}");
                        return;
                    }
                }
            }
        });
    }
    drop(acks);
    let stdout = std::io::stdout();
    while let Some((key, revision)) = acked.recv().await {
        let mut out = stdout.lock();
        writeln!(out, "{key} {revision}")?;
        out.flush()?;
    }
    Ok(())
}
