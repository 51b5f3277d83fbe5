//! `cubby serve --demo` / `cubby admin init --demo`: an admin, a teacher,
//! three students and a class whose template uses a locally built image, so
//! a first run needs no internet. Passwords are random and printed once.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::store::users::Role;
use crate::store::Store;
use crate::template::TemplateSpec;

pub const DEMO_CLASS_CODE: &str = "demo101";

pub struct DemoAccounts {
    /// (username, role, password)
    pub users: Vec<(String, Role, String)>,
    pub class_id: String,
    pub join_code: String,
}

fn password() -> String {
    crate::store::hex(&crate::auth::random_bytes::<8>())
}

/// Creates the demo data; refuses if a demo class exists already (its
/// passwords were printed then: `cubby admin user passwd` resets one).
pub async fn init(
    store: &Store,
    backend: Option<&dyn Backend>,
    image: &str,
) -> Result<DemoAccounts> {
    if store
        .classes(None)
        .await?
        .iter()
        .any(|c| c.code == DEMO_CLASS_CODE)
    {
        return Err(Error::Conflict(format!(
            "the demo is set up already (class {DEMO_CLASS_CODE}); reset a password with `cubby admin user passwd NAME`"
        )));
    }
    let spec = TemplateSpec {
        port: Some(8080),
        memory_bytes: 64 * 1024 * 1024,
        cpus: 0.5,
        pids: 64,
        ..serde_json::from_value(serde_json::json!({"image": image}))
            .map_err(|e| Error::Internal(e.to_string()))?
    };
    match backend {
        Some(b) => spec.validate_with(b).await?,
        None => spec.validate()?,
    }
    let mut users = vec![
        ("admin".to_string(), Role::Admin, password()),
        ("teacher".to_string(), Role::Teacher, password()),
    ];
    for i in 1..=3 {
        users.push((format!("student{i}"), Role::Student, password()));
    }
    let hashed = users
        .iter()
        .map(|(n, r, p)| Ok((n.clone(), *r, crate::auth::hash_password(p)?)))
        .collect::<Result<Vec<_>>>()?;
    let created = store.create_users(&hashed).await?;
    let teacher = &created[1];
    let t = store.create_template("demo", &teacher.id, &spec).await?;
    let class = store
        .create_class("Demo class", DEMO_CLASS_CODE, 30, Some(&t.id), &teacher.id)
        .await?;
    for s in &created[2..] {
        store.enrol(&class.id, &s.id).await?;
    }
    store
        .audit(None, "demo.init", Some(&class.id), None)
        .await?;
    Ok(DemoAccounts {
        users,
        class_id: class.id,
        join_code: class.join_code,
    })
}
