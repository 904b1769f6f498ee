//! Joining nodes: a k3s-style join token and the endpoints an agent uses with it.
//!
//! The token is `K10<sha256 of the CA certificate>::server:<secret>`. A new agent fetches
//! the CA from `/cacerts` over an unverified connection, checks it against the hash in its
//! token (so a man in the middle cannot substitute its own CA), then presents the secret
//! to `/bootstrap/v1/node-credentials` over a verified connection and receives a
//! kubeconfig with a client certificate for `system:node:<name>` in `system:nodes`.

use std::fs;
use std::path::{Path, PathBuf};

use gantry_api::join_token::{self, ca_hash};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// The file, under the server's data directory, that holds the join token.
pub const TOKEN_FILE: &str = "node-token";

/// The cluster's join token, loaded from or created in the data directory.
#[derive(Clone)]
pub struct JoinToken {
    token: String,
    secret: String,
    path: PathBuf,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Why a join token could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum JoinTokenError {
    /// Reading or writing the token file.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The system random source failed.
    #[error("no randomness available for a join token")]
    Random,
}

impl JoinToken {
    /// Loads `<data_dir>/node-token`, or creates it bound to `ca_pem`. A token whose CA hash
    /// no longer matches (the CA was recreated) is replaced, since it could not work.
    pub fn load_or_create(data_dir: &Path, ca_pem: &str) -> Result<JoinToken, JoinTokenError> {
        let path = data_dir.join(TOKEN_FILE);
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| JoinTokenError::Io {
                action,
                path,
                source,
            }
        };
        let ca_hash = ca_hash(ca_pem);
        match fs::read_to_string(&path) {
            Ok(existing) => {
                let existing = existing.trim();
                if let Ok(parsed) = join_token::JoinToken::parse(existing)
                    && parsed.ca_hash == ca_hash
                {
                    return Ok(JoinToken {
                        token: existing.to_string(),
                        secret: parsed.secret.to_string(),
                        path,
                    });
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io("read", &path)(err)),
        }
        let secret = random_secret()?;
        let token = join_token::JoinToken {
            ca_hash: &ca_hash,
            secret: &secret,
        }
        .render();
        write_private(&path, &token).map_err(io("write", &path))?;
        Ok(JoinToken {
            token,
            secret,
            path,
        })
    }

    /// The whole token, as an operator passes it to `gantry agent --token`.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Where the token is stored.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `presented` (the whole token or just its secret) is this cluster's.
    pub fn accepts(&self, presented: &str) -> bool {
        let secret = join_token::JoinToken::parse(presented).map_or(presented, |t| t.secret);
        bool::from(secret.as_bytes().ct_eq(self.secret.as_bytes()))
    }
}

fn random_secret() -> Result<String, JoinTokenError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| JoinTokenError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let temporary = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn token_is_created_once_pins_the_ca_and_accepts_only_its_secret() {
        let dir = tempfile::tempdir().expect("temp dir");
        let token = JoinToken::load_or_create(dir.path(), CA).expect("created");
        let again = JoinToken::load_or_create(dir.path(), CA).expect("loaded");
        assert_eq!(token.token(), again.token());
        let parsed = join_token::JoinToken::parse(token.token()).expect("well formed");
        assert_eq!(parsed.ca_hash, ca_hash(CA));
        assert!(token.accepts(token.token()));
        assert!(token.accepts(parsed.secret));
        assert!(!token.accepts("K10abc::server:wrong"));
        assert!(!token.accepts(""));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(token.path()).expect("token file").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_new_ca_replaces_the_token() {
        let dir = tempfile::tempdir().expect("temp dir");
        let old = JoinToken::load_or_create(dir.path(), CA).expect("created");
        let new = JoinToken::load_or_create(dir.path(), "another CA").expect("replaced");
        assert_ne!(old.token(), new.token());
        assert!(!new.accepts(old.token()));
    }
}
