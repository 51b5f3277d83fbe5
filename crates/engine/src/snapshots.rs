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

/// Containers (ids, sorted) whose snapshot under `containers_dir` was made
/// from the image with config digest `image_id`.
pub fn users_of(containers_dir: &Path, image_id: &cubby_image::digest::Digest) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(containers_dir) else {
        return Vec::new();
    };
    let want = image_id.to_string();
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path().join("image")).is_ok_and(|s| s.trim() == want))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// The layers of every container snapshot under `containers_dir`: what an
/// image store gc must keep even when no tag names them.
pub fn layers_in_use(containers_dir: &Path) -> Vec<cubby_image::digest::Digest> {
    let Ok(entries) = std::fs::read_dir(containers_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("layers")).ok())
        .flat_map(|s| s.lines().filter_map(|l| l.parse().ok()).collect::<Vec<_>>())
        .collect()
}
