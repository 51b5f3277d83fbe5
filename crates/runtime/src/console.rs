//! The container's terminal: a pty from the container's own devpts, whose
//! master is handed to the caller over a Unix socket (SCM_RIGHTS), as runc's
//! --console-socket contract does.
//!
//! INTERFACE (owned by the tty helper):
//!
//! - [`open_pty`]: master and slave from /dev/ptmx (the container's devpts).
//!   The slave comes from TIOCGPTPEER, or ptsname + open on kernels < 4.13.
//! - [`send_fd`], [`send_fd_with_name`], [`recv_fd`]: one fd over a connected
//!   Unix stream socket, in one SCM_RIGHTS message. The payload is a name (the
//!   pty path "/dev/pts/N" when the fd is a pty master), as runc sends it.
//! - [`make_controlling`]: the slave becomes stdio and controlling terminal.
//!
//! `send_fd`, `send_fd_with_name` and `make_controlling` do not allocate on
//! their success path, so they may run in a child forked from a
//! multi-threaded parent.

use crate::error::Context;
use crate::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The pty multiplexer; inside the container a symlink to pts/ptmx.
const PTMX: &str = "/dev/ptmx";

/// Inside the container after pivot_root: opens /dev/ptmx, unlocks it, opens
/// the slave and returns (master, slave).
///
/// Both fds are close-on-exec; [`make_controlling`] dup2s the slave onto
/// 0/1/2, which clears that flag on the copies.
pub fn open_pty() -> Result<(OwnedFd, OwnedFd)> {
    // posix_openpt opens /dev/ptmx with exactly these flags.
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .ctx(|| format!("open {PTMX}"))?;
    // grantpt(3) on devpts amounts to this check (glibc >= 2.33, musl); older
    // glibc may chown the slave after an NSS lookup of group "tty", which
    // inside the container's rootfs must not happen. The devpts mount
    // options already give the slave its owner and mode.
    pty_number(master.as_fd()).ctx(|| format!("{PTMX} is not a pty master (TIOCGPTN)"))?;
    nix::pty::unlockpt(&master).ctx(|| "unlockpt")?;
    let slave = match open_peer(master.as_fd()) {
        Ok(slave) => slave,
        // Kernels before 4.13 have no TIOCGPTPEER (ENOTTY/EINVAL); otherwise
        // fall back too: the path lookup may still work.
        Err(peer_err) => open_slave_by_name(&master).map_err(|e| match e {
            Error::Sys { what, source } => Error::Sys {
                what: format!("{what} (after TIOCGPTPEER failed: {peer_err})"),
                source,
            },
            other => other,
        })?,
    };
    Ok((master.into(), slave))
}

/// Opens the slave of `master` with TIOCGPTPEER: no path lookup, so the slave
/// is certainly the one of this master's devpts instance.
fn open_peer(master: BorrowedFd<'_>) -> std::result::Result<OwnedFd, Errno> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes the open flags by value and returns a new fd;
    // `master` is a valid open fd for the duration of the call.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    let fd = Errno::result(fd)?;
    // SAFETY: on success the ioctl returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The fallback for old kernels: ptsname + open.
fn open_slave_by_name(master: &nix::pty::PtyMaster) -> Result<OwnedFd> {
    let name = nix::pty::ptsname_r(master).ctx(|| "ptsname")?;
    nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| format!("open {name}"))
}

/// Room for one fd's control message. `align(8)` satisfies `cmsghdr`'s
/// alignment (that of `size_t`) on every Linux target.
const ONE_FD_SPACE: usize = {
    // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
    unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as libc::c_uint) as usize }
};

#[repr(C, align(8))]
struct OneFdCmsg([u8; ONE_FD_SPACE]);

/// Sends `fd` over the connected Unix socket `sock` (one SCM_RIGHTS message).
///
/// The payload is the pty's path ("/dev/pts/N") when `fd` is a pty master,
/// else "fd". Does not allocate.
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> Result<()> {
    let mut name = [0u8; 32];
    let len = pty_name(fd, &mut name);
    send_fd_with_name(sock, fd, &name[..len])
}

/// Like [`send_fd`] with an explicit payload (an empty one is sent as "fd":
/// a stream socket needs at least one byte to carry the fd). Does not
/// allocate.
pub fn send_fd_with_name(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>, name: &[u8]) -> Result<()> {
    let payload: &[u8] = if name.is_empty() { b"fd" } else { name };
    let mut cmsg_buf = OneFdCmsg([0; ONE_FD_SPACE]);
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // SAFETY: msghdr is plain data (integers and pointers, with private
    // padding on some libcs); all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.0.as_mut_ptr().cast();
    msg.msg_controllen = ONE_FD_SPACE as _;
    // SAFETY: msg_control points at ONE_FD_SPACE suitably aligned bytes, which
    // hold one cmsghdr plus one fd, so the first header is non-null and its
    // data area is in bounds. The fd is written unaligned to be safe anyway.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(Error::sys("send fd: control buffer", Errno::EINVAL));
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as libc::c_uint) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd.as_raw_fd());
    }
    loop {
        // SAFETY: `msg` and everything it points to (iov, payload, control
        // buffer) live until the call returns; `sock` is a valid fd.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        match Errno::result(n) {
            // The fd travels with the first byte; a short send still sent it.
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("send fd over the console socket", e)),
        }
    }
}

/// The index N of the pty master `fd` (TIOCGPTN); ENOTTY if not a master.
fn pty_number(fd: BorrowedFd<'_>) -> std::result::Result<libc::c_uint, Errno> {
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one c_uint through the pointer, which is valid.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGPTN, &mut n as *mut libc::c_uint) };
    Errno::result(r)?;
    Ok(n)
}

/// Writes "/dev/pts/N" into `buf` if `fd` is a pty master, else "fd"; returns
/// the length. Does not allocate.
fn pty_name(fd: BorrowedFd<'_>, buf: &mut [u8; 32]) -> usize {
    let Ok(mut n) = pty_number(fd) else {
        buf[..2].copy_from_slice(b"fd");
        return 2;
    };
    const PREFIX: &[u8] = b"/dev/pts/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut count = 0;
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..count {
        buf[PREFIX.len() + i] = digits[count - 1 - i];
    }
    PREFIX.len() + count
}

/// Receives one fd sent by `send_fd`. The fd is close-on-exec. Extra fds in
/// the same message are closed. Errors if the peer closed the socket or the
/// message carried no fd.
pub fn recv_fd(sock: BorrowedFd<'_>) -> Result<OwnedFd> {
    let mut data = [0u8; 4096];
    let mut cmsg_buf = nix::cmsg_space!([RawFd; 8]);
    loop {
        let mut iov = [IoSliceMut::new(&mut data)];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_buf),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("receive fd from the console socket", e)),
        };
        let bytes = msg.bytes;
        let cmsgs = msg.cmsgs().map_err(|_| {
            Error::sys(
                "receive fd from the console socket: control message truncated",
                Errno::ENOBUFS,
            )
        })?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel installed these fds in our table for this
                // message; nothing else owns them.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if fds.is_empty() {
            let why = if bytes == 0 {
                "the peer closed the socket without sending a fd"
            } else {
                "the message carried no fd"
            };
            return Err(Error::Io {
                what: "receive fd from the console socket".into(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, why),
            });
        }
        // Any extra fds are closed as the rest of the Vec drops.
        return Ok(fds.swap_remove(0));
    }
}

/// Makes `slave` the calling process's stdin/stdout/stderr and controlling
/// terminal (setsid + TIOCSCTTY). Async-signal-safe: no allocation unless it
/// fails.
pub fn make_controlling(slave: BorrowedFd<'_>) -> Result<()> {
    nix::unistd::setsid().ctx(|| "setsid")?;
    // SAFETY: TIOCSCTTY takes an int by value (0: do not steal from another
    // session); `slave` is a valid open fd.
    let r = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0 as libc::c_int) };
    Errno::result(r).ctx(|| "set controlling terminal (TIOCSCTTY)")?;
    nix::unistd::dup2_stdin(slave).ctx(|| "dup2 pty slave to stdin")?;
    nix::unistd::dup2_stdout(slave).ctx(|| "dup2 pty slave to stdout")?;
    nix::unistd::dup2_stderr(slave).ctx(|| "dup2 pty slave to stderr")?;
    // dup2 onto itself keeps close-on-exec; clear it so the slave survives exec.
    if (0..=2).contains(&slave.as_raw_fd()) {
        nix::fcntl::fcntl(slave, FcntlArg::F_SETFD(FdFlag::empty()))
            .ctx(|| "clear close-on-exec on the pty slave")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slave_by_name_fallback() {
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .expect("posix_openpt");
        nix::pty::unlockpt(&master).expect("unlockpt");
        let slave = open_slave_by_name(&master).expect("open slave by name");
        nix::unistd::write(&slave, b"x").expect("write slave");
        let mut buf = [0u8; 8];
        let n = nix::unistd::read(&master, &mut buf).expect("read master");
        assert_eq!(&buf[..n], b"x");
    }

    #[test]
    fn pty_name_formats_path() {
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .expect("posix_openpt");
        let expected = nix::pty::ptsname_r(&master).expect("ptsname");
        let mut buf = [0u8; 32];
        let len = pty_name(master.as_fd(), &mut buf);
        assert_eq!(&buf[..len], expected.as_bytes());

        let (r, _w) = nix::unistd::pipe().expect("pipe");
        let len = pty_name(r.as_fd(), &mut buf);
        assert_eq!(&buf[..len], b"fd");
    }
}
