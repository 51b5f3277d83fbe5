//! OCI lifecycle hooks (runtime-spec config.md "POSIX-platform Hooks").
//!
//! Each hook is run with exactly its `path`, `args` (args[0] as argv[0]) and
//! `env` (nothing else inherited), the container's state JSON on stdin and an
//! optional timeout in seconds. Its stdout and stderr are captured (a memfd,
//! so a hook that never reads stdin or leaves a daemon behind cannot block
//! the runtime) and quoted when it fails.
//!
//! Who runs what (see container.rs): prestart and createRuntime by the
//! runtime after the container's namespaces exist and before pivot_root;
//! createContainer by the container's init in its namespaces before
//! pivot_root; startContainer by the init after `start`, before the user
//! process; poststart by `start` once the process runs; poststop by `delete`.
//! The first four fail the operation; the last two only warn.

use crate::error::{Context, Error, Result};
use oci_spec::runtime::{Hook, Spec};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Prestart,
        Kind::CreateRuntime,
        Kind::CreateContainer,
        Kind::StartContainer,
        Kind::Poststart,
        Kind::Poststop,
    ];

    /// The spec's JSON name, as `features` lists it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Prestart => "prestart",
            Kind::CreateRuntime => "createRuntime",
            Kind::CreateContainer => "createContainer",
            Kind::StartContainer => "startContainer",
            Kind::Poststart => "poststart",
            Kind::Poststop => "poststop",
        }
    }
}

/// The hooks of `kind` in `spec` (empty if none).
pub fn of(spec: &Spec, kind: Kind) -> Vec<Hook> {
    let Some(h) = spec.hooks() else {
        return Vec::new();
    };
    #[allow(deprecated)]
    let list = match kind {
        Kind::Prestart => h.prestart(),
        Kind::CreateRuntime => h.create_runtime(),
        Kind::CreateContainer => h.create_container(),
        Kind::StartContainer => h.start_container(),
        Kind::Poststart => h.poststart(),
        Kind::Poststop => h.poststop(),
    };
    list.clone().unwrap_or_default()
}

/// Runs every hook of `kind` in order; the first failure is the error.
pub fn run(spec: &Spec, kind: Kind, state: &[u8]) -> Result<()> {
    for (i, hook) in of(spec, kind).iter().enumerate() {
        run_one(hook, state).map_err(|e| Error::Hook(format!("{} hook #{i}: {e}", kind.name())))?;
    }
    Ok(())
}

/// Runs every hook of `kind`; failures are printed as warnings and the
/// rest still run (poststart, poststop).
pub fn run_warn(spec: &Spec, kind: Kind, state: &[u8]) {
    for (i, hook) in of(spec, kind).iter().enumerate() {
        if let Err(e) = run_one(hook, state) {
            eprintln!("cubby-oci: warning: {} hook #{i}: {e}", kind.name());
        }
    }
}

/// How much of a failed hook's output the error quotes.
const OUTPUT_TAIL: usize = 2048;

fn run_one(hook: &Hook, state: &[u8]) -> Result<()> {
    let path = hook.path();
    let what = || path.display().to_string();
    let mut input = memfd("hook-state")?;
    input.write_all(state).ctx(|| "write hook state")?;
    input.seek(SeekFrom::Start(0)).ctx(|| "rewind hook state")?;
    let mut output = memfd("hook-output")?;
    let out2 = output.try_clone().ctx(|| "dup hook output")?;

    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = Command::new(path);
    if let Some(a0) = args.first() {
        cmd.arg0(a0);
    }
    cmd.args(args.iter().skip(1)).env_clear();
    for kv in hook.env().clone().unwrap_or_default() {
        match kv.split_once('=') {
            Some((k, v)) => cmd.env(k, v),
            None => cmd.env(&kv, ""),
        };
    }
    cmd.stdin(Stdio::from(input))
        .stdout(Stdio::from(output.try_clone().ctx(|| "dup hook output")?))
        .stderr(Stdio::from(out2));
    let mut child = cmd.spawn().ctx(|| format!("run {}", what()))?;

    let status = match hook.timeout() {
        Some(secs) if secs > 0 => {
            let pidfd = crate::tty::pidfd(nix::unistd::Pid::from_raw(child.id() as i32))?;
            let ms = secs.saturating_mul(1000);
            let mut fds = [nix::poll::PollFd::new(
                pidfd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let mut left = ms;
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms as u64);
            loop {
                let t = nix::poll::PollTimeout::try_from(left.min(i64::from(i32::MAX)) as i32)
                    .unwrap_or(nix::poll::PollTimeout::MAX);
                match nix::poll::poll(&mut fds, t) {
                    Ok(0) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(Error::Hook(format!(
                            "{} did not finish within its timeout of {secs} s (killed)",
                            what()
                        )));
                    }
                    Ok(_) => break,
                    Err(nix::Error::EINTR) => {
                        left = deadline
                            .saturating_duration_since(std::time::Instant::now())
                            .as_millis() as i64;
                    }
                    Err(e) => return Err(Error::sys("poll hook pidfd", e)),
                }
            }
            child.wait()
        }
        Some(secs) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::InvalidSpec(format!(
                "hook {}: timeout must be positive, got {secs}",
                what()
            )));
        }
        None => child.wait(),
    }
    .ctx(|| format!("wait for {}", what()))?;
    if status.success() {
        return Ok(());
    }
    let mut text = Vec::new();
    let _ = output.seek(SeekFrom::Start(0));
    let _ = output.read_to_end(&mut text);
    let start = text.len().saturating_sub(OUTPUT_TAIL);
    let text = String::from_utf8_lossy(&text[start..]);
    let text = text.trim();
    Err(Error::Hook(format!(
        "{} failed ({status}){}{}",
        what(),
        if text.is_empty() { "" } else { ": " },
        text
    )))
}

fn memfd(name: &str) -> Result<std::fs::File> {
    let fd = nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .ctx(|| "memfd_create for a hook")?;
    Ok(std::fs::File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{HookBuilder, HooksBuilder, SpecBuilder};

    fn spec_with(kind: Kind, hooks: Vec<Hook>) -> Spec {
        let mut b = HooksBuilder::default();
        b = match kind {
            Kind::Poststop => b.poststop(hooks),
            Kind::CreateRuntime => b.create_runtime(hooks),
            _ => unreachable!(),
        };
        SpecBuilder::default()
            .hooks(b.build().unwrap())
            .build()
            .unwrap()
    }

    fn sh(script: &str) -> Hook {
        HookBuilder::default()
            .path("/bin/sh")
            .args(vec!["hook-argv0".into(), "-c".into(), script.into()])
            .env(vec!["HOOK_ENV=yes".into()])
            .build()
            .unwrap()
    }

    #[test]
    fn state_env_args_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "{{ cat; echo; echo \"$0 $HOOK_ENV ${{HOME:-nohome}}\"; }} > {}",
            out.display()
        );
        let spec = spec_with(Kind::CreateRuntime, vec![sh(&script)]);
        run(&spec, Kind::CreateRuntime, b"{\"id\":\"x\"}").unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(got, "{\"id\":\"x\"}\nhook-argv0 yes nohome\n");

        let spec = spec_with(Kind::CreateRuntime, vec![sh("echo boom >&2; exit 3")]);
        let err = run(&spec, Kind::CreateRuntime, b"{}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("createRuntime hook #0") && err.contains("boom"),
            "{err}"
        );

        let mut slow = sh("sleep 30");
        slow.set_timeout(Some(1));
        let spec = spec_with(Kind::CreateRuntime, vec![slow]);
        let err = run(&spec, Kind::CreateRuntime, b"{}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("timeout of 1 s"), "{err}");
    }
}
