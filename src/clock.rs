//! Wall-clock time as Unix seconds, the unit every stored timestamp uses
//! (the reference writes `time.time()` floats into SQLite and Redis).

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, as a float.
#[inline]
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Like [`now`], but read from the kernel's coarse clock where there is one
/// (a few ns instead of ~20 on a VM, at a resolution of a few ms). Good
/// enough to decide whether an entry has expired; not for `created_at`.
#[inline]
pub fn now_coarse() -> f64 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
            return ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
        }
    }
    now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_tracks_precise() {
        let (a, b) = (now(), now_coarse());
        assert!((a - b).abs() < 0.1, "{a} vs {b}");
    }
}
