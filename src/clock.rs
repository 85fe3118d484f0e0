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
