//! The engine's event log: what `docker events` shows. The monitor sees
//! every container state change first, so it keeps the log (a bounded ring
//! in memory, as Docker does) and streams new events to subscribers; the
//! daemon publishes image and volume events into it.

use std::collections::VecDeque;

/// Events kept for `--since` (Docker keeps 256; classes of 100 students
/// make more).
pub const EVENT_HISTORY: usize = 4096;

pub use crate::protocol::Event;

pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The most recent events, oldest first.
#[derive(Debug, Default)]
pub struct EventLog {
    ring: VecDeque<Event>,
    last_nano: i64,
}

impl EventLog {
    /// Stamps `e` (strictly increasing times, so `since` is exact) and keeps it.
    pub fn push(&mut self, mut e: Event) -> Event {
        let t = if e.time_nano > 0 {
            e.time_nano
        } else {
            now_nanos()
        };
        self.last_nano = t.max(self.last_nano + 1);
        e.time_nano = self.last_nano;
        if self.ring.len() == EVENT_HISTORY {
            self.ring.pop_front();
        }
        self.ring.push_back(e.clone());
        e
    }

    /// Events with `since <= time <= until`.
    pub fn between(&self, since: i64, until: Option<i64>) -> impl Iterator<Item = &Event> {
        self.ring
            .iter()
            .filter(move |e| e.time_nano >= since && until.is_none_or(|u| e.time_nano <= u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_order_and_bounds() {
        let mut log = EventLog::default();
        let a = log.push(Event::new("container", "create", "a"));
        let b = log.push(Event {
            time_nano: 1,
            ..Event::new("container", "start", "a")
        });
        assert!(b.time_nano > a.time_nano, "times never go back");
        assert_eq!(log.between(b.time_nano, None).count(), 1);
        assert_eq!(log.between(0, Some(a.time_nano)).count(), 1);
        for i in 0..EVENT_HISTORY + 10 {
            log.push(Event::new("container", "die", &i.to_string()));
        }
        assert_eq!(log.between(0, None).count(), EVENT_HISTORY);
        assert_eq!(log.between(0, None).next().unwrap().id, "10");
    }
}
