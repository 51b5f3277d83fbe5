//! cubby-runtime: runs an OCI runtime-spec bundle as a container.
//!
//! Layout (one concern per file):
//! - [`spec`]: the safe default spec (Docker-like) and config.json I/O.
//! - [`cgroups`]: resource limits on cgroup v1 and v2, detected at run time.
//! - [`namespaces`]: which namespaces to create or join.
//! - [`rootfs`]: mounts, devices, pivot_root, masked and read-only paths.
//! - [`capabilities`], [`seccomp`]: privilege reduction.
//! - [`process`]: the last steps before exec inside the container.
//! - [`init`]: an optional tiny PID 1 that reaps zombies and forwards signals.
//! - [`console`], [`tty`]: the pty inside the container and the relay on the caller's side.
//! - [`signals`]: signal names and forwarding from the caller to the container.
//! - [`cloned_exe`]: re-exec from a sealed memfd (CVE-2019-5736).
//! - [`hooks`]: OCI lifecycle hooks (state on stdin, env, args, timeout).
//! - [`keyring`]: a new session keyring per container.
//! - [`state`]: crash-safe container state on disk.
//! - [`container`]: the lifecycle (create, start, state, kill, delete, exec) tying it together.

pub mod capabilities;
pub mod cgroups;
pub mod cloned_exe;
pub mod console;
pub mod container;
pub mod error;
pub mod hooks;
pub mod init;
pub mod keyring;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod signals;
pub mod spec;
pub mod state;
pub mod sync;
pub mod tty;

pub use error::{Error, Result};
