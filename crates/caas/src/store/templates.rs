//! Templates, stored as validated JSON (one schema: `TemplateSpec`).

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{new_id, now, Store};
use crate::error::{Error, Result};
use crate::template::TemplateSpec;

#[derive(Debug, Clone, Serialize)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub spec: TemplateSpec,
    pub created_at: i64,
}

fn from_row(r: &AnyRow) -> Result<Template> {
    let spec: String = r.try_get("spec")?;
    Ok(Template {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        owner_id: r.try_get("owner_id")?,
        spec: serde_json::from_str(&spec)
            .map_err(|e| Error::Internal(format!("stored template spec: {e}")))?,
        created_at: r.try_get("created_at")?,
    })
}

impl Store {
    /// Saves an already validated template.
    pub async fn create_template(
        &self,
        name: &str,
        owner_id: &str,
        spec: &TemplateSpec,
    ) -> Result<Template> {
        if name.trim().is_empty() || name.len() > 100 {
            return Err(Error::Invalid(
                "template name: give 1-100 characters".into(),
            ));
        }
        let id = new_id();
        let created_at = now();
        let json = serde_json::to_string(spec).map_err(|e| Error::Internal(e.to_string()))?;
        sqlx::query("INSERT INTO templates (id, name, owner_id, spec, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&id)
            .bind(name)
            .bind(owner_id)
            .bind(json)
            .bind(created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| {
                if crate::error::is_unique_violation(&e) {
                    Error::Conflict(format!("a template named {name} already exists"))
                } else {
                    e.into()
                }
            })?;
        Ok(Template {
            id,
            name: name.to_string(),
            owner_id: owner_id.to_string(),
            spec: spec.clone(),
            created_at,
        })
    }

    pub async fn template(&self, id: &str) -> Result<Template> {
        let r = sqlx::query("SELECT * FROM templates WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("template {id}")))?;
        from_row(&r)
    }

    /// Replaces a template's spec (already validated). Sessions read their
    /// template when they start and end, so the workspace path may not
    /// change while any session of the template is active (its end would
    /// archive the wrong directory).
    pub async fn update_template(&self, id: &str, spec: &TemplateSpec) -> Result<Template> {
        let old = self.template(id).await?;
        if old.spec.workspace_path != spec.workspace_path {
            let r = sqlx::query(
                "SELECT COUNT(*) AS n FROM sessions WHERE template_id = $1 AND state IN \
                 ('requested', 'starting', 'ready', 'stopping', 'archive_pending')",
            )
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
            let n: i64 = r.try_get("n")?;
            if n > 0 {
                return Err(Error::Conflict(format!(
                    "template {}: workspace_path cannot change while {n} session(s) of it are active",
                    old.name
                )));
            }
        }
        let json = serde_json::to_string(spec).map_err(|e| Error::Internal(e.to_string()))?;
        sqlx::query("UPDATE templates SET spec = $1 WHERE id = $2")
            .bind(json)
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.template(id).await
    }

    pub async fn templates(&self) -> Result<Vec<Template>> {
        sqlx::query("SELECT * FROM templates ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(from_row)
            .collect()
    }
}
