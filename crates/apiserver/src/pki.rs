//! The cluster's public-key infrastructure, laid out like k3s/kubeadm: one self-signed CA,
//! a serving certificate for the API server and client certificates for users and nodes.
//!
//! Everything lives as PEM files in one directory so a restarted server keeps its identity
//! (kubeconfigs written earlier stay valid). Private keys are written with mode 0600.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::Serialize;
use time::{Duration, OffsetDateTime};

const CA_CERT_FILE: &str = "ca.crt";
const CA_KEY_FILE: &str = "ca.key";
const SERVING_CERT_FILE: &str = "serving.crt";
const SERVING_KEY_FILE: &str = "serving.key";

/// X.520 organizationName (2.5.4.10), which Kubernetes reads as a group.
const ORGANIZATION_OID: [u64; 4] = [2, 5, 4, 10];

/// The CA's common name, in the style of k3s ("k3s-server-ca").
const CA_COMMON_NAME: &str = "gantry-ca";
/// How long the CA is valid; it is never rotated automatically, like kubeadm's.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long serving and client certificates are valid (kubeadm's default).
const LEAF_VALIDITY: Duration = Duration::days(365);
/// A serving certificate that expires sooner than this is reissued at startup (as k3s does).
const RENEW_BEFORE: Duration = Duration::days(90);
/// Backdating tolerates clocks of clients that lag slightly behind the server.
const CLOCK_SKEW: Duration = Duration::hours(1);

/// DNS names every API server certificate carries: the names in-cluster clients use for the
/// `kubernetes` Service plus the loopback names.
const STANDARD_DNS_NAMES: [&str; 5] = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// Why the PKI could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file under the PKI directory failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Generating or signing a key or certificate failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file on disk is not a usable certificate or key.
    #[error("invalid {what} in {path}: {reason}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// A user or group name cannot be put into a certificate subject.
    #[error("invalid certificate subject: {0}")]
    Subject(String),
    /// Building the rustls configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The kubeconfig could not be serialized.
    #[error("kubeconfig serialization: {0}")]
    Kubeconfig(#[from] serde_yaml::Error),
}

/// The cluster CA plus the API server's serving certificate, loaded from (or created in) a
/// directory.
pub struct ClusterPki {
    ca_cert_pem: String,
    ca_cert_der: CertificateDer<'static>,
    ca_issuer: Issuer<'static, KeyPair>,
    serving_cert_pem: String,
    serving_key_pem: String,
}

impl std::fmt::Debug for ClusterPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print private keys.
        f.debug_struct("ClusterPki").finish_non_exhaustive()
    }
}

impl ClusterPki {
    /// Loads the PKI from `dir`, creating whatever is missing. The serving certificate is
    /// reissued (the CA kept) when its SAN set differs from the requested one, when it is
    /// close to expiry, or when the CA was just created.
    pub fn load_or_create(
        dir: &Path,
        dns_names: &[String],
        ips: &[IpAddr],
    ) -> Result<ClusterPki, PkiError> {
        create_private_dir(dir)?;
        let (ca_cert_pem, ca_key_pem, ca_created) = load_or_create_ca(dir)?;
        let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| PkiError::Invalid {
            what: "CA key",
            path: dir.join(CA_KEY_FILE),
            reason: e.to_string(),
        })?;
        let ca_cert_der = CertificateDer::from_pem_slice(ca_cert_pem.as_bytes()).map_err(|e| {
            PkiError::Invalid {
                what: "CA certificate",
                path: dir.join(CA_CERT_FILE),
                reason: e.to_string(),
            }
        })?;
        let ca_issuer = Issuer::from_ca_cert_der(&ca_cert_der, ca_key)?;

        let wanted_sans = serving_sans(dns_names, ips);
        let cert_path = dir.join(SERVING_CERT_FILE);
        let key_path = dir.join(SERVING_KEY_FILE);
        let existing = if ca_created {
            None
        } else {
            read_optional(&cert_path)?.zip(read_optional(&key_path)?)
        };
        let reusable = existing.filter(|(cert_pem, key_pem)| {
            serving_cert_is_current(cert_pem, &ca_cert_der, &wanted_sans)
                && KeyPair::from_pem(key_pem).is_ok()
        });
        let (serving_cert_pem, serving_key_pem) = match reusable {
            Some(pair) => pair,
            None => {
                let (cert_pem, key_pem) = issue_serving_certificate(&ca_issuer, &wanted_sans)?;
                write_file(&key_path, key_pem.as_bytes(), 0o600)?;
                write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
                tracing::info!(path = %cert_path.display(), "issued API server serving certificate");
                (cert_pem, key_pem)
            }
        };

        Ok(ClusterPki {
            ca_cert_pem,
            ca_cert_der,
            ca_issuer,
            serving_cert_pem,
            serving_key_pem,
        })
    }

    /// The CA certificate in PEM, for clients that must trust the API server.
    pub fn ca_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// Issues a client certificate the API server authenticates as `user` in `groups`
    /// (CN=user, one O per group), exactly how Kubernetes maps x509 subjects to users.
    pub fn issue_client_certificate(
        &self,
        user: &str,
        groups: &[&str],
    ) -> Result<(String, String), PkiError> {
        if user.is_empty() {
            return Err(PkiError::Subject("the user name is empty".into()));
        }
        if groups.iter().any(|g| g.is_empty()) {
            return Err(PkiError::Subject(format!(
                "empty group name for user {user}"
            )));
        }
        // rcgen keys subject attributes by type, so the second O goes in under the same OID
        // spelled as a custom type; a third cannot be expressed and is refused, not dropped.
        let organization_types = [
            DnType::OrganizationName,
            DnType::CustomDnType(ORGANIZATION_OID.to_vec()),
        ];
        if groups.len() > organization_types.len() {
            return Err(PkiError::Subject(format!(
                "at most {} groups fit in a client certificate, {} given",
                organization_types.len(),
                groups.len()
            )));
        }
        let mut params = leaf_params(Vec::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        for (dn_type, group) in organization_types.into_iter().zip(groups) {
            params.distinguished_name.push(dn_type, *group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.ca_issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Writes a kubeconfig for `user` that trusts the cluster CA and authenticates with a
    /// freshly issued client certificate; kubectl can use it as is.
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        server_url: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<(), PkiError> {
        let yaml = self.kubeconfig_yaml(server_url, user, groups)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io_error("create directory", parent))?;
        }
        write_file(path, yaml.as_bytes(), 0o600)
    }

    /// A kubeconfig for `user` with a freshly issued client certificate, as YAML; used to hand
    /// credentials to a joining node over the wire instead of through a file.
    pub fn kubeconfig_yaml(
        &self,
        server_url: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<String, PkiError> {
        let (cert_pem, key_pem) = self.issue_client_certificate(user, groups)?;
        let kubeconfig = Kubeconfig::new(server_url, &self.ca_cert_pem, user, &cert_pem, &key_pem);
        Ok(serde_yaml::to_string(&kubeconfig)?)
    }

    /// The rustls configuration for the API server: it presents the serving certificate and
    /// verifies client certificates against the CA when clients present one; clients without
    /// a certificate still connect (they may use a bearer token, or be anonymous).
    pub fn server_tls_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca_cert_der.clone())
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| PkiError::Tls(e.to_string()))?;
        let chain = CertificateDer::pem_slice_iter(self.serving_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PkiError::Tls(format!("serving certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(self.serving_key_pem.as_bytes())
            .map_err(|e| PkiError::Tls(format!("serving key: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Returns the CA (cert PEM, key PEM) and whether it was created now.
fn load_or_create_ca(dir: &Path) -> Result<(String, String, bool), PkiError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    match (read_optional(&cert_path)?, read_optional(&key_path)?) {
        (Some(cert), Some(key)) => Ok((cert, key, false)),
        (None, None) => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let mut params = CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(
                DnType::CommonName,
                format!(
                    "{CA_COMMON_NAME}@{}",
                    OffsetDateTime::now_utc().unix_timestamp()
                ),
            );
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let now = OffsetDateTime::now_utc();
            params.not_before = now - CLOCK_SKEW;
            params.not_after = now + CA_VALIDITY;
            let cert = params.self_signed(&key)?;
            let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
            write_file(&key_path, key_pem.as_bytes(), 0o600)?;
            write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
            tracing::info!(path = %cert_path.display(), "created cluster CA");
            Ok((cert_pem, key_pem, true))
        }
        // Half a CA cannot be repaired without invalidating every issued certificate, so
        // refuse rather than silently replacing it.
        (Some(_), None) => Err(missing(&key_path, "CA key")),
        (None, Some(_)) => Err(missing(&cert_path, "CA certificate")),
    }
}

fn missing(path: &Path, what: &'static str) -> PkiError {
    PkiError::Invalid {
        what,
        path: path.to_path_buf(),
        reason: "file is missing while its counterpart exists".into(),
    }
}

/// The SAN entries a serving certificate must carry, as a set of strings (IPs in canonical
/// form) so it compares equal to the set parsed back from an existing certificate.
fn serving_sans(dns_names: &[String], ips: &[IpAddr]) -> BTreeSet<String> {
    let mut sans: BTreeSet<String> = STANDARD_DNS_NAMES.iter().map(|s| s.to_string()).collect();
    if let Some(host) = hostname() {
        sans.insert(host);
    }
    sans.extend(
        dns_names
            .iter()
            .filter(|n| !n.is_empty())
            .map(|n| n.to_ascii_lowercase()),
    );
    sans.insert(IpAddr::V4(Ipv4Addr::LOCALHOST).to_string());
    sans.insert(IpAddr::V6(Ipv6Addr::LOCALHOST).to_string());
    sans.extend(ips.iter().map(IpAddr::to_string));
    sans
}

fn hostname() -> Option<String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

fn issue_serving_certificate(
    ca: &Issuer<'static, KeyPair>,
    sans: &BTreeSet<String>,
) -> Result<(String, String), PkiError> {
    let mut params = leaf_params(sans.iter().cloned().collect())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Parameters shared by every certificate the CA issues.
fn leaf_params(sans: Vec<String>) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(sans)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + LEAF_VALIDITY;
    Ok(params)
}

/// Whether an existing serving certificate can be kept: issued by this CA, not about to
/// expire, and carrying exactly the wanted SANs.
fn serving_cert_is_current(
    cert_pem: &str,
    ca_der: &CertificateDer<'_>,
    wanted: &BTreeSet<String>,
) -> bool {
    let Ok(der) = CertificateDer::from_pem_slice(cert_pem.as_bytes()) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let Ok((_, ca)) = x509_parser::parse_x509_certificate(ca_der) else {
        return false;
    };
    let signed_by_ca = cert.verify_signature(Some(ca.public_key())).is_ok();
    let renew_at = OffsetDateTime::now_utc() + RENEW_BEFORE;
    let fresh = cert.validity().not_after.to_datetime() > renew_at;
    signed_by_ca && fresh && certificate_sans(&cert).as_ref() == Some(wanted)
}

/// The DNS and IP SANs of a certificate, in the same string form as [`serving_sans`].
pub(crate) fn certificate_sans(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Option<BTreeSet<String>> {
    use x509_parser::extensions::GeneralName;
    let san = cert.subject_alternative_name().ok()??;
    let mut names = BTreeSet::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(dns) => {
                names.insert(dns.to_ascii_lowercase());
            }
            GeneralName::IPAddress(bytes) => {
                let ip = match bytes.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?),
                    16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?),
                    _ => return None,
                };
                names.insert(ip.to_string());
            }
            _ => {}
        }
    }
    Some(names)
}

/// The file holding the key service-account tokens are signed with (PKCS#8 PEM, P-256).
const SERVICE_ACCOUNT_KEY_FILE: &str = "service-account.key";

/// Reads the service-account signing key from `dir`, creating it on first start, so tokens
/// stay valid across restarts. Returns the private key as PKCS#8 PEM.
pub fn load_or_create_service_account_key(dir: &Path) -> Result<String, PkiError> {
    create_private_dir(dir)?;
    let path = dir.join(SERVICE_ACCOUNT_KEY_FILE);
    if let Some(pem) = read_optional(&path)? {
        KeyPair::from_pem(&pem).map_err(|e| PkiError::Invalid {
            what: "service-account signing key",
            path: path.clone(),
            reason: e.to_string(),
        })?;
        return Ok(pem);
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let pem = key.serialize_pem();
    write_file(&path, pem.as_bytes(), 0o600)?;
    Ok(pem)
}

fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error("create directory", dir))
}

fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", path)(e)),
    }
}

/// Writes through a temporary file and a rename so a crash never leaves a truncated key, and
/// creates the file with `mode` so a key is never readable by others, even briefly.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_error("create", &tmp))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_error("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io_error("rename into", path))
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PkiError {
    let path = path.to_path_buf();
    move |source| PkiError::Io {
        action,
        path,
        source,
    }
}

/// The subset of the kubeconfig (clientcmd v1) schema Gantry writes.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")] // clientcmd mixes apiVersion with kebab-case keys
struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    clusters: Vec<Named<ClusterEntry>>,
    contexts: Vec<Named<ContextEntry>>,
    users: Vec<Named<UserEntry>>,
    current_context: &'static str,
    preferences: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Named<T> {
    name: String,
    #[serde(flatten)]
    value: T,
}

#[derive(Serialize)]
struct ClusterEntry {
    cluster: ClusterInfo,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterInfo {
    server: String,
    certificate_authority_data: String,
}

#[derive(Serialize)]
struct ContextEntry {
    context: ContextInfo,
}

#[derive(Serialize)]
struct ContextInfo {
    cluster: String,
    user: String,
}

#[derive(Serialize)]
struct UserEntry {
    user: UserInfoEntry,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct UserInfoEntry {
    client_certificate_data: String,
    client_key_data: String,
}

const KUBECONFIG_NAME: &str = "gantry";

impl Kubeconfig {
    fn new(server: &str, ca_pem: &str, user: &str, cert_pem: &str, key_pem: &str) -> Self {
        Kubeconfig {
            api_version: "v1",
            kind: "Config",
            clusters: vec![Named {
                name: KUBECONFIG_NAME.into(),
                value: ClusterEntry {
                    cluster: ClusterInfo {
                        server: server.into(),
                        certificate_authority_data: BASE64.encode(ca_pem),
                    },
                },
            }],
            contexts: vec![Named {
                name: KUBECONFIG_NAME.into(),
                value: ContextEntry {
                    context: ContextInfo {
                        cluster: KUBECONFIG_NAME.into(),
                        user: user.into(),
                    },
                },
            }],
            users: vec![Named {
                name: user.into(),
                value: UserEntry {
                    user: UserInfoEntry {
                        client_certificate_data: BASE64.encode(cert_pem),
                        client_key_data: BASE64.encode(key_pem),
                    },
                },
            }],
            current_context: KUBECONFIG_NAME,
            preferences: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn parse_sans(pem: &str) -> BTreeSet<String> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        certificate_sans(&cert).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn ca_and_serving_certificate_are_persisted_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = ClusterPki::load_or_create(dir.path(), &[], &[]).unwrap();
        let second = ClusterPki::load_or_create(dir.path(), &[], &[]).unwrap();
        assert_eq!(first.ca_pem(), second.ca_pem());
        assert_eq!(first.serving_cert_pem, second.serving_cert_pem);
        assert_eq!(mode(&dir.path().join(CA_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.path().join(SERVING_KEY_FILE)), 0o600);
        assert!(first.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn serving_certificate_carries_the_standard_and_requested_sans() {
        let dir = tempfile::tempdir().unwrap();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let pki =
            ClusterPki::load_or_create(dir.path(), &["api.example.com".into()], &[ip]).unwrap();
        let sans = parse_sans(&pki.serving_cert_pem);
        for name in [
            "localhost",
            "127.0.0.1",
            "::1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "api.example.com",
            "10.1.2.3",
        ] {
            assert!(sans.contains(name), "{name} missing from {sans:?}");
        }
        if let Some(host) = hostname() {
            assert!(sans.contains(&host));
        }
    }

    #[test]
    fn changed_sans_reissue_the_serving_certificate_but_keep_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let before = ClusterPki::load_or_create(dir.path(), &[], &[]).unwrap();
        let after =
            ClusterPki::load_or_create(dir.path(), &["new.example.com".into()], &[]).unwrap();
        assert_eq!(before.ca_pem(), after.ca_pem());
        assert_ne!(before.serving_cert_pem, after.serving_cert_pem);
        assert!(parse_sans(&after.serving_cert_pem).contains("new.example.com"));
    }

    #[test]
    fn half_a_ca_is_an_error_not_a_silent_replacement() {
        let dir = tempfile::tempdir().unwrap();
        ClusterPki::load_or_create(dir.path(), &[], &[]).unwrap();
        fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
        let error = ClusterPki::load_or_create(dir.path(), &[], &[]).unwrap_err();
        assert!(
            matches!(error, PkiError::Invalid { what: "CA key", .. }),
            "{error}"
        );
    }

    #[test]
    fn client_certificate_has_user_as_cn_and_groups_as_o() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ClusterPki::load_or_create(dir.path(), &[], &[]).unwrap();
        let (cert_pem, key_pem) = pki
            .issue_client_certificate("system:node:n1", &["system:nodes", "extra"])
            .unwrap();
        assert!(key_pem.contains("PRIVATE KEY"));
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap())
            .collect();
        let o: Vec<_> = cert
            .subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(cn, ["system:node:n1"]);
        assert_eq!(o, ["system:nodes", "extra"]);
        let ca_der = CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        cert.verify_signature(Some(ca.public_key())).unwrap();
    }

    #[test]
    fn more_groups_than_a_certificate_can_hold_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ClusterPki::load_or_create(dir.path(), &[], &[]).unwrap();
        let error = pki
            .issue_client_certificate("u", &["a", "b", "c"])
            .unwrap_err();
        assert!(matches!(error, PkiError::Subject(_)), "{error}");
        assert!(pki.issue_client_certificate("", &[]).is_err());
    }

    #[test]
    fn kubeconfig_has_cluster_context_user_and_embedded_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ClusterPki::load_or_create(&dir.path().join("pki"), &[], &[]).unwrap();
        let path = dir.path().join("kube/config");
        pki.write_kubeconfig(
            &path,
            "https://127.0.0.1:6443",
            "admin",
            &["system:masters"],
        )
        .unwrap();
        assert_eq!(mode(&path), 0o600);
        let config: serde_yaml::Value =
            serde_yaml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(config["apiVersion"], "v1");
        assert_eq!(config["kind"], "Config");
        assert_eq!(config["current-context"], "gantry");
        let cluster = &config["clusters"][0];
        assert_eq!(cluster["name"], "gantry");
        assert_eq!(cluster["cluster"]["server"], "https://127.0.0.1:6443");
        let ca = BASE64
            .decode(
                cluster["cluster"]["certificate-authority-data"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(ca, pki.ca_pem().as_bytes());
        let context = &config["contexts"][0];
        assert_eq!(context["name"], "gantry");
        assert_eq!(context["context"]["cluster"], "gantry");
        assert_eq!(context["context"]["user"], "admin");
        let user = &config["users"][0];
        assert_eq!(user["name"], "admin");
        let cert = BASE64
            .decode(user["user"]["client-certificate-data"].as_str().unwrap())
            .unwrap();
        let key = BASE64
            .decode(user["user"]["client-key-data"].as_str().unwrap())
            .unwrap();
        assert!(
            String::from_utf8(cert)
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        assert!(String::from_utf8(key).unwrap().contains("PRIVATE KEY"));
    }

    #[test]
    fn server_tls_config_offers_h2_and_http1() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ClusterPki::load_or_create(dir.path(), &[], &[]).unwrap();
        let config = pki.server_tls_config().unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
