//! The kubelet API's TLS: a self-signed serving certificate kept under
//! `<engine_root>/agent/` (what the kubelet does without a CA-signed one), client
//! certificates verified against the cluster CA, and the rule for which verified
//! clients may call it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use x509_parser::prelude::FromDer as _;

use super::KubeletApiError;

/// The user kube-apiserver presents to kubelets (`--kubelet-client-certificate`).
pub const APISERVER_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// The group whose members may do anything, kubelet API included.
pub const MASTERS_GROUP: &str = "system:masters";

const CERT_FILE: &str = "kubelet.crt";
const KEY_FILE: &str = "kubelet.key";

/// The rustls configuration: presents the serving certificate and requires a client
/// certificate that chains to one of `client_cas` (DER).
pub fn server_config(
    agent_dir: &Path,
    node_name: &str,
    client_cas: &[Vec<u8>],
) -> Result<Arc<rustls::ServerConfig>, KubeletApiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in client_cas {
        roots
            .add(CertificateDer::from(ca.clone()))
            .map_err(|e| KubeletApiError::Tls(format!("cluster CA: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| KubeletApiError::Tls(format!("client verifier: {e}")))?;
    let (cert_pem, key_pem) = load_or_create_serving_certificate(agent_dir, node_name)?;
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KubeletApiError::Tls(format!("serving certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| KubeletApiError::Tls(format!("serving key: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| KubeletApiError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| KubeletApiError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reuses `kubelet.crt`/`kubelet.key` when both parse, otherwise creates them, so the
/// certificate survives agent restarts as the kubelet's `--cert-dir` one does.
fn load_or_create_serving_certificate(
    agent_dir: &Path,
    node_name: &str,
) -> Result<(String, String), KubeletApiError> {
    let cert_path = agent_dir.join(CERT_FILE);
    let key_path = agent_dir.join(KEY_FILE);
    if let (Ok(cert), Ok(key)) = (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) && CertificateDer::from_pem_slice(cert.as_bytes()).is_ok()
        && KeyPair::from_pem(&key).is_ok()
    {
        return Ok((cert, key));
    }
    let (cert, key) = self_signed(node_name)?;
    let io = |path: &PathBuf| {
        let path = path.clone();
        move |source| KubeletApiError::Io { path, source }
    };
    std::fs::create_dir_all(agent_dir).map_err(io(&agent_dir.to_path_buf()))?;
    write_private(&key_path, &key).map_err(io(&key_path))?;
    std::fs::write(&cert_path, &cert).map_err(io(&cert_path))?;
    tracing::info!(path = %cert_path.display(), "generated a self-signed kubelet serving certificate");
    Ok((cert, key))
}

/// A certificate for `<node>` (and localhost), self-signed like the kubelet's
/// `<hostname>@<timestamp>` one.
fn self_signed(node_name: &str) -> Result<(String, String), KubeletApiError> {
    let sans = vec![
        node_name.to_owned(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    let mut params = CertificateParams::new(sans)?;
    let issued = jiff::Timestamp::now().as_second();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{node_name}@{issued}"));
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

/// Whether a verified client certificate (leaf, DER) may use the kubelet API: the API
/// server's kubelet-client identity or a member of `system:masters`. The kubelet asks
/// the API server (SubjectAccessReview) instead; these are the identities that review
/// always allows, and the only ones that call a Gantry node.
pub fn is_authorized(leaf: &[u8]) -> bool {
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(leaf) else {
        return false;
    };
    let subject = cert.subject();
    let common_name_allowed = subject
        .iter_common_name()
        .any(|cn| cn.as_str() == Ok(APISERVER_CLIENT_USER));
    let in_masters = subject
        .iter_organization()
        .any(|o| o.as_str() == Ok(MASTERS_GROUP));
    common_name_allowed || in_masters
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_certificate(cn: &str, organizations: &[&str]) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        for o in organizations {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn only_the_apiserver_client_and_masters_are_authorized() {
        assert!(is_authorized(&client_certificate(
            APISERVER_CLIENT_USER,
            &[]
        )));
        assert!(is_authorized(&client_certificate(
            "admin",
            &[MASTERS_GROUP]
        )));
        assert!(!is_authorized(&client_certificate(
            "system:node:n1",
            &["system:nodes"]
        )));
        assert!(!is_authorized(b"not a certificate"));
    }

    #[test]
    fn the_serving_certificate_is_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let agent_dir = dir.path().join("agent");
        let first = load_or_create_serving_certificate(&agent_dir, "n1").unwrap();
        let second = load_or_create_serving_certificate(&agent_dir, "n1").unwrap();
        assert_eq!(first, second);
        std::fs::write(agent_dir.join(KEY_FILE), "garbage").unwrap();
        let third = load_or_create_serving_certificate(&agent_dir, "n1").unwrap();
        assert_ne!(first.0, third.0);
    }
}
