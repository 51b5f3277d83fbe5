//! The real backend for `cubby serve` (part B's docker.rs / local_engine.rs
//! and demo_image.rs). Placeholder until that branch is merged.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use cubby_caas::backend::Backend;
use cubby_caas::store::Store;

pub async fn connect(engine: &str, _root: &Path, _store: &Store) -> Result<Arc<dyn Backend>> {
    bail!("no backend for {engine} yet")
}

pub async fn demo_image(_root: &Path, _reference: &str) -> Result<()> {
    bail!("no demo image yet")
}
