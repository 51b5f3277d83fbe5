//! `exec`: processes started in a running container (the runtime's exec,
//! so the same namespaces, cgroup and security as its init), children of
//! the monitor like the containers, with their own stdio and exit codes.

use super::*;

/// Exec results kept for `exec inspect` after the process ended.
const MAX_FINISHED_EXECS: usize = 1024;

/// A process started by `exec`.
pub(super) struct ExecProc {
    pub(super) container: String,
    pub(super) pid: i32,
    pub(super) stdio: Stdio,
    /// None while it runs.
    pub(super) exit_code: Option<i32>,
}

impl Monitor {
    pub(super) fn finish_exec(&mut self, exec_id: &str, code: i32) {
        let target = Target::Exec(exec_id.to_string());
        self.drain(&target);
        let container = match self.execs.get_mut(exec_id) {
            Some(e) => {
                e.exit_code = Some(code);
                e.stdio = Stdio::none();
                e.container.clone()
            }
            None => return,
        };
        if let Some(server) = &mut self.server {
            server.broadcast(&target, FRAME_EXIT, &code.to_be_bytes());
            server.end_streams(&target);
        }
        let e = self
            .container_event("exec_die", &container)
            .attr("execID", exec_id)
            .attr("exitCode", code.to_string());
        self.emit(e);
        // Forget the oldest finished execs.
        let finished: Vec<String> = self
            .execs
            .iter()
            .filter(|(_, e)| e.exit_code.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        if finished.len() > MAX_FINISHED_EXECS {
            for id in &finished[..finished.len() - MAX_FINISHED_EXECS] {
                self.execs.remove(id);
            }
        }
    }

    /// Starts a process in a running container (same namespaces, cgroup
    /// and security as its init, by the runtime's exec).
    pub(super) fn exec(&mut self, req: &ExecRequest) -> Result<()> {
        self.need_live(&req.id, "exec")?;
        if self.get(&req.id)?.status == Status::Paused {
            return Err(Error::WrongState {
                id: req.id.clone(),
                status: Status::Paused.to_string(),
                wanted: "unpause it to exec".into(),
            });
        }
        if req.cmd.is_empty() {
            return Err(Error::Invalid("exec needs a command".into()));
        }
        if self.execs.contains_key(&req.exec_id) {
            return Err(Error::AlreadyExists(req.exec_id.clone()));
        }
        let spec = self.load_request(&req.id)?.spec;
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(req.cmd.clone()));
        process.set_terminal(Some(req.tty));
        let base = process.env().clone().unwrap_or_default();
        process.set_env(Some(merge_env(&base, &req.env)));
        if !req.workdir.is_empty() {
            if !req.workdir.starts_with('/') {
                return Err(Error::Invalid(format!(
                    "the working directory {:?} is not absolute",
                    req.workdir
                )));
            }
            process.set_cwd(PathBuf::from(&req.workdir));
        }
        if !req.user.is_empty() {
            let rootfs = spec
                .root()
                .as_ref()
                .map(|r| r.path().clone())
                .unwrap_or_default();
            let rootfs = if rootfs.is_relative() {
                self.load_request(&req.id)?.bundle.join(rootfs)
            } else {
                rootfs
            };
            let (uid, gid) = crate::users::resolve(&rootfs, &req.user)?;
            let mut u = process.user().clone();
            u.set_uid(uid);
            u.set_gid(gid);
            u.set_additional_gids(None);
            process.set_user(u);
        }
        let (execed, mut io) =
            stdio::with_process_stdio(req.tty, req.stdin, || self.runtime_exec(&req.id, &process))?;
        if let Some(master) = execed.pty_master {
            io.adopt_pty(master, req.stdin)?;
        }
        self.execs.insert(
            req.exec_id.clone(),
            ExecProc {
                container: req.id.clone(),
                pid: execed.pid.as_raw(),
                stdio: io,
                exit_code: None,
            },
        );
        let e = self
            .container_event("exec_start", &req.id)
            .attr("execID", req.exec_id.clone());
        self.emit(e);
        Ok(())
    }

    pub(super) fn runtime_exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
    ) -> Result<container::Execed> {
        Ok(container::exec(
            &self.state,
            id,
            process,
            ExecOptions {
                console_socket: None,
                pid_file: None,
                preserve_fds: 0,
            },
        )?)
    }

    pub(super) fn exec_state(&self, exec_id: &str) -> Result<ExecState> {
        let e = self
            .execs
            .get(exec_id)
            .ok_or_else(|| Error::NotFound(format!("exec {exec_id}")))?;
        Ok(ExecState {
            exec_id: exec_id.into(),
            id: e.container.clone(),
            running: e.exit_code.is_none(),
            pid: e.pid,
            exit_code: e.exit_code,
        })
    }
}

/// `KEY=VALUE` over a base environment, later ones winning.
fn merge_env(base: &[String], extra: &[String]) -> Vec<String> {
    let key = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_string();
    let mut out: Vec<String> = base.to_vec();
    for kv in extra {
        match out.iter_mut().find(|e| key(e) == key(kv)) {
            Some(e) => *e = kv.clone(),
            None => out.push(kv.clone()),
        }
    }
    out
}
