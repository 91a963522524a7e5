//! Throttles meeting-password guessing (REST join-check and WebSocket join share one): after [`MAX_FAILURES`] wrong passwords for one (meeting, user)
//! within [`WINDOW`], further attempts are refused until the window passes. Per node, in memory:
//! a guesser spreading over nodes gets at most `nodes × MAX_FAILURES` tries per window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Wrong passwords allowed per window.
pub const MAX_FAILURES: u32 = 5;
/// Length of the window.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

/// Counts wrong passwords per (meeting, user).
#[derive(Default)]
pub struct JoinGuard {
    failures: Mutex<HashMap<(Uuid, Uuid), (u32, Instant)>>,
}

impl JoinGuard {
    /// Whether the caller may try a password now.
    pub fn allowed(&self, meeting: Uuid, user: Uuid) -> bool {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&(meeting, user)) {
            Some((n, since)) => *n < MAX_FAILURES || since.elapsed() > WINDOW,
            None => true,
        }
    }

    /// Records a wrong password.
    pub fn failed(&self, meeting: Uuid, user: Uuid) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SWEEP_AT {
            map.retain(|_, (_, since)| since.elapsed() <= WINDOW);
        }
        let e = map.entry((meeting, user)).or_insert((0, Instant::now()));
        if e.1.elapsed() > WINDOW {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }

    /// Forgets failures after a correct password.
    pub fn succeeded(&self, meeting: Uuid, user: Uuid) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&(meeting, user));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_and_resets_on_success() {
        let g = JoinGuard::default();
        let (m, u) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..MAX_FAILURES {
            assert!(g.allowed(m, u));
            g.failed(m, u);
        }
        assert!(!g.allowed(m, u));
        assert!(g.allowed(m, Uuid::new_v4()), "other users are unaffected");
        g.succeeded(m, u);
        assert!(g.allowed(m, u));
    }
}
