//! Login rate limits: fixed windows per key (user name, client address),
//! in memory. A restart forgets them, which errs towards letting people in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    max: u32,
    window: Duration,
    hits: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(max: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            max,
            window,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one attempt for `key`; `Err(seconds to wait)` when over.
    pub fn hit(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        if hits.len() > 100_000 {
            // Bounded memory under a spray of names: drop expired windows.
            hits.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let e = hits.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        if e.1 >= self.max {
            let wait = self.window.saturating_sub(now.duration_since(e.0));
            return Err(wait.as_secs().max(1));
        }
        e.1 += 1;
        Ok(())
    }

    /// Forgets `key` (a successful login clears the user's failures).
    pub fn clear(&self, key: &str) {
        self.hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn limits_then_clears() {
        let r = super::RateLimiter::new(2, std::time::Duration::from_secs(60));
        assert!(r.hit("a").is_ok());
        assert!(r.hit("a").is_ok());
        assert!(r.hit("a").is_err());
        assert!(r.hit("b").is_ok());
        r.clear("a");
        assert!(r.hit("a").is_ok());
    }
}
