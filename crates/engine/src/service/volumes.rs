//! Volumes as the engine offers them: list (filters `name`, `label`,
//! `dangling`, `driver`), create, inspect, remove (`force`), prune
//! (anonymous volumes only unless the filter `all=true`), over the local
//! store in [`crate::volumes`]. Which volumes are in use comes from the
//! monitor: container records and creates in flight.

use super::error::{EngineError, EngineResult};
use super::{blocking, Engine};
use crate::volumes::{CreateOptions, VolumeRecord};

use super::filters::labels_match;
pub use super::filters::Filters;

impl Engine {
    /// The volumes `filters` select, and one warning per volume that could
    /// not be read.
    pub async fn volume_list(
        &self,
        filters: Filters,
    ) -> EngineResult<(Vec<VolumeRecord>, Vec<String>)> {
        check_keys(&filters, &["name", "label", "dangling", "driver"])?;
        let users = self.volume_users().await?;
        let store = self.volume_store()?;
        blocking(move || {
            let (vols, warnings) = store.list()?;
            let mut out = Vec::new();
            for v in vols {
                let in_use = !users.users(&v.name).is_empty();
                if list_matches(&filters, &v, in_use)? {
                    out.push(v);
                }
            }
            Ok((out, warnings))
        })
        .await
    }

    /// Creates a volume, or returns the existing one of that name.
    pub async fn volume_create(&self, opts: CreateOptions) -> EngineResult<VolumeRecord> {
        let store = self.volume_store()?;
        blocking(move || Ok(store.create(&opts)?.0)).await
    }

    pub async fn volume_inspect(&self, name: &str) -> EngineResult<VolumeRecord> {
        let store = self.volume_store()?;
        let name = name.to_string();
        blocking(move || Ok(store.get(&name)?)).await
    }

    /// Removes a volume no container uses; `force` makes a missing one a
    /// success.
    pub async fn volume_remove(&self, name: &str, force: bool) -> EngineResult<()> {
        let users = self.volume_users().await?;
        let store = self.volume_store()?;
        let name = name.to_string();
        blocking(move || Ok(store.remove(&name, &users, force).map(drop)?)).await
    }

    /// Removes the unused volumes `filters` select (`all`, `label`,
    /// `label!`); returns their names and the bytes freed.
    pub async fn volume_prune(&self, filters: Filters) -> EngineResult<(Vec<String>, u64)> {
        check_keys(&filters, &["all", "label", "label!"])?;
        bool_filter(&filters, "all")?;
        let users = self.volume_users().await?;
        let store = self.volume_store()?;
        blocking(move || {
            let (vols, _) = store.list()?;
            let mut deleted = Vec::new();
            let mut reclaimed = 0u64;
            for v in vols {
                if !users.users(&v.name).is_empty() || !prune_matches(&filters, &v)? {
                    continue;
                }
                let size = store.size(&v.name);
                // A volume that got a user or vanished meanwhile is skipped.
                if let Ok(true) = store.remove(&v.name, &users, false) {
                    reclaimed += size;
                    deleted.push(v.name);
                }
            }
            Ok((deleted, reclaimed))
        })
        .await
    }
}

pub fn check_keys(filters: &Filters, allowed: &[&str]) -> EngineResult<()> {
    match filters.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(EngineError::invalid(format!("invalid filter '{k}'"))),
        None => Ok(()),
    }
}

fn bool_filter(filters: &Filters, key: &str) -> EngineResult<Option<bool>> {
    let Some(vals) = filters.get(key) else {
        return Ok(None);
    };
    let mut out = None;
    for v in vals {
        out = Some(match v.to_ascii_lowercase().as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(EngineError::invalid(format!("invalid filter '{key}={v}'"))),
        });
    }
    Ok(out)
}

/// Whether `v` passes the list filters (`in_use`: some container mounts it).
pub fn list_matches(filters: &Filters, v: &VolumeRecord, in_use: bool) -> EngineResult<bool> {
    if let Some(names) = filters.get("name") {
        if !names.iter().any(|n| v.name.contains(n.as_str())) {
            return Ok(false);
        }
    }
    if let Some(drivers) = filters.get("driver") {
        if !drivers.contains(&v.driver) {
            return Ok(false);
        }
    }
    if let Some(labels) = filters.get("label") {
        if !labels_match(labels, &v.labels) {
            return Ok(false);
        }
    }
    if let Some(dangling) = bool_filter(filters, "dangling")? {
        if dangling == in_use {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether unused volume `v` is pruned by `filters` (`all`, `label`, `label!`).
pub fn prune_matches(filters: &Filters, v: &VolumeRecord) -> EngineResult<bool> {
    let all = bool_filter(filters, "all")?.unwrap_or(false);
    if !all && !v.anonymous() {
        return Ok(false);
    }
    if let Some(labels) = filters.get("label") {
        if !labels_match(labels, &v.labels) {
            return Ok(false);
        }
    }
    if let Some(labels) = filters.get("label!") {
        if labels
            .iter()
            .any(|l| labels_match(std::slice::from_ref(l), &v.labels))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(name: &str, labels: &[(&str, &str)]) -> VolumeRecord {
        VolumeRecord {
            name: name.into(),
            driver: "local".into(),
            mountpoint: "/x".into(),
            created_at: String::new(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            options: Default::default(),
            scope: "local".into(),
        }
    }

    #[test]
    fn list_and_prune_filters() {
        let db = vol("db-data", &[("tier", "db")]);
        let f = |s: &str| serde_json::from_str::<Filters>(s).unwrap();
        assert!(list_matches(&f(r#"{"name":["db"]}"#), &db, false).unwrap());
        assert!(!list_matches(&f(r#"{"name":["web"]}"#), &db, false).unwrap());
        assert!(list_matches(&f(r#"{"label":["tier"]}"#), &db, false).unwrap());
        assert!(list_matches(&f(r#"{"label":["tier=db"]}"#), &db, false).unwrap());
        assert!(!list_matches(&f(r#"{"label":["tier=web"]}"#), &db, false).unwrap());
        assert!(list_matches(&f(r#"{"dangling":["true"]}"#), &db, false).unwrap());
        assert!(!list_matches(&f(r#"{"dangling":["1"]}"#), &db, true).unwrap());
        assert!(list_matches(&f(r#"{"dangling":["false"]}"#), &db, true).unwrap());
        let e = list_matches(&f(r#"{"dangling":["maybe"]}"#), &db, true).unwrap_err();
        assert_eq!(e.to_string(), "invalid filter 'dangling=maybe'");

        let anon = vol("ab12", &[(crate::volumes::ANONYMOUS_LABEL, "")]);
        assert!(prune_matches(&f("{}"), &anon).unwrap());
        assert!(!prune_matches(&f("{}"), &db).unwrap());
        assert!(prune_matches(&f(r#"{"all":["true"]}"#), &db).unwrap());
        assert!(!prune_matches(&f(r#"{"all":["1"],"label!":["tier"]}"#), &db).unwrap());
        assert!(prune_matches(&f(r#"{"all":["1"],"label":["tier=db"]}"#), &db).unwrap());
    }
}
