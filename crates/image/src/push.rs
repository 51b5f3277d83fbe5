//! `push`: store → registry. Blobs the registry already has are skipped (one
//! HEAD each); the manifest goes last, so a failed push never publishes a
//! manifest whose blobs are missing.

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::reference::Reference;
use crate::registry::Client;
use crate::store::{ImageRecord, Store};
use oci_spec::image::ImageManifest;

/// Pushes `image` as `target`; returns the manifest digest.
pub fn push(
    client: &Client,
    store: &Store,
    image: &ImageRecord,
    target: &Reference,
) -> Result<Digest> {
    let manifest_bytes = store.read_blob(&image.manifest_digest)?;
    let manifest: ImageManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| ImageError::Invalid {
            what: format!("manifest of {}", image.name),
            reason: e.to_string(),
        })?;
    let mut blobs = vec![(
        manifest.config().digest().to_string(),
        manifest.config().size(),
    )];
    blobs.extend(
        manifest
            .layers()
            .iter()
            .map(|l| (l.digest().to_string(), l.size())),
    );
    for (digest, size) in blobs {
        let digest: Digest = digest.parse()?;
        if client.blob_exists(target, &digest)? {
            continue;
        }
        let path = store.blob_path(&digest);
        let file = std::fs::File::open(&path).map_err(|e| ImageError::io(&path, e))?;
        client.push_blob(target, &digest, size, file)?;
    }
    let media_type = manifest
        .media_type()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
    client.put_manifest(target, target.reference(), &manifest_bytes, &media_type)
}
