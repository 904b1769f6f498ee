//! RBAC with the real kubectl: a service account's token (`kubectl create token`) is
//! refused with upstream's message until `kubectl create role` and `create rolebinding`
//! grant it, and then only in that namespace; `kubectl auth can-i` and `auth whoami`
//! answer for it.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{KUBECTL, Server, run_kubectl, succeeded, wait_for};

/// Runs kubectl with `kubeconfig`.
fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(KUBECTL);
    command.arg("--kubeconfig").arg(kubeconfig).args(args);
    run_kubectl(command, None)
}

/// Writes a kubeconfig that reaches `server` with `token` and no client certificate.
fn token_kubeconfig(server: &Server, token: &str) -> std::path::PathBuf {
    let path = server.dir.path().join("reader.kubeconfig");
    let ca = server.dir.path().join("server/pki/ca.crt");
    let url = format!("https://127.0.0.1:{}", server.port);
    let steps: [Vec<String>; 4] = [
        vec![
            "config".into(),
            "set-cluster".into(),
            "gantry".into(),
            format!("--server={url}"),
            format!("--certificate-authority={}", ca.display()),
            "--embed-certs".into(),
        ],
        vec![
            "config".into(),
            "set-credentials".into(),
            "reader".into(),
            format!("--token={token}"),
        ],
        vec![
            "config".into(),
            "set-context".into(),
            "reader".into(),
            "--cluster=gantry".into(),
            "--user=reader".into(),
        ],
        vec!["config".into(), "use-context".into(), "reader".into()],
    ];
    for step in steps {
        let args: Vec<&str> = step.iter().map(String::as_str).collect();
        succeeded(&format!("kubectl {args:?}"), kubectl_as(&path, &args));
    }
    path
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn can_i(kubeconfig: &Path, args: &[&str]) -> String {
    let mut full = vec!["auth", "can-i"];
    full.extend_from_slice(args);
    String::from_utf8_lossy(&kubectl_as(kubeconfig, &full).stdout)
        .trim()
        .to_string()
}

#[test]
fn a_service_account_token_gets_what_its_role_binding_grants() {
    let server = Server::start();
    server.ok(&["create", "namespace", "team"]);
    server.ok(&["create", "serviceaccount", "reader", "-n", "team"]);
    let token = server.ok(&["create", "token", "reader", "-n", "team"]);
    let reader = token_kubeconfig(&server, token.trim());

    let whoami = succeeded("auth whoami", kubectl_as(&reader, &["auth", "whoami"]));
    assert!(
        whoami.contains("system:serviceaccount:team:reader")
            && whoami.contains("system:serviceaccounts:team"),
        "{whoami}"
    );

    let denied = kubectl_as(&reader, &["get", "pods", "-n", "team"]);
    assert!(!denied.status.success());
    assert_eq!(
        stderr(&denied).trim(),
        "Error from server (Forbidden): pods is forbidden: User \"system:serviceaccount:team:reader\" cannot list resource \"pods\" in API group \"\" in the namespace \"team\""
    );
    assert_eq!(can_i(&reader, &["list", "pods", "-n", "team"]), "no");

    server.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list",
        "--resource=pods",
        "-n",
        "team",
    ]);
    server.ok(&[
        "create",
        "rolebinding",
        "read-pods",
        "--role=pod-reader",
        "--serviceaccount=team:reader",
        "-n",
        "team",
    ]);
    assert!(
        wait_for(Duration::from_secs(10), || kubectl_as(
            &reader,
            &["get", "pods", "-n", "team"]
        )
        .status
        .success()),
        "the binding lets the account list pods in team"
    );
    let table = server.ok(&[
        "get",
        "rolebinding",
        "read-pods",
        "-n",
        "team",
        "-o",
        "wide",
    ]);
    assert!(
        table.contains("Role/pod-reader") && table.contains("team:reader"),
        "{table}"
    );

    let elsewhere = kubectl_as(&reader, &["get", "pods", "-n", "default"]);
    assert!(!elsewhere.status.success());
    assert!(
        stderr(&elsewhere).contains(
            "cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        ),
        "{}",
        stderr(&elsewhere)
    );
    assert_eq!(can_i(&reader, &["list", "pods", "-n", "team"]), "yes");
    assert_eq!(can_i(&reader, &["get", "pods", "-n", "team"]), "yes");
    assert_eq!(can_i(&reader, &["delete", "pods", "-n", "team"]), "no");
    assert_eq!(can_i(&reader, &["list", "pods", "-n", "default"]), "no");
    assert_eq!(can_i(&reader, &["list", "nodes"]), "no");
    // The admin kubeconfig is in system:masters.
    assert_eq!(can_i(&server.kubeconfig(), &["delete", "nodes"]), "yes");
}
