//! How a new node gets its credentials from a join token (see the server's `bootstrap`).
//!
//! The CA is fetched without verification and then checked against the hash in the
//! token; only then is it trusted for the request that presents the secret, so neither the
//! secret nor the node's new key material can be captured by a server impersonator.

use gantry_api::join_token::{JoinToken, MalformedToken, ca_hash};

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The token is not a join token.
    #[error(transparent)]
    Token(#[from] MalformedToken),
    /// The server could not be reached or answered badly.
    #[error("contacting {server}: {source}")]
    Http {
        /// The server URL.
        server: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// The CA the server presented is not the one the token pins.
    #[error("the server's CA does not match the join token (expected sha256 {expected}, got {actual})")]
    CaMismatch {
        /// From the token.
        expected: String,
        /// Of the downloaded CA.
        actual: String,
    },
    /// The server refused the request.
    #[error("the server refused the join request ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
}

/// Asks `server` (an `https://host:port` URL) for a kubeconfig for node `node_name`,
/// authorised by `token`; returns the kubeconfig's YAML.
pub async fn request_node_kubeconfig(
    server: &str,
    token: &str,
    node_name: &str,
) -> Result<String, JoinError> {
    let parsed = JoinToken::parse(token)?;
    let server = server.trim_end_matches('/');
    let http = |source| JoinError::Http {
        server: server.to_string(),
        source,
    };
    let unverified = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .map_err(http)?;
    let ca_pem = unverified
        .get(format!("{server}/cacerts"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(http)?
        .text()
        .await
        .map_err(http)?;
    let actual = ca_hash(&ca_pem);
    if !actual.eq_ignore_ascii_case(parsed.ca_hash) {
        return Err(JoinError::CaMismatch {
            expected: parsed.ca_hash.to_string(),
            actual,
        });
    }
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(http)?;
    let verified = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .map_err(http)?;
    let response = verified
        .post(format!("{server}/bootstrap/v1/node-credentials"))
        .bearer_auth(parsed.secret)
        .json(&serde_json::json!({ "nodeName": node_name }))
        .send()
        .await
        .map_err(http)?;
    let status = response.status();
    let body = response.text().await.map_err(http)?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or(body);
        return Err(JoinError::Refused {
            status: status.as_u16(),
            message,
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use gantry_apiserver::testing::TestServer;

    use super::*;

    #[tokio::test]
    async fn a_node_joins_with_the_token_and_its_credentials_work() {
        let server = TestServer::start();
        let token = server.join_token();
        let yaml = request_node_kubeconfig(&server.url(), &token, "worker-1")
            .await
            .expect("joined");
        let path = server.dir().join("worker.kubeconfig");
        std::fs::write(&path, yaml).expect("written");
        let client = crate::connect(&path).await.expect("client");
        let info = client.apiserver_version().await.expect("authenticated call");
        assert!(info.git_version.starts_with("v1."));
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
        namespaces
            .get("default")
            .await
            .expect("the node's certificate authenticates");
    }

    #[tokio::test]
    async fn a_wrong_secret_or_a_different_ca_is_refused() {
        let server = TestServer::start();
        let token = server.join_token();
        let parsed = JoinToken::parse(&token).expect("token");
        let wrong_secret = JoinToken {
            ca_hash: parsed.ca_hash,
            secret: "not-the-secret",
        }
        .render();
        let refused = request_node_kubeconfig(&server.url(), &wrong_secret, "worker-1").await;
        assert!(
            matches!(refused, Err(JoinError::Refused { status: 401, .. })),
            "{refused:?}"
        );
        let other_ca = JoinToken {
            ca_hash: &"0".repeat(64),
            secret: parsed.secret,
        }
        .render();
        let mismatch = request_node_kubeconfig(&server.url(), &other_ca, "worker-1").await;
        assert!(matches!(mismatch, Err(JoinError::CaMismatch { .. })), "{mismatch:?}");
        let bad_name = request_node_kubeconfig(&server.url(), &token, "Not_A_Name").await;
        assert!(
            matches!(bad_name, Err(JoinError::Refused { status: 400, .. })),
            "{bad_name:?}"
        );
    }
}
