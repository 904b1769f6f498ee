//! Test images built without the internet, for this and other crates' tests.
//!
//! Needs Debian's `busybox-static` (`/bin/busybox`), which the install script provides.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use crate::{ImageError, ImageId, ImageStore, ImportOptions};

/// Where Debian's statically linked busybox lives.
pub const BUSYBOX: &str = "/bin/busybox";

/// The tag [`import_busybox`] gives its image.
pub const BUSYBOX_TAG: &str = "busybox:test";

/// Fills `dir` with a minimal root filesystem: busybox, a symlink per applet
/// (`sh`, `ls`, `cat`, `sleep`, `httpd`, …), `/etc/passwd` and `/etc/group`.
pub fn busybox_rootfs(dir: &Path) -> io::Result<()> {
    for sub in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev", "root",
        "var/www", "home",
    ] {
        fs::create_dir_all(dir.join(sub))?;
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::copy(BUSYBOX, dir.join("bin/busybox"))?;
    fs::set_permissions(dir.join("bin/busybox"), fs::Permissions::from_mode(0o755))?;
    let listing = Command::new(BUSYBOX).arg("--list-full").output()?;
    if !listing.status.success() {
        return Err(io::Error::other("busybox --list-full failed"));
    }
    for applet in String::from_utf8_lossy(&listing.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        let link = dir.join(applet);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent)?;
        }
        if !link.exists() {
            symlink("/bin/busybox", &link)?;
        }
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
    )?;
    fs::write(
        dir.join("etc/group"),
        "root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n",
    )?;
    fs::write(dir.join("etc/hostname"), "busybox\n")?;
    Ok(())
}

/// Builds the busybox root filesystem in a temp dir and imports it as `busybox:test`.
pub fn import_busybox(store: &ImageStore) -> Result<ImageId, ImageError> {
    import_busybox_as(store, BUSYBOX_TAG)
}

/// Like [`import_busybox`] with a name of the caller's choosing.
pub fn import_busybox_as(store: &ImageStore, name: &str) -> Result<ImageId, ImageError> {
    let rootfs = tempfile::tempdir().map_err(|source| ImageError::Io {
        context: "creating a temp dir".into(),
        source,
    })?;
    busybox_rootfs(rootfs.path()).map_err(|source| ImageError::Io {
        context: format!("building a busybox rootfs from {BUSYBOX}"),
        source,
    })?;
    store.import(
        rootfs.path(),
        name,
        &ImportOptions {
            cmd: vec!["/bin/sh".into()],
            ..Default::default()
        },
    )
}

/// Debian's `docker-registry` binary (the CNCF distribution registry).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A throwaway OCI registry on 127.0.0.1 with its storage in a temp dir.
/// Killed, and its storage removed, on drop.
pub struct TestRegistry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    /// An open registry (anyone may pull and push).
    pub fn start() -> io::Result<TestRegistry> {
        TestRegistry::launch(None)
    }

    /// A registry that demands HTTP basic auth with these credentials.
    pub fn start_with_basic_auth(username: &str, password: &str) -> io::Result<TestRegistry> {
        TestRegistry::launch(Some((username, password)))
    }

    fn launch(credentials: Option<(&str, &str)>) -> io::Result<TestRegistry> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((username, password)) = credentials {
            let hash = bcrypt::hash(password, 5).map_err(io::Error::other)?;
            let htpasswd = dir.path().join("htpasswd");
            fs::write(&htpasswd, format!("{username}:{hash}\n"))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: gantry-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config)?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let registry = TestRegistry {
            child,
            port,
            _dir: dir,
        };
        registry.wait_until_listening()?;
        Ok(registry)
    }

    fn wait_until_listening(&self) -> io::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if std::time::Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the registry did not start listening",
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(())
    }

    /// `localhost:<port>`, the registry part of image names.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
