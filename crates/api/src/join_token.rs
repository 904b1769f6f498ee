//! The join token's format, shared by the server that issues it and the agent that uses it.
//!
//! Like k3s's: `K10<sha256 of the cluster CA's PEM>::server:<secret>`. The hash lets a
//! joining node verify the CA it downloads before trusting it; the secret authorises it to
//! ask for node credentials.

use sha2::{Digest, Sha256};

/// A token that is not `K10<64 hex digits>::server:<secret>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed join token: expected K10<ca-hash>::server:<secret>")]
pub struct MalformedToken;

/// The two parts of a join token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinToken<'a> {
    /// Hex SHA-256 of the CA certificate's PEM text.
    pub ca_hash: &'a str,
    /// The shared secret.
    pub secret: &'a str,
}

impl<'a> JoinToken<'a> {
    /// Splits a token into its parts.
    pub fn parse(token: &'a str) -> Result<Self, MalformedToken> {
        let rest = token.trim().strip_prefix("K10").ok_or(MalformedToken)?;
        let (ca_hash, secret) = rest.split_once("::server:").ok_or(MalformedToken)?;
        let hash_ok = ca_hash.len() == 64 && ca_hash.bytes().all(|b| b.is_ascii_hexdigit());
        if !hash_ok || secret.is_empty() {
            return Err(MalformedToken);
        }
        Ok(JoinToken { ca_hash, secret })
    }

    /// The token as operators copy it.
    pub fn render(&self) -> String {
        format!("K10{}::server:{}", self.ca_hash, self.secret)
    }
}

/// The hex SHA-256 of a CA certificate's PEM text, as the token pins it.
pub fn ca_hash(ca_pem: &str) -> String {
    Sha256::digest(ca_pem.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_token_parses_back() {
        let hash = ca_hash("pem");
        let token = JoinToken {
            ca_hash: &hash,
            secret: "s3cret",
        }
        .render();
        assert_eq!(
            JoinToken::parse(&token),
            Ok(JoinToken {
                ca_hash: &hash,
                secret: "s3cret"
            })
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let empty_secret = format!("K10{}::server:", "a".repeat(64));
        for bad in ["", "K10", "abc::server:x", "K10zz::server:x", &empty_secret] {
            assert_eq!(JoinToken::parse(bad), Err(MalformedToken), "{bad:?}");
        }
    }
}
