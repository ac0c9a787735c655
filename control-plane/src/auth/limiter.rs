//! Failed-login limiter: counts failures per account identifier and per
//! client IP in a window and locks out once a limit is reached.
//!
//! Accounts are keyed by the identifier *as typed*, whether or not it exists,
//! so lockout behaves the same for real and unknown users (no enumeration).
//! State is per process: with several replicas each enforces its own limit.

use std::collections::HashMap;
use std::sync::Mutex;

/// Entries kept before stale ones are pruned.
const MAX_ENTRIES: usize = 50_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start: i64,
    locked_until: i64,
}

/// Per-account and per-IP failure counters.
#[derive(Debug)]
pub struct LoginLimiter {
    max_account: u32,
    max_ip: u32,
    window: i64,
    entries: Mutex<HashMap<String, Entry>>,
}

impl LoginLimiter {
    /// A limiter with the given limits; `window` is both the counting window
    /// and the lockout length, in seconds.
    pub fn new(max_account: u32, max_ip: u32, window: i64) -> Self {
        Self { max_account, max_ip, window, entries: Mutex::new(HashMap::new()) }
    }

    fn keys(account: &str, ip: &str) -> [String; 2] {
        [format!("a:{}", account.to_lowercase()), format!("i:{ip}")]
    }

    /// `Err(seconds)` while the account or the IP is locked out.
    pub fn check(&self, account: &str, ip: &str, now: i64) -> Result<(), i64> {
        let Ok(map) = self.entries.lock() else { return Ok(()) };
        let wait =
            Self::keys(account, ip).iter().filter_map(|k| map.get(k)).map(|e| e.locked_until - now).max().unwrap_or(0);
        if wait > 0 { Err(wait) } else { Ok(()) }
    }

    /// Records a failure; returns true when it triggered a lockout.
    pub fn record_failure(&self, account: &str, ip: &str, now: i64) -> bool {
        let Ok(mut map) = self.entries.lock() else { return false };
        if map.len() > MAX_ENTRIES {
            map.retain(|_, e| e.locked_until > now || now - e.window_start < self.window);
        }
        let mut locked = false;
        for (key, max) in Self::keys(account, ip).into_iter().zip([self.max_account, self.max_ip]) {
            let e = map.entry(key).or_insert(Entry { failures: 0, window_start: now, locked_until: 0 });
            if now - e.window_start >= self.window {
                *e = Entry { failures: 0, window_start: now, locked_until: 0 };
            }
            e.failures += 1;
            if e.failures >= max {
                e.locked_until = now + self.window;
                locked = true;
            }
        }
        locked
    }

    /// Clears the account's counter after a successful login.
    pub fn record_success(&self, account: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.remove(&format!("a:{}", account.to_lowercase()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_account_then_expires() {
        let l = LoginLimiter::new(3, 100, 60);
        for _ in 0..2 {
            assert!(!l.record_failure("bob", "1.1.1.1", 1000));
        }
        assert!(l.check("bob", "2.2.2.2", 1000).is_ok());
        assert!(l.record_failure("Bob", "1.1.1.1", 1000));
        assert_eq!(l.check("BOB", "3.3.3.3", 1010), Err(50));
        assert!(l.check("alice", "3.3.3.3", 1010).is_ok());
        assert!(l.check("bob", "3.3.3.3", 1061).is_ok());
    }

    #[test]
    fn locks_ip_across_accounts() {
        let l = LoginLimiter::new(100, 3, 60);
        for name in ["a", "b", "c"] {
            l.record_failure(name, "9.9.9.9", 0);
        }
        assert!(l.check("zed", "9.9.9.9", 1).is_err());
        assert!(l.check("zed", "8.8.8.8", 1).is_ok());
    }
}
