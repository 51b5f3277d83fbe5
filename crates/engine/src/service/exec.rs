//! Execs: created here (checked, kept in the engine's table), started
//! through the monitor by the API's hijacked connection.

use super::error::{EngineError, EngineResult};
use super::{Engine, ExecEntry};
use crate::monitor::events::Event;
use crate::records::Status;
use bollard_stubs::models::ExecConfig;

/// Execs not yet started are forgotten past this many (clients that
/// create and never start).
const MAX_EXECS: usize = 4096;

impl Engine {
    /// Records an exec of `config` in container `what` (running, not
    /// paused); returns its id. Options an exec cannot honour are refused.
    pub async fn exec_create(&self, what: &str, config: ExecConfig) -> EngineResult<String> {
        if config.cmd.as_ref().is_none_or(|c| c.is_empty()) {
            return Err(EngineError::invalid("No exec command specified"));
        }
        // Honoured or refused, never dropped: an exec runs with its
        // container's capabilities and security.
        if config.privileged == Some(true) {
            return Err(crate::config::ConfigError::unsupported_because(
                "ExecConfig.Privileged",
                "an exec gets its container's capabilities; create the container with --privileged",
            )
            .into());
        }
        if config.detach_keys.as_deref().is_some_and(|k| !k.is_empty()) {
            return Err(crate::config::ConfigError::unsupported("ExecConfig.DetachKeys").into());
        }
        let r = self.find(what).await?;
        match r.status {
            Status::Running => {}
            Status::Paused => {
                return Err(EngineError::conflict(format!(
                    "Container {} is paused, unpause the container before exec",
                    r.id
                )))
            }
            _ => {
                return Err(EngineError::conflict(format!(
                    "Container {} is not running",
                    r.id
                )))
            }
        }
        let exec_id = super::new_id()?;
        {
            let mut execs = self
                .execs
                .lock()
                .map_err(|_| EngineError::internal("exec table poisoned"))?;
            if execs.len() >= MAX_EXECS {
                let stale: Vec<String> = execs
                    .iter()
                    .filter(|(_, e)| !e.started)
                    .map(|(k, _)| k.clone())
                    .take(MAX_EXECS / 4)
                    .collect();
                for k in stale {
                    execs.remove(&k);
                }
            }
            execs.insert(
                exec_id.clone(),
                ExecEntry {
                    container: r.id.clone(),
                    config: config.clone(),
                    started: false,
                    failed: None,
                    launched: false,
                },
            );
        }
        let cmd = config.cmd.unwrap_or_default().join(" ");
        self.publish(
            Event::new("container", "exec_create", &r.id)
                .attr("name", r.name.clone())
                .attr("execID", exec_id.clone())
                .attr("exec_command", cmd),
        )
        .await;
        Ok(exec_id)
    }

    /// What the engine keeps of exec `exec_id`.
    pub fn exec_entry(&self, exec_id: &str) -> EngineResult<ExecEntry> {
        self.execs
            .lock()
            .map_err(|_| EngineError::internal("exec table poisoned"))?
            .get(exec_id)
            .cloned()
            .ok_or_else(|| EngineError::not_found(format!("No such exec instance: {exec_id}")))
    }
}
