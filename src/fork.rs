//! Telling a forked child from its parent without a system call: a
//! generation that a `pthread_atfork` child handler bumps in every child of
//! `fork()` (Python's `os.fork` and `multiprocessing` go through it). State
//! that belongs to the threads of one process (who holds which key's lock,
//! which refreshes run) compares it and starts afresh in a child, where
//! those threads do not exist.
//!
//! [`PerProcess`] holds such state: a child never touches the parent's copy,
//! whose locks a parent thread may have held at the moment of the fork (the
//! child would wait for that lock for ever: the thread does not exist there).

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);
/// This process's id, as of the last fork (or the hook's installation).
static PID: AtomicU32 = AtomicU32::new(0);
/// 0: the fork handler is not installed, 1: being installed, 2: installed.
/// (Not a `Once`: a child forked while another thread ran a `Once` would
/// wait for that thread forever.)
static HOOK: AtomicU8 = AtomicU8::new(0);

#[cfg(unix)]
extern "C" fn forked() {
    // An atomic add and getpid (async-signal-safe): fine in the child of
    // fork().
    GENERATION.fetch_add(1, Ordering::Relaxed);
    PID.store(std::process::id(), Ordering::Relaxed);
}

/// Whether the child handler runs in every child forked from now on;
/// installs it on first use.
#[inline]
fn hooked() -> bool {
    if HOOK.load(Ordering::Acquire) == 2 {
        return true;
    }
    install()
}

#[cold]
fn install() -> bool {
    #[cfg(unix)]
    if HOOK
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
    {
        PID.store(std::process::id(), Ordering::Relaxed);
        // SAFETY: registers a handler that only touches atomics and calls
        // getpid.
        if unsafe { libc::pthread_atfork(None, None, Some(forked)) } == 0 {
            HOOK.store(2, Ordering::Release);
            return true;
        }
        // No handler (ENOMEM): stay at 1; `pid` then asks the system.
    }
    false
}

/// Bumped in every child of `fork()` since the first call.
#[inline]
pub fn generation() -> u64 {
    hooked();
    GENERATION.load(Ordering::Relaxed)
}

/// The id of this process without a system call: `getpid` was a third of
/// the system calls of a Redis hit. Until the handler is installed (or
/// where there is none) it asks the system.
#[inline]
pub fn pid() -> u32 {
    if hooked() {
        PID.load(Ordering::Relaxed)
    } else {
        std::process::id()
    }
}

/// A value that belongs to one process. A child of `fork()` makes its own
/// with `init` on first use and never touches the parent's: never locks it
/// (one of its locks may have been copied held), never drops it (what it
/// owns, such as connections, belongs to the parent). The parent's copy is
/// leaked in the child, once per fork. In the parent this costs one atomic
/// load and a compare per [`PerProcess::get`].
pub struct PerProcess<T> {
    current: AtomicPtr<Owned<T>>,
    init: fn() -> T,
}

struct Owned<T> {
    generation: u64,
    value: T,
}

impl<T> PerProcess<T> {
    /// Empty until first used; `init` makes the value of each process.
    pub const fn new(init: fn() -> T) -> Self {
        Self {
            current: AtomicPtr::new(ptr::null_mut()),
            init,
        }
    }

    /// This process's value, made now if this process has none yet.
    #[inline]
    pub fn get(&self) -> &T {
        self.get_with_generation().0
    }

    /// [`PerProcess::get`], with the fork generation it belongs to: state
    /// taken from it (a lock guard) that outlives a fork must not be given
    /// back in the child (see [`generation`]).
    #[inline]
    pub fn get_with_generation(&self) -> (&T, u64) {
        let now = generation();
        let p = self.current.load(Ordering::Acquire);
        // SAFETY: a non-null `current` points to an `Owned` that is freed
        // only by `drop` (which has `&mut self`), never while borrowed.
        if let Some(owned) = unsafe { p.as_ref() } {
            if owned.generation == now {
                return (&owned.value, now);
            }
        }
        (self.renew(p, now), now)
    }

    #[cold]
    fn renew(&self, mut seen: *mut Owned<T>, now: u64) -> &T {
        let fresh = Box::into_raw(Box::new(Owned {
            generation: now,
            value: (self.init)(),
        }));
        loop {
            match self
                .current
                .compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire)
            {
                // The one we replaced is the parent's (or null): leaked.
                // SAFETY: `fresh` is live until `drop`.
                Ok(_) => return unsafe { &(*fresh).value },
                Err(other) => {
                    // SAFETY: as in `get_with_generation`.
                    let found = unsafe { &*other };
                    if found.generation == now {
                        // Another thread of this process made one first.
                        // SAFETY: `fresh` was never shared.
                        drop(unsafe { Box::from_raw(fresh) });
                        return &found.value;
                    }
                    seen = other;
                }
            }
        }
    }
}

impl<T> Drop for PerProcess<T> {
    fn drop(&mut self) {
        let p = *self.current.get_mut();
        // SAFETY: as in `get_with_generation`; nothing borrows it any more.
        if let Some(owned) = unsafe { p.as_ref() } {
            if owned.generation == generation() {
                // SAFETY: made by `Box::into_raw` in this process.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

// SAFETY: shares `&T` between threads (needs `Sync`) and may drop a `T`
// made on another thread (needs `Send`).
unsafe impl<T: Send + Sync> Sync for PerProcess<T> {}
// SAFETY: owns a `T`.
unsafe impl<T: Send> Send for PerProcess<T> {}

impl<T: Default> Default for PerProcess<T> {
    fn default() -> Self {
        Self::new(T::default)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[test]
    fn a_child_sees_a_new_generation() {
        let before = generation();
        // SAFETY: the child only reads an atomic and exits.
        match unsafe { libc::fork() } {
            0 => {
                let ok = generation() == before + 1 && pid() == std::process::id();
                let code = if ok { 0 } else { 1 };
                unsafe { libc::_exit(code) }
            }
            child => {
                let mut status = 0;
                unsafe { libc::waitpid(child, &mut status, 0) };
                assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
                assert_eq!(generation(), before, "the parent keeps its generation");
                assert_eq!(pid(), std::process::id());
            }
        }
    }

    #[test]
    fn a_child_never_touches_the_parents_value() {
        static SHARED: PerProcess<Mutex<Vec<u32>>> = PerProcess::new(|| Mutex::new(Vec::new()));
        SHARED.get().lock().push(1);
        // A lock held across the fork, as by a thread that the child lacks.
        let held = SHARED.get().lock();
        // SAFETY: the child only uses its own fresh value and exits.
        match unsafe { libc::fork() } {
            0 => {
                let mine = SHARED.get();
                let ok = mine.lock().is_empty() && {
                    mine.lock().push(2);
                    SHARED.get().lock().as_slice() == [2]
                };
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            child => {
                drop(held);
                let mut status = 0;
                unsafe { libc::waitpid(child, &mut status, 0) };
                assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
                assert_eq!(SHARED.get().lock().as_slice(), [1]);
            }
        }
    }
}
