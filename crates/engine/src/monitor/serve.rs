//! Serving the daemon: the socket loop, request dispatch, and the input
//! side of attach streams (see [`super::server`] for the connections).

use super::*;

impl Monitor {
    /// Serves the protocol of [`crate::protocol`] on a Unix socket at
    /// `socket` until SIGTERM or SIGINT, alongside the containers.
    ///
    /// The socket is made with mode 0600. An existing socket file is
    /// removed only if nothing answers on it; if a monitor answers (or
    /// holds `<socket>.lock`), this refuses to start. On SIGTERM/SIGINT the
    /// monitor stops accepting, flushes the containers' logs, removes its
    /// socket and returns Ok; the containers keep running, for the next
    /// monitor to adopt.
    pub fn serve(&mut self, socket: &Path) -> Result<()> {
        self.server = Some(Server::bind(socket)?);
        let mut mask = SigSet::empty();
        for sig in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
            mask.add(sig);
        }
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .map_err(|e| Error::sys("block SIGTERM and SIGINT", e))?;
        self.sigfd
            .set_mask(&mask)
            .map_err(|e| Error::sys("signalfd mask", e))?;
        while !self.stop {
            if let Err(e) = self.cycle(Duration::from_millis(500)) {
                log_error(Err(e));
                // Do not spin on a persistent failure.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let ids: Vec<String> = self.live.keys().cloned().collect();
        for id in ids {
            self.drain(&Target::Container(id.clone()));
            if let Some(log) = self.live.get_mut(&id).and_then(|l| l.log.as_mut()) {
                for stream in [Stream::Stdout, Stream::Stderr] {
                    log_error(log.finish(stream));
                }
            }
        }
        if let Some(mut server) = self.server.take() {
            server.close();
        }
        Ok(())
    }

    /// Accepts, reads and answers on every connection.
    pub(super) fn serve_conns(&mut self, events: &[PollFlags]) {
        let Some(server) = &mut self.server else {
            return;
        };
        let skip = server.listener_slots();
        if skip > 0 {
            server.accept(events[0]);
        }
        let count = events.len() - skip;
        for i in 0..count {
            let ev = events[skip + i];
            let readable =
                ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR);
            let Some(server) = &mut self.server else {
                return;
            };
            let Some(c) = server.conns.get_mut(i) else {
                break;
            };
            match c.mode.clone() {
                Mode::Requests => {
                    if readable && !c.awaiting {
                        c.fill();
                    }
                    self.answer_requests(i);
                }
                Mode::Attach { target, stdin } if readable => match c.read_raw(64 * 1024) {
                    Some(data) if !data.is_empty() => {
                        if stdin {
                            self.stdin_data(&target, &data);
                        }
                    }
                    Some(_) => {}
                    None => {
                        if stdin {
                            self.stdin_closed(&target);
                        }
                    }
                },
                Mode::Events { .. } if readable => {
                    let _ = c.read_raw(4096);
                }
                _ => {}
            }
        }
    }

    /// Input from an attacher: to the process, or kept until the
    /// container starts.
    pub(super) fn stdin_data(&mut self, target: &Target, data: &[u8]) {
        if let Some(io) = self.stdio_mut(target) {
            // Never dropped: past MAX_STDIN_BUF the attachers are paused.
            if io.stdin.is_some() && !io.stdin_eof {
                io.stdin_buf.extend_from_slice(data);
                io.write_stdin();
            }
            return;
        }
        if let Target::Container(id) = target {
            if self
                .recs
                .get(id)
                .is_some_and(|r| r.status == Status::Created)
            {
                let early = self.early_stdin.entry(id.clone()).or_default();
                early.0.extend_from_slice(data);
            }
        }
    }

    /// An attacher with stdin left: execs see end of file; containers too
    /// if they asked for it (`StdinOnce`).
    pub(super) fn stdin_closed(&mut self, target: &Target) {
        let close = match target {
            Target::Exec(_) => true,
            Target::Container(id) => self.recs.get(id).is_some_and(|r| r.stdin_once),
        };
        if !close {
            return;
        }
        if let Some(io) = self.stdio_mut(target) {
            io.close_stdin();
        } else if let Target::Container(id) = target {
            if self
                .recs
                .get(id)
                .is_some_and(|r| r.status == Status::Created)
            {
                self.early_stdin.entry(id.clone()).or_default().1 = true;
            }
        }
    }

    /// Answers the complete requests of connection `i`, one at a time.
    pub(super) fn answer_requests(&mut self, i: usize) {
        for _ in 0..server::MAX_REQUESTS_PER_TURN {
            let Some(server) = &mut self.server else {
                return;
            };
            let Some(c) = server.conns.get_mut(i) else {
                return;
            };
            c.flush();
            if c.dead || !c.ready_for_request() {
                return;
            }
            let token = c.token;
            let Some(line) = c.take_line() else { return };
            let reply = match line {
                Ok(line) => match protocol::decode_request(&line) {
                    Ok(req) => self.handle(token, req),
                    Err(resp) => Reply::Now(resp),
                },
                Err(server::TooLong) => Reply::Now(Conn::too_long_response()),
            };
            let Some(server) = &mut self.server else {
                return;
            };
            let Some(c) = server.conns.get_mut(i) else {
                return;
            };
            match reply {
                Reply::Now(resp) => c.queue(&protocol::encode(&resp)),
                Reply::Later => c.awaiting = true,
                Reply::Stream(mode) => {
                    c.queue(&protocol::encode(&Response::Ok));
                    if let Mode::Events { until } = mode {
                        let since = match self.pending_since.take() {
                            Some(s) => s,
                            None => events::now_nanos(),
                        };
                        for e in self.events.between(since, until) {
                            c.queue(&protocol::encode(e));
                        }
                    }
                    c.mode = mode;
                    return;
                }
            }
        }
    }

    /// Answers one request (from connection `token`).
    pub(super) fn handle(&mut self, token: u64, req: Request) -> Reply {
        let now = |r: Result<Response>| match r {
            Ok(resp) => Reply::Now(resp),
            Err(e) => Reply::Now(Response::from(&e)),
        };
        let ok = |r: Result<()>| now(r.map(|()| Response::Ok));
        match req {
            Request::Ping => Reply::Now(Response::Ok),
            Request::Create(req) => now(self.create(*req).map(|r| Response::Record(Box::new(r)))),
            Request::Start { id } => now(self
                .start(&id)
                .and_then(|()| self.get(&id))
                .map(|r| Response::Record(Box::new(r)))),
            Request::Stop {
                id,
                timeout,
                signal,
            } => self
                .stop_container(token, &id, timeout, signal, false)
                .unwrap_or_else(|e| Reply::Now(Response::from(&e))),
            Request::Restart { id, timeout } => self
                .stop_container(token, &id, timeout, None, true)
                .unwrap_or_else(|e| Reply::Now(Response::from(&e))),
            Request::Kill { id, signal } => ok(Signal::try_from(signal)
                .map_err(|_| Error::Invalid(format!("no such signal: {signal}")))
                .and_then(|sig| self.kill(&id, sig))),
            Request::Pause { id } => ok(self.pause(&id)),
            Request::Unpause { id } => ok(self.unpause(&id)),
            Request::Rename { id, name } => ok(self.rename(&id, &name)),
            Request::Remove { id, force } => self
                .remove_container(token, &id, force)
                .unwrap_or_else(|e| Reply::Now(Response::from(&e))),
            Request::Wait { id, condition } => self
                .wait(token, &id, condition)
                .unwrap_or_else(|e| Reply::Now(Response::from(&e))),
            Request::Attach { id, stdin } => match self.get(&id) {
                Ok(_) => Reply::Stream(Mode::Attach {
                    target: Target::Container(id),
                    stdin,
                }),
                Err(e) => Reply::Now(Response::from(&e)),
            },
            Request::Resize {
                id,
                exec_id,
                height,
                width,
            } => ok(self.resize(&id, exec_id.as_deref(), height, width)),
            Request::Exec(req) => match self.exec(&req) {
                Ok(()) if req.detach => Reply::Now(Response::Ok),
                Ok(()) => Reply::Stream(Mode::Attach {
                    target: Target::Exec(req.exec_id.clone()),
                    stdin: req.stdin,
                }),
                Err(e) => Reply::Now(Response::from(&e)),
            },
            Request::ExecInspect { exec_id } => now(self.exec_state(&exec_id).map(Response::Exec)),
            Request::Events { since, until } => {
                self.pending_since = Some(since.unwrap_or_else(events::now_nanos));
                Reply::Stream(Mode::Events { until })
            }
            Request::Publish(e) => {
                self.emit(*e);
                Reply::Now(Response::Ok)
            }
            Request::List => Reply::Now(Response::Records(self.recs.values().cloned().collect())),
            Request::Reserve { id, name } => ok(self.reserve(token, &id, &name)),
            Request::Claim { id, volumes } => ok(self.claim(token, &id, volumes)),
            Request::Unreserve { id } => {
                self.unreserve(token, &id);
                Reply::Now(Response::Ok)
            }
            Request::Reservations => Reply::Now(Response::Reservations(self.reservations())),
            Request::Get { id } => now(self.get(&id).map(|r| Response::Record(Box::new(r)))),
            Request::Find { what } => {
                now(match crate::records::resolve(self.recs.values(), &what) {
                    Ok(r) => Ok(Response::Record(Box::new(r.clone()))),
                    Err(crate::records::Unresolved::NotFound) => Err(Error::NotFound(what)),
                    Err(crate::records::Unresolved::Ambiguous) => Err(Error::Invalid(format!(
                        "multiple IDs found with provided prefix: {what}"
                    ))),
                })
            }
        }
    }
}
