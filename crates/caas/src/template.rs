//! Templates: what a sandbox is. Validated on save, so a session never
//! fails on something the teacher could have been told about.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backend::{
    Backend, ClassNetwork, Limits, NetworkPolicy, SandboxSpec, LABEL_CLASS, LABEL_MANAGED,
    LABEL_SESSION, LABEL_STUDENT,
};
use crate::error::{Error, Result};

/// The engine's smallest memory limit (Docker's is 6 MB).
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;

fn default_user() -> String {
    "1000:1000".into()
}
fn default_memory() -> u64 {
    256 * 1024 * 1024
}
fn default_cpus() -> f64 {
    1.0
}
fn default_pids() -> u32 {
    256
}
fn default_workspace() -> String {
    "/workspace".into()
}
fn default_policy() -> NetworkPolicy {
    NetworkPolicy::Class
}
fn default_max() -> u64 {
    4 * 3600
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    pub image: String,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// `KEY=VALUE` entries.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    /// The app's TCP port; the session is ready when it answers.
    #[serde(default)]
    pub port: Option<u16>,
    /// The routing proxy passes `/r/{session}/x` to the app as `/x` unless
    /// this is set (apps that know their base URL, e.g. JupyterLab's
    /// `base_url`, want the whole path).
    #[serde(default)]
    pub keep_prefix: bool,
    /// `uid[:gid]` or a name the image knows. Root needs `allow_root`.
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default)]
    pub allow_root: bool,
    #[serde(default = "default_memory")]
    pub memory_bytes: u64,
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    #[serde(default = "default_pids")]
    pub pids: u32,
    #[serde(default)]
    pub workspace_size_bytes: Option<u64>,
    #[serde(default = "default_workspace")]
    pub workspace_path: String,
    #[serde(default = "default_policy")]
    pub network: NetworkPolicy,
    /// End a ready session after this long without activity (proxied
    /// requests, terminal input, the sandbox's own CPU use); see
    /// sessions/culling.rs.
    #[serde(default)]
    pub idle_timeout_secs: Option<u64>,
    /// A ready session is stopped this long after it started.
    #[serde(default = "default_max")]
    pub max_session_secs: u64,
    /// Sandboxes of this template kept started and ready before anyone
    /// asks (sessions/pool.rs): a start claims one instead of provisioning.
    #[serde(default)]
    pub warm_pool: u32,
}

/// The most warm-pool members one template may ask for.
pub const MAX_WARM_POOL: u32 = 1000;

impl TemplateSpec {
    /// Checks everything that does not need the backend.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if self.image.trim().is_empty() || self.image.contains(char::is_whitespace) {
            return bad(format!(
                "image {:?}: give an image reference such as registry/name:tag",
                self.image
            ));
        }
        if self.memory_bytes < MIN_MEMORY_BYTES {
            return bad(format!(
                "memory_bytes {}: below the engine's minimum of {MIN_MEMORY_BYTES} (6 MiB); raise it",
                self.memory_bytes
            ));
        }
        if !(self.cpus > 0.0 && self.cpus <= 1024.0) {
            return bad(format!(
                "cpus {}: use a number of CPUs above 0, e.g. 0.5 or 2",
                self.cpus
            ));
        }
        if self.pids < 8 {
            return bad(format!(
                "pids {}: use at least 8 (a shell and a few tools)",
                self.pids
            ));
        }
        if self.port == Some(0) {
            return bad("port 0: use a TCP port between 1 and 65535, or leave it out".into());
        }
        if self.user.trim().is_empty() {
            return bad("user: give uid[:gid] or a user name of the image".into());
        }
        let uid = self.user.split(':').next().unwrap_or("");
        if (uid == "0" || uid == "root") && !self.allow_root {
            return bad(format!(
                "user {:?} is root: sandboxes run as a non-root user; set allow_root to true to insist",
                self.user
            ));
        }
        if !self.workspace_path.starts_with('/') || self.workspace_path == "/" {
            return bad(format!(
                "workspace_path {:?}: use an absolute directory below /, e.g. /workspace",
                self.workspace_path
            ));
        }
        if let Some(w) = &self.working_dir {
            if !w.starts_with('/') {
                return bad(format!("working_dir {w:?}: use an absolute path"));
            }
        }
        for e in &self.env {
            if !e.contains('=') || e.starts_with('=') {
                return bad(format!("env {e:?}: use KEY=VALUE"));
            }
        }
        if self.workspace_size_bytes == Some(0) {
            return bad("workspace_size_bytes 0: leave it out for no cap".into());
        }
        if self.max_session_secs == 0 {
            return bad("max_session_secs must be above 0".into());
        }
        if self.warm_pool > MAX_WARM_POOL {
            return bad(format!(
                "warm_pool {}: at most {MAX_WARM_POOL} ready sandboxes per template",
                self.warm_pool
            ));
        }
        if let Some(t) = self.idle_timeout_secs {
            if t < 10 {
                return bad(format!(
                    "idle_timeout_secs {t}: use at least 10 (activity is checked every 5 s), or leave \
                     it out for no idle timeout"
                ));
            }
        }
        Ok(())
    }

    /// [`Self::validate`] plus the backend's view: the image must be there.
    pub async fn validate_with(&self, backend: &dyn Backend) -> Result<()> {
        self.validate()?;
        backend.check_image(&self.image).await?;
        Ok(())
    }
}

/// The names the service gives things, derived from ids (idempotent retries).
pub fn sandbox_name(session_id: &str) -> String {
    format!("caas-{session_id}")
}
pub fn network_name(class_id: &str) -> String {
    format!("caas-class-{class_id}")
}
pub fn workspace_volume(class_id: &str, student_id: &str) -> String {
    format!("caas-ws-{class_id}-{student_id}")
}

/// The network warm-pool members wait on before a claim connects them to
/// their class's (no egress, isolated like an exam network).
pub const POOL_NETWORK: &str = "caas-pool";

/// A warm-pool member's sandbox and volume names.
pub fn pool_member_name(member_id: &str) -> String {
    format!("caas-pool-{member_id}")
}
pub fn pool_volume(member_id: &str) -> String {
    format!("caas-poolws-{member_id}")
}

/// What a pool member must match to be claimed: every field that shapes the
/// sandbox (the pool size itself does not).
pub fn spec_digest(t: &TemplateSpec) -> String {
    use sha2::Digest;
    let mut t = t.clone();
    t.warm_pool = 0;
    let json = serde_json::to_vec(&t).unwrap_or_default();
    let d = sha2::Sha256::digest(&json);
    d.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// A warm-pool member of template `template_id`: the template's sandbox
/// with generic labels (no session, class or student), its own volume, on
/// the pool network.
pub fn pool_spec(
    t: &TemplateSpec,
    service_id: &str,
    template_id: &str,
    member_id: &str,
) -> SandboxSpec {
    let mut spec = sandbox_spec(
        t,
        &SandboxFor {
            service_id,
            session_id: member_id,
            class_id: "",
            student_id: "",
        },
    );
    spec.labels.remove(LABEL_SESSION);
    spec.labels.remove(LABEL_CLASS);
    spec.labels.remove(LABEL_STUDENT);
    spec.labels.insert(
        crate::backend::LABEL_POOL.to_string(),
        template_id.to_string(),
    );
    spec.labels
        .insert(crate::backend::LABEL_POOL_SPEC.to_string(), spec_digest(t));
    spec.name = pool_member_name(member_id);
    spec.workspace_volume = pool_volume(member_id);
    let mut net_labels = BTreeMap::new();
    net_labels.insert(LABEL_MANAGED.to_string(), service_id.to_string());
    spec.network = ClassNetwork {
        name: POOL_NETWORK.to_string(),
        policy: NetworkPolicy::Exam,
        labels: net_labels,
        hosts: 0,
    };
    spec
}

/// Who a sandbox is for.
pub struct SandboxFor<'a> {
    pub service_id: &'a str,
    pub session_id: &'a str,
    pub class_id: &'a str,
    pub student_id: &'a str,
}

pub fn sandbox_spec(t: &TemplateSpec, who: &SandboxFor) -> SandboxSpec {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_MANAGED.to_string(), who.service_id.to_string());
    labels.insert(LABEL_SESSION.to_string(), who.session_id.to_string());
    labels.insert(LABEL_CLASS.to_string(), who.class_id.to_string());
    labels.insert(LABEL_STUDENT.to_string(), who.student_id.to_string());
    labels.insert(
        crate::backend::LABEL_WORKSPACE.to_string(),
        t.workspace_path.clone(),
    );
    let mut net_labels = BTreeMap::new();
    net_labels.insert(LABEL_MANAGED.to_string(), who.service_id.to_string());
    net_labels.insert(LABEL_CLASS.to_string(), who.class_id.to_string());
    SandboxSpec {
        name: sandbox_name(who.session_id),
        image: t.image.clone(),
        entrypoint: t.entrypoint.clone(),
        command: t.command.clone(),
        env: t.env.clone(),
        working_dir: t.working_dir.clone(),
        user: t.user.clone(),
        limits: Limits {
            memory_bytes: t.memory_bytes,
            nano_cpus: (t.cpus * 1e9) as u64,
            pids: t.pids,
        },
        workspace_volume: workspace_volume(who.class_id, who.student_id),
        workspace_path: t.workspace_path.clone(),
        workspace_size_bytes: t.workspace_size_bytes,
        network: ClassNetwork {
            name: network_name(who.class_id),
            policy: t.network,
            labels: net_labels,
            hosts: 0,
        },
        app_port: t.port,
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> TemplateSpec {
        serde_json::from_str(r#"{"image":"demo:1","port":8080}"#).unwrap()
    }

    #[test]
    fn defaults_are_non_root_and_valid() {
        let t = t();
        assert_eq!(t.user, "1000:1000");
        t.validate().unwrap();
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for (patch, needle) in [
            (r#"{"image":"x","memory_bytes":1000}"#, "minimum"),
            (r#"{"image":"x","port":0}"#, "port 0"),
            (r#"{"image":"x","user":"0"}"#, "allow_root"),
            (r#"{"image":"x","user":"root:root"}"#, "allow_root"),
            (r#"{"image":"x","cpus":0}"#, "cpus"),
            (r#"{"image":"x","workspace_path":"rel"}"#, "absolute"),
            (r#"{"image":"x","env":["NOEQUALS"]}"#, "KEY=VALUE"),
            (r#"{"image":""}"#, "image"),
            (r#"{"image":"x","idle_timeout_secs":5}"#, "at least 10"),
        ] {
            let t: TemplateSpec = serde_json::from_str(patch).unwrap();
            let e = t.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{patch}: {e}");
        }
        assert!(serde_json::from_str::<TemplateSpec>(r#"{"image":"x","port":70000}"#).is_err());
        assert!(serde_json::from_str::<TemplateSpec>(r#"{"image":"x","memroy":1}"#).is_err());
        let root: TemplateSpec =
            serde_json::from_str(r#"{"image":"x","user":"0","allow_root":true}"#).unwrap();
        root.validate().unwrap();
    }
}
