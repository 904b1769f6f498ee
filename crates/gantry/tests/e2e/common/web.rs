//! Workloads for pod network tests: web servers that name themselves, a pod that
//! fetches URLs and logs the answers, and an outside server that echoes the
//! caller's address.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::hosts::{ClusterHost, HostProcess, NetnsHost};
use super::wait_for;

/// The port the web pods (and the outside echo server) listen on.
pub const WEB_PORT: u16 = 8080;
/// How long a fetcher gets to reach every URL.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// The pods' command: serve their own host name (the pod name) over HTTP.
pub const SERVE_HOSTNAME: &str =
    "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";

/// A web server on the outside machine whose `/cgi-bin/peer` answers with the
/// address the request came from; stopped when dropped.
pub struct PeerEcho {
    _server: HostProcess,
    _www: tempfile::TempDir,
}

impl PeerEcho {
    /// Serves on `address` (one of `host`'s) at [`WEB_PORT`].
    pub fn start(host: &NetnsHost, address: Ipv4Addr) -> PeerEcho {
        let www = tempfile::tempdir().expect("www dir");
        let cgi = www.path().join("cgi-bin");
        std::fs::create_dir(&cgi).expect("cgi-bin");
        let script = cgi.join("peer");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"$REMOTE_ADDR\"\n",
        )
        .expect("CGI script");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("executable script");
        let listen = format!("{address}:{WEB_PORT}");
        let home = www.path().to_str().expect("UTF-8 path");
        let server = host.spawn(&["busybox", "httpd", "-f", "-p", &listen, "-h", home]);
        PeerEcho {
            _server: server,
            _www: www,
        }
    }
}

/// `(pod name, pod IP, node name)` of the pods labelled `app=<app>`.
pub fn pods_of(cluster: &ClusterHost, app: &str) -> Vec<(String, String, String)> {
    let out = cluster.ok(&[
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().map(str::to_string);
            Some((fields.next()?, fields.next()?, fields.next()?))
        })
        .collect()
}

/// A pod on `node` that fetches each URL (retrying until it answers), prints
/// `<url> <body>` per URL to its log, then idles. (`timeout`, because Debian's
/// busybox-static `wget -T` segfaults.)
pub fn run_fetcher(cluster: &ClusterHost, name: &str, node: &str, urls: &[String]) {
    let script = format!(
        "for url in {}; do until body=$(timeout 3 wget -qO- $url); do sleep 1; done; echo \"$url $body\"; done; exec sleep 3600",
        urls.join(" ")
    );
    cluster.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: fetch
    image: busybox:test
    imagePullPolicy: Never
    command: ["sh", "-c", {script:?}]
"#
    ));
}

/// Waits until the fetcher printed a line for every URL; returns `url -> body`.
pub fn fetched(cluster: &ClusterHost, pod: &str, urls: &[String]) -> Vec<(String, String)> {
    let mut answers = Vec::new();
    let mut last = String::new();
    let done = wait_for(FETCH_TIMEOUT, || {
        let out = cluster.kubectl(&["logs", pod]);
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        answers = last
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(url, body)| (url.to_string(), body.to_string()))
            .collect();
        answers.len() == urls.len()
    });
    assert!(
        done,
        "{pod} fetched only {last:?} of {urls:?}; pod: {}",
        cluster.ok(&["get", "pod", pod, "-o", "wide"])
    );
    answers
}
