//! Background refreshes of values served stale (`stale_while_revalidate`):
//! at most one per key in a process at a time (`Claims`), run on a thread of
//! their own for sync callers, with the caller's `contextvars` context. The
//! refresh itself goes through the call protocol (`Mode::Refresh`), which on
//! Redis takes the distributed lock, so one refresh runs across processes.

use std::collections::HashSet;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict, PyTuple};

use super::CachedFunction;
use crate::key::HashedKey;

/// The keys (by hash) whose refresh runs in this process, and the keys
/// whose last refresh failed (logged once until one succeeds).
#[derive(Default)]
pub struct Claims {
    inner: Mutex<ClaimSet>,
}

#[derive(Default)]
struct ClaimSet {
    /// The `fork::generation` the claims belong to: a child forked during a
    /// refresh has no refresh thread, so it starts afresh.
    generation: u64,
    running: HashSet<u64>,
    failing: HashSet<u64>,
}

impl Claims {
    fn locked(&self) -> parking_lot::MutexGuard<'_, ClaimSet> {
        let mut set = self.inner.lock();
        let generation = crate::fork::generation();
        if set.generation != generation {
            *set = ClaimSet {
                generation,
                ..ClaimSet::default()
            };
        }
        set
    }

    /// Claim the refresh of `key`: true if none was running.
    pub fn claim(&self, key: u64) -> bool {
        self.locked().running.insert(key)
    }

    /// The refresh of `key` is over; `failed` says how. Returns whether a
    /// failure is the first since the key last refreshed (to log it).
    pub fn finish(&self, key: u64, failed: bool) -> bool {
        let mut set = self.locked();
        set.running.remove(&key);
        if failed {
            set.failing.insert(key)
        } else {
            set.failing.remove(&key);
            false
        }
    }
}

pub(super) struct Refresh;

impl Refresh {
    /// Start the background refresh of `key` (its claim is held) on a
    /// refresh thread (`cachu._refresh`): it runs the function with the
    /// caller's arguments and context and stores the result, then releases
    /// the claim. The interpreter lets refreshes in flight finish before it
    /// exits rather than tear them down mid-call.
    pub fn start(
        slf: &Bound<'_, CachedFunction>,
        key: HashedKey<'_>,
        created_at: f64,
        args: &[Bound<'_, PyAny>],
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let hash = key.hash;
        let started = Self::spawn(slf, key.text.to_owned(), created_at, args, kwargs);
        if started.is_err() {
            slf.get().refreshes.finish(hash, false);
        }
        started
    }

    fn spawn(
        slf: &Bound<'_, CachedFunction>,
        key: String,
        created_at: f64,
        args: &[Bound<'_, PyAny>],
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let args = PyTuple::new(py, args)?.unbind();
        let kwargs = kwargs.map(|k| k.copy()).transpose()?.map(Bound::unbind);
        let cf = slf.clone().unbind();
        let body = PyCFunction::new_closure(
            py,
            None,
            None,
            move |call_args: &Bound<'_, PyTuple>,
                  _kw: Option<&Bound<'_, PyDict>>|
                  -> PyResult<()> {
                let py = call_args.py();
                let cf = cf.bind(py);
                let hash = HashedKey::new(&key).hash;
                let out = CachedFunction::refresh_now(
                    cf,
                    &key,
                    created_at,
                    args.bind(py),
                    kwargs.as_ref().map(|k| k.bind(py)),
                );
                let this = cf.get();
                if let Err(e) = &out {
                    if this.refreshes.finish(hash, true) {
                        log::warn!(
                            target: "cachu",
                            "background refresh of {} failed; its stale value is served \
                             until the window ends: {e}",
                            this.name
                        );
                    }
                } else {
                    this.refreshes.finish(hash, false);
                }
                Ok(())
            },
        )?;
        let context = py.import("contextvars")?.call_method0("copy_context")?;
        py.import("cachu._refresh")?
            .getattr("submit")?
            .call1((context.getattr("run")?, body))?;
        Ok(())
    }
}
