//! Images in the store, as the engine's calls: find one by reference or id
//! prefix, tag, remove (with Docker's conflict rules against the
//! containers made from it) and prune. Typed [`EngineError`]s; the API
//! (`api/images.rs`) only shapes Docker's documents.

use super::error::{EngineError, EngineResult};
use super::Engine;
use cubby_image::archive::{dangling_name, import, is_dangling, Loaded, SaveItem};
use cubby_image::digest::Digest;
use cubby_image::reference::Reference;
use cubby_image::store::ImageRecord;
use std::collections::BTreeMap;

/// All records (names) of one image (one config digest), sorted by name.
#[derive(Debug, Clone)]
pub struct ImageGroup {
    pub id: Digest,
    pub records: Vec<ImageRecord>,
}

impl ImageGroup {
    /// Its tags, as Docker shows them (`busybox:latest`).
    pub fn tags(&self) -> Vec<String> {
        self.records
            .iter()
            .filter(|r| !is_dangling(&r.name))
            .filter_map(|r| Reference::parse(&r.name).ok())
            .filter(|r| r.digest.is_none())
            .map(|r| r.familiar())
            .collect()
    }

    /// Its `name@digest` references.
    pub fn digests(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .records
            .iter()
            .filter(|r| !is_dangling(&r.name))
            .filter_map(|rec| {
                let r = Reference::parse(&rec.name).ok()?;
                let digest = r.digest.clone().unwrap_or(rec.manifest_digest.to_string());
                Some(format!("{}@{digest}", r.familiar_name()))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    pub fn size(&self) -> u64 {
        self.records.iter().map(|r| r.size).max().unwrap_or(0)
    }
}

/// Records grouped by image.
pub fn group(records: Vec<ImageRecord>) -> Vec<ImageGroup> {
    let mut by_id: BTreeMap<Digest, Vec<ImageRecord>> = BTreeMap::new();
    for r in records {
        by_id.entry(r.config_digest.clone()).or_default().push(r);
    }
    by_id
        .into_iter()
        .map(|(id, records)| ImageGroup { id, records })
        .collect()
}

/// What a remove or prune did to one name or image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRemoved {
    /// A name was removed (familiar form).
    Untagged(String),
    /// The image itself is gone (its id).
    Deleted(String),
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

fn familiar(name: &str) -> String {
    Reference::parse(name).map_or(name.to_string(), |r| r.familiar())
}

/// Docker's wording, which clients match on.
pub fn no_such_image(name: &str) -> EngineError {
    EngineError::not_found(format!("No such image: {name}"))
}

impl Engine {
    fn containers_dir(&self) -> std::path::PathBuf {
        self.root.join("containers")
    }

    /// Every image record (name) in the store (blocking).
    pub fn image_records(&self) -> EngineResult<Vec<ImageRecord>> {
        Ok(self.images.images()?)
    }

    /// Every image in the store (blocking).
    pub fn image_groups(&self) -> EngineResult<Vec<ImageGroup>> {
        Ok(group(self.image_records()?))
    }

    /// Image `id`'s config document (OCI image config JSON) (blocking).
    pub fn image_config(&self, id: &Digest) -> EngineResult<serde_json::Value> {
        let bytes = self.images.read_blob(id)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::internal(format!("image config {id} is not valid JSON: {e}")))
    }

    /// The unpacked size of layer `chain` (0 if it is not in the store).
    pub fn layer_size(&self, chain: &Digest) -> u64 {
        self.images.layer_size(chain).unwrap_or(0)
    }

    /// What `docker save NAME...` writes: every name resolved first (a
    /// missing one is NotFound before the first byte), a name that is a
    /// reference kept as the archive's tag (blocking).
    pub fn image_save_items(&self, names: &[String]) -> EngineResult<Vec<SaveItem>> {
        let mut items = Vec::new();
        for name in names {
            let rec = crate::snapshots::find_image(&self.images, name)?
                .ok_or_else(|| no_such_image(name))?;
            let named = Reference::parse(name)
                .ok()
                .filter(|r| r.to_string() == rec.name);
            items.push(SaveItem {
                name: named,
                record: rec,
            });
        }
        Ok(items)
    }

    /// Loads a `docker save` archive from `reader` (blocking).
    pub fn image_load(&self, reader: impl std::io::Read + 'static) -> EngineResult<Vec<Loaded>> {
        Ok(cubby_image::archive::load(&self.images, reader)?)
    }

    /// Imports a root filesystem tar from `reader` (plain, gzip or zstd) as
    /// image `name` (None: dangling, id only, as Docker keeps it), with
    /// Dockerfile-style `changes` applied to its config (blocking).
    pub fn image_import(
        &self,
        mut reader: impl std::io::Read,
        name: Option<&str>,
        changes: &[String],
    ) -> EngineResult<ImageRecord> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_nanos())
            .unwrap_or(0);
        let tmp = self
            .images
            .tmp_dir()
            .join(format!("import-{}-{nanos}.tar", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)
                .map_err(|e| EngineError::internal(format!("{}: {e}", tmp.display())))?;
            std::io::copy(&mut reader, &mut f)
                .map_err(|e| EngineError::invalid(format!("import: reading the tar: {e}")))?;
            let Some(name) = name else {
                // Imported under a private name, then recorded as dangling.
                let tmp_name = format!("cubby-import.invalid/tmp-{nanos}:latest");
                let mut rec = import(&self.images, &tmp, &tmp_name, changes)?;
                rec.name = dangling_name(&rec.config_digest);
                self.images.put_image(rec.clone())?;
                self.images.remove_image(&tmp_name)?;
                return Ok(rec);
            };
            Ok(import(&self.images, &tmp, name, changes)?)
        })();
        let _ = std::fs::remove_file(&tmp);
        result
    }

    /// The image `name` names ([`crate::snapshots::resolve_image`], the one
    /// lookup), and the record the reference named, if it did; NotFound
    /// (Docker's wording) if none, InvalidArgument if ambiguous (blocking).
    pub fn image_resolve(&self, name: &str) -> EngineResult<(ImageGroup, Option<ImageRecord>)> {
        let found = crate::snapshots::resolve_image(&self.images, name)?
            .ok_or_else(|| no_such_image(name))?;
        let group = ImageGroup {
            id: found.id,
            records: found.records,
        };
        Ok((group, found.by_ref))
    }

    /// Gives image `name` the name `target` (`repo[:tag]`) (blocking).
    pub fn image_tag(&self, name: &str, target: &str) -> EngineResult<()> {
        let t = Reference::parse(target)?;
        if t.digest.is_some() {
            return Err(EngineError::invalid(format!(
                "refusing to create a tag with a digest reference: {target}"
            )));
        }
        let (img, by_ref) = self.image_resolve(name)?;
        let Some(mut rec) = by_ref.or_else(|| img.records.first().cloned()) else {
            return Err(no_such_image(name));
        };
        rec.name = t.to_string();
        self.images.put_image(rec)?;
        Ok(())
    }

    /// Removes image `name` with Docker's rules: a name of several goes
    /// alone; the image goes when its last name does and no container uses
    /// it (`force` overrides stopped users, never running ones); with
    /// `prune` its unused layers are freed.
    pub async fn image_remove(
        self: &super::Shared,
        name: &str,
        force: bool,
        prune: bool,
    ) -> EngineResult<Vec<ImageRemoved>> {
        let running: Vec<String> = self
            .list()
            .await?
            .into_iter()
            .filter(|r| r.status == crate::records::Status::Running)
            .map(|r| r.id)
            .collect();
        let d = self.clone();
        let name = name.to_string();
        super::blocking(move || d.image_remove_blocking(&name, force, prune, &running)).await
    }

    fn image_remove_blocking(
        &self,
        name: &str,
        force: bool,
        prune: bool,
        running: &[String],
    ) -> EngineResult<Vec<ImageRemoved>> {
        let (img, by_ref) = self.image_resolve(name)?;
        let users = crate::snapshots::users_of(&self.containers_dir(), &img.id);
        let id = short(img.id.hex());
        let untag: Vec<ImageRecord> = match by_ref {
            // One name of several: only that name goes.
            Some(rec) if img.records.len() > 1 => vec![rec],
            Some(_) => {
                if let (Some(c), false) = (users.first(), force) {
                    return Err(EngineError::conflict(format!(
                        "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {id}",
                        short(c),
                    )));
                }
                img.records.clone()
            }
            None => {
                if img.records.len() > 1 && !force {
                    return Err(EngineError::conflict(format!(
                        "conflict: unable to delete {id} (must be forced) - image is referenced in multiple repositories"
                    )));
                }
                if let Some(c) = users.iter().find(|c| running.contains(c)) {
                    return Err(EngineError::conflict(format!(
                        "conflict: unable to delete {id} (cannot be forced) - image is being used by running container {}",
                        short(c)
                    )));
                }
                if let (Some(c), false) = (users.first(), force) {
                    return Err(EngineError::conflict(format!(
                        "conflict: unable to delete {id} (must be forced) - image is being used by stopped container {}",
                        short(c)
                    )));
                }
                img.records.clone()
            }
        };
        let mut out = Vec::new();
        for rec in &untag {
            self.images.remove_image(&rec.name)?;
            if !is_dangling(&rec.name) {
                out.push(ImageRemoved::Untagged(familiar(&rec.name)));
            }
        }
        let gone = untag.len() == img.records.len();
        if gone && users.is_empty() {
            out.push(ImageRemoved::Deleted(img.id.to_string()));
            if prune {
                self.images
                    .gc(&crate::snapshots::layers_in_use(&self.containers_dir()))
                    .map_err(|e| {
                        EngineError::internal(format!(
                            "{name} was removed but freeing its layers failed: {e}; run `cubby image prune`"
                        ))
                    })?;
            }
        }
        Ok(out)
    }

    /// Removes dangling images (`all`: every image) no container uses,
    /// then unreferenced blobs and layers; returns what went and the bytes
    /// freed (blocking).
    pub fn image_prune(&self, all: bool) -> EngineResult<(Vec<ImageRemoved>, u64)> {
        let mut removed = Vec::new();
        for img in self.image_groups()? {
            let dangling = img.tags().is_empty() && img.digests().is_empty();
            if (!all && !dangling)
                || !crate::snapshots::users_of(&self.containers_dir(), &img.id).is_empty()
            {
                continue;
            }
            for rec in &img.records {
                self.images.remove_image(&rec.name)?;
                if !is_dangling(&rec.name) {
                    removed.push(ImageRemoved::Untagged(familiar(&rec.name)));
                }
            }
            removed.push(ImageRemoved::Deleted(img.id.to_string()));
        }
        let report = self
            .images
            .gc(&crate::snapshots::layers_in_use(&self.containers_dir()))?;
        Ok((removed, report.bytes_freed))
    }
}
