//! A circuit breaker for one backend region: after a failure the backend is
//! skipped for a back-off (100 ms, doubling up to 5 s), then one caller at a
//! time probes it; the first success closes the breaker. While closed, the
//! check is one atomic load.
//!
//! It only decides; the caller reports outcomes ([`Breaker::failed`],
//! [`Breaker::succeeded`]) and logs the transitions they return.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The first back-off after the backend fails.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest back-off, reached by doubling after each failed probe.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A probe that reported nothing for this long (its caller never reached
/// the backend) no longer blocks the next one.
const PROBE_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Open {
    /// When the next probe may go.
    retry_at: Instant,
    backoff: Duration,
    /// A probe is out, since then.
    probe: Option<Instant>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Breaker {
    /// Fast path: false while closed.
    tripped: AtomicBool,
    open: Mutex<Option<Open>>,
}

/// What a reported outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing worth logging.
    None,
    /// The breaker just opened (an outage begins).
    Opened,
    /// The breaker just closed (the outage is over).
    Closed,
}

impl Breaker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a call may use the backend now: always while closed; while
    /// open, only the one caller that becomes the probe once the back-off
    /// is over.
    #[inline]
    pub fn allows(&self) -> bool {
        if !self.tripped.load(Ordering::Relaxed) {
            return true;
        }
        self.allows_at(Instant::now())
    }

    #[cold]
    fn allows_at(&self, now: Instant) -> bool {
        let mut open = self.open.lock();
        let Some(state) = open.as_mut() else {
            return true;
        };
        if state.probe.is_some_and(|since| now < since + PROBE_GRACE) || now < state.retry_at {
            return false;
        }
        state.probe = Some(now);
        true
    }

    /// Whether the breaker is open (the backend is being skipped).
    pub fn is_open(&self) -> bool {
        self.tripped.load(Ordering::Relaxed)
    }

    /// A call found the backend failing.
    pub fn failed(&self) -> Transition {
        self.failed_at(Instant::now())
    }

    fn failed_at(&self, now: Instant) -> Transition {
        let mut open = self.open.lock();
        match open.as_mut() {
            None => {
                *open = Some(Open {
                    retry_at: now + FIRST_BACKOFF,
                    backoff: FIRST_BACKOFF,
                    probe: None,
                });
                self.tripped.store(true, Ordering::Relaxed);
                Transition::Opened
            }
            Some(state) => {
                // A failed probe doubles the back-off; calls that were
                // already under way when it opened only restart it.
                if state.probe.take().is_some() {
                    state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
                }
                state.retry_at = now + state.backoff;
                Transition::None
            }
        }
    }

    /// A call used the backend successfully.
    #[inline]
    pub fn succeeded(&self) -> Transition {
        if !self.tripped.load(Ordering::Relaxed) {
            return Transition::None;
        }
        let mut open = self.open.lock();
        if open.take().is_some() {
            self.tripped.store(false, Ordering::Relaxed);
            Transition::Closed
        } else {
            Transition::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_allows_everything() {
        let b = Breaker::new();
        assert!(b.allows());
        assert_eq!(b.succeeded(), Transition::None);
        assert!(!b.is_open());
    }

    #[test]
    fn opens_backs_off_and_probes_one_at_a_time() {
        let b = Breaker::new();
        let t0 = Instant::now();
        assert_eq!(b.failed_at(t0), Transition::Opened);
        assert!(b.is_open());
        assert!(!b.allows_at(t0));
        assert!(!b.allows_at(t0 + FIRST_BACKOFF / 2));
        // After the back-off: one probe, not two.
        let t1 = t0 + FIRST_BACKOFF;
        assert!(b.allows_at(t1));
        assert!(!b.allows_at(t1));
        // The probe fails: twice the back-off.
        assert_eq!(b.failed_at(t1), Transition::None);
        assert!(!b.allows_at(t1 + FIRST_BACKOFF));
        let t2 = t1 + FIRST_BACKOFF * 2;
        assert!(b.allows_at(t2));
        // The probe succeeds: closed, everything goes again.
        assert_eq!(b.succeeded(), Transition::Closed);
        assert_eq!(b.succeeded(), Transition::None);
        assert!(b.allows_at(t2));
        assert!(b.allows_at(t2));
        // A new outage starts from the first back-off.
        assert_eq!(b.failed_at(t2), Transition::Opened);
        assert!(b.allows_at(t2 + FIRST_BACKOFF));
    }

    #[test]
    fn back_off_is_capped_and_stragglers_do_not_grow_it() {
        let b = Breaker::new();
        let mut t = Instant::now();
        b.failed_at(t);
        // Calls already under way fail too: the back-off stays.
        b.failed_at(t);
        b.failed_at(t);
        t += FIRST_BACKOFF;
        assert!(b.allows_at(t));
        b.failed_at(t);
        assert!(!b.allows_at(t + FIRST_BACKOFF));
        assert!(b.allows_at(t + FIRST_BACKOFF * 2));
        b.failed_at(t);
        for _ in 0..20 {
            t += MAX_BACKOFF;
            assert!(b.allows_at(t));
            b.failed_at(t);
        }
        assert!(!b.allows_at(t + MAX_BACKOFF - Duration::from_millis(1)));
        assert!(b.allows_at(t + MAX_BACKOFF));
    }

    #[test]
    fn a_silent_probe_does_not_block_for_ever() {
        let b = Breaker::new();
        let t0 = Instant::now();
        b.failed_at(t0);
        let t1 = t0 + FIRST_BACKOFF;
        assert!(b.allows_at(t1));
        assert!(!b.allows_at(t1 + PROBE_GRACE / 2));
        assert!(b.allows_at(t1 + PROBE_GRACE));
    }
}
