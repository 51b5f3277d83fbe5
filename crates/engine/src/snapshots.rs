//! A container's root filesystem from an image: an overlay snapshot over
//! the image's layers at `<root>/containers/<id>`, with the files that say
//! what it was made from (`image`, `image-name`, `layers` for `image prune`
//! and re-mounting, `exposed-ports` for port publishing). One place for
//! standalone `cubby run` and the daemon's create.

use cubby_image::snapshot::Snapshot;
use cubby_image::store::{ImageRecord, Store};
use cubby_image::ImageError;
use std::path::{Path, PathBuf};

/// Mounts the snapshot at `dir` and records its image; returns the rootfs.
/// On failure nothing is left at `dir`.
pub fn mount_for_image(
    store: &Store,
    image: &ImageRecord,
    exposed_ports: &[String],
    dir: &Path,
) -> Result<PathBuf, ImageError> {
    let snapshot = Snapshot::at(dir);
    let layers: Vec<PathBuf> = image.layers.iter().map(|l| store.layer_dir(l)).collect();
    let mounted = snapshot.mount(&layers).and_then(|rootfs| {
        let layer_list: String = image.layers.iter().map(|l| format!("{l}\n")).collect();
        let ports: String = exposed_ports.iter().map(|p| format!("{p}\n")).collect();
        for (file, text) in [
            ("image", image.config_digest.to_string()),
            ("image-name", image.name.clone()),
            ("layers", layer_list),
            ("exposed-ports", ports),
        ] {
            let p = dir.join(file);
            std::fs::write(&p, text).map_err(|e| ImageError::io(&p, e))?;
        }
        Ok(rootfs)
    });
    if mounted.is_err() {
        let _ = snapshot.remove();
    }
    mounted
}

/// The image `name` names for a run: a reference (`alpine`, `alpine:3.18`,
/// `host/x@sha256:..`) or an id prefix of at least 4 hex digits (as `images`
/// shows it).
pub fn find_image(store: &Store, name: &str) -> Result<Option<ImageRecord>, ImageError> {
    if let Ok(r) = cubby_image::reference::Reference::parse(name) {
        if let Some(rec) = store.get_image(&r.to_string())? {
            return Ok(Some(rec));
        }
    }
    let id = name.strip_prefix("sha256:").unwrap_or(name);
    if id.len() >= 4 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(store
            .images()?
            .into_iter()
            .find(|r| r.config_digest.hex().starts_with(id)));
    }
    Ok(None)
}
