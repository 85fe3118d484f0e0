//! When expired entries are swept, without a thread of our own.
//!
//! A sweep pass visits a store a slice at a time (a part of one shard: its
//! lock is held for one scan of the shard, and the slice removes a bounded
//! share of its expired entries). Writers carry their store's passes
//! forward, one slice per write. Stores nobody writes to are swept by the
//! calls made to the stores of the process: every read or write of a
//! watched store checks one process-wide due time (a relaxed load), and the
//! call that finds it past sweeps one slice of the most overdue watched
//! store. So memory is given back while the process makes any cache call at
//! all, and a process that makes none sweeps nothing until it does.
//!
//! No thread: a thread of ours would make every process using a memory
//! store multi-threaded, which `fork()` then warns about (Python 3.12+) and
//! which a forked child would not inherit anyway.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Weak;
use std::time::Duration;

use parking_lot::Mutex;

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

    /// Whether a pass has slices left to hand out.
    pub fn in_pass(&self) -> bool {
        self.cursor.load(Ordering::Relaxed) < self.slices
    }

    /// Seconds until the next pass may start (0 while one is in progress).
    pub fn wait(&self, now: f64) -> f64 {
        if self.in_pass() {
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

/// Something the calls of the process sweep while it is idle.
pub trait Sweep: Send + Sync {
    /// Sweep at most one slice, if a pass is due or under way at `now`;
    /// return the seconds until more is due (`None`: never).
    fn sweep_step(&self, now: f64) -> Option<f64>;
}

struct Watched {
    target: Weak<dyn Sweep>,
    /// When `target` next has something to sweep, as it last said (Unix
    /// seconds). Early is harmless (its step then finds nothing and says
    /// when); `nudge` makes it early when an interval shrinks.
    due: f64,
}

/// The stores swept by the process's calls. Its lock is held for a scan of
/// this list, never while a store is swept (sweeping drops values, which
/// may run foreign code that makes a store and watches it).
///
/// Fork: a child inherits this lock held only if another thread was inside
/// one of those scans at the fork. Python callers all hold the GIL while
/// they tick, as does the thread calling `os.fork()`, so that cannot happen
/// there; elsewhere the child's calls skip idle sweeps (`try_lock`) and
/// `watch` gives up after [`LOCK_WAIT`] rather than hang.
static WATCHED: Mutex<Vec<Watched>> = Mutex::new(Vec::new());

/// The earliest `due` of `WATCHED` (f64 bits): the one thing a call reads.
static NEXT_DUE: AtomicU64 = AtomicU64::new(0);

/// Back off this long from a store another caller is sweeping: if that
/// caller never reports (it was in another thread when the process forked),
/// the store is looked at again after this.
const CLAIM: f64 = 1.0;

/// The longest `watch` and `nudge` wait for the list (it is held for
/// microseconds; longer means the holder is gone, see [`WATCHED`]).
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// Have the calls of the process sweep `target` for as long as it lives.
/// (If the list cannot be had, `target` is swept by its writes only.)
pub fn watch(target: Weak<dyn Sweep>) {
    let Some(mut watched) = WATCHED.try_lock_for(LOCK_WAIT) else {
        return;
    };
    watched.push(Watched { target, due: 0.0 });
    NEXT_DUE.store(0f64.to_bits(), Ordering::Relaxed);
}

/// Look at every watched store on the next call (an interval changed).
pub fn nudge() {
    let Some(mut watched) = WATCHED.try_lock_for(LOCK_WAIT) else {
        return;
    };
    for w in watched.iter_mut() {
        w.due = 0.0;
    }
    NEXT_DUE.store(0f64.to_bits(), Ordering::Relaxed);
}

/// Called by every read and write of a watched store, with the caller's
/// clock: sweeps one slice of the most overdue watched store, if one is
/// due. The common case is one relaxed load and a compare.
#[inline]
pub fn tick(now: f64) {
    if now >= f64::from_bits(NEXT_DUE.load(Ordering::Relaxed)) {
        tick_due(now);
    }
}

#[cold]
#[inline(never)]
fn tick_due(now: f64) {
    let target = {
        // Another caller is scanning: it sweeps, this one carries on.
        let Some(mut watched) = WATCHED.try_lock() else {
            return;
        };
        watched.retain(|w| w.target.strong_count() > 0);
        let most_overdue = watched
            .iter_mut()
            .filter(|w| w.due <= now)
            .min_by(|a, b| a.due.total_cmp(&b.due));
        let target = most_overdue.and_then(|w| {
            w.due = now + CLAIM;
            w.target.upgrade().map(|t| (t, w.target.clone()))
        });
        publish(&watched);
        target
    };
    let Some((store, weak)) = target else {
        return;
    };
    let next = store
        .sweep_step(now)
        .map_or(f64::INFINITY, |wait| now + wait);
    // Values this store still holds are dropped by whoever drops it last,
    // outside the lock.
    let mut watched = WATCHED.lock();
    if let Some(w) = watched.iter_mut().find(|w| w.target.ptr_eq(&weak)) {
        w.due = next;
    }
    publish(&watched);
    drop(watched);
    drop(store);
}

fn publish(watched: &[Watched]) {
    let earliest = watched.iter().map(|w| w.due).fold(f64::INFINITY, f64::min);
    NEXT_DUE.store(earliest.to_bits(), Ordering::Relaxed);
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
