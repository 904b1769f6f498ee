//! kubectl's typed generators (`kubectl create namespace`, `create deployment`,
//! ...) against a real `gantry server`. They send protobuf request bodies, so
//! these tests cover the server's protobuf decoding end to end: each asserts
//! kubectl's printed line and reads the object back as JSON.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::Server;
use serde_json::Value;

fn get_json(server: &Server, args: &[&str]) -> Value {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&server.ok(&full)).expect("kubectl prints JSON")
}

#[test]
fn typed_create_generators_send_protobuf_the_server_decodes() {
    let server = Server::start();

    assert_eq!(
        server.ok(&["create", "namespace", "shop"]),
        "namespace/shop created\n"
    );
    let namespace = get_json(&server, &["namespace", "shop"]);
    assert_eq!(namespace["status"]["phase"], "Active");

    assert_eq!(
        server.ok(&[
            "create",
            "configmap",
            "cfg",
            "--from-literal=a=b",
            "-n",
            "shop"
        ]),
        "configmap/cfg created\n"
    );
    let configmap = get_json(&server, &["configmap", "cfg", "-n", "shop"]);
    assert_eq!(configmap["data"], serde_json::json!({"a": "b"}));
    assert_eq!(configmap["metadata"]["namespace"], "shop");

    assert_eq!(
        server.ok(&[
            "create",
            "secret",
            "generic",
            "s",
            "--from-literal=p=q",
            "-n",
            "shop"
        ]),
        "secret/s created\n"
    );
    let secret = get_json(&server, &["secret", "s", "-n", "shop"]);
    assert_eq!(secret["data"]["p"], "cQ==", "base64 of \"q\"");
    assert_eq!(secret["type"], "Opaque");

    assert_eq!(
        server.ok(&[
            "create",
            "deployment",
            "web",
            "--image=busybox",
            "--replicas=2",
            "-n",
            "shop"
        ]),
        "deployment.apps/web created\n"
    );
    let deployment = get_json(&server, &["deployment", "web", "-n", "shop"]);
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["selector"]["matchLabels"]["app"], "web");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "busybox");
    assert_eq!(container["name"], "busybox");
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%",
        "defaulted server-side as for a JSON body"
    );

    assert_eq!(
        server.ok(&[
            "create",
            "service",
            "clusterip",
            "web",
            "--tcp=80:8080",
            "-n",
            "shop"
        ]),
        "service/web created\n"
    );
    let service = get_json(&server, &["service", "web", "-n", "shop"]);
    let port = &service["spec"]["ports"][0];
    assert_eq!(port["port"], 80);
    assert_eq!(port["targetPort"], 8080);
    assert_eq!(port["protocol"], "TCP");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert!(
        service["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.43."))
    );

    assert_eq!(
        server.ok(&[
            "expose",
            "deployment",
            "web",
            "--name=web-exposed",
            "--port=80",
            "--target-port=8080",
            "-n",
            "shop"
        ]),
        "service/web-exposed exposed\n"
    );
    let exposed = get_json(&server, &["service", "web-exposed", "-n", "shop"]);
    assert_eq!(exposed["spec"]["selector"]["app"], "web");
    assert_eq!(exposed["spec"]["ports"][0]["targetPort"], 8080);

    assert_eq!(
        server.ok(&["create", "serviceaccount", "robot", "-n", "shop"]),
        "serviceaccount/robot created\n"
    );
    let account = get_json(&server, &["serviceaccount", "robot", "-n", "shop"]);
    assert_eq!(account["metadata"]["name"], "robot");
    assert!(
        account["metadata"]["uid"]
            .as_str()
            .is_some_and(|uid| !uid.is_empty())
    );
}

/// The admin credentials of `server`'s kubeconfig as PEM files for curl.
fn write_credentials(server: &Server, dir: &Path) -> [std::path::PathBuf; 3] {
    let fields = [
        (
            "ca.pem",
            "{.clusters[0].cluster.certificate-authority-data}",
        ),
        ("cert.pem", "{.users[0].user.client-certificate-data}"),
        ("key.pem", "{.users[0].user.client-key-data}"),
    ];
    fields.map(|(file, path)| {
        let encoded = server.ok(&["config", "view", "--raw", "-o", &format!("jsonpath={path}")]);
        let decoded = Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("piped")
                    .write_all(encoded.as_bytes())?;
                child.wait_with_output()
            })
            .expect("base64 decodes the kubeconfig data");
        let target = dir.join(file);
        std::fs::write(&target, decoded.stdout).expect("credentials written");
        target
    })
}

#[test]
fn garbage_protobuf_body_is_a_bad_request_and_creates_nothing() {
    let server = Server::start();
    server.ok(&["create", "namespace", "shop"]);
    let before = get_json(&server, &["configmaps", "-n", "shop"])["items"]
        .as_array()
        .map(Vec::len);

    let scratch = tempfile::tempdir().expect("temp dir");
    let [ca, cert, key] = write_credentials(&server, scratch.path());
    let body = scratch.path().join("body");
    // The magic prefix, then a length-delimited field claiming more bytes than follow.
    std::fs::write(&body, b"k8s\0\x0a\xff\x01\x12\x03garbage").expect("body written");
    let output = Command::new("curl")
        .args(["-sS", "-X", "POST", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(&ca)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["-H", "Content-Type: application/vnd.kubernetes.protobuf"])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!(
            "https://127.0.0.1:{}/api/v1/namespaces/shop/configmaps",
            server.port
        ))
        .output()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (response, code) = stdout
        .rsplit_once('\n')
        .expect("curl prints the status code");
    assert_eq!(code, "400", "response: {response}");
    let status: Value = serde_json::from_str(response).expect("a JSON Status");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 400);
    assert_eq!(status["reason"], "BadRequest");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("malformed"))
    );

    let after = get_json(&server, &["configmaps", "-n", "shop"])["items"]
        .as_array()
        .map(Vec::len);
    assert_eq!(before, after, "a rejected body creates nothing");
}

/// The rows of a `kubectl get` table, each split on runs of two or more spaces
/// (single spaces occur inside cells such as cron schedules).
fn table_rows(output: &str) -> Vec<Vec<String>> {
    output
        .lines()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

#[test]
fn job_cronjob_and_priorityclass_generators() {
    let server = Server::start();

    assert_eq!(
        server.ok(&[
            "create",
            "job",
            "once",
            "--image=busybox:test",
            "--",
            "true"
        ]),
        "job.batch/once created\n"
    );
    let job = get_json(&server, &["job", "once"]);
    let uid = job["metadata"]["uid"].as_str().expect("uid");
    assert_eq!(
        job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid
    );
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["job-name"],
        "once"
    );
    assert_eq!(job["spec"]["completions"], 1);
    assert_eq!(job["spec"]["parallelism"], 1);
    assert_eq!(job["spec"]["backoffLimit"], 6);
    let pod_spec = &job["spec"]["template"]["spec"];
    assert_eq!(pod_spec["restartPolicy"], "Never");
    assert_eq!(
        pod_spec["containers"][0]["command"],
        serde_json::json!(["true"])
    );
    let jobs = table_rows(&server.ok(&["get", "jobs"]));
    assert_eq!(
        jobs[0],
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    );
    assert_eq!(jobs[1][..3], ["once", "Running", "0/1"]);

    assert_eq!(
        server.ok(&[
            "create",
            "cronjob",
            "tick",
            "--image=busybox:test",
            "--schedule=*/5 * * * *",
            "--",
            "date"
        ]),
        "cronjob.batch/tick created\n"
    );
    let cron_job = get_json(&server, &["cronjob", "tick"]);
    assert_eq!(cron_job["spec"]["schedule"], "*/5 * * * *");
    assert_eq!(cron_job["spec"]["concurrencyPolicy"], "Allow");
    assert_eq!(cron_job["spec"]["successfulJobsHistoryLimit"], 3);
    assert_eq!(
        cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"],
        "OnFailure"
    );
    let cron_jobs = table_rows(&server.ok(&["get", "cronjobs"]));
    assert_eq!(
        cron_jobs[0],
        [
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE"
        ]
    );
    assert_eq!(
        cron_jobs[1][..6],
        ["tick", "*/5 * * * *", "<none>", "False", "0", "<none>"]
    );
    assert_eq!(
        server.ok(&["create", "job", "by-hand", "--from=cronjob/tick"]),
        "job.batch/by-hand created\n"
    );
    let manual = get_json(&server, &["job", "by-hand"]);
    assert_eq!(
        manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    let rejected = server.kubectl(&[
        "create",
        "cronjob",
        "broken",
        "--image=busybox:test",
        "--schedule=every day",
    ]);
    assert!(!rejected.status.success());
    assert!(
        String::from_utf8_lossy(&rejected.stderr).contains("spec.schedule"),
        "{}",
        String::from_utf8_lossy(&rejected.stderr)
    );

    assert_eq!(
        server.ok(&["create", "priorityclass", "high", "--value=1000"]),
        "priorityclass.scheduling.k8s.io/high created\n"
    );
    let classes = table_rows(&server.ok(&["get", "pc"]));
    assert_eq!(
        classes[0],
        ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]
    );
    let names_and_values: Vec<(&str, &str)> = classes[1..]
        .iter()
        .map(|row| (row[0].as_str(), row[1].as_str()))
        .collect();
    assert_eq!(
        names_and_values,
        [
            ("high", "1000"),
            ("system-cluster-critical", "2000000000"),
            ("system-node-critical", "2000001000"),
        ]
    );

    server.apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: local\n  annotations:\n    storageclass.kubernetes.io/is-default-class: \"true\"\nprovisioner: gantry.io/local-path\nvolumeBindingMode: WaitForFirstConsumer\n",
    );
    let storage = table_rows(&server.ok(&["get", "sc"]));
    assert_eq!(
        storage[0],
        [
            "NAME",
            "PROVISIONER",
            "RECLAIMPOLICY",
            "VOLUMEBINDINGMODE",
            "ALLOWVOLUMEEXPANSION",
            "AGE"
        ]
    );
    assert_eq!(
        storage[1][..5],
        [
            "local (default)",
            "gantry.io/local-path",
            "Delete",
            "WaitForFirstConsumer",
            "false"
        ]
    );
}
