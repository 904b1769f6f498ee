//! Pulling from and pushing to OCI Distribution registries with `oci-client`.

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use futures::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::digest::{Digest, Hasher, ImageId};
use crate::error::{ImageError, Result};
use crate::manifest::{ACCEPTED_MANIFESTS, Descriptor, Document, Manifest, Platform};
use crate::reference::ImageReference;
use crate::store::{Image, ImageStore, parse_config};

/// How many layers download at once.
const CONCURRENT_LAYERS: usize = 3;

/// Bytes read from disk per upload chunk.
const UPLOAD_CHUNK: usize = 1 << 20;

/// A registry user name and password (or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The account name.
    pub username: String,
    /// Its password or access token.
    pub password: String,
}

/// Keeps passwords out of logs and panic messages.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Told about each blob's transfer, so a CLI can draw one progress bar per layer.
pub trait LayerProgress: Send + Sync {
    /// A transfer begins; `total` is the size in bytes when known.
    fn started(&self, digest: &Digest, total: Option<u64>);
    /// `bytes` more bytes moved.
    fn advanced(&self, digest: &Digest, bytes: u64);
    /// The blob is done; `status` reads like Docker's ("Pull complete", "Already exists").
    fn finished(&self, digest: &Digest, status: &str);
}

/// How to talk to the registry for a pull.
#[derive(Clone, Default)]
pub struct PullOptions {
    /// Explicit credentials; otherwise `~/.docker/config.json` is consulted.
    pub credentials: Option<Credentials>,
    /// Use plain HTTP even for a non-loopback registry.
    pub insecure: bool,
    /// Receives per-layer transfer events (a CLI's progress bars).
    pub progress: Option<Arc<dyn LayerProgress>>,
}

/// How to talk to the registry for a push (same knobs as a pull).
pub type PushOptions = PullOptions;

struct Session {
    client: Client,
    auth: RegistryAuth,
    reference: ImageReference,
    progress: Option<Arc<dyn LayerProgress>>,
}

impl Session {
    fn new(reference: ImageReference, options: &PullOptions) -> Session {
        let protocol = if options.insecure || reference.is_loopback_registry() {
            ClientProtocol::HttpsExcept(vec![reference.registry().to_owned()])
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            platform_resolver: None,
            ..Default::default()
        });
        let credentials = options
            .credentials
            .clone()
            .or_else(|| credentials_from_docker_config(reference.registry()));
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username, c.password),
            None => RegistryAuth::Anonymous,
        };
        Session {
            client,
            auth,
            reference,
            progress: options.progress.clone(),
        }
    }

    fn error(&self, action: &str, error: OciDistributionError) -> ImageError {
        registry_error(&self.reference, action, error)
    }

    async fn manifest(&self, reference: &ImageReference) -> Result<(Vec<u8>, Digest)> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(reference.oci(), &self.auth, &ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| self.error("pull", e))?;
        let digest = Digest::of(&bytes);
        if let Some(expected) = reference.digest()
            && expected != digest
        {
            return Err(ImageError::DigestMismatch {
                what: "manifest".into(),
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        Ok((bytes.to_vec(), digest))
    }

    fn report(&self, report: impl FnOnce(&dyn LayerProgress)) {
        if let Some(progress) = &self.progress {
            report(progress.as_ref());
        }
    }

    /// Downloads one blob into the store unless it is already there. `done` is the status
    /// to report; `None` keeps blobs users do not think of as layers (the config) quiet.
    async fn fetch_blob(
        &self,
        store: &ImageStore,
        descriptor: &Descriptor,
        done: Option<&str>,
    ) -> Result<()> {
        let digest = &descriptor.digest;
        let report = |event: &dyn Fn(&dyn LayerProgress)| {
            if done.is_some() {
                self.report(event);
            }
        };
        if store.blobs.contains(digest) {
            report(&|p| p.finished(digest, "Already exists"));
            return Ok(());
        }
        let oci_descriptor = oci_client::manifest::OciDescriptor {
            media_type: descriptor.media_type.clone(),
            digest: digest.to_string(),
            size: descriptor.size as i64,
            urls: descriptor.urls.clone(),
            ..Default::default()
        };
        let mut stream = self
            .client
            .pull_blob_stream(self.reference.oci(), &oci_descriptor)
            .await
            .map_err(|e| self.error("pull", e))?;
        let total = stream.content_length.or(Some(descriptor.size));
        report(&|p| p.started(digest, total));
        let temp = store.blobs.new_temp()?;
        let mut file = tokio::fs::File::from_std(
            temp.reopen()
                .map_err(ImageError::io("opening a temporary blob"))?,
        );
        let mut hasher = Hasher::new();
        while let Some(chunk) = stream.stream.next().await {
            let chunk = chunk.map_err(ImageError::io(format!("downloading {digest}")))?;
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(ImageError::io("writing a temporary blob"))?;
            report(&|p| p.advanced(digest, chunk.len() as u64));
        }
        file.flush()
            .await
            .map_err(ImageError::io("writing a temporary blob"))?;
        let actual = hasher.finish();
        if actual != *digest {
            return Err(ImageError::DigestMismatch {
                what: "blob".into(),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        let blobs = store.blobs.clone();
        let verified = digest.clone();
        tokio::task::spawn_blocking(move || blobs.commit(temp, &verified))
            .await
            .map_err(|e| ImageError::Io {
                context: "storing blob".into(),
                source: std::io::Error::other(e),
            })??;
        if let Some(done) = done {
            report(&|p| p.finished(digest, done));
        }
        Ok(())
    }

    /// Uploads one blob unless the registry already has it.
    async fn push_blob(&self, store: &ImageStore, digest: &Digest) -> Result<()> {
        let exists = self
            .client
            .blob_exists(self.reference.oci(), digest.as_str())
            .await
            .map_err(|e| self.error("push", e))?;
        if exists {
            self.report(|p| p.finished(digest, "Layer already exists"));
            return Ok(());
        }
        let path = store.blobs.path(digest);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(ImageError::io(format!("reading blob {digest}")))?;
        let size = file
            .metadata()
            .await
            .map_err(ImageError::io(format!("reading blob {digest}")))?
            .len();
        self.report(|p| p.started(digest, Some(size)));
        let progress = self.progress.clone();
        let reported = digest.clone();
        let chunks = futures::stream::try_unfold(file, |mut file| async move {
            let mut buffer = vec![0u8; UPLOAD_CHUNK];
            let read = file.read(&mut buffer).await?;
            if read == 0 {
                return Ok(None);
            }
            buffer.truncate(read);
            Ok::<_, OciDistributionError>(Some((bytes::Bytes::from(buffer), file)))
        })
        .inspect_ok(move |chunk| {
            if let Some(progress) = &progress {
                progress.advanced(&reported, chunk.len() as u64);
            }
        });
        self.client
            .push_blob_stream(self.reference.oci(), chunks, digest.as_str(), Some(size))
            .await
            .map_err(|e| self.error("push", e))?;
        self.report(|p| p.finished(digest, "Pushed"));
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ImageError::Io {
            context: "background task failed".into(),
            source: std::io::Error::other(e),
        })?
}

impl ImageStore {
    /// Pulls `reference` (selecting this host's platform from an index), stores and unpacks it.
    pub async fn pull(&self, reference: &str, options: &PullOptions) -> Result<ImageId> {
        let reference = ImageReference::parse(reference)?;
        let session = Session::new(reference.clone(), options);
        let store = self.clone();
        let lease = blocking(move || store.lease()).await?;
        session
            .client
            .store_auth_if_needed(reference.oci().resolve_registry(), &session.auth)
            .await;

        let (top_bytes, top_digest) = session.manifest(&reference).await?;
        let manifest_bytes = match Document::parse(&top_bytes)? {
            Document::Image { .. } => top_bytes,
            Document::Index(index) => {
                let chosen = index.select(&Platform::host())?;
                session
                    .manifest(&reference.with_digest(&chosen.digest))
                    .await?
                    .0
            }
        };
        let Document::Image { manifest, .. } = Document::parse(&manifest_bytes)? else {
            return Err(ImageError::InvalidContent(
                "an index points at another index".into(),
            ));
        };
        session.fetch_blob(self, &manifest.config, None).await?;
        let config_path = self.blobs.path(&manifest.config.digest);
        let config = tokio::fs::read(&config_path)
            .await
            .map_err(ImageError::io(format!("reading {}", config_path.display())))?;
        check_platform(&parse_config(&config)?)?;
        futures::stream::iter(&manifest.layers)
            .map(|layer| session.fetch_blob(self, layer, Some("Download complete")))
            .buffer_unordered(CONCURRENT_LAYERS)
            .try_collect::<Vec<()>>()
            .await?;

        let store = self.clone();
        let tags: Vec<String> = reference.tagged_name().into_iter().collect();
        let pinned = format!("{}@{top_digest}", reference.name());
        let layers = manifest.layers.clone();
        let progress = options.progress.clone();
        let id = blocking(move || {
            let id = store.register(&manifest_bytes, &tags, Some(pinned))?;
            if let Some(progress) = progress {
                layers
                    .iter()
                    .for_each(|l| progress.finished(&l.digest, "Pull complete"));
            }
            drop(lease);
            Ok(id)
        })
        .await?;
        Ok(id)
    }

    /// What `gantry run` needs: the local image, pulled first if there is none.
    pub async fn resolve_or_pull(&self, reference: &str, options: &PullOptions) -> Result<Image> {
        let store = self.clone();
        let wanted = reference.to_owned();
        match blocking(move || store.resolve(&wanted)).await {
            Err(ImageError::NotFound(_)) => {
                let id = self.pull(reference, options).await?;
                let store = self.clone();
                blocking(move || store.resolve(id.as_str())).await
            }
            found => found,
        }
    }

    /// Pushes a local image under `reference` and returns the manifest digest.
    pub async fn push(&self, reference: &str, options: &PushOptions) -> Result<Digest> {
        let parsed = ImageReference::parse(reference)?;
        let store = self.clone();
        let wanted = reference.to_owned();
        let (record, manifest_bytes) = blocking(move || {
            let record = store.record(&wanted)?;
            let bytes = store.blobs.read(&record.manifest)?;
            Ok((record, bytes))
        })
        .await?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(ImageError::json("parsing manifest"))?;
        let session = Session::new(parsed.clone(), options);
        session
            .client
            .auth(parsed.oci(), &session.auth, RegistryOperation::Push)
            .await
            .map_err(|e| session.error("push", e))?;
        for layer in &manifest.layers {
            session.push_blob(self, &layer.digest).await?;
        }
        session.push_blob(self, &manifest.config.digest).await?;
        let content_type =
            http::HeaderValue::from_str(&record.manifest_media_type).map_err(|_| {
                ImageError::InvalidContent(format!("bad media type {}", record.manifest_media_type))
            })?;
        session
            .client
            .push_manifest_raw(parsed.oci(), manifest_bytes, content_type)
            .await
            .map_err(|e| session.error("push", e))?;
        let pinned = format!("{}@{}", parsed.name(), record.manifest);
        let db = self.db.clone();
        let id = record.id.clone();
        blocking(move || {
            db.update(|records| {
                if let Some(image) = records.images.get_mut(&id) {
                    image.repo_digests.insert(pinned);
                }
                Ok(())
            })
        })
        .await?;
        Ok(record.manifest)
    }
}

fn check_platform(config: &oci_spec::image::ImageConfiguration) -> Result<()> {
    let image = Platform {
        architecture: config.architecture().to_string(),
        os: config.os().to_string(),
        variant: None,
    };
    let host = Platform::host();
    if image.runs_on(&host) {
        Ok(())
    } else {
        Err(ImageError::PlatformMismatch {
            available: image.to_string(),
            host: host.to_string(),
        })
    }
}

fn registry_error(
    reference: &ImageReference,
    action: &str,
    error: OciDistributionError,
) -> ImageError {
    let denied = || {
        ImageError::Registry(format!(
            "{action} access denied / manifest unknown for {reference}"
        ))
    };
    match error {
        OciDistributionError::ImageManifestNotFoundError(_) => denied(),
        OciDistributionError::UnauthorizedError { .. } => ImageError::Registry(format!(
            "{action} access denied for {reference}: not authorized (check the credentials)"
        )),
        OciDistributionError::AuthenticationFailure(message) => ImageError::Registry(format!(
            "{action} access denied for {reference}: authentication failed: {message}"
        )),
        OciDistributionError::RegistryError { envelope, .. } => {
            let refused = envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::Denied
                        | OciErrorCode::Unauthorized
                )
            });
            if refused {
                return denied();
            }
            let messages: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect();
            ImageError::Registry(format!("{action} {reference}: {}", messages.join("; ")))
        }
        OciDistributionError::ServerError {
            code: 401 | 403 | 404,
            ..
        } => denied(),
        OciDistributionError::ServerError { code, message, .. } => ImageError::Registry(format!(
            "{action} {reference}: registry answered {code}: {message}"
        )),
        OciDistributionError::RequestError(error) => ImageError::Registry(format!(
            "{action} {reference}: cannot reach registry {}: {error}",
            reference.registry()
        )),
        other => ImageError::Registry(format!("{action} {reference}: {other}")),
    }
}

/// Looks `registry` up in Docker's credential file (`$DOCKER_CONFIG/config.json`
/// or `~/.docker/config.json`), the file `docker login` writes.
pub fn credentials_from_docker_config(registry: &str) -> Option<Credentials> {
    let path = docker_config_path()?;
    let text = std::fs::read_to_string(path).ok()?;
    credentials_from_config_text(&text, registry)
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

/// The credentials a Docker config document (`~/.docker/config.json`, or a
/// Kubernetes `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`)
/// holds for `registry` (`docker.io`, `localhost:5000`), whether as a base64
/// `auth` or as `username`/`password`.
pub fn credentials_from_config_text(text: &str, registry: &str) -> Option<Credentials> {
    let config: serde_json::Value = serde_json::from_str(text).ok()?;
    let wanted = auth_key_host(registry);
    let (_, entry) = config
        .get("auths")?
        .as_object()?
        .iter()
        .find(|(key, _)| auth_key_host(key) == wanted)?;
    if let Some(encoded) = entry
        .get("auth")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let (username, password) = String::from_utf8(decoded)
            .ok()?
            .split_once(':')
            .map(|(u, p)| (u.to_owned(), p.to_owned()))?;
        return Some(Credentials { username, password });
    }
    Some(Credentials {
        username: entry.get("username")?.as_str()?.to_owned(),
        password: entry.get("password")?.as_str()?.to_owned(),
    })
}

/// Reduces a credential-file key (`https://index.docker.io/v1/`, `localhost:5000`) to its host.
fn auth_key_host(key: &str) -> String {
    let host = key.split_once("://").map_or(key, |(_, rest)| rest);
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        other => other.to_owned(),
    }
}

/// The key `docker login` files Docker Hub credentials under.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// Checks `credentials` against `registry` (a host such as `localhost:5000` or `docker.io`),
/// as `docker login` does before saving them.
pub async fn verify_login(registry: &str, credentials: &Credentials, insecure: bool) -> Result<()> {
    // Any repository will do to ask the registry who we are; this one need not exist.
    let probe = ImageReference::parse(&format!("{registry}/gantry-login-probe"))?;
    let options = PullOptions {
        credentials: Some(credentials.clone()),
        insecure,
        progress: None,
    };
    let session = Session::new(probe.clone(), &options);
    let failed = |error: OciDistributionError| match error {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => ImageError::Registry(format!(
            "login to {registry} failed: unauthorized: incorrect username or password"
        )),
        other => registry_error(&probe, "login to", other),
    };
    let token = session
        .client
        .auth(probe.oci(), &session.auth, RegistryOperation::Pull)
        .await
        .map_err(failed)?;
    if token.is_some() {
        return Ok(()); // the token service accepted the credentials
    }
    // Basic-auth registries check credentials on every request; a missing repository is fine.
    match session
        .client
        .list_tags(probe.oci(), &session.auth, Some(1), None)
        .await
    {
        Ok(_) => Ok(()),
        Err(OciDistributionError::RegistryError { envelope, .. })
            if envelope
                .errors
                .iter()
                .all(|e| matches!(e.code, OciErrorCode::NameUnknown | OciErrorCode::NotFound)) =>
        {
            Ok(())
        }
        Err(OciDistributionError::ServerError { code: 404, .. }) => Ok(()),
        Err(error) => Err(failed(error)),
    }
}

/// Saves (or with `None`, forgets) credentials for `registry` in Docker's credential file,
/// keeping everything else in it. Returns the file's path.
pub fn save_docker_config_credentials(
    registry: &str,
    credentials: Option<&Credentials>,
) -> Result<PathBuf> {
    let path = docker_config_path().ok_or_else(|| {
        ImageError::InvalidContent("neither DOCKER_CONFIG nor HOME is set".into())
    })?;
    save_credentials_in(&path, registry, credentials)?;
    Ok(path)
}

fn save_credentials_in(
    path: &std::path::Path,
    registry: &str,
    credentials: Option<&Credentials>,
) -> Result<()> {
    let mut config: serde_json::Value = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(ImageError::json(format!("parsing {}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(source) => {
            return Err(ImageError::Io {
                context: format!("reading {}", path.display()),
                source,
            });
        }
    };
    let object = config.as_object_mut().ok_or_else(|| {
        ImageError::InvalidContent(format!("{} is not a JSON object", path.display()))
    })?;
    let auths = object
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}));
    let auths = auths.as_object_mut().ok_or_else(|| {
        ImageError::InvalidContent(format!("\"auths\" in {} is not an object", path.display()))
    })?;
    let wanted = auth_key_host(registry);
    auths.retain(|key, _| auth_key_host(key) != wanted);
    if let Some(credentials) = credentials {
        let key = if wanted == "docker.io" {
            DOCKER_HUB_AUTH_KEY.to_owned()
        } else {
            wanted
        };
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", credentials.username, credentials.password));
        auths.insert(key, serde_json::json!({ "auth": encoded }));
    }
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).map_err(ImageError::io(format!("creating {}", dir.display())))?;
    let bytes = serde_json::to_vec_pretty(&config)
        .map_err(ImageError::json("encoding the credential file"))?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .map_err(ImageError::io(format!("writing {}", path.display())))?;
    // NamedTempFile is created 0600, which is what a file of passwords should be.
    std::io::Write::write_all(&mut temp, &bytes)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(ImageError::io(format!("writing {}", path.display())))?;
    temp.persist(path).map_err(|e| ImageError::Io {
        context: format!("writing {}", path.display()),
        source: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_auths_are_found_by_host() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let text = format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{encoded}"}}, "localhost:5000": {{"username": "bob", "password": "pw"}}}}}}"#
        );
        let hub = credentials_from_config_text(&text, "docker.io").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("alice", "s3cret")
        );
        let local = credentials_from_config_text(&text, "localhost:5000").unwrap();
        assert_eq!(local.username, "bob");
        assert_eq!(credentials_from_config_text(&text, "quay.io"), None);
    }

    #[test]
    fn saved_credentials_are_found_again_and_other_settings_survive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"credsStore": "none", "auths": {"quay.io": {"auth": "eDp5"}}}"#,
        )
        .unwrap();
        let alice = Credentials {
            username: "alice".into(),
            password: "pw:with:colons".into(),
        };
        save_credentials_in(&path, "localhost:5000", Some(&alice)).unwrap();
        save_credentials_in(&path, "docker.io", Some(&alice)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            credentials_from_config_text(&text, "localhost:5000"),
            Some(alice.clone())
        );
        assert!(text.contains("https://index.docker.io/v1/") && text.contains("credsStore"));
        assert_eq!(
            credentials_from_config_text(&text, "quay.io")
                .unwrap()
                .username,
            "x"
        );

        save_credentials_in(&path, "localhost:5000", None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(credentials_from_config_text(&text, "localhost:5000"), None);
        assert_eq!(
            credentials_from_config_text(&text, "docker.io"),
            Some(alice)
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
