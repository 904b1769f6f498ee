//! `gantry push` / `rmi` / `pull` against a real registry (Debian's `docker-registry`)
//! listening on 127.0.0.1 with its storage in a temp dir.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A registry process that is killed, and its storage removed, when dropped.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed (apt-get install docker-registry)");
        let registry = Registry {
            child,
            port,
            _dir: dir,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start listening on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Gantry {
    root: tempfile::TempDir,
}

impl Gantry {
    fn new() -> Gantry {
        Gantry {
            root: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_gantry"))
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .env("HOME", self.root.path())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "gantry {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

fn busybox_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(rootfs.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "ls", "cat", "echo"] {
        symlink("/bin/busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
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
    let registry = Registry::start();
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

    // Pulling again is a no-op download: every blob is already there.
    let again = gantry.ok(&["pull", &name]);
    assert!(again.contains("Already exists"), "{again}");
    assert!(again.contains("Status: Image is up to date"), "{again}");
}

#[test]
fn pulling_an_unknown_image_says_so_plainly() {
    let registry = Registry::start();
    let gantry = Gantry::new();
    let name = format!("{}/nope", registry.host());
    let output = gantry.run(&["pull", &name]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "pull access denied / manifest unknown for {}/nope:latest",
            registry.host()
        )),
        "{stderr}"
    );
}
