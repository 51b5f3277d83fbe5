//! `import`: a plain root filesystem tarball (optionally gzip/zstd) becomes a
//! one-layer image, with the layer stored gzip-compressed like a pulled one.

use crate::digest::HashingReader;
use crate::error::{ImageError, Result};
use crate::store::{ImageRecord, Store};
use flate2::write::GzEncoder;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Opens `path` and undoes gzip or zstd compression if its magic says so.
fn decompressed(path: &Path) -> Result<Box<dyn Read>> {
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

/// Imports `tarball` as image `name` (canonical reference string).
pub fn import(store: &Store, tarball: &Path, name: &str) -> Result<ImageRecord> {
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
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
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
