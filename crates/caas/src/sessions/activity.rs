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
        let add = |c: &mut Counters| {
            match ev {
                Event::Request => c.proxied_requests += 1,
                Event::ToSandbox(n) => c.bytes_to_sandbox += n,
                Event::FromSandbox(n) => c.bytes_from_sandbox += n,
                Event::TerminalInput(n) => c.terminal_input_bytes += n,
            }
            c.last_active = now;
        };
        add(self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(session.to_string())
            .or_default());
        add(&mut self.totals.lock().unwrap_or_else(|e| e.into_inner()));
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
