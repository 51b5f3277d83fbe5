//! Device access rules on cgroup v2: an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE`, assembled here by hand and attached to the
//! container's cgroup with `BPF_F_ALLOW_MULTI`.
//!
//! # Rule list
//! [`rules_for_spec`] builds exactly the list v1 writes to `devices.deny` /
//! `devices.allow` (see `v1::set_devices`): deny everything, then the spec's
//! rules in order (FIFO rules dropped, as on v1), then
//! [`v1::DEFAULT_DEVICE_RULES`] as allows. Every rule goes through
//! [`v1::device_rule`], so both layouts validate and accept the same rules.
//!
//! # Semantics (what the program decides)
//! The kernel calls the program with a device type (block or char), its
//! major:minor and the requested access, a non-empty subset of
//! {mknod, read, write} (`open(O_RDWR)` asks for read and write at once).
//! Rules apply in order and a later rule overrides an earlier one for the
//! requests it matches; nothing matched means deny:
//!
//! - A rule of type `a` resets the decision for every device, whatever its
//!   numbers and access say: the v1 kernel treats any line starting with `a`
//!   that way (deny-all / allow-all, clearing earlier exceptions), and so
//!   does this program. Rules before the last `a` rule are therefore dead.
//! - A `b`/`c` rule matches a request when the type is equal and the major
//!   and minor are equal (or `*` in the rule), and
//!   - for an ALLOW rule, every requested access bit is in the rule's access
//!     (allowing "r" does not allow an `O_RDWR` open);
//!   - for a DENY rule, at least one requested bit is in the rule's access
//!     (denying "w" also refuses an `O_RDWR` open).
//! - The program checks the rules from last to first and returns the verdict
//!   of the first match; past the last `a` rule it returns that rule's
//!   verdict (deny when there is none).
//!
//! This matches the v1 devices controller on the default list and on any
//! list of `a` resets followed by allows in a default-deny state (the shape
//! of every list cubby builds), and on exact-match overrides. It differs from
//! the v1 kernel's exception list in one corner: there a later rule only edits
//! an earlier exception with the *identical* type/major/minor, so e.g. after
//! an allow-all, `deny c *:* rwm` then `allow c 1:3 rwm` leaves /dev/null
//! denied on v1 but allowed here, and after a deny-all, `allow c 1:3 rwm` then
//! `deny c *:* w` leaves /dev/null writable on v1 but not here. Here the spec's
//! "applied in order" holds literally.
//!
//! # Attaching
//! [`apply`] loads the program (the verifier's log ends up in the error on
//! failure), attaches it with `BPF_F_ALLOW_MULTI`, then detaches the device
//! programs cubby attached to that cgroup before (recognised by their name,
//! [`PROG_NAME`]). Between the two steps both programs run and a request must
//! pass both, so an update never briefly allows more than either rule set.
//! Programs attached to ancestor cgroups keep applying as well (the kernel
//! runs every program on the path). Concurrent `apply` calls on one cgroup are
//! not serialised; the last one to finish may leave both programs attached,
//! which only restricts.
//!
//! Directories that are not on a cgroup2 file system (the fake trees of unit
//! tests) are skipped by [`on_cgroup2`] checks in the caller: no BPF program can
//! be attached there, and a real v2 hierarchy is always cgroup2.

use super::fs::io_err;
use super::v1;
use super::CgroupError;
use oci_spec::runtime::LinuxDeviceCgroup;
use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The name our programs carry in the kernel (`bpftool prog` shows it), used
/// to tell them from programs someone else attached.
pub const PROG_NAME: &str = "cubby_devices";

// bpf(2) commands, program/attach types and flags (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: c_int = 5;
const BPF_PROG_ATTACH: c_int = 8;
const BPF_PROG_DETACH: c_int = 9;
const BPF_PROG_GET_FD_BY_ID: c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: c_int = 15;
const BPF_PROG_QUERY: c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

// Values in `struct bpf_cgroup_dev_ctx`.
const DEV_BLOCK: u8 = 1;
const DEV_CHAR: u8 = 2;
const ACC_MKNOD: u8 = 1;
const ACC_READ: u8 = 2;
const ACC_WRITE: u8 = 4;
const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// The program's license. Device programs call no GPL-only helper (they
/// call no helper at all), so the project's license is fine.
const LICENSE: &[u8] = b"Apache-2.0\0";

/// Verifier log buffer used when a load fails (the retry asks for the log).
const LOG_SIZE: usize = 1 << 20;
/// How much of the log's end goes into an error message.
const LOG_TAIL: usize = 4096;

/// Which devices a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// `a`: every device (a reset, see the module docs).
    All,
    /// `b`
    Block,
    /// `c`
    Char,
}

/// One rule in the v1 `devices.allow` sense, ready to be compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DeviceKind,
    /// `None` is `*`.
    pub major: Option<u32>,
    /// `None` is `*`.
    pub minor: Option<u32>,
    /// Bits of `ACC_MKNOD | ACC_READ | ACC_WRITE` (m=1, r=2, w=4); never 0.
    pub access: u8,
}

impl DeviceRule {
    /// Parses a v1 rule line such as `c 1:3 rwm` or `b *:* m` (the format of
    /// [`v1::device_rule`] and [`v1::DEFAULT_DEVICE_RULES`]).
    pub fn from_line(allow: bool, line: &str) -> Result<DeviceRule, CgroupError> {
        let bad = |why: &str| CgroupError::Invalid(format!("device rule {line:?}: {why}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [typ, numbers, access] = fields[..] else {
            return Err(bad("expected \"TYPE MAJOR:MINOR ACCESS\""));
        };
        let kind = match typ {
            "a" => DeviceKind::All,
            "b" => DeviceKind::Block,
            "c" => DeviceKind::Char,
            _ => return Err(bad("type must be a, b or c")),
        };
        let (major, minor) = numbers
            .split_once(':')
            .ok_or_else(|| bad("expected MAJOR:MINOR"))?;
        let num = |s: &str, what: &str| -> Result<Option<u32>, CgroupError> {
            if s == "*" {
                return Ok(None);
            }
            s.parse::<u32>()
                .map(Some)
                .map_err(|_| bad(&format!("{what} {s:?} is not * or a number below 2^32")))
        };
        let mut bits = 0u8;
        for c in access.chars() {
            bits |= match c {
                'm' => ACC_MKNOD,
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                _ => return Err(bad("access must be letters from \"rwm\"")),
            };
        }
        if bits == 0 {
            return Err(bad("empty access"));
        }
        Ok(DeviceRule {
            allow,
            kind,
            major: num(major, "major")?,
            minor: num(minor, "minor")?,
            access: bits,
        })
    }

    /// The rule for one spec entry; `None` for FIFO rules (not governed by
    /// the device controller on v1 either). Validation is v1's.
    pub fn from_spec(d: &LinuxDeviceCgroup) -> Result<Option<DeviceRule>, CgroupError> {
        match v1::device_rule(d)? {
            Some(line) => DeviceRule::from_line(d.allow(), &line).map(Some),
            None => Ok(None),
        }
    }

    /// Whether this rule decides a request, per the module docs (`a` rules
    /// are resets and decide every request).
    pub fn matches(&self, typ: u8, major: u32, minor: u32, access: u8) -> bool {
        let kind_ok = match self.kind {
            DeviceKind::All => return true,
            DeviceKind::Block => typ == DEV_BLOCK,
            DeviceKind::Char => typ == DEV_CHAR,
        };
        let access_ok = if self.allow {
            access & !self.access == 0
        } else {
            access & self.access != 0
        };
        kind_ok
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
            && access_ok
    }
}

/// The full rule list for a spec's `linux.resources.devices`, the same one v1
/// applies: deny all, the spec's rules, then v1's default devices.
pub fn rules_for_spec(spec: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>, CgroupError> {
    let mut rules = vec![DeviceRule::from_line(false, "a *:* rwm")?];
    for d in spec {
        if let Some(rule) = DeviceRule::from_spec(d)? {
            rules.push(rule);
        }
    }
    for line in v1::DEFAULT_DEVICE_RULES {
        rules.push(DeviceRule::from_line(true, line)?);
    }
    Ok(rules)
}

/// The verdict the rules give a request: the reference the program is tested
/// against. `typ` is 1 (block) or 2 (char); `access` bits m=1, r=2, w=4.
pub fn decide(rules: &[DeviceRule], typ: u8, major: u32, minor: u32, access: u8) -> bool {
    rules
        .iter()
        .rev()
        .find(|r| r.matches(typ, major, minor, access))
        .is_some_and(|r| r.allow)
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst_reg and src_reg, 4 bits each (bit-field order follows endianness).
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Registers used by the program.
const R0: u8 = 0; // return value
const R1: u8 = 1; // context pointer
const R2: u8 = 2; // access_type
const R3: u8 = 3; // device type
const R4: u8 = 4; // requested access
const R5: u8 = 5; // major
const R6: u8 = 6; // minor
const R7: u8 = 7; // scratch

// Opcodes (class | op | source).
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV32_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K (zero-extends)
const AND64_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const RSH64_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    let regs = if cfg!(target_endian = "little") {
        (src << 4) | dst
    } else {
        (dst << 4) | src
    };
    Insn {
        code,
        regs,
        off,
        imm,
    }
}

impl Insn {
    pub fn dst(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs & 0xf
        } else {
            self.regs >> 4
        }
    }

    pub fn src(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs >> 4
        } else {
            self.regs & 0xf
        }
    }
}

/// Loads the context into registers: r3 type, r4 access, r5 major, r6 minor.
const PREAMBLE_LEN: usize = 7;

/// Compiles `rules` (see the module docs for the semantics).
///
/// Layout: a 7-instruction preamble, then per live rule (last first) a block
/// of jumps to the next block on mismatch followed by `r0 = verdict; exit`,
/// then `r0 = default; exit`. A block is 2 instructions plus 1 per compared
/// field (type, major, minor; 2 for a number above `i32::MAX`, which the
/// 32-bit immediate cannot hold) plus 2 for the access test unless the rule
/// has all of "rwm".
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, R2, R1, 0, 0), // access_type
        insn(MOV64_X, R3, R2, 0, 0),
        insn(AND64_K, R3, 0, 0, 0xffff), // type: low 16 bits
        insn(MOV64_X, R4, R2, 0, 0),
        insn(RSH64_K, R4, 0, 0, 16), // access: high 16 bits
        insn(LDX_W, R5, R1, 4, 0),   // major
        insn(LDX_W, R6, R1, 8, 0),   // minor
    ];
    debug_assert_eq!(p.len(), PREAMBLE_LEN);
    // Rules before the last `a` rule can never decide anything.
    let last_reset = rules.iter().rposition(|r| r.kind == DeviceKind::All);
    let (live, default) = match last_reset {
        Some(i) => (&rules[i + 1..], rules[i].allow),
        None => (rules, false),
    };
    for rule in live.iter().rev() {
        p.extend(rule_block(rule));
    }
    p.push(insn(MOV64_K, R0, 0, 0, i32::from(default)));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// `if <rule matches> { return rule.allow }`, falling through otherwise.
fn rule_block(rule: &DeviceRule) -> Vec<Insn> {
    let mut b = Vec::new();
    // Indexes of the "no match" jumps, pointed at the block's end below.
    let mut jumps = Vec::new();
    let typ = match rule.kind {
        DeviceKind::Block => Some(DEV_BLOCK),
        DeviceKind::Char => Some(DEV_CHAR),
        DeviceKind::All => None,
    };
    if let Some(t) = typ {
        jumps.push(b.len());
        b.push(insn(JNE_K, R3, 0, 0, i32::from(t)));
    }
    for (reg, number) in [(R5, rule.major), (R6, rule.minor)] {
        let Some(n) = number else { continue };
        match i32::try_from(n) {
            Ok(imm) => {
                jumps.push(b.len());
                b.push(insn(JNE_K, reg, 0, 0, imm));
            }
            Err(_) => {
                // A JMP immediate is sign-extended to 64 bits and would never
                // equal the zero-extended register: compare registers.
                b.push(insn(MOV32_K, R7, 0, 0, n as i32));
                jumps.push(b.len());
                b.push(insn(JNE_X, reg, R7, 0, 0));
            }
        }
    }
    if rule.access & ACC_ALL != ACC_ALL {
        b.push(insn(MOV64_X, R7, R4, 0, 0));
        if rule.allow {
            // Some requested bit outside the allowed ones: no match.
            b.push(insn(AND64_K, R7, 0, 0, i32::from(!rule.access & ACC_ALL)));
            jumps.push(b.len());
            b.push(insn(JNE_K, R7, 0, 0, 0));
        } else {
            // No requested bit among the denied ones: no match.
            b.push(insn(AND64_K, R7, 0, 0, i32::from(rule.access)));
            jumps.push(b.len());
            b.push(insn(JEQ_K, R7, 0, 0, 0));
        }
    }
    b.push(insn(MOV64_K, R0, 0, 0, i32::from(rule.allow)));
    b.push(insn(EXIT, 0, 0, 0, 0));
    let len = b.len();
    for j in jumps {
        // A block is at most 10 instructions long.
        b[j].off = (len - j - 1) as i16;
    }
    b
}

/// True if `dir` is on a cgroup2 file system (where a device program can be
/// attached); an error names `dir` if it cannot be examined.
pub fn on_cgroup2(dir: &Path) -> Result<bool, CgroupError> {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
    let st = statfs(dir).map_err(|e| io_err(dir, e.into()))?;
    Ok(st.filesystem_type() == CGROUP2_SUPER_MAGIC)
}

/// Compiles `rules`, attaches the program to the cgroup `dir` and detaches
/// the device programs cubby attached there before (see the module docs).
pub fn apply(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    let prog = load(&program(rules), dir)?;
    let cg = open_dir(dir)?;
    let before = query(&cg, dir)?;
    attach(&cg, &prog, dir)?;
    for id in before {
        let Some(old) = prog_fd_by_id(id, dir)? else {
            continue; // detached and freed meanwhile
        };
        if prog_name(&old, dir)? == PROG_NAME {
            detach(&cg, &old, dir)?;
        }
    }
    Ok(())
}

/// Ids of the device programs attached directly to the cgroup `dir`
/// (whoever attached them; ancestors' programs are not listed).
pub fn attached(dir: &Path) -> Result<Vec<u32>, CgroupError> {
    query(&open_dir(dir)?, dir)
}

/// Loads a device program; the error carries the verifier's log and `dir`
/// (the cgroup it was meant for).
pub fn load(insns: &[Insn], dir: &Path) -> Result<OwnedFd, CgroupError> {
    match load_with_log(insns, None) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            // Ask again with a log to say why (as libbpf does); the first
            // error is the one reported if the retry fails differently.
            let mut log = vec![0u8; LOG_SIZE];
            let err = match load_with_log(insns, Some(&mut log)) {
                Ok(fd) => return Ok(fd),
                Err(e) => e,
            };
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim();
            let mut tail_start = text.len().saturating_sub(LOG_TAIL);
            while !text.is_char_boundary(tail_start) {
                tail_start += 1;
            }
            let detail = if text.is_empty() {
                String::new()
            } else {
                format!("; verifier log: {}", &text[tail_start..])
            };
            let shown = if err.raw_os_error() == first.raw_os_error() {
                err
            } else {
                first
            };
            Err(io_err(
                dir,
                io::Error::new(
                    shown.kind(),
                    format!(
                        "loading the device filter ({} instructions): {shown}{detail}",
                        insns.len()
                    ),
                ),
            ))
        }
    }
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH / BPF_PROG_DETACH.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// `union bpf_attr` for BPF_PROG_QUERY, up to `prog_cnt`.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

/// `union bpf_attr` for BPF_PROG_GET_FD_BY_ID.
#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `struct bpf_prog_info`, up to `name`.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

/// Calls bpf(2) with `attr`; returns the syscall's non-negative result.
///
/// Every attr struct here is `#[repr(C)]`, has no implicit padding (the
/// kernel rejects non-zero bytes it does not know) and matches the leading
/// fields of the kernel's `union bpf_attr` for `cmd`.
fn bpf<T>(cmd: c_int, attr: &mut T) -> io::Result<i64> {
    let size = std::mem::size_of::<T>() as u32;
    // SAFETY: `attr` is a live, initialised, exclusively borrowed struct of
    // `size` bytes; the kernel reads and writes at most `size` bytes of it.
    // Pointers stored in it (instructions, license, buffers) are borrowed by
    // the caller for the duration of this call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Wraps a file descriptor the kernel just returned.
fn owned_fd(raw: i64) -> OwnedFd {
    // SAFETY: `raw` is a new descriptor returned by bpf(2) that nothing else
    // owns or closes.
    unsafe { OwnedFd::from_raw_fd(raw as c_int) }
}

fn load_with_log(insns: &[Insn], log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    let mut name = [0u8; 16];
    name[..PROG_NAME.len()].copy_from_slice(PROG_NAME.as_bytes());
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..ProgLoadAttr::default()
    };
    if let Some(buf) = log {
        attr.log_level = 1;
        attr.log_size = buf.len() as u32;
        attr.log_buf = buf.as_mut_ptr() as u64;
    }
    bpf(BPF_PROG_LOAD, &mut attr).map(owned_fd)
}

fn open_dir(dir: &Path) -> Result<OwnedFd, CgroupError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map(OwnedFd::from)
        .map_err(|e| io_err(dir, e))
}

/// io error naming the bpf command, reported against `dir`.
fn bpf_err(dir: &Path, what: &str, e: io::Error) -> CgroupError {
    io_err(dir, io::Error::new(e.kind(), format!("{what}: {e}")))
}

fn attach(cg: &OwnedFd, prog: &OwnedFd, dir: &Path) -> Result<(), CgroupError> {
    let mut attr = AttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map(drop)
        .map_err(|e| bpf_err(dir, "attaching the device filter (BPF_PROG_ATTACH)", e))
}

fn detach(cg: &OwnedFd, prog: &OwnedFd, dir: &Path) -> Result<(), CgroupError> {
    let mut attr = AttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: 0,
    };
    match bpf(BPF_PROG_DETACH, &mut attr) {
        // Already detached by someone else: the goal is reached.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r.map(drop).map_err(|e| {
            bpf_err(
                dir,
                "detaching the previous device filter (BPF_PROG_DETACH)",
                e,
            )
        }),
    }
}

fn query(cg: &OwnedFd, dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let mut ids = vec![0u32; 16];
    loop {
        let mut attr = QueryAttr {
            target_fd: cg.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..QueryAttr::default()
        };
        match bpf(BPF_PROG_QUERY, &mut attr) {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            // More programs than room: prog_cnt says how many.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                ids = vec![0u32; (attr.prog_cnt as usize).max(ids.len() * 2)];
            }
            Err(e) => return Err(bpf_err(dir, "listing device filters (BPF_PROG_QUERY)", e)),
        }
    }
}

/// A descriptor for program `id`; `None` if it no longer exists.
fn prog_fd_by_id(id: u32, dir: &Path) -> Result<Option<OwnedFd>, CgroupError> {
    let mut attr = GetFdAttr {
        prog_id: id,
        ..GetFdAttr::default()
    };
    match bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) {
        Ok(fd) => Ok(Some(owned_fd(fd))),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(bpf_err(
            dir,
            &format!("opening device filter {id} (BPF_PROG_GET_FD_BY_ID)"),
            e,
        )),
    }
}

fn prog_name(prog: &OwnedFd, dir: &Path) -> Result<String, CgroupError> {
    let mut info = ProgInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: std::mem::size_of::<ProgInfo>() as u32,
        info: &mut info as *mut ProgInfo as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)
        .map_err(|e| bpf_err(dir, "reading a device filter's name", e))?;
    let end = info.name.iter().position(|&b| b == 0).unwrap_or(16);
    Ok(String::from_utf8_lossy(&info.name[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};

    fn rule(allow: bool, line: &str) -> DeviceRule {
        DeviceRule::from_line(allow, line).unwrap()
    }

    /// Runs `prog` on a request, interpreting the instructions `program`
    /// emits (and nothing else), with the verifier's basic checks.
    fn run(prog: &[Insn], typ: u8, major: u32, minor: u32, access: u8) -> u64 {
        let ctx = [u32::from(typ) | (u32::from(access) << 16), major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (d, s) = (usize::from(i.dst()), usize::from(i.src()));
            let k = i64::from(i.imm) as u64; // sign-extended, as the kernel does
            let mut next = pc + 1;
            let jump = |cond: bool| {
                if cond {
                    pc + 1 + i.off as usize
                } else {
                    pc + 1
                }
            };
            match i.code {
                LDX_W => {
                    assert_eq!(s, 1, "loads only from the context");
                    r[d] = u64::from(ctx[i.off as usize / 4]);
                }
                MOV64_K => r[d] = k,
                MOV64_X => r[d] = r[s],
                MOV32_K => r[d] = u64::from(i.imm as u32),
                AND64_K => r[d] &= k,
                RSH64_K => r[d] >>= i.imm,
                JEQ_K => next = jump(r[d] == k),
                JNE_K => next = jump(r[d] != k),
                JNE_X => next = jump(r[d] != r[s]),
                EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
            assert!(next > pc, "jumps only go forward");
            pc = next;
        }
    }

    /// Checks the program against [`decide`] on every type, every access
    /// combination and the interesting numbers.
    fn check_against_reference(rules: &[DeviceRule]) {
        let prog = program(rules);
        let mut numbers = vec![0u32, 1, 3, 5, 7, 8, 136, 259, u32::MAX];
        for r in rules {
            numbers.extend(r.major);
            numbers.extend(r.minor);
        }
        for typ in [DEV_BLOCK, DEV_CHAR] {
            for access in 1..=ACC_ALL {
                for &major in &numbers {
                    for &minor in &numbers {
                        let want = decide(rules, typ, major, minor, access);
                        let got = run(&prog, typ, major, minor, access);
                        assert_eq!(
                            got,
                            u64::from(want),
                            "type {typ} {major}:{minor} access {access} with {rules:?}"
                        );
                    }
                }
            }
        }
    }

    fn defaults() -> Vec<DeviceRule> {
        rules_for_spec(&[]).unwrap()
    }

    #[test]
    fn parses_v1_lines() {
        assert_eq!(
            rule(true, "c 1:3 rwm"),
            DeviceRule {
                allow: true,
                kind: DeviceKind::Char,
                major: Some(1),
                minor: Some(3),
                access: 7
            }
        );
        let r = rule(false, "b *:* w");
        assert_eq!(
            (r.kind, r.major, r.minor, r.access),
            (DeviceKind::Block, None, None, 4)
        );
        assert_eq!(rule(true, "c 4294967295:0 m").major, Some(u32::MAX));
        for bad in [
            "",
            "c 1:3",
            "x 1:3 r",
            "c 1-3 r",
            "c 1:3 rx",
            "c 4294967296:0 r",
            "c -1:0 r",
            "c 1:3 r extra",
        ] {
            let err = DeviceRule::from_line(true, bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn spec_rules_go_through_v1_validation() {
        let b = LinuxDeviceCgroupBuilder::default;
        let spec = vec![
            b().allow(true)
                .typ(LinuxDeviceType::B)
                .major(8)
                .access("r")
                .build()
                .unwrap(),
            b().allow(true).typ(LinuxDeviceType::P).build().unwrap(),
        ];
        let rules = rules_for_spec(&spec).unwrap();
        // deny-all + the block rule (the FIFO rule is dropped) + defaults.
        assert_eq!(rules.len(), 2 + v1::DEFAULT_DEVICE_RULES.len());
        assert_eq!(rules[0], rule(false, "a *:* rwm"));
        assert_eq!(rules[1], rule(true, "b 8:* r"));
        let bad = b().access("x").build().unwrap();
        assert!(rules_for_spec(&[bad]).is_err());
        let bad = b().major(-3).build().unwrap();
        assert!(rules_for_spec(&[bad]).is_err());
        let too_big = b().major(1i64 << 32).build().unwrap();
        assert!(rules_for_spec(&[too_big]).is_err());
    }

    #[test]
    fn default_rules_behave_like_v1() {
        let rules = defaults();
        let d = |typ, major, minor, access| decide(&rules, typ, major, minor, access);
        let rw = ACC_READ | ACC_WRITE;
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 2),
            (136, 0),
            (136, 9),
        ] {
            assert!(d(DEV_CHAR, major, minor, rw), "c {major}:{minor}");
            assert!(d(DEV_CHAR, major, minor, ACC_ALL), "c {major}:{minor}");
        }
        // Not listed: no read or write, but mknod of anything is allowed.
        for (typ, major, minor) in [
            (DEV_CHAR, 1, 1),
            (DEV_CHAR, 1, 11),
            (DEV_CHAR, 5, 1),
            (DEV_BLOCK, 8, 0),
            (DEV_BLOCK, 1, 3),
        ] {
            assert!(!d(typ, major, minor, ACC_READ), "{typ} {major}:{minor}");
            assert!(!d(typ, major, minor, ACC_WRITE), "{typ} {major}:{minor}");
            assert!(!d(typ, major, minor, ACC_MKNOD | ACC_READ));
            assert!(d(typ, major, minor, ACC_MKNOD), "{typ} {major}:{minor}");
        }
        check_against_reference(&rules);
    }

    #[test]
    fn later_rules_override_earlier_ones() {
        let rules = [
            rule(false, "a *:* rwm"),
            rule(true, "c 1:3 rwm"),
            rule(false, "c 1:3 w"),
            rule(true, "c 1:5 r"),
        ];
        let d = |minor, access| decide(&rules, DEV_CHAR, 1, minor, access);
        assert!(d(3, ACC_READ));
        assert!(d(3, ACC_MKNOD));
        assert!(!d(3, ACC_WRITE));
        assert!(
            !d(3, ACC_READ | ACC_WRITE),
            "a denied bit refuses the request"
        );
        assert!(d(5, ACC_READ));
        assert!(
            !d(5, ACC_READ | ACC_WRITE),
            "allow needs every requested bit"
        );
        assert!(!d(7, ACC_READ));
        check_against_reference(&rules);

        // An `a` rule resets whatever it says besides allow/deny (v1 kernel).
        let rules = [
            rule(true, "c 1:3 rwm"),
            rule(false, "a 8:* r"),
            rule(true, "c 1:5 r"),
        ];
        assert!(!decide(&rules, DEV_CHAR, 1, 3, ACC_READ));
        assert!(!decide(&rules, DEV_BLOCK, 9, 0, ACC_WRITE));
        assert!(decide(&rules, DEV_CHAR, 1, 5, ACC_READ));
        check_against_reference(&rules);
        let rules = [
            rule(false, "c 1:3 rwm"),
            rule(true, "a *:* r"),
            rule(false, "b 8:* w"),
        ];
        assert!(decide(&rules, DEV_CHAR, 1, 3, ACC_WRITE));
        assert!(decide(&rules, DEV_BLOCK, 8, 1, ACC_READ));
        assert!(!decide(&rules, DEV_BLOCK, 8, 1, ACC_READ | ACC_WRITE));
        check_against_reference(&rules);
    }

    #[test]
    fn wildcards_and_large_numbers() {
        let rules = [
            rule(true, "c *:* m"),
            rule(true, "b 8:* rw"),
            rule(true, "c *:9 r"),
            rule(false, "b 8:16 w"),
            rule(true, "c 4294967295:2147483648 rw"),
            rule(true, "c 2147483647:0 w"),
        ];
        assert!(decide(&rules, DEV_CHAR, u32::MAX, 1 << 31, ACC_READ));
        assert!(!decide(&rules, DEV_CHAR, u32::MAX, (1 << 31) + 1, ACC_READ));
        check_against_reference(&rules);
    }

    #[test]
    fn instruction_counts() {
        assert_eq!(program(&[]).len(), PREAMBLE_LEN + 2);
        // Everything before the last `a` rule is dropped.
        assert_eq!(
            program(&[rule(true, "c 1:3 rwm"), rule(false, "a *:* rwm")]).len(),
            PREAMBLE_LEN + 2
        );
        let one = |line: &str, allow| program(&[rule(allow, line)]).len() - PREAMBLE_LEN - 2;
        assert_eq!(one("c 1:3 rwm", true), 2 + 3);
        assert_eq!(one("c *:* m", true), 2 + 1 + 3);
        assert_eq!(one("b 8:* rw", false), 2 + 2 + 3);
        assert_eq!(one("c 4294967295:* rwm", true), 2 + 1 + 2);
        // Defaults: deny-all is the reset; then 10 allows.
        let expected: usize = PREAMBLE_LEN
            + 2
            + 2 * (2 + 1 + 3) // c *:* m, b *:* m
            + 7 * (2 + 3) // fully numbered rwm rules
            + (2 + 2); // c 136:* rwm
        assert_eq!(program(&defaults()).len(), expected);
        // The final instruction is always a deny-by-default exit here.
        let p = program(&defaults());
        assert_eq!(p[p.len() - 2], insn(MOV64_K, R0, 0, 0, 0));
        assert_eq!(p[p.len() - 1].code, EXIT);
    }

    fn assert_root() {
        let euid = nix::unistd::geteuid();
        assert!(
            euid.is_root(),
            "loading BPF programs needs root (euid {euid})"
        );
    }

    #[test]
    fn kernel_verifier_accepts_programs() {
        assert_root();
        let sets: Vec<Vec<DeviceRule>> = vec![
            vec![],
            defaults(),
            vec![rule(true, "a *:* rwm")],
            vec![
                rule(false, "a *:* rwm"),
                rule(true, "c *:* m"),
                rule(true, "b *:* rwm"),
            ],
            vec![
                rule(false, "a *:* rwm"),
                rule(true, "c 1:3 rwm"),
                rule(false, "c 1:3 w"),
                rule(true, "c 1:5 r"),
                rule(true, "c *:9 r"),
                rule(true, "c 4294967295:2147483648 rw"),
            ],
        ];
        for rules in sets {
            let insns = program(&rules);
            if let Err(e) = load(&insns, Path::new("test")) {
                panic!("{rules:?}: {e}");
            }
        }
    }

    #[test]
    fn verifier_log_is_reported() {
        assert_root();
        // Returns without setting r0: the verifier refuses and says why.
        let bad = [insn(EXIT, 0, 0, 0, 0)];
        let err = load(&bad, Path::new("/sys/fs/cgroup/x"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/sys/fs/cgroup/x: loading the device filter (1 instructions)"),
            "{err}"
        );
        assert!(err.contains("verifier log:") && err.contains("R0"), "{err}");
    }
}
