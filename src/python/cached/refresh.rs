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
    /// The process the claims belong to: a child forked during a refresh
    /// has no refresh thread, so it starts afresh.
    pid: u32,
    running: HashSet<u64>,
    failing: HashSet<u64>,
}

impl Claims {
    fn locked(&self) -> parking_lot::MutexGuard<'_, ClaimSet> {
        let mut set = self.inner.lock();
        let pid = std::process::id();
        if set.pid != pid {
            *set = ClaimSet {
                pid,
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
    /// Start the background refresh of `key` (its claim is held): a thread
    /// that runs the function with the caller's arguments and context and
    /// stores the result, then releases the claim. Not a daemon thread: the
    /// interpreter lets a refresh finish before it exits rather than tear it
    /// down mid-call.
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
        let kw = PyDict::new(py);
        kw.set_item("target", context.getattr("run")?)?;
        kw.set_item("args", (body,))?;
        kw.set_item("name", format!("cachu-refresh-{}", slf.get().name))?;
        py.import("threading")?
            .getattr("Thread")?
            .call((), Some(&kw))?
            .call_method0("start")?;
        Ok(())
    }
}
