//! A container's root filesystem from an image: an overlay snapshot over
//! the image's layers at `<root>/containers/<id>`, with the files that say
//! what it was made from (`image`, `image-name`, `layers` for `image prune`
//! and re-mounting, `exposed-ports` for port publishing). One place for
//! standalone `cubby run` and the daemon's create.

use cubby_image::digest::Digest;
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

/// An image a name resolved to: its id, all its records (names, sorted),
/// and the record the name itself named when it was a reference.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub id: Digest,
    pub records: Vec<ImageRecord>,
    pub by_ref: Option<ImageRecord>,
}

impl ResolvedImage {
    /// The record to run or build from: the one the reference named, else
    /// the first of the image's names (all share config and layers).
    pub fn into_record(mut self) -> ImageRecord {
        match self.by_ref.take() {
            Some(r) => r,
            None => self.records.swap_remove(0),
        }
    }
}

/// THE image lookup (run, create, build, the API): `name` is a reference
/// (`alpine`, `alpine:3.18`, `host/x@sha256:..`), `sha256:<id>`, or an id
/// prefix of at least 4 hex digits (as `images` shows it). A reference in
/// the store wins over an id prefix; a prefix of several image ids is
/// refused (`Invalid`), never a guess. `None` when nothing matches.
pub fn resolve_image(store: &Store, name: &str) -> Result<Option<ResolvedImage>, ImageError> {
    let records = store.images()?;
    let by_ref = cubby_image::reference::Reference::parse(name)
        .ok()
        .and_then(|r| {
            let canonical = r.to_string();
            records.iter().find(|rec| rec.name == canonical).cloned()
        });
    let id = match &by_ref {
        Some(rec) => rec.config_digest.clone(),
        None => {
            let hex = name.strip_prefix("sha256:").unwrap_or(name);
            if hex.len() < 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(None);
            }
            let mut ids: Vec<&Digest> = records
                .iter()
                .map(|r| &r.config_digest)
                .filter(|d| d.hex().starts_with(hex))
                .collect();
            ids.sort();
            ids.dedup();
            match ids.as_slice() {
                [] => return Ok(None),
                [one] => (*one).clone(),
                _ => {
                    return Err(ImageError::Invalid {
                        what: "image reference".into(),
                        reason: format!(
                            "{name} is ambiguous: it is the start of several image ids"
                        ),
                    })
                }
            }
        }
    };
    let mut mine: Vec<ImageRecord> = records
        .into_iter()
        .filter(|r| r.config_digest == id)
        .collect();
    mine.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Some(ResolvedImage {
        id,
        records: mine,
        by_ref,
    }))
}

/// [`resolve_image`]'s record (see [`ResolvedImage::into_record`]).
pub fn find_image(store: &Store, name: &str) -> Result<Option<ImageRecord>, ImageError> {
    Ok(resolve_image(store, name)?.map(ResolvedImage::into_record))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(hex: &str) -> Digest {
        format!("sha256:{hex:0<64}").parse().unwrap()
    }

    fn record(name: &str, id: &Digest) -> ImageRecord {
        ImageRecord {
            name: name.into(),
            manifest_digest: digest("ee"),
            config_digest: id.clone(),
            layers: Vec::new(),
            blobs: Vec::new(),
            size: 1,
            created: String::new(),
        }
    }

    #[test]
    fn one_lookup_for_references_ids_and_ambiguous_prefixes() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let a = digest("abcd1");
        let b = digest("abcd2");
        for (name, id) in [
            ("docker.io/library/alpine:latest", &a),
            ("docker.io/library/alpine:3", &a),
            ("localhost:5000/x:latest", &b),
        ] {
            store.put_image(record(name, id)).unwrap();
        }
        // A reference: its record, and the image's other names.
        let r = resolve_image(&store, "alpine").unwrap().unwrap();
        assert_eq!(r.id, a);
        assert_eq!(r.records.len(), 2);
        assert_eq!(
            r.clone().into_record().name,
            "docker.io/library/alpine:latest"
        );
        // An id prefix that names one image (with or without sha256:).
        let r = resolve_image(&store, "sha256:abcd2").unwrap().unwrap();
        assert_eq!((r.id.clone(), r.by_ref.is_none()), (b.clone(), true));
        assert_eq!(r.into_record().name, "localhost:5000/x:latest");
        // A prefix of two ids is refused, not guessed.
        let e = resolve_image(&store, "abcd").unwrap_err();
        assert!(e.to_string().contains("ambiguous"), "{e}");
        assert!(find_image(&store, "abcd").is_err());
        // Too short, or not there.
        assert!(resolve_image(&store, "abc").unwrap().is_none());
        assert!(resolve_image(&store, "busybox").unwrap().is_none());
        assert!(resolve_image(&store, "ffff").unwrap().is_none());
    }
}
