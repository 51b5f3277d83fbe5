//! Image archives.
//!
//! - [`import`]: a plain root filesystem tarball (optionally gzip/zstd)
//!   becomes a one-layer image, with the layer stored gzip-compressed like a
//!   pulled one.
//! - [`save`]: images to one tar that is both an OCI image layout and a
//!   `docker save` archive (as Docker 25+ writes them).
//! - [`load`]: a `docker save` or OCI layout tar (plain, gzip or zstd) into
//!   the store, every blob verified.

use crate::digest::{Digest, HashingReader};
use crate::error::{ImageError, Result};
use crate::reference::Reference;
use crate::store::{ImageRecord, Store, LAYER_MEDIA_TYPES};
use flate2::write::GzEncoder;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Opens `path` and undoes gzip or zstd compression if its magic says so
/// (image imports, build contexts, ADD of a local archive).
pub fn decompressed(path: &Path) -> Result<Box<dyn Read>> {
    let file = std::fs::File::open(path).map_err(|e| ImageError::io(path, e))?;
    let mut r = BufReader::with_capacity(1 << 16, file);
    let head = r.fill_buf().map_err(|e| ImageError::io(path, e))?.to_vec();
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(|e| ImageError::io(path, e))?)
    } else {
        Box::new(r)
    })
}

/// Imports `tarball` as image `name` (canonical reference string), its
/// config changed by `changes` (Dockerfile instructions, see
/// [`crate::changes`]; checked before anything is stored).
pub fn import(
    store: &Store,
    tarball: &Path,
    name: &str,
    changes: &[String],
) -> Result<ImageRecord> {
    let mut image_config = serde_json::Map::new();
    image_config.insert(
        "Env".into(),
        serde_json::json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]),
    );
    crate::changes::apply(&mut image_config, changes)?;
    let _pin = store.pin()?;
    // Pass 1: hash the tar (diff_id) while writing the gzip blob to a temp file.
    let tmp = tempfile_in(store)?;
    let mut uncompressed = HashingReader::new(decompressed(tarball)?);
    let blob_file = std::fs::File::create(&tmp.0).map_err(|e| ImageError::io(&tmp.0, e))?;
    let mut gz = GzEncoder::new(
        std::io::BufWriter::new(blob_file),
        flate2::Compression::fast(),
    );
    std::io::copy(&mut uncompressed, &mut gz).map_err(|e| ImageError::io(tarball, e))?;
    gz.finish()
        .and_then(|mut w| w.flush())
        .map_err(|e| ImageError::io(&tmp.0, e))?;
    let (diff_id, _) = uncompressed.digest();
    let blob_reader = || std::fs::File::open(&tmp.0).map_err(|e| ImageError::io(&tmp.0, e));
    let (blob, blob_size) = {
        let mut h = HashingReader::new(blob_reader()?);
        std::io::copy(&mut h, &mut std::io::sink()).map_err(|e| ImageError::io(&tmp.0, e))?;
        h.digest()
    };
    store.ingest(&blob, Some(blob_size), blob_reader()?)?;
    // Pass 2: unpack from the stored blob (verifies diff_id again).
    let chain = Store::chain_id(None, &diff_id);
    let stored = store.blob_path(&blob);
    let file = std::fs::File::open(&stored).map_err(|e| ImageError::io(&stored, e))?;
    store.unpack_layer(&chain, &diff_id, file, GZIP_LAYER)?;

    let arch = crate::pull::Platform::host().architecture;
    let created = cubby_runtime::state::rfc3339_now();
    let config = serde_json::json!({
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        "history": [{"created": created, "created_by": format!("cubby import {}", tarball.display())}]
    });
    let config_bytes = serde_json::to_vec(&config).map_err(|e| ImageError::Invalid {
        what: "image config".into(),
        reason: e.to_string(),
    })?;
    let config_digest = store.put_blob(&config_bytes)?;
    let record_config = config_digest.clone();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.to_string(), "size": config_bytes.len()},
        "layers": [{"mediaType": GZIP_LAYER, "digest": blob.to_string(), "size": blob_size}]
    });
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| ImageError::Invalid {
        what: "manifest".into(),
        reason: e.to_string(),
    })?;
    let manifest_digest = store.put_blob(&manifest_bytes)?;
    let record = ImageRecord {
        name: name.to_string(),
        manifest_digest: manifest_digest.clone(),
        config_digest,
        layers: vec![chain],
        blobs: vec![manifest_digest, record_config, blob],
        size: blob_size,
        created,
    };
    store.put_image(record.clone())?;
    Ok(record)
}

/// A temp file path beside the store that is removed on drop.
struct TempPath(std::path::PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tempfile_in(store: &Store) -> Result<TempPath> {
    let dir = store.tmp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(TempPath(
        dir.join(format!("import-{}-{nanos}", std::process::id())),
    ))
}

// ------------------------------------------------------------- save / load
//
// `save` writes one tar holding two views of the same blobs, as Docker 25+
// does: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/*`)
// and the docker-save `manifest.json` whose `Config`/`Layers` point at those
// blob files. `load` reads either (and a gzip/zstd-compressed tar of either).

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// The tag (OCI image layout convention; Docker writes the tag alone).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The full reference (containerd and Docker 25+).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// Prefix of the record name of an image loaded without a name.
pub const DANGLING_PREFIX: &str = "<none>@";
/// index.json, manifests, configs: more than this is not a real archive.
const MAX_JSON: u64 = 32 << 20;
/// Nested image indexes followed at most.
const MAX_INDEX_DEPTH: usize = 4;

/// The record name under which `load` keeps an image the archive gives no
/// name: `<none>@sha256:<config hex>`. Such an image shows as
/// `<none> <none>` in `cubby images`, is found by its id, survives `image
/// prune` like Docker's dangling images, and goes away with `cubby rmi ID`.
pub fn dangling_name(config: &Digest) -> String {
    format!("{DANGLING_PREFIX}{config}")
}

/// Whether a record name is one made by [`dangling_name`].
pub fn is_dangling(name: &str) -> bool {
    name.starts_with(DANGLING_PREFIX)
}

/// One image to save: its record, and the reference it is saved under
/// (`None` when it was named by id: saved without a name, as Docker does).
#[derive(Debug, Clone)]
pub struct SaveItem {
    pub name: Option<Reference>,
    pub record: ImageRecord,
}

#[derive(Deserialize)]
struct Desc {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    platform: Option<PlatformDoc>,
}

#[derive(Deserialize)]
struct PlatformDoc {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<Desc>,
}

#[derive(Deserialize)]
struct ManifestDoc {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    config: Desc,
    #[serde(default)]
    layers: Vec<Desc>,
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct ConfigDoc {
    rootfs: RootFsDoc,
}

#[derive(Deserialize)]
struct RootFsDoc {
    #[serde(default)]
    diff_ids: Vec<String>,
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Invalid {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn to_json(what: &str, v: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| ImageError::Invalid {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn blob_entry(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn tar_err(what: &str) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |e| ImageError::io(what, e)
}

fn tar_header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    // Fixed time: saving the same images twice gives the same bytes.
    h.set_mtime(0);
    h
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<()> {
    let mut h = tar_header(tar::EntryType::Regular, bytes.len() as u64);
    tar.append_data(&mut h, path, bytes)
        .map_err(tar_err("writing the archive"))
}

/// Writes `items` as one tar to `out`: OCI image layout plus docker-save
/// `manifest.json`, sharing the blob files. Layers are the stored blobs as
/// they are (compressed as pulled; `docker load` accepts gzip layers), and
/// each blob is verified against its digest while it is written. An image
/// saved under several names is written once, with every name.
pub fn save(store: &Store, items: &[SaveItem], out: impl Write) -> Result<()> {
    struct Saved {
        manifest: Digest,
        media_type: String,
        manifest_size: u64,
        config: Digest,
        layers: Vec<Digest>,
        names: Vec<Reference>,
        unnamed: bool,
    }
    let mut images: Vec<Saved> = Vec::new();
    let mut blobs: Vec<Digest> = Vec::new();
    let mut seen: HashSet<Digest> = HashSet::new();
    for item in items {
        let rec = &item.record;
        let what = match &item.name {
            Some(r) => r.familiar(),
            None => rec.config_digest.to_string(),
        };
        let bytes = store.read_blob(&rec.manifest_digest)?;
        let m: ManifestDoc = parse_json(&format!("manifest of {what}"), &bytes)?;
        let config: Digest = m.config.digest.parse()?;
        if config != rec.config_digest {
            return Err(ImageError::Invalid {
                what: format!("image {what}"),
                reason: format!(
                    "its manifest names config {config}, its record {}",
                    rec.config_digest
                ),
            });
        }
        let layers: Vec<Digest> = m
            .layers
            .iter()
            .map(|l| l.digest.parse())
            .collect::<Result<_>>()?;
        for d in std::iter::once(&config)
            .chain(&layers)
            .chain(std::iter::once(&rec.manifest_digest))
        {
            if !store.has_blob(d) {
                return Err(ImageError::NotFound {
                    what: format!("blob {d} of image {what} in the store"),
                    hint: "; pull the image again".into(),
                });
            }
            if seen.insert(d.clone()) {
                blobs.push(d.clone());
            }
        }
        if let Some(s) = images
            .iter_mut()
            .find(|s| s.manifest == rec.manifest_digest)
        {
            match &item.name {
                Some(r) if !s.names.contains(r) => s.names.push(r.clone()),
                Some(_) => {}
                None => s.unnamed = true,
            }
            continue;
        }
        let media_type = if m.media_type.is_empty() {
            OCI_MANIFEST.to_string()
        } else {
            m.media_type
        };
        images.push(Saved {
            manifest: rec.manifest_digest.clone(),
            media_type,
            manifest_size: bytes.len() as u64,
            config,
            layers,
            names: item.name.iter().cloned().collect(),
            unnamed: item.name.is_none(),
        });
    }

    let mut tar = tar::Builder::new(out);
    append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = tar_header(tar::EntryType::Directory, 0);
        tar.append_data(&mut h, dir, io::empty())
            .map_err(tar_err("writing the archive"))?;
    }
    for d in &blobs {
        let size = store.blob_size(d)?;
        let file = store.open_blob(d)?;
        let mut h = tar_header(tar::EntryType::Regular, size);
        let mut hashing = HashingReader::new(file.take(size));
        tar.append_data(&mut h, blob_entry(d), &mut hashing)
            .map_err(tar_err("writing the archive"))?;
        hashing.finish(
            &format!(
                "stored blob {d} (the store is corrupt; run `cubby image prune` and pull the image again)"
            ),
            d,
            Some(size),
        )?;
    }

    let mut index = Vec::new();
    let mut docker = Vec::new();
    for s in &images {
        let desc = |annotations: Option<serde_json::Value>| {
            let mut v = serde_json::json!({
                "mediaType": s.media_type,
                "digest": s.manifest.to_string(),
                "size": s.manifest_size,
            });
            if let Some(a) = annotations {
                v["annotations"] = a;
            }
            v
        };
        for r in &s.names {
            let mut a = serde_json::json!({ ANNOTATION_IMAGE_NAME: r.to_string() });
            if let (Some(tag), None) = (&r.tag, &r.digest) {
                a[ANNOTATION_REF_NAME] = serde_json::Value::String(tag.clone());
            }
            index.push(desc(Some(a)));
        }
        if s.unnamed && s.names.is_empty() {
            index.push(desc(None));
        }
        let tags: Vec<String> = s
            .names
            .iter()
            .filter(|r| r.tag.is_some() && r.digest.is_none())
            .map(|r| r.familiar())
            .collect();
        docker.push(serde_json::json!({
            "Config": blob_entry(&s.config),
            "RepoTags": tags,
            "Layers": s.layers.iter().map(blob_entry).collect::<Vec<_>>(),
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": index,
    });
    append_bytes(&mut tar, "index.json", &to_json("index.json", &index)?)?;
    append_bytes(
        &mut tar,
        "manifest.json",
        &to_json("manifest.json", &docker)?,
    )?;
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(tar_err("writing the archive"))
}

/// A file of the archive, copied to the store's scratch space.
struct Staged {
    path: PathBuf,
    digest: Digest,
    size: u64,
}

/// The regular files of an archive (by normalised path) and its links.
struct Unpacked {
    dir: PathBuf,
    files: HashMap<String, Staged>,
    links: HashMap<String, String>,
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `./a//b/` → `a/b`; `..` is kept (resolved by [`join_link`]). Archive
/// paths are only ever keys here: nothing is written under them.
fn normalise(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Where a symlink at `from` with `target` points, as an archive path.
fn join_link(from: &str, target: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if !target.starts_with('/') {
        parts.extend(from.split('/'));
        parts.pop();
    }
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

fn corrupt(reason: impl std::fmt::Display) -> ImageError {
    ImageError::Invalid {
        what: "image archive".into(),
        reason: reason.to_string(),
    }
}

impl Unpacked {
    /// Copies every regular file of the tar to `dir`, hashing it on the
    /// way; a `blobs/sha256/<hex>` file whose content does not hash to its
    /// name fails here, before anything reaches the store.
    fn read(input: impl Read, dir: PathBuf) -> Result<Unpacked> {
        std::fs::create_dir_all(&dir).map_err(|e| ImageError::io(&dir, e))?;
        let mut un = Unpacked {
            dir,
            files: HashMap::new(),
            links: HashMap::new(),
        };
        let mut archive = tar::Archive::new(input);
        let unreadable = |e: io::Error| corrupt(format!("not a readable tar archive: {e}"));
        let entries = archive.entries().map_err(unreadable)?;
        for (n, entry) in entries.enumerate() {
            let mut entry = entry.map_err(unreadable)?;
            let key = normalise(&String::from_utf8_lossy(&entry.path_bytes()));
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                let target = if kind.is_symlink() {
                    join_link(&key, &target)
                } else {
                    normalise(&target)
                };
                un.links.insert(key, target);
                continue;
            }
            if !(kind.is_file() || kind == tar::EntryType::Continuous) || key.is_empty() {
                continue;
            }
            let announced = entry.size();
            let path = un.dir.join(n.to_string());
            let mut file = File::create(&path).map_err(|e| ImageError::io(&path, e))?;
            let mut hashing = HashingReader::new(&mut entry);
            io::copy(&mut hashing, &mut file).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof
                    || e.kind() == io::ErrorKind::InvalidData
                {
                    corrupt(format!("{key}: {e} (the archive is truncated or damaged)"))
                } else {
                    ImageError::io(format!("reading {key} from the archive"), e)
                }
            })?;
            let (digest, size) = hashing.digest();
            if size != announced {
                return Err(corrupt(format!(
                    "{key}: the archive ends after {size} of its {announced} bytes (it is truncated)"
                )));
            }
            if let Some(hex) = key.strip_prefix("blobs/sha256/") {
                if let Ok(named) = format!("sha256:{hex}").parse::<Digest>() {
                    if named != digest {
                        return Err(ImageError::DigestMismatch {
                            what: format!("{key} in the archive (the archive is corrupt)"),
                            expected: named.to_string(),
                            actual: digest.to_string(),
                        });
                    }
                }
            }
            un.links.remove(&key);
            un.files.insert(key, Staged { path, digest, size });
        }
        Ok(un)
    }

    fn get(&self, key: &str) -> Option<&Staged> {
        let mut key = normalise(key);
        for _ in 0..16 {
            if let Some(s) = self.files.get(&key) {
                return Some(s);
            }
            key = self.links.get(&key)?.clone();
        }
        None
    }

    fn file(&self, key: &str) -> Result<&Staged> {
        self.get(key).ok_or_else(|| ImageError::NotFound {
            what: format!("{key} in the image archive"),
            hint: " (the archive is incomplete)".into(),
        })
    }

    /// The blob `digest` (`blobs/sha256/<hex>`), checked against it and `size`.
    fn blob(&self, digest: &str, size: Option<u64>) -> Result<(Digest, &Staged)> {
        let d: Digest = digest.parse()?;
        let s = self.file(&blob_entry(&d))?;
        if s.digest != d {
            return Err(ImageError::DigestMismatch {
                what: format!("{} in the archive (the archive is corrupt)", blob_entry(&d)),
                expected: d.to_string(),
                actual: s.digest.to_string(),
            });
        }
        if let Some(size) = size.filter(|&n| n != s.size) {
            return Err(ImageError::SizeMismatch {
                what: format!("{} in the archive", blob_entry(&d)),
                expected: size,
                actual: s.size,
            });
        }
        Ok((d, s))
    }

    fn read_small(&self, s: &Staged, what: &str) -> Result<Vec<u8>> {
        if s.size > MAX_JSON {
            return Err(corrupt(format!("{what} is {} bytes: too big", s.size)));
        }
        std::fs::read(&s.path).map_err(|e| ImageError::io(&s.path, e))
    }

    fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T> {
        let s = self.file(key)?;
        parse_json(
            &format!("{key} of the image archive"),
            &self.read_small(s, key)?,
        )
    }
}

/// One layer of an image to load.
struct LayerPlan {
    blob: Digest,
    media_type: String,
    diff_id: Digest,
    chain: Digest,
    size: u64,
}

/// One image to load, every part of it already verified.
struct ImagePlan {
    names: Vec<Reference>,
    /// Indexes above the manifest (as pull records them), then the manifest.
    manifests: Vec<Digest>,
    config: Digest,
    layers: Vec<LayerPlan>,
}

/// What [`load`] stored: the image's name (`None`: kept as
/// [`dangling_name`]) and its record.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: Option<Reference>,
    pub record: ImageRecord,
}

#[derive(Default)]
struct Plan {
    images: Vec<ImagePlan>,
    /// Every blob to store: where it is staged, or its bytes when we made it.
    sources: HashMap<Digest, PathBuf>,
    made: HashMap<Digest, Vec<u8>>,
}

fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    media_type.contains("index") || media_type.contains("manifest.list") || {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .map(|v| v.get("manifests").is_some() && v.get("config").is_none())
            .unwrap_or(false)
    }
}

fn host_matches(p: &PlatformDoc) -> bool {
    let host = crate::pull::Platform::host();
    p.os == host.os
        && p.architecture == host.architecture
        && match (&host.variant, &p.variant) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        }
}

/// Image names from a descriptor's annotations: the full name, else a
/// `ref.name` that is a whole reference (a bare tag names no repository).
fn annotated_name(desc: &Desc) -> Option<Reference> {
    let a = desc.annotations.as_ref()?;
    if let Some(r) = a
        .get(ANNOTATION_IMAGE_NAME)
        .and_then(|n| Reference::parse(n).ok())
    {
        return Some(r);
    }
    let n = a.get(ANNOTATION_REF_NAME)?;
    if n.contains('/') || n.contains(':') || n.contains('@') {
        Reference::parse(n).ok()
    } else {
        None
    }
}

/// Magic bytes of a staged layer: its media type when the archive gives none
/// we can trust (docker-save lists paths only).
fn sniff_layer(s: &Staged) -> Result<&'static str> {
    let mut head = [0u8; 4];
    let mut f = File::open(&s.path).map_err(|e| ImageError::io(&s.path, e))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::io(&s.path, e)),
        }
    }
    Ok(if head[..n].starts_with(&[0x1f, 0x8b]) {
        GZIP_LAYER
    } else if head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        OCI_LAYER_ZSTD
    } else {
        OCI_LAYER_TAR
    })
}

impl Plan {
    /// Config and layers of one image; `manifests` are already in `sources`.
    fn add_image(
        &mut self,
        un: &Unpacked,
        names: Vec<Reference>,
        manifests: Vec<Digest>,
        config: (&Digest, &Staged),
        layers: Vec<(Digest, &Staged, Option<String>)>,
    ) -> Result<()> {
        let (config_digest, config_file) = config;
        let what = format!("image config {config_digest}");
        let doc: ConfigDoc = parse_json(&what, &un.read_small(config_file, &what)?)?;
        let diff_ids: Vec<Digest> = doc
            .rootfs
            .diff_ids
            .iter()
            .map(|d| d.parse())
            .collect::<Result<_>>()?;
        if diff_ids.len() != layers.len() {
            return Err(ImageError::Invalid {
                what: format!("image {config_digest} in the archive"),
                reason: format!(
                    "{} layers but the config lists {} diff_ids",
                    layers.len(),
                    diff_ids.len()
                ),
            });
        }
        self.sources
            .insert(config_digest.clone(), config_file.path.clone());
        let chains = Store::chain_ids(&diff_ids);
        let mut planned = Vec::new();
        for (((blob, file, media_type), diff_id), chain) in
            layers.into_iter().zip(diff_ids).zip(chains)
        {
            let sniffed = sniff_layer(file)?;
            let media_type = media_type.unwrap_or_else(|| sniffed.to_string());
            if !media_type.is_empty() && !LAYER_MEDIA_TYPES.contains(&media_type.as_str()) {
                return Err(ImageError::Unsupported {
                    what: format!("layer media type (layer {blob})"),
                    value: media_type,
                });
            }
            // An uncompressed layer is its own diff: check it now, before
            // anything is stored (compressed ones are checked as they unpack).
            if sniffed == OCI_LAYER_TAR && file.digest != diff_id {
                return Err(ImageError::DigestMismatch {
                    what: format!(
                        "layer {blob} in the archive (uncompressed; the archive is corrupt)"
                    ),
                    expected: diff_id.to_string(),
                    actual: file.digest.to_string(),
                });
            }
            self.sources.insert(blob.clone(), file.path.clone());
            planned.push(LayerPlan {
                blob,
                media_type,
                diff_id,
                chain,
                size: file.size,
            });
        }
        self.images.push(ImagePlan {
            names,
            manifests,
            config: config_digest.clone(),
            layers: planned,
        });
        Ok(())
    }

    /// `desc` → (nested indexes →) one manifest: its digest chain and document.
    fn resolve_manifest(
        &mut self,
        un: &Unpacked,
        desc: &Desc,
        chain: &mut Vec<Digest>,
    ) -> Result<ManifestDoc> {
        let (d, s) = un.blob(&desc.digest, desc.size)?;
        let what = format!("manifest {d}");
        let bytes = un.read_small(s, &what)?;
        self.sources.insert(d.clone(), s.path.clone());
        chain.push(d.clone());
        if !is_index(&desc.media_type, &bytes) {
            return parse_json(&what, &bytes);
        }
        if chain.len() > MAX_INDEX_DEPTH {
            return Err(corrupt(format!(
                "image indexes nested deeper than {MAX_INDEX_DEPTH}"
            )));
        }
        let index: IndexDoc = parse_json(&format!("image index {d}"), &bytes)?;
        let host = crate::pull::Platform::host();
        let chosen = index
            .manifests
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(host_matches))
            .ok_or_else(|| {
                let have: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref())
                    .map(|p| format!("{}/{}", p.os, p.architecture))
                    .collect();
                ImageError::NotFound {
                    what: format!("image for platform {host} in index {d} of the archive"),
                    hint: format!(" (it has: {})", have.join(", ")),
                }
            })?;
        self.resolve_manifest(un, chosen, chain)
    }

    fn oci(&mut self, un: &Unpacked) -> Result<()> {
        let index: IndexDoc = un.json("index.json")?;
        // Names Docker's manifest.json gives, by config, for descriptors
        // without a name annotation.
        let mut docker_names: HashMap<Digest, Vec<Reference>> = HashMap::new();
        if let Ok(entries) = un.json::<Vec<DockerEntry>>("manifest.json") {
            for e in entries {
                if let Some(s) = un.get(&e.config) {
                    docker_names
                        .entry(s.digest.clone())
                        .or_default()
                        .extend(repo_tags(&e));
                }
            }
        }
        if index.manifests.is_empty() {
            return Err(corrupt("index.json lists no images"));
        }
        for desc in &index.manifests {
            let mut chain = Vec::new();
            let m = self.resolve_manifest(un, desc, &mut chain)?;
            let (config, config_file) = un.blob(&m.config.digest, m.config.size)?;
            let names = match annotated_name(desc) {
                Some(r) => vec![r],
                None => docker_names.get(&config).cloned().unwrap_or_default(),
            };
            let mut layers = Vec::new();
            for l in &m.layers {
                let (d, s) = un.blob(&l.digest, l.size)?;
                layers.push((d, s, Some(l.media_type.clone())));
            }
            self.add_image(un, names, chain, (&config, config_file), layers)?;
        }
        Ok(())
    }

    fn docker(&mut self, un: &Unpacked) -> Result<()> {
        let entries: Vec<DockerEntry> = un.json("manifest.json")?;
        if entries.is_empty() {
            return Err(corrupt("manifest.json lists no images"));
        }
        for e in &entries {
            let config_file = un.file(&e.config)?;
            let config = config_file.digest.clone();
            // Legacy archives name the config `<config hex>.json`.
            let stem = normalise(&e.config);
            if let Some(hex) = stem.strip_suffix(".json") {
                if let Ok(named) = format!("sha256:{hex}").parse::<Digest>() {
                    if named != config {
                        return Err(ImageError::DigestMismatch {
                            what: format!("{stem} in the archive (the archive is corrupt)"),
                            expected: named.to_string(),
                            actual: config.to_string(),
                        });
                    }
                }
            }
            let mut layers = Vec::new();
            let mut descs = Vec::new();
            for path in &e.layers {
                let s = un.file(path)?;
                let media_type = sniff_layer(s)?;
                descs.push(serde_json::json!({
                    "mediaType": media_type,
                    "digest": s.digest.to_string(),
                    "size": s.size,
                }));
                layers.push((s.digest.clone(), s, None));
            }
            // docker-save has no manifest: make the OCI one a registry would
            // hold for these blobs.
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config.to_string(), "size": config_file.size},
                "layers": descs,
            });
            let bytes = to_json("manifest", &manifest)?;
            let digest = Digest::of(&bytes);
            self.made.insert(digest.clone(), bytes);
            self.add_image(
                un,
                repo_tags(e),
                vec![digest],
                (&config, config_file),
                layers,
            )?;
        }
        Ok(())
    }
}

fn repo_tags(e: &DockerEntry) -> Vec<Reference> {
    e.repo_tags
        .iter()
        .flatten()
        .filter_map(|t| Reference::parse(t).ok())
        .collect()
}

/// Undoes gzip or zstd compression of `input` if its magic says so.
fn decompress<R: Read + 'static>(input: R) -> Result<Box<dyn Read>> {
    let mut r = BufReader::with_capacity(1 << 16, input);
    let head = r
        .fill_buf()
        .map_err(|e| ImageError::io("reading the image archive", e))?;
    if head.is_empty() {
        return Err(corrupt("the input is empty"));
    }
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(r)
                .map_err(|e| ImageError::io("zstd decoder", e))?,
        )
    } else {
        Box::new(r)
    })
}

/// Loads the images of a `docker save` archive or an OCI image layout tar
/// (either gzip- or zstd-compressed too) from `input` into `store`.
///
/// The archive is first copied to the store's scratch space and every part
/// checked: each blob against its digest (and size), manifests against
/// their configs, uncompressed layers against the config's diff_ids. Only
/// then are layers unpacked (compressed ones verified against their
/// diff_id as they unpack), blobs stored and records written, so a corrupt
/// archive leaves the image records untouched and, unless a compressed
/// layer's content disagrees with its config, nothing new in the store.
///
/// Names come from `io.containerd.image.name`, else a `ref.name` that is a
/// whole reference, else the archive's docker-save `RepoTags`. An image
/// without a name is kept as [`dangling_name`] (Docker keeps it as a
/// dangling image); an image index picks the host's platform, as pull does.
pub fn load<R: Read + 'static>(store: &Store, input: R) -> Result<Vec<Loaded>> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = store
        .tmp_dir()
        .join(format!("load-{}-{nanos}", std::process::id()));
    let un = Unpacked::read(decompress(input)?, dir)?;
    let mut plan = Plan::default();
    if un.get("index.json").is_some() {
        plan.oci(&un)?;
    } else if un.get("manifest.json").is_some() {
        plan.docker(&un)?;
    } else {
        return Err(corrupt(
            "no index.json or manifest.json: not a `docker save` or OCI image archive \
             (a root filesystem tarball is added with `cubby import`)",
        ));
    }

    let _pin = store.pin()?;
    for img in &plan.images {
        for l in &img.layers {
            if store.has_layer(&l.chain) {
                continue;
            }
            let src = &plan.sources[&l.blob];
            let f = File::open(src).map_err(|e| ImageError::io(src, e))?;
            store.unpack_layer(&l.chain, &l.diff_id, f, &l.media_type)?;
        }
    }
    let mut stored: HashSet<&Digest> = HashSet::new();
    for img in &plan.images {
        let digests = img
            .manifests
            .iter()
            .chain(std::iter::once(&img.config))
            .chain(img.layers.iter().map(|l| &l.blob));
        for d in digests {
            if !stored.insert(d) || store.has_blob(d) {
                continue;
            }
            if let Some(bytes) = plan.made.get(d) {
                store.put_blob(bytes)?;
            } else {
                let src = &plan.sources[d];
                let f = File::open(src).map_err(|e| ImageError::io(src, e))?;
                let size = f.metadata().map(|m| m.len()).ok();
                store.ingest(d, size, f)?;
            }
        }
    }
    let created = cubby_runtime::state::rfc3339_now();
    let mut loaded = Vec::new();
    for img in plan.images {
        let manifest_digest = img
            .manifests
            .last()
            .cloned()
            .ok_or_else(|| corrupt("no manifest"))?;
        let mut blobs = img.manifests.clone();
        blobs.push(img.config.clone());
        blobs.extend(img.layers.iter().map(|l| l.blob.clone()));
        let record = ImageRecord {
            name: dangling_name(&img.config),
            manifest_digest,
            config_digest: img.config.clone(),
            layers: img.layers.iter().map(|l| l.chain.clone()).collect(),
            blobs,
            size: img.layers.iter().map(|l| l.size).sum(),
            created: created.clone(),
        };
        if img.names.is_empty() {
            store.put_image(record.clone())?;
            loaded.push(Loaded { name: None, record });
            continue;
        }
        for r in img.names {
            let mut rec = record.clone();
            rec.name = r.to_string();
            store.put_image(rec.clone())?;
            loaded.push(Loaded {
                name: Some(r),
                record: rec,
            });
        }
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths() {
        assert_eq!(normalise("./blobs//sha256/ab/"), "blobs/sha256/ab");
        assert_eq!(join_link("abc/layer.tar", "../def.tar"), "def.tar");
        assert_eq!(join_link("abc/layer.tar", "/x/../y.tar"), "y.tar");
        assert_eq!(join_link("a/b/c", "../../../../etc"), "etc");
        assert!(is_dangling(&dangling_name(&Digest::of(b"x"))));
    }
}
