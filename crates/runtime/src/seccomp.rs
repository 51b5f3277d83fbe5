//! Seccomp: compile an OCI `LinuxSeccomp` profile to BPF (via libseccomp) in
//! the parent, load it in the child just before exec.
//!
//! INTERFACE (owned by the security helper):
//!
//! - [`default_profile`] is cubby's own profile: everything is allowed except
//!   a deny list of dangerous syscalls, which fail with `EPERM` (and `clone3`,
//!   which fails with `ENOSYS` so libc falls back to `clone`, whose flags the
//!   filter can inspect).
//! - [`Program::compile`] turns any OCI profile (for example the full profile
//!   podman puts in config.json) into a classic BPF program. All the work
//!   that allocates happens here.
//! - [`Program::load`] installs the program with one `seccomp(2)` call; it is
//!   meant for the child between `fork` and `execve`.
//!
//! Semantics worth knowing:
//! - Syscall names this libseccomp does not know are skipped.
//! - Rules whose action equals the default action are skipped (libseccomp
//!   refuses them, and they would change nothing).
//! - Several `args` on one rule are ANDed. libseccomp cannot AND two
//!   conditions on the *same* argument index; a rule that does that is split
//!   into one rule per condition (ORed), as runc and crun do.
//! - `SCMP_ACT_NOTIFY` is not supported (there is no seccomp agent).

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;

use crate::{Error, Result};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};

/// Kernel limit on the length of a classic BPF program (`BPF_MAXINSNS`).
const BPF_MAXINSNS: usize = 4096;

/// Syscalls the default profile denies outright with `EPERM`.
const DENIED: &[&str] = &[
    // mounts and the new mount API
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    // kernel images and modules
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "get_kernel_syms",
    // kernel keyring
    "keyctl",
    "add_key",
    "request_key",
    // bpf, tracing, peeking at other processes
    "bpf",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "perf_event_open",
    "userfaultfd",
    // host-wide state
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "stime",
    "iopl",
    "ioperm",
    "quotactl",
    "lookup_dcookie",
    "name_to_handle_at",
    "open_by_handle_at",
    "nfsservctl",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "vm86",
    "vm86old",
    "syslog",
    // namespaces
    "setns",
    "unshare",
    // io_uring bypasses seccomp for the operations it performs
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
];

/// `personality(2)` values the default profile lets through (as Docker does):
/// PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query 0xffffffff.
pub const SAFE_PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Every `CLONE_NEW*` flag that `clone(2)` accepts (CLONE_NEWTIME shares its
/// bit with the exit signal in `clone`, so it is only reachable via clone3 and
/// unshare, which the default profile denies anyway).
pub const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

fn errno_rule(names: &[&str], errno: i32, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    let mut rule = LinuxSyscall::default();
    rule.set_names(names.iter().map(|n| n.to_string()).collect());
    rule.set_action(LinuxSeccompAction::ScmpActErrno);
    rule.set_errno_ret(Some(errno as u32));
    if !args.is_empty() {
        rule.set_args(Some(args));
    }
    rule
}

fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> LinuxSeccompArg {
    let builder = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    let builder = match value_two {
        Some(v) => builder.value_two(v),
        None => builder,
    };
    // Every field has a default, so build() cannot fail; the input here is
    // constant, not user data.
    builder
        .build()
        .expect("LinuxSeccompArgBuilder with defaults is infallible")
}

/// `arg0 & mask == value`.
fn masked(mask: u64, value: u64) -> LinuxSeccompArg {
    arg(0, LinuxSeccompOperator::ScmpCmpMaskedEq, mask, Some(value))
}

/// Rules that deny `personality(2)` for every argument not in
/// [`SAFE_PERSONALITIES`].
///
/// With an allow-by-default filter this must be written as a union of deny
/// conditions, and libseccomp allows only one comparison per argument in a
/// rule, so "not one of these five values" is spelled out with single-bit
/// patterns. The safe values other than 0xffffffff only use bits 3 and 17
/// (set `M`). A 32-bit value is unsafe exactly when it has a bit outside `M`
/// set and is not 0xffffffff, i.e. when some bit `b` outside `M` is set and
/// some other bit `c` is clear. Pivoting on bit 0 (outside `M`):
/// - bit 0 clear and some `b` outside `M` set: one rule per `b` (29 rules);
/// - bit 0 set and some `c` clear: one rule per `c` (31 rules);
/// - and anything above 32 bits is denied outright.
fn personality_rules() -> Vec<LinuxSyscall> {
    let safe_bits: u64 = SAFE_PERSONALITIES[1] | SAFE_PERSONALITIES[2];
    let mut rules = Vec::new();
    let deny = |cond| errno_rule(&["personality"], libc::EPERM, vec![cond]);
    for b in 1..32 {
        let bit = 1u64 << b;
        if bit & safe_bits == 0 {
            rules.push(deny(masked(bit | 1, bit)));
        }
    }
    for c in 1..32 {
        rules.push(deny(masked(1 | (1u64 << c), 1)));
    }
    rules.push(deny(arg(
        0,
        LinuxSeccompOperator::ScmpCmpGt,
        0xffff_ffff,
        None,
    )));
    rules
}

/// Architectures the default profile covers on this build.
fn default_architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "x86") {
        vec![Arch::ScmpArchX86]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else if cfg!(target_arch = "arm") {
        vec![Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

/// cubby's default profile (used by `cubby run` unless --security-opt seccomp=unconfined).
///
/// Default action `SCMP_ACT_ALLOW`; [`DENIED`] syscalls fail with `EPERM`;
/// `personality` fails with `EPERM` unless its argument is one of
/// [`SAFE_PERSONALITIES`]; `clone` fails with `EPERM` when any
/// [`CLONE_NAMESPACE_FLAGS`] bit is set; `clone3` fails with `ENOSYS` so that
/// libc falls back to `clone`.
pub fn default_profile() -> LinuxSeccomp {
    let mut syscalls = vec![errno_rule(DENIED, libc::EPERM, Vec::new())];
    syscalls.extend(personality_rules());
    // One rule per namespace flag: the rules are ORed, so clone is denied
    // when (flags & CLONE_NAMESPACE_FLAGS) != 0.
    for bit in 0..64 {
        let flag = 1u64 << bit;
        if flag & CLONE_NAMESPACE_FLAGS != 0 {
            syscalls.push(errno_rule(
                &["clone"],
                libc::EPERM,
                vec![masked(flag, flag)],
            ));
        }
    }
    syscalls.push(errno_rule(&["clone3"], libc::ENOSYS, Vec::new()));

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActAllow);
    profile.set_architectures(Some(default_architectures()));
    profile.set_syscalls(Some(syscalls));
    profile
}

/// A compiled filter, ready to load with no allocation.
pub struct Program {
    filter: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("instructions", &self.filter.len())
            .field("flags", &self.flags)
            .finish()
    }
}

fn seccomp_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Seccomp(format!("{what}: {e}"))
}

fn errno_value(errno_ret: Option<u32>) -> Result<i32> {
    let v = errno_ret.unwrap_or(libc::EPERM as u32);
    // SECCOMP_RET_DATA is 16 bits; errno values are at most 4095.
    if v == 0 || v > 4095 {
        return Err(Error::Seccomp(format!(
            "errnoRet {v} is not a valid errno (1..=4095)"
        )));
    }
    Ok(v as i32)
}

fn map_action(action: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<ScmpAction> {
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno_value(errno_ret)?),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActTrace => {
            let v = errno_ret.unwrap_or(libc::EPERM as u32);
            let v = u16::try_from(v)
                .map_err(|_| Error::Seccomp(format!("SCMP_ACT_TRACE value {v} exceeds 65535")))?;
            ScmpAction::Trace(v)
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Seccomp(
                "SCMP_ACT_NOTIFY is not supported by cubby (no seccomp agent)".into(),
            ))
        }
    })
}

fn map_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn map_arg(a: &LinuxSeccompArg) -> Result<ScmpArgCompare> {
    let index = a.index();
    if index > 5 {
        return Err(Error::Seccomp(format!(
            "argument index {index} out of range (0..=5)"
        )));
    }
    let (op, datum) = match a.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, a.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, a.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, a.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, a.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, a.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, a.value()),
        // OCI: value is the mask, valueTwo the expected masked value.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(a.value()),
            a.value_two().unwrap_or(0),
        ),
    };
    Ok(ScmpArgCompare::new(index as u32, op, datum))
}

/// The argument conditions of one OCI rule as one or more libseccomp rules
/// (each inner Vec is ANDed; the outer Vec is ORed).
fn condition_sets(rule: &LinuxSyscall) -> Result<Vec<Vec<ScmpArgCompare>>> {
    let args: &[LinuxSeccompArg] = rule.args().as_deref().unwrap_or(&[]);
    let conds = args.iter().map(map_arg).collect::<Result<Vec<_>>>()?;
    let mut seen = [false; 6];
    let mut duplicate = false;
    for a in args {
        // index <= 5 was checked by map_arg.
        duplicate |= std::mem::replace(&mut seen[a.index()], true);
    }
    if duplicate {
        Ok(conds.into_iter().map(|c| vec![c]).collect())
    } else {
        Ok(vec![conds])
    }
}

fn map_flags(flags: Option<&Vec<LinuxSeccompFilterFlag>>) -> libc::c_ulong {
    let mut out: libc::c_ulong = 0;
    for f in flags.into_iter().flatten() {
        out |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            // Only meaningful together with a notify listener, which cubby
            // does not create.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        };
    }
    out
}

/// Serializes the filter with `seccomp_export_bpf` into a memfd and reads the
/// instructions back.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>> {
    let fd =
        nix::sys::memfd::memfd_create(c"cubby-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| seccomp_err("memfd_create for BPF export", e))?;
    ctx.export_bpf(fd.as_fd())
        .map_err(|e| seccomp_err("exporting BPF", e))?;
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| seccomp_err("reading exported BPF", e))?;

    const INSN: usize = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % INSN != 0 {
        return Err(Error::Seccomp(format!(
            "exported BPF has a bad size ({} bytes)",
            bytes.len()
        )));
    }
    let filter: Vec<libc::sock_filter> = bytes
        .chunks_exact(INSN)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    if filter.len() > BPF_MAXINSNS {
        return Err(Error::Seccomp(format!(
            "filter has {} instructions, the kernel accepts at most {BPF_MAXINSNS}",
            filter.len()
        )));
    }
    Ok(filter)
}

impl Program {
    /// Compiles an OCI profile. Allocates; call it in the parent.
    pub fn compile(profile: &LinuxSeccomp) -> Result<Program> {
        let default = map_action(profile.default_action(), profile.default_errno_ret()).map_err(
            |e| match e {
                Error::Seccomp(m) => Error::Seccomp(format!("defaultAction: {m}")),
                other => other,
            },
        )?;
        let mut ctx =
            ScmpFilterContext::new(default).map_err(|e| seccomp_err("creating filter", e))?;
        // Binary tree sorting of the syscalls: long allowlists (podman's) get
        // O(log n) instead of O(n). Best effort; older libseccomp lacks it.
        let _ = ctx.set_ctl_optimize(2);

        for arch in profile.architectures().iter().flatten() {
            let a = map_arch(*arch);
            if a == ScmpArch::Native {
                continue; // always present
            }
            ctx.add_arch(a)
                .map_err(|e| seccomp_err(format!("adding architecture {arch}"), e))?;
        }

        for rule in profile.syscalls().iter().flatten() {
            let action = map_action(rule.action(), rule.errno_ret())
                .map_err(|e| seccomp_err(format!("syscalls {:?}", rule.names()), e))?;
            if action == default {
                continue;
            }
            let sets = condition_sets(rule)
                .map_err(|e| seccomp_err(format!("syscalls {:?}", rule.names()), e))?;
            for name in rule.names() {
                let Ok(nr) = ScmpSyscall::from_name(name) else {
                    continue; // unknown to this libseccomp: skip
                };
                for conds in &sets {
                    ctx.add_rule_conditional(action, nr, conds)
                        .map_err(|e| seccomp_err(format!("rule for {name}"), e))?;
                }
            }
        }

        Ok(Program {
            filter: export(&ctx)?,
            flags: map_flags(profile.flags().as_ref()),
        })
    }

    /// Number of BPF instructions in the program.
    pub fn instructions(&self) -> usize {
        self.filter.len()
    }

    /// Loads the filter into the calling thread. Async-signal-safe.
    ///
    /// No allocation happens on success (the error path builds an error
    /// message). The kernel accepts the filter only if the thread has
    /// `no_new_privs` set or `CAP_SYS_ADMIN` in its user namespace: the
    /// caller sets `PR_SET_NO_NEW_PRIVS` before this unless it keeps
    /// `CAP_SYS_ADMIN`. Call it as late as possible (after capabilities and
    /// uid changes, just before `execve`), since the filter also applies to
    /// the runtime's own remaining syscalls.
    pub fn load(&self) -> Result<()> {
        let prog = libc::sock_fprog {
            len: self.filter.len() as libc::c_ushort,
            filter: self.filter.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points to `self.filter`, which outlives the call; the
        // kernel copies the program and does not keep the pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let mut err = nix::errno::Errno::last();
        if err == nix::errno::Errno::ENOSYS && self.flags == 0 {
            // Kernels before 3.17 only have the prctl interface.
            // SAFETY: as above; prctl copies the program.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                    &prog as *const libc::sock_fprog,
                )
            };
            if rc == 0 {
                return Ok(());
            }
            err = nix::errno::Errno::last();
        }
        let what = match err {
            nix::errno::Errno::EACCES => {
                "loading seccomp filter (set no_new_privs first, or keep CAP_SYS_ADMIN)"
            }
            nix::errno::Errno::EINVAL if self.flags != 0 => {
                "loading seccomp filter (the kernel may not support the requested flags)"
            }
            _ => "loading seccomp filter",
        };
        Err(Error::sys(what, err))
    }
}
