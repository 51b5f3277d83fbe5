//! Signals on the caller's side: parsing names like `runc kill` takes them,
//! and forwarding what the caller receives to the container's process (what
//! `docker run` calls sig-proxy).

use crate::error::{Error, Result};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;
use std::str::FromStr;
use std::sync::atomic::{AtomicI32, Ordering};

/// "TERM", "SIGTERM", "sigterm" or "15".
pub fn parse(s: &str) -> Result<Signal> {
    let bad = || {
        Error::InvalidSpec(format!(
            "unknown signal {s:?}: use a name like SIGTERM or a number"
        ))
    };
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| bad())
}

/// The signals a caller may want the container to get.
const FORWARDED: [Signal; 8] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGCONT,
    Signal::SIGTSTP,
];

static TARGET: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = TARGET.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// While alive, signals the caller receives go to `pid`. Dropping restores
/// the default dispositions.
pub struct Forwarder {
    old: Vec<(Signal, SigAction)>,
}

impl Forwarder {
    pub fn install(pid: Pid) -> Result<Forwarder> {
        TARGET.store(pid.as_raw(), Ordering::Relaxed);
        let action = SigAction::new(
            SigHandler::Handler(forward),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut old = Vec::new();
        for sig in FORWARDED {
            // SAFETY: the handler only calls kill(2) and reads an atomic.
            let prev = unsafe { sigaction(sig, &action) }
                .map_err(|e| Error::sys(format!("install {sig} handler"), e))?;
            old.push((sig, prev));
        }
        Ok(Forwarder { old })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        TARGET.store(0, Ordering::Relaxed);
        for (sig, prev) in &self.old {
            // SAFETY: restores the disposition that was in place before.
            let _ = unsafe { sigaction(*sig, prev) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse("sigkill").unwrap(), Signal::SIGKILL);
        assert_eq!(parse("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse("SIGWINCH").unwrap(), Signal::SIGWINCH);
        assert!(parse("NOPE").is_err());
        assert!(parse("999").is_err());
    }
}
