//! What users do with a session, measured where it happens (the routing
//! proxy and the web terminal), for idle culling. In memory: a restart
//! forgets it, which only ever delays a cull.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    /// HTTP requests and websocket upgrades proxied to the sandbox.
    pub proxied_requests: u64,
    /// Body bytes from the browser to the sandbox and back (websocket
    /// traffic included).
    pub bytes_to_sandbox: u64,
    pub bytes_from_sandbox: u64,
    /// Bytes typed into web terminals.
    pub terminal_input_bytes: u64,
    /// Unix seconds of the last request, byte or keystroke; 0 if none.
    pub last_active: i64,
}

impl Counters {
    fn add(&mut self, ev: &Event, now: i64) {
        match *ev {
            Event::Request => self.proxied_requests += 1,
            Event::ToSandbox(n) => self.bytes_to_sandbox += n,
            Event::FromSandbox(n) => self.bytes_from_sandbox += n,
            Event::TerminalInput(n) => self.terminal_input_bytes += n,
        }
        self.last_active = now;
    }
}

#[derive(Default)]
pub struct Activity {
    map: Mutex<HashMap<String, Counters>>,
    /// Since start, over all sessions (forgetting one keeps its share):
    /// the service's metrics.
    totals: Mutex<Counters>,
}

/// One kind of activity.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    Request,
    ToSandbox(u64),
    FromSandbox(u64),
    TerminalInput(u64),
}

impl Activity {
    pub fn record(&self, session: &str, ev: Event) {
        let now = crate::store::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Called per proxied body chunk: no key allocation once it exists.
        let c = match map.get_mut(session) {
            Some(c) => c,
            None => map.entry(session.to_string()).or_default(),
        };
        c.add(&ev, now);
        drop(map);
        self.totals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(&ev, now);
    }

    /// Totals since the process started.
    pub fn totals(&self) -> Counters {
        self.totals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn get(&self, session: &str) -> Counters {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(session).cloned().unwrap_or_default()
    }

    /// Forgets a session that ended.
    pub fn forget(&self, session: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(session);
    }
}
