//! `gantry run --rm IMAGE true` latency next to crun's and runc's on the same
//! busybox root filesystem (whichever of them is installed).
//! Run with `cargo bench -p gantry --bench run_latency` as root.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gantry_image::ImageStore;
use gantry_image::test_support::{BUSYBOX_TAG, busybox_rootfs, import_busybox};

const RUNS: usize = 20;

fn main() {
    let root = tempfile::tempdir().expect("temp dir");
    import_busybox(&ImageStore::open(root.path()).expect("image store")).expect("busybox image");
    let gantry = env!("CARGO_BIN_EXE_gantry");
    let mut results = vec![(
        "gantry",
        measure(|| {
            Command::new(gantry)
                .arg("--root")
                .arg(root.path())
                .args(["run", "--rm", BUSYBOX_TAG, "true"])
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        }),
    )];
    for runtime in ["crun", "runc"] {
        if let Some(samples) = bench_oci_runtime(runtime) {
            results.push((runtime, samples));
        }
    }
    println!("{:<8} {:>10} {:>10} {:>10}   ({RUNS} runs of `true`)", "RUNTIME", "MEDIAN", "MEAN", "MIN");
    for (name, mut samples) in results {
        if samples.is_empty() {
            println!("{name:<8} failed");
            continue;
        }
        samples.sort();
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        println!(
            "{name:<8} {:>8.1}ms {:>8.1}ms {:>8.1}ms",
            ms(samples[samples.len() / 2]),
            ms(mean),
            ms(samples[0])
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Times `RUNS` successful runs; an empty result means the command failed.
fn measure(mut run: impl FnMut() -> bool) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        if !run() {
            return Vec::new();
        }
        samples.push(started.elapsed());
    }
    samples
}

/// A bundle from `<runtime> spec` on the busybox rootfs, running `true`.
fn bench_oci_runtime(runtime: &str) -> Option<Vec<Duration>> {
    let installed = Command::new(runtime).arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    if !installed {
        println!("{runtime}: not installed, skipped (apt-get install {runtime})");
        return None;
    }
    let bundle = tempfile::tempdir().ok()?;
    busybox_rootfs(&bundle.path().join("rootfs")).ok()?;
    let spec = Command::new(runtime).args(["spec", "--bundle"]).arg(bundle.path()).status().ok()?;
    if !spec.success() {
        return None;
    }
    let config_path = bundle.path().join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path).ok()?).ok()?;
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["true"]);
    std::fs::write(&config_path, serde_json::to_vec(&config).ok()?).ok()?;
    let state = tempfile::tempdir().ok()?;
    let mut n = 0;
    Some(measure(|| {
        n += 1;
        run_once(runtime, state.path(), bundle.path(), &format!("bench-{}-{n}", std::process::id()))
    }))
}

fn run_once(runtime: &str, state: &Path, bundle: &Path, id: &str) -> bool {
    let ok = Command::new(runtime)
        .arg("--root")
        .arg(state)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let _ = Command::new(runtime).arg("--root").arg(state).args(["delete", "-f", id]).stderr(Stdio::null()).status();
    ok
}
