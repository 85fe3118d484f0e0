//! Telling a forked child from its parent without a system call: a
//! generation that a `pthread_atfork` child handler bumps in every child of
//! `fork()` (Python's `os.fork` and `multiprocessing` go through it). State
//! that belongs to the threads of one process (who holds which key's lock,
//! which refreshes run) compares it and starts afresh in a child, where
//! those threads do not exist.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

static GENERATION: AtomicU64 = AtomicU64::new(0);
static HOOK: Once = Once::new();

#[cfg(unix)]
extern "C" fn forked() {
    // Only an atomic add: fine in the child of fork().
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Bumped in every child of `fork()` since the first call.
#[inline]
pub fn generation() -> u64 {
    HOOK.call_once(|| {
        #[cfg(unix)]
        // SAFETY: registers a handler that only adds to an atomic.
        unsafe {
            libc::pthread_atfork(None, None, Some(forked));
        }
    });
    GENERATION.load(Ordering::Relaxed)
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
                let code = if generation() == before + 1 { 0 } else { 1 };
                unsafe { libc::_exit(code) }
            }
            pid => {
                let mut status = 0;
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
                assert_eq!(generation(), before, "the parent keeps its generation");
            }
        }
    }
}
