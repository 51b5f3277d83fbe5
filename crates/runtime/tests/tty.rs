//! Terminal support: pty allocation, fd passing, raw mode, window sizes and
//! the relay. These use the host's /dev/ptmx.

use cubby_runtime::console::{open_pty, recv_fd, send_fd, send_fd_with_name};
use cubby_runtime::tty::{
    copy_winsize, get_winsize, relay, relay_until, set_winsize, RawMode, Winsize,
};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::termios::{tcgetattr, LocalFlags};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::thread::JoinHandleExt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Hang guard: how long any single wait may take before the test fails.
const LIMIT: Duration = Duration::from_secs(20);

fn ws(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Reads from `fd` until `want` has been seen, failing instead of hanging.
fn read_until(fd: BorrowedFd<'_>, want: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + LIMIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(want.len()).any(|w| w == want) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out waiting for {want:?}, got {got:?}"
        );
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => panic!("poll: {e}"),
        }
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => panic!("EOF waiting for {want:?}, got {got:?}"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    got
}

/// Runs `f` in a thread and returns its result, failing after LIMIT.
fn with_limit<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> (T, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    let v = rx.recv_timeout(LIMIT).expect("timed out");
    (v, h)
}

#[test]
fn open_pty_slave_to_master() {
    let (master, slave) = open_pty().expect("open_pty");
    assert!(nix::unistd::isatty(&slave).unwrap());
    nix::unistd::write(&slave, b"ping\n").expect("write slave");
    let got = read_until(master.as_fd(), b"ping");
    assert!(got.starts_with(b"ping"));
    // Both are close-on-exec.
    for fd in [&master, &slave] {
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }
}

#[test]
fn send_and_receive_a_pipe() {
    let (a, b) = UnixStream::pair().unwrap();
    let (r, w) = nix::unistd::pipe().unwrap();
    send_fd(a.as_fd(), w.as_fd()).expect("send_fd");
    drop(w);
    let got: OwnedFd = recv_fd(b.as_fd()).expect("recv_fd");
    nix::unistd::write(&got, b"through").unwrap();
    drop(got);
    let mut buf = [0u8; 16];
    let n = nix::unistd::read(&r, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"through");
    // Every writer is gone now: EOF.
    assert_eq!(nix::unistd::read(&r, &mut buf).unwrap(), 0);
}

#[test]
fn send_pty_master_then_use_it() {
    let (a, b) = UnixStream::pair().unwrap();
    let (master, slave) = open_pty().unwrap();
    send_fd(a.as_fd(), master.as_fd()).expect("send_fd");
    drop(master);
    let got = recv_fd(b.as_fd()).expect("recv_fd");
    nix::unistd::write(&slave, b"via-socket\n").unwrap();
    read_until(got.as_fd(), b"via-socket");
}

#[test]
fn send_with_explicit_name() {
    let (a, b) = UnixStream::pair().unwrap();
    let (_r, w) = nix::unistd::pipe().unwrap();
    send_fd_with_name(a.as_fd(), w.as_fd(), b"").expect("send");
    recv_fd(b.as_fd()).expect("recv");
}

#[test]
fn recv_fd_errors_without_fd() {
    let (a, b) = UnixStream::pair().unwrap();
    nix::unistd::write(&a, b"no fd here").unwrap();
    let err = recv_fd(b.as_fd()).expect_err("plain data must be an error");
    assert!(err.to_string().contains("no fd"), "{err}");
    drop(a);
    let err = recv_fd(b.as_fd()).expect_err("closed peer must be an error");
    assert!(err.to_string().contains("closed"), "{err}");
}

#[test]
fn raw_mode_enter_and_restore() {
    let (_master, slave) = open_pty().unwrap();
    let before = tcgetattr(&slave).unwrap();
    assert!(before
        .local_flags
        .contains(LocalFlags::ICANON | LocalFlags::ECHO));
    {
        let _raw = RawMode::enter(slave.as_fd()).expect("enter");
        let now = tcgetattr(&slave).unwrap();
        assert!(!now
            .local_flags
            .intersects(LocalFlags::ICANON | LocalFlags::ECHO));
    }
    let after = tcgetattr(&slave).unwrap();
    assert_eq!(after.local_flags, before.local_flags);
    assert_eq!(after.input_flags, before.input_flags);
    assert_eq!(after.output_flags, before.output_flags);

    let raw = RawMode::enter(slave.as_fd()).unwrap();
    raw.restore().expect("restore");
    assert_eq!(tcgetattr(&slave).unwrap().local_flags, before.local_flags);
}

#[test]
fn raw_mode_on_non_terminal_errors() {
    let (r, _w) = nix::unistd::pipe().unwrap();
    let err = RawMode::enter(r.as_fd())
        .err()
        .expect("a pipe is not a terminal");
    assert!(err.to_string().contains("not a terminal"), "{err}");
}

#[test]
fn copy_winsize_between_ptys() {
    let (m1, s1) = open_pty().unwrap();
    let (m2, s2) = open_pty().unwrap();
    set_winsize(m1.as_fd(), &ws(33, 101)).unwrap();
    copy_winsize(s1.as_fd(), m2.as_fd()).expect("copy");
    let got = get_winsize(s2.as_fd()).unwrap();
    assert_eq!((got.ws_row, got.ws_col), (33, 101));
    // Not a terminal: an error, not a panic.
    let (r, _w) = nix::unistd::pipe().unwrap();
    assert!(copy_winsize(r.as_fd(), m2.as_fd()).is_err());
}

#[test]
fn relay_both_ways_until_slave_closes() {
    let (master, slave) = open_pty().unwrap();
    let (in_r, in_w) = nix::unistd::pipe().unwrap();
    let (out_r, out_w) = nix::unistd::pipe().unwrap();

    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = relay(&master, in_r.as_fd(), out_w.as_fd());
        let _ = done_tx.send(r.map_err(|e| e.to_string()));
        // master, in_r, out_w drop here.
    });

    // Container -> caller.
    nix::unistd::write(&slave, b"hello\n").unwrap();
    read_until(out_r.as_fd(), b"hello");

    // Caller -> container (the slave echoes it back too).
    nix::unistd::write(&in_w, b"abc\n").unwrap();
    read_until(slave.as_fd(), b"abc");

    // stdin EOF does not end the relay.
    drop(in_w);
    nix::unistd::write(&slave, b"after-eof\n").unwrap();
    read_until(out_r.as_fd(), b"after-eof");

    // Output written just before the last close still arrives.
    nix::unistd::write(&slave, b"bye\n").unwrap();
    drop(slave);
    let r = done_rx.recv_timeout(LIMIT).expect("relay did not return");
    assert_eq!(r, Ok(()));
    let rest = read_until(out_r.as_fd(), b"bye");
    assert!(!rest.is_empty());
}

#[test]
fn relay_large_output_while_input_pending() {
    // The container writes a lot without reading its input while the caller
    // sends a lot: neither side may deadlock.
    let (master, slave) = open_pty().unwrap();
    let raw = RawMode::enter(slave.as_fd()).unwrap(); // no echo, no line editing
    let (in_r, in_w) = nix::unistd::pipe().unwrap();
    let (out_r, out_w) = nix::unistd::pipe().unwrap();

    std::thread::spawn(move || {
        let big = vec![b'i'; 200 * 1024];
        let _ = nix::unistd::write(&in_w, &big[..64 * 1024]);
        // in_w stays open until the thread ends; relay must not care.
        std::thread::sleep(Duration::from_millis(10));
        drop(in_w);
    });
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = relay(&master, in_r.as_fd(), out_w.as_fd());
        let _ = done_tx.send(r.map_err(|e| e.to_string()));
    });
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'o'; 256 * 1024];
        let mut left = &chunk[..];
        while !left.is_empty() {
            match nix::unistd::write(&slave, left) {
                Ok(n) => left = &left[n..],
                Err(Errno::EINTR) => {}
                Err(e) => panic!("write slave: {e}"),
            }
        }
        drop(raw);
        drop(slave);
    });
    // Read all output.
    let deadline = Instant::now() + LIMIT;
    let mut total = 0usize;
    let mut buf = vec![0u8; 65536];
    loop {
        assert!(Instant::now() < deadline, "timed out after {total} bytes");
        let mut fds = [PollFd::new(out_r.as_fd(), PollFlags::POLLIN)];
        if nix::poll::poll(&mut fds, PollTimeout::from(1000u16)).unwrap_or(0) == 0 {
            continue;
        }
        match nix::unistd::read(&out_r, &mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(Errno::EINTR) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    writer.join().unwrap();
    assert_eq!(done_rx.recv_timeout(LIMIT).unwrap(), Ok(()));
    assert_eq!(total, 256 * 1024);
}

#[test]
fn relay_until_stop_drains_master() {
    let (master, slave) = open_pty().unwrap();
    let (in_r, _in_w) = nix::unistd::pipe().unwrap();
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let (stop_r, stop_w) = nix::unistd::pipe().unwrap();

    // Data already waiting in the master when stop fires is still delivered.
    nix::unistd::write(&slave, b"last-words\n").unwrap();
    drop(stop_w);
    let (r, _h) = with_limit(move || {
        relay_until(&master, in_r.as_fd(), out_w.as_fd(), Some(stop_r.as_fd()))
            .map_err(|e| e.to_string())
    });
    assert_eq!(r, Ok(()));
    read_until(out_r.as_fd(), b"last-words");
    drop(slave);
}

#[test]
fn relay_forwards_sigwinch_when_stdin_is_a_tty() {
    // The caller's terminal: a pty whose slave is relay's stdin.
    let (term_m, term_s) = open_pty().unwrap();
    set_winsize(term_m.as_fd(), &ws(10, 20)).unwrap();
    // The container's pty.
    let (master, slave) = open_pty().unwrap();
    set_winsize(master.as_fd(), &ws(1, 1)).unwrap();
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let (stop_r, stop_w) = nix::unistd::pipe().unwrap();

    let slave_fd = slave.try_clone().unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGWINCH);
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).unwrap();
        let r = relay_until(&master, term_s.as_fd(), out_w.as_fd(), Some(stop_r.as_fd()));
        let _ = done_tx.send(r.map_err(|e| e.to_string()));
    });

    let wait_for = |rows: u16, cols: u16| {
        let deadline = Instant::now() + LIMIT;
        loop {
            let w = get_winsize(slave_fd.as_fd()).unwrap();
            if (w.ws_row, w.ws_col) == (rows, cols) {
                return;
            }
            assert!(Instant::now() < deadline, "size stayed {w:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    // Initial copy at start.
    wait_for(10, 20);
    // A resize, then SIGWINCH to the relay thread (blocked there, so it stays
    // pending for the signalfd).
    set_winsize(term_m.as_fd(), &ws(40, 132)).unwrap();
    // SAFETY: the thread is still running (its handle is not joined), so
    // its pthread_t is valid; pthread_kill only queues a signal.
    let r = unsafe { libc::pthread_kill(handle.as_pthread_t(), libc::SIGWINCH) };
    assert_eq!(r, 0, "pthread_kill");
    wait_for(40, 132);

    drop(stop_w);
    assert_eq!(done_rx.recv_timeout(LIMIT).unwrap(), Ok(()));
    drop(slave);
    drop(out_r);
}

#[test]
fn make_controlling_in_a_forked_child() {
    use cubby_runtime::console::make_controlling;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::ForkResult;

    let (master, slave) = open_pty().unwrap();
    // SAFETY: the child only makes async-signal-safe calls (make_controlling
    // does not allocate on success, then raw syscalls) and ends in _exit.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        ForkResult::Child => {
            let code = match make_controlling(slave.as_fd()) {
                Ok(()) => {
                    // SAFETY: make_controlling made 0, 1 and 2 open copies of
                    // the slave; they stay open while borrowed here. (Not
                    // std::io::stdin(), which may allocate.)
                    let [fd0, fd1, fd2] = [0, 1, 2].map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
                    let me = nix::unistd::getpid();
                    let sid_ok = nix::sys::termios::tcgetsid(fd0) == Ok(me);
                    let fg_ok = nix::unistd::tcgetpgrp(fd1) == Ok(me);
                    if sid_ok && fg_ok {
                        let _ = nix::unistd::write(fd2, b"controlling\n");
                        0
                    } else {
                        2
                    }
                }
                Err(_) => 1,
            };
            // SAFETY: _exit ends the child without running the parent's
            // atexit handlers or destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(slave);
            read_until(master.as_fd(), b"controlling");
            let status = waitpid(child, None).expect("waitpid");
            assert_eq!(status, WaitStatus::Exited(child, 0));
        }
    }
}
