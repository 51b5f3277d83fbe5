//! `docker container prune`: every stopped container the filters keep.

use super::{EngineResult, Shared};
use crate::records::ContainerRecord;

impl super::Engine {
    /// Removes the containers that are not running and that `keep`
    /// accepts; returns the ids removed and the bytes their writable
    /// layers held. A container that started meanwhile is skipped.
    pub async fn prune_containers(
        self: &Shared,
        keep: impl Fn(&ContainerRecord) -> bool,
    ) -> EngineResult<(Vec<String>, u64)> {
        let mut removed = Vec::new();
        let mut reclaimed = 0;
        for r in self.list().await? {
            if r.status.is_live() || !keep(&r) {
                continue;
            }
            let snapshot =
                cubby_image::snapshot::Snapshot::at(self.root.join("containers").join(&r.id));
            let size =
                super::blocking(move || Ok::<_, super::EngineError>(snapshot.disk_usage())).await?;
            match self.remove(&r.id, false, false).await {
                Ok(()) => {
                    removed.push(r.id);
                    reclaimed += size;
                }
                Err(super::EngineError::Conflict(_) | super::EngineError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((removed, reclaimed))
    }
}
