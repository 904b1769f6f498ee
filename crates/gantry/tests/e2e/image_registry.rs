//! `gantry push` / `rmi` / `pull` / `login` against a real registry (Debian's
//! `docker-registry`) listening on 127.0.0.1 with its storage in a temp dir.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use gantry_image::test_support::TestRegistry;

/// Runs the real `gantry` binary against a private root and HOME.
struct Gantry {
    root: tempfile::TempDir,
}

impl Gantry {
    fn new() -> Gantry {
        Gantry {
            root: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gantry"));
        command
            .arg("--root")
            .arg(self.root.path().join("state"))
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .env("HOME", self.root.path())
            .env_remove("DOCKER_CONFIG");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.run(args))
    }
}

fn succeeded(args: &[&str], output: Output) -> String {
    assert!(
        output.status.success(),
        "gantry {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn busybox_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    gantry_image::test_support::busybox_rootfs(&rootfs).unwrap();
    assert!(rootfs.join("bin/sh").symlink_metadata().is_ok());
    rootfs
}

fn field_after<'a>(text: &'a str, marker: &str) -> &'a str {
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} not in {text:?}"))
        + marker.len();
    text[start..].split_whitespace().next().unwrap()
}

#[test]
fn push_remove_and_pull_back_gives_the_same_image() {
    let registry = TestRegistry::start().unwrap();
    let gantry = Gantry::new();
    let name = format!("{}/test/busybox:v1", registry.host());
    let rootfs = busybox_rootfs(gantry.root.path());
    let id = gantry
        .ok(&["import", rootfs.to_str().unwrap(), &name])
        .trim()
        .to_owned();

    let pushed = gantry.ok(&["push", &name]);
    let digest = field_after(&pushed, "digest: ").to_owned();
    assert!(digest.starts_with("sha256:"), "{pushed}");

    let removed = gantry.ok(&["rmi", &name]);
    assert!(removed.contains(&format!("Deleted: {id}")), "{removed}");
    assert!(!gantry.ok(&["images"]).contains("test/busybox"));

    let pulled = gantry.ok(&["pull", &name]);
    assert_eq!(field_after(&pulled, "Digest: "), digest, "{pulled}");

    let images = gantry.ok(&["images"]);
    let row = images
        .lines()
        .find(|line| line.starts_with(&format!("{}/test/busybox", registry.host())))
        .unwrap_or_else(|| panic!("pulled image not listed:\n{images}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns[1], "v1");
    assert_eq!(columns[2], &id["sha256:".len().."sha256:".len() + 12]);

    let inspect: serde_json::Value =
        serde_json::from_str(&gantry.ok(&["image", "inspect", &name])).unwrap();
    assert_eq!(inspect[0]["Id"], id.as_str());
    let pinned = format!("{}/test/busybox@{digest}", registry.host());
    assert!(
        inspect[0]["RepoDigests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == pinned.as_str()),
        "{inspect}"
    );

    // Pulling again downloads nothing.
    let again = gantry.ok(&["pull", &name]);
    assert!(again.contains("Already exists"), "{again}");
    assert!(again.contains("Status: Image is up to date"), "{again}");
}

#[test]
fn pulling_an_unknown_image_says_so_plainly() {
    let registry = TestRegistry::start().unwrap();
    let gantry = Gantry::new();
    let name = format!("{}/nope", registry.host());
    let output = gantry.run(&["pull", &name]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "Error: pull access denied / manifest unknown for {}/nope:latest",
            registry.host()
        )),
        "{stderr}"
    );
}

#[test]
fn login_stores_credentials_that_push_and_pull_then_use() {
    let registry = TestRegistry::start_with_basic_auth("alice", "s3cret").unwrap();
    let gantry = Gantry::new();
    let host = registry.host();
    let name = format!("{host}/private/busybox:1");
    let rootfs = busybox_rootfs(gantry.root.path());
    gantry.ok(&["import", rootfs.to_str().unwrap(), &name]);

    let anonymous = gantry.run(&["push", &name]);
    assert!(!anonymous.status.success());

    let login = [
        "login",
        "--username",
        "alice",
        "--password-stdin",
        host.as_str(),
    ];
    let wrong = gantry.run_with_stdin(&login, "wrong\n");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("unauthorized"));
    assert!(!gantry.root.path().join(".docker/config.json").exists());

    let out = succeeded(&login, gantry.run_with_stdin(&login, "s3cret\n"));
    assert!(out.contains("Login Succeeded"), "{out}");
    let config = std::fs::read_to_string(gantry.root.path().join(".docker/config.json")).unwrap();
    assert!(config.contains(&host), "{config}");

    gantry.ok(&["push", &name]);
    gantry.ok(&["rmi", &name]);
    gantry.ok(&["pull", &name]);

    gantry.ok(&["logout", &host]);
    gantry.ok(&["rmi", &name]);
    assert!(!gantry.run(&["pull", &name]).status.success());
}
