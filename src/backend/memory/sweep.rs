//! When expired entries are swept, and the one background thread that
//! sweeps stores nobody writes to.
//!
//! A sweep pass visits the store a slice at a time (a part of one shard:
//! its lock is held for one scan of the shard, and the slice removes a
//! bounded share of its expired entries). Writers carry passes forward, one
//! slice per write; the background thread finishes the passes of stores
//! that stopped receiving writes, so that memory is given back even when a
//! process goes quiet.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

/// The pacing of sweep passes over `slices` slices.
pub struct SweepClock {
    /// Least seconds between two passes (f64 bits): 0 sweeps on every
    /// write, infinity never.
    interval: AtomicU64,
    /// When the next pass may start (f64 bits, Unix seconds).
    due: AtomicU64,
    /// The next slice of the pass in progress; `>= slices` when idle.
    cursor: AtomicUsize,
    slices: usize,
}

impl SweepClock {
    pub fn new(interval: f64, now: f64, slices: usize) -> Self {
        Self {
            interval: AtomicU64::new(interval.to_bits()),
            due: AtomicU64::new((now + interval).to_bits()),
            cursor: AtomicUsize::new(slices),
            slices,
        }
    }

    pub fn interval(&self) -> f64 {
        f64::from_bits(self.interval.load(Ordering::Relaxed))
    }

    pub fn set_interval(&self, interval: f64, now: f64) {
        self.interval.store(interval.to_bits(), Ordering::Relaxed);
        self.due
            .store((now + interval).to_bits(), Ordering::Relaxed);
    }

    /// Seconds until the next pass may start (0 while one is in progress).
    pub fn wait(&self, now: f64) -> f64 {
        if self.cursor.load(Ordering::Relaxed) < self.slices {
            return 0.0;
        }
        (f64::from_bits(self.due.load(Ordering::Relaxed)) - now).max(0.0)
    }

    /// The slice to sweep now, if a pass is due or in progress. Each slice
    /// of a pass goes to exactly one caller.
    pub fn next_slice(&self, now: f64) -> Option<usize> {
        if self.cursor.load(Ordering::Relaxed) >= self.slices {
            let due_bits = self.due.load(Ordering::Relaxed);
            let interval = self.interval();
            if now < f64::from_bits(due_bits) || !interval.is_finite() {
                return None;
            }
            // One caller wins the right to start the pass.
            let next = (now + interval).to_bits();
            if self
                .due
                .compare_exchange(due_bits, next, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                return None;
            }
            self.cursor.store(0, Ordering::Release);
        }
        let i = self.cursor.fetch_add(1, Ordering::AcqRel);
        (i < self.slices).then_some(i)
    }
}

/// Something the background thread sweeps.
pub trait Sweep: Send + Sync {
    /// Sweep whatever is due now, a slice at a time; return how long until
    /// more is due (`None`: never).
    fn sweep_due(&self) -> Option<Duration>;
}

/// The longest the background thread sleeps, so that a store whose interval
/// shrank at run time is looked at again soon.
const MAX_NAP: Duration = Duration::from_secs(1);
const MIN_NAP: Duration = Duration::from_millis(5);

struct Watched {
    /// The process whose thread serves this registry: a forked child gets a
    /// registry and a thread of its own (the parent's thread is not there,
    /// and it may have held the registry's lock at the fork).
    pid: u32,
    targets: Mutex<Vec<Weak<dyn Sweep>>>,
    wake: Condvar,
}

/// Taken only by `watch` and `nudge`, never by the sweeper thread.
static WATCHED: Mutex<Option<Arc<Watched>>> = Mutex::new(None);

fn watched() -> Arc<Watched> {
    let mut current = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
    let pid = crate::fork::pid();
    if let Some(w) = current.as_ref().filter(|w| w.pid == pid) {
        return w.clone();
    }
    let w = Arc::new(Watched {
        pid,
        targets: Mutex::new(Vec::new()),
        wake: Condvar::new(),
    });
    let for_thread = w.clone();
    // A process without this thread (it could not be spawned) still sweeps
    // on writes; the thread only adds sweeping while idle.
    let _ = std::thread::Builder::new()
        .name("cachu-sweeper".into())
        .spawn(move || run(&for_thread));
    *current = Some(w.clone());
    w
}

fn run(w: &Watched) {
    loop {
        let live: Vec<Arc<dyn Sweep>> = {
            let mut targets = w.targets.lock().unwrap_or_else(|e| e.into_inner());
            targets.retain(|t| t.strong_count() > 0);
            targets.iter().filter_map(Weak::upgrade).collect()
        };
        let mut nap = MAX_NAP;
        for t in &live {
            if let Some(wait) = t.sweep_due() {
                nap = nap.min(wait);
            }
        }
        // Release the stores before sleeping, so that dropping one is not
        // delayed by this thread.
        drop(live);
        let targets = w.targets.lock().unwrap_or_else(|e| e.into_inner());
        let _ = w.wake.wait_timeout(targets, nap.max(MIN_NAP));
    }
}

/// Have the background thread sweep `target` for as long as it lives.
pub fn watch(target: Weak<dyn Sweep>) {
    let w = watched();
    w.targets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(target);
    w.wake.notify_all();
}

/// Wake the background thread (a store's interval changed).
pub fn nudge() {
    watched().wake.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_hands_out_each_slice_once_per_interval() {
        let c = SweepClock::new(10.0, 100.0, 4);
        assert_eq!(c.next_slice(105.0), None);
        let got: Vec<_> = (0..6).map(|_| c.next_slice(110.0)).collect();
        assert_eq!(got, [Some(0), Some(1), Some(2), Some(3), None, None]);
        assert_eq!(c.next_slice(115.0), None);
        assert_eq!(c.next_slice(120.0), Some(0));
    }

    #[test]
    fn infinity_never_sweeps() {
        let c = SweepClock::new(f64::INFINITY, 100.0, 4);
        assert_eq!(c.next_slice(1e300), None);
        c.set_interval(0.0, 100.0);
        assert_eq!(c.next_slice(100.0), Some(0));
    }
}
