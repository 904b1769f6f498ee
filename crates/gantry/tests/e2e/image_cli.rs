//! The image commands as a user runs them: several processes at once, pipes between them.

use std::process::{Command, Output, Stdio};

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
            .arg(self.root.path())
            .args(args)
            .env("RUST_BACKTRACE", "0");
        command
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.command(args).output().unwrap();
        assert_success(args, &output);
        String::from_utf8(output.stdout).unwrap()
    }

    fn import_busybox(&self, name: &str) -> String {
        let rootfs = tempfile::tempdir().unwrap();
        gantry_image::test_support::busybox_rootfs(rootfs.path()).unwrap();
        self.ok(&["import", rootfs.path().to_str().unwrap(), name])
            .trim()
            .to_owned()
    }
}

fn assert_success(args: &[&str], output: &Output) {
    assert!(
        output.status.success(),
        "gantry {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn concurrent_tag_commands_lose_no_update() {
    let gantry = Gantry::new();
    gantry.import_busybox("box:base");
    let children: Vec<_> = (0..8)
        .map(|i| {
            gantry
                .command(&["tag", "box:base", &format!("box:t{i}")])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert_success(&["tag"], &output);
    }
    let images = gantry.ok(&["images", "box"]);
    for i in 0..8 {
        assert!(
            images
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(&format!("t{i}"))),
            "box:t{i} missing:\n{images}"
        );
    }
}

#[test]
fn save_piped_into_load_recreates_the_image_elsewhere() {
    let source = Gantry::new();
    let id = source.import_busybox("piped:1");
    let target = Gantry::new();

    let mut save = source
        .command(&["save", "piped:1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let load = target
        .command(&["load"])
        .stdin(save.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(save.wait().unwrap().success());
    assert_success(&["load"], &load);
    assert_eq!(
        String::from_utf8_lossy(&load.stdout).trim(),
        "Loaded image: piped:1"
    );

    let inspect: serde_json::Value =
        serde_json::from_str(&target.ok(&["image", "inspect", "piped:1"])).unwrap();
    assert_eq!(inspect[0]["Id"], id.as_str());
    assert_eq!(
        target.ok(&["images", "-q"]).trim(),
        &id["sha256:".len()..][..12]
    );
}

#[test]
fn mistakes_are_reported_plainly() {
    let gantry = Gantry::new();
    let output = gantry.command(&["rmi", "nope"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("No such image: nope"), "{stderr}");

    let output = gantry.command(&["pull", "Not/Valid"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("repository name must be lowercase"),
        "{stderr}"
    );

    let output = gantry
        .command(&["image", "inspect", "nope"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "[]");
}
