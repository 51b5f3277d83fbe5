//! Execs: created here (checked, kept in the engine's table), started
//! through the monitor (detached, or on a stream the caller relays), and
//! inspected (the engine's entry plus the monitor's state).

use super::error::{EngineError, EngineResult};
use super::{Engine, ExecEntry};
use crate::monitor::events::Event;
use crate::protocol::{ExecRequest, ExecState, Request, Response};
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

    /// Marks exec `exec_id` started (Conflict if it was) and gives the
    /// monitor's request for it: `detach` runs it with no streams, `tty`
    /// overrides the exec's own setting.
    pub fn exec_begin(
        &self,
        exec_id: &str,
        detach: bool,
        tty: Option<bool>,
    ) -> EngineResult<ExecRequest> {
        let mut execs = self
            .execs
            .lock()
            .map_err(|_| EngineError::internal("exec table poisoned"))?;
        let e = execs
            .get_mut(exec_id)
            .ok_or_else(|| EngineError::not_found(format!("No such exec instance: {exec_id}")))?;
        if e.started {
            return Err(EngineError::conflict(format!(
                "Error: Exec command {exec_id} has already run"
            )));
        }
        e.started = true;
        let c = &e.config;
        Ok(ExecRequest {
            id: e.container.clone(),
            exec_id: exec_id.to_string(),
            cmd: c.cmd.clone().unwrap_or_default(),
            env: c.env.clone().unwrap_or_default(),
            user: c.user.clone().unwrap_or_default(),
            workdir: c.working_dir.clone().unwrap_or_default(),
            tty: tty.or(c.tty).unwrap_or(false),
            stdin: c.attach_stdin.unwrap_or(false) && !detach,
            detach,
        })
    }

    /// Runs a detached exec from [`Engine::exec_begin`].
    pub async fn exec_run_detached(&self, req: ExecRequest) -> EngineResult<()> {
        let exec_id = req.exec_id.clone();
        let sent = self.call(Request::Exec(Box::new(req))).await.map(drop);
        self.exec_launched(&exec_id, sent.is_ok());
        sent
    }

    /// Runs an attached exec from [`Engine::exec_begin`]: the monitor's
    /// stream of its output (and input).
    pub async fn exec_open(&self, req: ExecRequest) -> EngineResult<super::conn::MonitorStream> {
        let exec_id = req.exec_id.clone();
        let opened =
            super::conn::open_stream(&self.monitor_socket, &Request::Exec(Box::new(req))).await;
        self.exec_launched(&exec_id, opened.is_ok());
        opened
    }

    /// The monitor took the exec, or never will: inspect reports a failed
    /// start with the code Docker gives a command that cannot run.
    fn exec_launched(&self, exec_id: &str, ok: bool) {
        if let Ok(mut execs) = self.execs.lock() {
            if let Some(x) = execs.get_mut(exec_id) {
                if ok {
                    x.launched = true;
                } else {
                    x.failed = Some(126);
                }
            }
        }
    }

    /// Exec `exec_id` as the engine keeps it, and its process state: None
    /// before its start, and once the monitor forgot it (restarted).
    pub async fn exec_inspect(
        &self,
        exec_id: &str,
    ) -> EngineResult<(ExecEntry, Option<ExecState>)> {
        let e = self.exec_entry(exec_id)?;
        if !e.started {
            return Ok((e, None));
        }
        let state = match self
            .call(Request::ExecInspect {
                exec_id: exec_id.to_string(),
            })
            .await
        {
            Ok(Response::Exec(s)) => Some(s),
            Ok(_) => None,
            // Started but not yet with the monitor (an attached exec starts
            // once its client has the 101): running, no exit code yet.
            Err(EngineError::NotFound(_)) if !e.launched && e.failed.is_none() => Some(ExecState {
                exec_id: exec_id.to_string(),
                id: e.container.clone(),
                running: true,
                exit_code: None,
                pid: 0,
            }),
            Err(EngineError::NotFound(_)) => None,
            Err(err) => return Err(err),
        };
        Ok((e, state))
    }

    /// Sizes the TTY of exec `exec_id`.
    pub async fn exec_resize(&self, exec_id: &str, height: u16, width: u16) -> EngineResult<()> {
        let e = self.exec_entry(exec_id)?;
        self.call(Request::Resize {
            id: e.container,
            exec_id: Some(exec_id.to_string()),
            height,
            width,
        })
        .await
        .map(drop)
    }
}
