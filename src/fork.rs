//! Telling a forked child from its parent without a system call: a
//! generation that a `pthread_atfork` child handler bumps in every child of
//! `fork()` (Python's `os.fork` and `multiprocessing` go through it). State
//! that belongs to the threads of one process (who holds which key's lock,
//! which refreshes run) compares it and starts afresh in a child, where
//! those threads do not exist.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

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

#[cfg(all(test, unix))]
mod tests {
    use super::*;

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
}
