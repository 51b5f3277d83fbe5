//! `pull`: registry → store. Manifest (index → platform), config, then the
//! layers in parallel; each layer streams once from the network into both
//! the blob store (compressed, verified against the manifest digest) and the
//! unpacker (uncompressed, verified against the config's diff_id).

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::progress::{Bars, Event, LayerStatus, Progress, Silent, THROTTLE};
use crate::reference::Reference;
use crate::registry::Client;
use crate::store::{ImageRecord, Store};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Instant;

/// Layers fetched at once: enough to fill a link, few enough for 2 cores.
const PARALLEL_LAYERS: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on, in OCI names.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: (architecture == "arm64").then(|| "v8".to_string()),
        }
    }

    /// `os/arch[/variant]`, e.g. `linux/arm64/v8`.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
            }),
            _ => Err(ImageError::Invalid {
                what: format!("platform {s:?}"),
                reason: "use OS/ARCH[/VARIANT], e.g. linux/amd64".into(),
            }),
        }
    }

    fn matches(&self, d: &Descriptor) -> bool {
        let Some(p) = d.platform() else { return false };
        p.os().to_string() == self.os
            && p.architecture().to_string() == self.architecture
            && match (&self.variant, p.variant()) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

pub struct PullOptions {
    pub platform: Platform,
    /// Per-layer progress bars on stderr (only drawn on a terminal).
    pub progress: bool,
}

fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    media_type.contains("index") || media_type.contains("manifest.list") || {
        // Some registries answer with a generic type: look at the document.
        serde_json::from_slice::<serde_json::Value>(bytes)
            .map(|v| v.get("manifests").is_some())
            .unwrap_or(false)
    }
}

/// Pulls `r` into `store` and records it under its canonical name, with
/// indicatif bars on stderr when `opts.progress`.
pub fn pull(
    client: &Client,
    store: &Store,
    r: &Reference,
    opts: &PullOptions,
) -> Result<ImageRecord> {
    if opts.progress {
        pull_with(client, store, r, opts, &Bars::stderr())
    } else {
        pull_with(client, store, r, opts, &Silent)
    }
}

/// [`pull`] reporting to `progress` (`opts.progress` is ignored). Errors
/// before [`Event::Resolved`] mean nothing was fetched but manifests.
pub fn pull_with(
    client: &Client,
    store: &Store,
    r: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord> {
    let name = r.to_string();
    // Keeps `image prune` from collecting what we store before it is recorded.
    let _pin = store.pin()?;
    let top = client.get_manifest(r, r.reference())?;
    let mut blobs = vec![top.digest.clone()];
    store.ingest(&top.digest, Some(top.bytes.len() as u64), &top.bytes[..])?;

    let manifest = if is_index(&top.media_type, &top.bytes) {
        let index: ImageIndex = parse_json(&name, "image index", &top.bytes)?;
        let chosen = index
            .manifests()
            .iter()
            .find(|d| opts.platform.matches(d))
            .ok_or_else(|| {
                let have: Vec<String> = index
                    .manifests()
                    .iter()
                    .filter_map(|d| d.platform().as_ref())
                    .map(|p| format!("{}/{}", p.os(), p.architecture()))
                    .collect();
                ImageError::NotFound {
                    what: format!("{name} for platform {}", opts.platform),
                    hint: format!(
                        " (the image has: {}); choose one with --platform",
                        have.join(", ")
                    ),
                }
            })?;
        let digest: Digest = chosen.digest().to_string().parse()?;
        let m = client.get_manifest(r, &digest.to_string())?;
        store.ingest(&m.digest, Some(m.bytes.len() as u64), &m.bytes[..])?;
        blobs.push(m.digest.clone());
        m
    } else {
        top
    };
    let parsed: ImageManifest = parse_json(&name, "manifest", &manifest.bytes)?;
    progress.event(Event::Resolved {
        digest: &blobs[0],
        layers: parsed.layers().len(),
    });

    let config_digest: Digest = parsed.config().digest().to_string().parse()?;
    if !store.has_blob(&config_digest) {
        let (reader, size) = client.get_blob(r, &config_digest)?;
        store.ingest(
            &config_digest,
            size.or(Some(parsed.config().size())),
            reader,
        )?;
    }
    blobs.push(config_digest.clone());
    let config_bytes = store.read_blob(&config_digest)?;
    let config: ImageConfiguration = parse_json(&name, "image config", &config_bytes)?;

    let diff_ids: Vec<Digest> = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| d.parse())
        .collect::<Result<_>>()?;
    if diff_ids.len() != parsed.layers().len() {
        return Err(ImageError::Invalid {
            what: name.to_string(),
            reason: format!(
                "the manifest lists {} layers but the config {} diff_ids",
                parsed.layers().len(),
                diff_ids.len()
            ),
        });
    }
    let mut chains = Vec::with_capacity(diff_ids.len());
    for d in &diff_ids {
        let chain = Store::chain_id(chains.last(), d);
        chains.push(chain);
    }

    let mut work = VecDeque::new();
    let mut size = 0;
    for (i, layer) in parsed.layers().iter().enumerate() {
        let blob: Digest = layer.digest().to_string().parse()?;
        size += layer.size();
        blobs.push(blob.clone());
        if store.has_layer(&chains[i]) && store.has_blob(&blob) {
            progress.event(Event::Layer {
                digest: &blob,
                status: LayerStatus::AlreadyExists,
            });
            continue;
        }
        progress.event(Event::Layer {
            digest: &blob,
            status: LayerStatus::PullingFsLayer {
                total: layer.size(),
            },
        });
        work.push_back(LayerJob {
            blob,
            size: layer.size(),
            media_type: layer.media_type().to_string(),
            diff_id: diff_ids[i].clone(),
            chain: chains[i].clone(),
        });
    }
    let queue = Mutex::new(work);
    let first_error = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_LAYERS {
            s.spawn(|| loop {
                let job = match queue.lock() {
                    Ok(mut q) => q.pop_front(),
                    Err(_) => None,
                };
                let Some(job) = job else { break };
                if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                    break;
                }
                let result = fetch_layer(client, store, r, &job, progress);
                let layer = |status| Event::Layer {
                    digest: &job.blob,
                    status,
                };
                match &result {
                    Ok(()) => {
                        // One pass: the blob was verified and unpacked as it
                        // streamed; report Docker's steps in Docker's order.
                        let total = job.size;
                        for status in [
                            LayerStatus::VerifyingChecksum,
                            LayerStatus::DownloadComplete,
                            LayerStatus::Extracting {
                                current: total,
                                total,
                            },
                            LayerStatus::PullComplete,
                        ] {
                            progress.event(layer(status));
                        }
                    }
                    Err(_) => progress.event(layer(LayerStatus::Failed)),
                }
                if let Err(e) = result {
                    if let Ok(mut slot) = first_error.lock() {
                        slot.get_or_insert(e);
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }

    let record = ImageRecord {
        name,
        manifest_digest: manifest.digest,
        config_digest,
        layers: chains,
        blobs,
        size,
        created: cubby_runtime::state::rfc3339_now(),
    };
    store.put_image(record.clone())?;
    Ok(record)
}

struct LayerJob {
    blob: Digest,
    size: u64,
    media_type: String,
    diff_id: Digest,
    chain: Digest,
}

/// Counts the bytes read and reports them as `Downloading`, at most once
/// per [`THROTTLE`] (and always when the announced size is reached).
struct Counting<'a, R> {
    inner: R,
    job: &'a LayerJob,
    progress: &'a dyn Progress,
    current: u64,
    last: Option<Instant>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Ok(0);
        }
        self.current += n as u64;
        let done = self.current >= self.job.size;
        if done || self.last.is_none_or(|t| t.elapsed() >= THROTTLE) {
            self.last = Some(Instant::now());
            self.progress.event(Event::Layer {
                digest: &self.job.blob,
                status: LayerStatus::Downloading {
                    current: self.current,
                    total: self.job.size,
                },
            });
        }
        Ok(n)
    }
}

/// One pass over the network stream: a tee feeds the blob store (in a
/// second thread, through a pipe) while this thread decompresses and unpacks.
fn fetch_layer(
    client: &Client,
    store: &Store,
    r: &Reference,
    job: &LayerJob,
    progress: &dyn Progress,
) -> Result<()> {
    let (net, size) = client.get_blob(r, &job.blob)?;
    let progress = Counting {
        inner: net,
        job,
        progress,
        current: 0,
        last: None,
    };
    if store.has_layer(&job.chain) {
        // Only the blob is missing (e.g. deleted by hand): store it.
        store.ingest(&job.blob, size.or(Some(job.size)), progress)?;
        return Ok(());
    }
    let (pipe_r, pipe_w) = std::io::pipe().map_err(|e| ImageError::io("pipe", e))?;
    std::thread::scope(|s| {
        let ingest = s.spawn(|| store.ingest(&job.blob, Some(job.size), pipe_r));
        let mut tee = Tee {
            inner: progress,
            copy: Some(pipe_w),
        };
        let unpacked = store.unpack_layer(&job.chain, &job.diff_id, &mut tee, &job.media_type);
        // The compressed stream may go on past the end of the tar: send the
        // rest to the store so its digest covers the whole blob.
        let drained = unpacked.as_ref().ok().map(|_| {
            std::io::copy(&mut tee, &mut std::io::sink())
                .map_err(|e| ImageError::io(job.blob.to_string(), e))
        });
        drop(tee);
        let stored = ingest.join().unwrap_or_else(|_| {
            Err(ImageError::io(
                "blob ingest",
                std::io::Error::other("thread panicked"),
            ))
        });
        unpacked?;
        if let Some(d) = drained {
            d?;
        }
        stored.map(|_| ())
    })
}

struct Tee<R> {
    inner: R,
    copy: Option<std::io::PipeWriter>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(w) = &mut self.copy {
            if w.write_all(&buf[..n]).is_err() {
                // The store gave up (it reports why); unpacking goes on.
                self.copy = None;
            }
        }
        Ok(n)
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(image: &str, what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Invalid {
        what: format!("{what} of {image}"),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("/amd64").is_err());
        assert_eq!(Platform::host().os, "linux");
    }
}
