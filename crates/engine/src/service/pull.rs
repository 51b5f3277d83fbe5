//! `pull`: an image from its registry into the store, as an engine call
//! that reports typed [`PullEvent`]s to a callback (layers arrive from
//! several threads). The API (`api/images.rs`) only turns the events into
//! Docker's JSON progress stream; errors are [`EngineError`]s.

use super::error::{EngineError, EngineResult};
use super::Engine;
use cubby_image::auth::{AuthFile, Credentials};
use cubby_image::digest::Digest;
use cubby_image::progress::{Event, LayerStatus, Progress};
use cubby_image::pull::{Platform, PullOptions};
use cubby_image::reference::Reference;
use cubby_image::registry::{Client, ClientOptions};
use cubby_image::store::ImageRecord;
use std::sync::Mutex;

/// What to pull (no Debug: it carries a password).
#[derive(Clone)]
pub struct PullRequest {
    pub reference: Reference,
    pub platform: Platform,
    /// For the reference's registry, over the stored logins.
    pub credentials: Option<Credentials>,
}

/// What a pull reports, in order: `PullingFrom` once, `Layer`s (none when
/// the image is up to date), then `Done` before `pull` returns Ok.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// The registry answered for `repository` at `tag` (a tag or digest).
    PullingFrom { repository: String, tag: String },
    /// Progress of one layer (its compressed blob's digest); failed layers
    /// are not reported (the pull's error is).
    Layer { digest: Digest, status: LayerStatus },
    /// The image is stored: `digest` is what the registry served for the
    /// reference; `downloaded` is false when it was already up to date.
    Done {
        name: String,
        digest: Digest,
        downloaded: bool,
    },
}

/// Forwards the image crate's events and keeps the resolved digest.
struct Forward<'a> {
    on_event: &'a (dyn Fn(PullEvent) + Sync),
    pulling_from: PullEvent,
    resolved: Mutex<Option<Digest>>,
}

impl Progress for Forward<'_> {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Resolved { digest, .. } => {
                if let Ok(mut r) = self.resolved.lock() {
                    *r = Some(digest.clone());
                }
                (self.on_event)(self.pulling_from.clone());
            }
            Event::Layer {
                status: LayerStatus::Failed,
                ..
            } => {}
            Event::Layer { digest, status } => (self.on_event)(PullEvent::Layer {
                digest: digest.clone(),
                status,
            }),
        }
    }
}

impl Engine {
    /// A registry client with the engine's insecure registries, the stored
    /// logins and `credentials` for `registry`.
    fn registry_client(&self, registry: &str, credentials: Option<Credentials>) -> Client {
        let client = Client::new(ClientOptions {
            auth: AuthFile::default_location(),
            insecure_registries: self.insecure_registries.clone(),
            user_agent: format!("cubby/{}", env!("CARGO_PKG_VERSION")),
        });
        match credentials {
            Some(c) => client.with_credentials(registry, c),
            None => client,
        }
    }

    /// (os, architecture) of a stored image.
    fn platform_of(&self, rec: &ImageRecord) -> Option<(String, String)> {
        let bytes = self.images.read_blob(&rec.config_digest).ok()?;
        let config: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        Some((
            config["os"].as_str()?.to_string(),
            config["architecture"].as_str()?.to_string(),
        ))
    }

    /// Pulls `req.reference` for `req.platform` into the store, reporting
    /// [`PullEvent`]s to `on_event`; an image already here for that
    /// platform and unchanged upstream costs one request (blocking).
    pub fn pull(
        &self,
        req: PullRequest,
        on_event: &(dyn Fn(PullEvent) + Sync),
    ) -> EngineResult<ImageRecord> {
        let PullRequest {
            reference: r,
            platform,
            credentials,
        } = req;
        let name = r.familiar();
        let client = self.registry_client(&r.registry, credentials);
        let pulling_from = PullEvent::PullingFrom {
            repository: r.repository.clone(),
            tag: r.reference().to_string(),
        };
        if let Some(rec) = self.images.get_image(&r.to_string())? {
            let same_platform = self.platform_of(&rec)
                == Some((platform.os.clone(), platform.architecture.clone()));
            if same_platform {
                let current = match &r.digest {
                    Some(digest) => digest.parse().ok(),
                    None => client
                        .head_manifest(&r, r.reference())
                        .ok()
                        .flatten()
                        .filter(|remote| rec.blobs.contains(remote)),
                };
                if let Some(digest) = current {
                    on_event(pulling_from);
                    on_event(PullEvent::Done {
                        name,
                        digest,
                        downloaded: false,
                    });
                    return Ok(rec);
                }
            }
        }
        let forward = Forward {
            on_event,
            pulling_from,
            resolved: Mutex::new(None),
        };
        let opts = PullOptions {
            platform,
            progress: false,
        };
        let rec = cubby_image::pull::pull_with(&client, &self.images, &r, &opts, &forward)
            .map_err(|e| match EngineError::from(e) {
                // Docker's wording starts with what was asked for.
                EngineError::NotFound(m) => EngineError::NotFound(format!("pull {name}: {m}")),
                e => e,
            })?;
        let digest = forward
            .resolved
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| rec.manifest_digest.clone());
        on_event(PullEvent::Done {
            name,
            digest,
            downloaded: true,
        });
        Ok(rec)
    }
}
