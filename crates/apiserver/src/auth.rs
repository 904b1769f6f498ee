//! Request authentication the way kube-apiserver does it: a verified x509 client certificate
//! (user = subject CN, groups = subject O values) or a static bearer token from a
//! `--token-auth-file` style CSV. Service-account tokens are verified by
//! [`crate::tokens`]; authorization is a separate, later step ([`crate::authz`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use rustls::pki_types::CertificateDer;
use subtle::ConstantTimeEq;

/// The group every authenticated user belongs to, as in Kubernetes.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// Who made a request, as established by authentication (Kubernetes' `user.Info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// Adds `system:authenticated` unless present, so authorizers can rely on it.
    fn authenticated(mut self) -> UserInfo {
        if !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.to_string());
        }
        self
    }
}

/// Why a request could not be authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials were presented, or the presented token is unknown; the server answers
    /// 401 Unauthorized.
    #[error("Unauthorized")]
    Unauthenticated,
    /// A client certificate was presented but carries no usable user name.
    #[error("invalid client certificate: {0}")]
    InvalidCertificate(String),
    /// The token file could not be read.
    #[error("reading token file {path}: {source}")]
    TokenFileIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The token file is not in the `token,user,uid,"group1,group2"` format.
    #[error("token file {path}, line {line}: {reason}")]
    TokenFileFormat {
        path: PathBuf,
        line: u64,
        reason: String,
    },
}

/// Authenticates requests from their TLS peer certificates or bearer token.
#[derive(Debug, Default)]
pub struct Authenticator {
    tokens: RwLock<HashMap<String, UserInfo>>,
}

impl Authenticator {
    /// Creates an authenticator, loading static tokens from `token_file` if given.
    pub fn new(token_file: Option<&Path>) -> Result<Authenticator, AuthError> {
        let tokens = match token_file {
            Some(path) => {
                let text = std::fs::read(path).map_err(|source| AuthError::TokenFileIo {
                    path: path.to_path_buf(),
                    source,
                })?;
                parse_token_file(&text, path)?
            }
            None => HashMap::new(),
        };
        Ok(Authenticator {
            tokens: RwLock::new(tokens),
        })
    }

    /// Registers a bearer token at runtime (node join, service accounts); replaces any
    /// previous user for the same token.
    pub fn add_token(&self, token: &str, user: UserInfo) {
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        tokens.insert(token.to_string(), user);
    }

    /// Identifies the requester. A client certificate wins over a token, as in
    /// kube-apiserver's union authenticator; the certificate chain must already have been
    /// verified against the cluster CA by the TLS layer.
    pub fn authenticate(
        &self,
        peer_certificates: Option<&[CertificateDer<'static>]>,
        authorization: Option<&str>,
    ) -> Result<UserInfo, AuthError> {
        if let Some(leaf) = peer_certificates.and_then(|chain| chain.first()) {
            return user_from_certificate(leaf).map(UserInfo::authenticated);
        }
        let token = authorization
            .and_then(bearer_token)
            .ok_or(AuthError::Unauthenticated)?;
        self.user_for_token(token)
            .map(UserInfo::authenticated)
            .ok_or(AuthError::Unauthenticated)
    }

    /// Looks a token up comparing every candidate in constant time, so response timing
    /// reveals nothing about how much of a guessed token was right.
    fn user_for_token(&self, token: &str) -> Option<UserInfo> {
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        for (candidate, user) in tokens.iter() {
            if bool::from(candidate.as_bytes().ct_eq(token.as_bytes())) {
                found = Some(user.clone());
            }
        }
        found
    }
}

/// Extracts the token from `Bearer <token>` (scheme case-insensitive, as in Kubernetes).
pub(crate) fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Maps a client certificate subject to a user: CN is the name, each O a group.
fn user_from_certificate(der: &CertificateDer<'_>) -> Result<UserInfo, AuthError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| AuthError::InvalidCertificate(e.to_string()))?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or_else(|| AuthError::InvalidCertificate("subject has no common name".into()))?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Ok(UserInfo {
        name,
        uid: None,
        groups,
    })
}

/// Parses kube-apiserver's `--token-auth-file`: `token,user,uid[,"group1,group2,..."]`.
/// Lines starting with `#` are comments.
fn parse_token_file(text: &[u8], path: &Path) -> Result<HashMap<String, UserInfo>, AuthError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text);
    let mut tokens = HashMap::new();
    for record in reader.records() {
        let format_error = |line: u64, reason: String| AuthError::TokenFileFormat {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            format_error(line, e.to_string())
        })?;
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() < 3 {
            return Err(format_error(
                line,
                format!(
                    "expected at least 3 columns (token,user,uid), found {}",
                    record.len()
                ),
            ));
        }
        let (token, name, uid) = (&record[0], &record[1], &record[2]);
        if token.is_empty() || name.is_empty() {
            return Err(format_error(
                line,
                "token and user name must not be empty".into(),
            ));
        }
        let groups = record
            .get(3)
            .map(|field| {
                field
                    .split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let user = UserInfo {
            name: name.to_string(),
            uid: (!uid.is_empty()).then(|| uid.to_string()),
            groups,
        };
        // kube-apiserver keeps the first entry for a duplicated token and warns.
        if tokens.contains_key(token) {
            tracing::warn!(path = %path.display(), line, "duplicate token in token file ignored");
            continue;
        }
        tokens.insert(token.to_string(), user);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::ClusterPki;
    use rustls::pki_types::pem::PemObject;

    fn client_cert(user: &str, groups: &[&str]) -> CertificateDer<'static> {
        let dir = tempfile::tempdir().unwrap();
        let pki = ClusterPki::load_or_create(dir.path(), &[], &[]).unwrap();
        let (cert, _) = pki.issue_client_certificate(user, groups).unwrap();
        CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()
    }

    fn token_file(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, contents.as_bytes()).unwrap();
        file
    }

    #[test]
    fn client_certificate_maps_cn_to_user_and_o_to_groups() {
        let auth = Authenticator::new(None).unwrap();
        let cert = client_cert("alice", &["devs", "system:masters"]);
        let user = auth.authenticate(Some(&[cert]), None).unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.uid, None);
        assert_eq!(user.groups, ["devs", "system:masters", AUTHENTICATED_GROUP]);
    }

    #[test]
    fn certificate_takes_precedence_over_token() {
        let auth = Authenticator::new(None).unwrap();
        auth.add_token(
            "tok",
            UserInfo {
                name: "bob".into(),
                uid: None,
                groups: vec![],
            },
        );
        let cert = client_cert("alice", &[]);
        let user = auth
            .authenticate(Some(&[cert]), Some("Bearer tok"))
            .unwrap();
        assert_eq!(user.name, "alice");
    }

    #[test]
    fn token_file_users_authenticate_with_bearer_tokens() {
        let file = token_file(
            "# comment\n\
             secret1,alice,uid-1,\"devs,ops\"\n\
             secret2, bob ,uid-2\n\
             \n\
             secret3,carol,,admins\n",
        );
        let auth = Authenticator::new(Some(file.path())).unwrap();
        let alice = auth.authenticate(None, Some("Bearer secret1")).unwrap();
        assert_eq!(
            alice,
            UserInfo {
                name: "alice".into(),
                uid: Some("uid-1".into()),
                groups: vec!["devs".into(), "ops".into(), AUTHENTICATED_GROUP.into()],
            }
        );
        let bob = auth.authenticate(None, Some("bearer   secret2")).unwrap();
        assert_eq!(bob.name, "bob");
        assert_eq!(bob.groups, [AUTHENTICATED_GROUP]);
        let carol = auth.authenticate(None, Some("Bearer secret3")).unwrap();
        assert_eq!(carol.uid, None);
        assert_eq!(carol.groups, ["admins", AUTHENTICATED_GROUP]);
    }

    #[test]
    fn unknown_token_missing_credentials_and_other_schemes_are_rejected() {
        let file = token_file("secret1,alice,uid-1\n");
        let auth = Authenticator::new(Some(file.path())).unwrap();
        for header in [
            Some("Bearer wrong"),
            Some("Bearer secret"),
            Some("Basic secret1"),
            Some("Bearer "),
            None,
        ] {
            assert!(
                matches!(
                    auth.authenticate(None, header),
                    Err(AuthError::Unauthenticated)
                ),
                "{header:?}"
            );
        }
    }

    #[test]
    fn runtime_tokens_authenticate() {
        let auth = Authenticator::new(None).unwrap();
        assert!(auth.authenticate(None, Some("Bearer join")).is_err());
        auth.add_token(
            "join",
            UserInfo {
                name: "system:node:n1".into(),
                uid: None,
                groups: vec!["system:nodes".into()],
            },
        );
        let user = auth.authenticate(None, Some("Bearer join")).unwrap();
        assert_eq!(user.groups, ["system:nodes", AUTHENTICATED_GROUP]);
    }

    #[test]
    fn malformed_token_files_are_reported_with_their_line() {
        let file = token_file("ok,alice,1\nonly-two,columns\n");
        let error = Authenticator::new(Some(file.path())).unwrap_err();
        assert!(
            matches!(error, AuthError::TokenFileFormat { line: 2, .. }),
            "{error}"
        );
        let missing = Authenticator::new(Some(Path::new("/nonexistent/tokens.csv"))).unwrap_err();
        assert!(matches!(missing, AuthError::TokenFileIo { .. }));
    }

    #[test]
    fn duplicate_tokens_keep_the_first_user() {
        let file = token_file("t,first,1\nt,second,2\n");
        let auth = Authenticator::new(Some(file.path())).unwrap();
        assert_eq!(
            auth.authenticate(None, Some("Bearer t")).unwrap().name,
            "first"
        );
    }
}
