//! The channel between the runtime and the container's init while it is set
//! up: a SOCK_SEQPACKET socketpair, so each message arrives whole, and fds
//! (the pty master) can ride along with SCM_RIGHTS.

use crate::error::{Context, Error, Result};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One message of the setup protocol.
#[derive(Debug)]
pub enum Msg {
    /// Parent to child: ids mapped and cgroup joined, go on.
    Go,
    /// Child to parent: set up, now waiting for `start` on the exec fifo.
    Created,
    /// Child to parent: the pty master, sent with the message.
    Pty(OwnedFd),
    /// Child to parent: setup failed; the text names what and why. `code` is
    /// 126/127 when the command itself cannot be run (Docker's exit codes), else 0.
    Failed { code: u8, text: String },
    /// Intermediate to parent (exec): the host pid of the process it forked.
    Pid(i32),
    /// Child to parent: namespaces and mounts are made, before pivot_root:
    /// run the prestart and createRuntime hooks now.
    Hooks,
    /// Parent to child: those hooks succeeded; the container's state JSON
    /// for the hooks the child runs itself (createContainer, startContainer).
    State(String),
}

impl Msg {
    pub fn failed(err: &crate::Error) -> Msg {
        Msg::Failed {
            code: err.exec_code(),
            text: err.to_string(),
        }
    }
}

/// Largest message body: well under the socket's send buffer, so one
/// SOCK_SEQPACKET message always fits.
const MAX_BODY: usize = 64 * 1024;

pub struct Channel {
    fd: OwnedFd,
}

/// A connected pair: (parent end, child end). Both are close-on-exec, so the
/// container's process never inherits them.
pub fn pair() -> Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ctx(|| "create sync socketpair")?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn send(&self, msg: &Msg) -> Result<()> {
        let (tag, body): (u8, &[u8]) = match msg {
            Msg::Go => (b'g', b""),
            Msg::Created => (b'c', b""),
            Msg::Pty(_) => (b'p', b""),
            Msg::Failed { text, .. } => (b'e', text.as_bytes()),
            Msg::Pid(_) => (b'i', b""),
            Msg::Hooks => (b'h', b""),
            Msg::State(json) => (b's', json.as_bytes()),
        };
        if body.len() > MAX_BODY {
            return Err(Error::Child(format!(
                "sync message of {} bytes is over the limit of {MAX_BODY} (too many annotations?)",
                body.len()
            )));
        }
        let pid_bytes;
        let body = match msg {
            Msg::Pid(pid) => {
                pid_bytes = pid.to_le_bytes();
                &pid_bytes[..]
            }
            _ => body,
        };
        let code = match msg {
            Msg::Failed { code, .. } => *code,
            _ => 0,
        };
        let tag = [tag, code];
        let iov = [IoSlice::new(&tag), IoSlice::new(body)];
        let fds;
        let cmsgs: Vec<ControlMessage> = match msg {
            Msg::Pty(fd) => {
                fds = [fd.as_raw_fd()];
                vec![ControlMessage::ScmRights(&fds)]
            }
            _ => Vec::new(),
        };
        sendmsg::<()>(self.raw(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)
            .ctx(|| "send on sync socket")?;
        Ok(())
    }

    /// Receives one message; `Ok(None)` when the other side is gone.
    pub fn recv(&self) -> Result<Option<Msg>> {
        let mut buf = vec![0u8; MAX_BODY + 2];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let (n, fd) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.raw(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(r) => {
                    let mut fd = None;
                    for c in r.cmsgs().ctx(|| "read control message")? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for raw in fds {
                                // SAFETY: the kernel just installed this fd in our table for us.
                                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                                fd.get_or_insert(owned);
                            }
                        }
                    }
                    break (r.bytes, fd);
                }
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(Error::sys("receive on sync socket", e)),
            }
        };
        if n == 0 {
            return Ok(None);
        }
        let msg = match buf[0] {
            b'g' => Msg::Go,
            b'c' => Msg::Created,
            b'p' => Msg::Pty(fd.ok_or_else(|| Error::Child("pty message without fd".into()))?),
            b'e' if n >= 2 => Msg::Failed {
                code: buf[1],
                text: String::from_utf8_lossy(&buf[2..n]).into_owned(),
            },
            b'i' if n == 6 => Msg::Pid(i32::from_le_bytes([buf[2], buf[3], buf[4], buf[5]])),
            b'h' => Msg::Hooks,
            b's' => Msg::State(String::from_utf8_lossy(&buf[2..n]).into_owned()),
            t => return Err(Error::Child(format!("unknown sync message {t:#x}"))),
        };
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let (a, b) = pair().unwrap();
        a.send(&Msg::Go).unwrap();
        assert!(matches!(b.recv().unwrap(), Some(Msg::Go)));
        b.send(&Msg::Failed {
            code: 127,
            text: "mount /x: EPERM".into(),
        })
        .unwrap();
        match a.recv().unwrap() {
            Some(Msg::Failed { code, text }) => {
                assert_eq!((code, text.as_str()), (127, "mount /x: EPERM"))
            }
            other => panic!("{other:?}"),
        }
        b.send(&Msg::Pid(4242)).unwrap();
        assert!(matches!(a.recv().unwrap(), Some(Msg::Pid(4242))));
        let (r, w) = nix::unistd::pipe().unwrap();
        b.send(&Msg::Pty(w)).unwrap();
        match a.recv().unwrap() {
            Some(Msg::Pty(fd)) => {
                nix::unistd::write(&fd, b"x").unwrap();
                let mut buf = [0u8; 1];
                nix::unistd::read(&r, &mut buf).unwrap();
                assert_eq!(&buf, b"x");
            }
            other => panic!("{other:?}"),
        }
        drop(b);
        assert!(a.recv().unwrap().is_none());
    }
}
