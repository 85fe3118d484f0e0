//! The blocking driver of the call protocol, for sync calls: it performs
//! each step the protocol asks for on the caller's thread, with the GIL
//! released around every wait and every round trip, and Python's signal
//! handlers run between wait slices (so Ctrl-C ends a wait).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::refresh::Refresh;
use super::steps::{Found, Held};
use super::{CachedFunction, Resolved, Run};
use crate::backend::redis::LockToken;
use crate::backend::Backend;
use crate::key::HashedKey;
use crate::lock::KeyGuard;
use crate::protocol::{Event, Mode, Protocol, Step};
use crate::python::errors::CacheLockTimeout;
use crate::python::region::Store;

/// What a sync call needs to start a background refresh of its key.
pub(super) struct Caller<'a, 'py> {
    pub args: &'a [Bound<'py, PyAny>],
    pub kwargs: Option<&'a Bound<'py, PyDict>>,
}

impl CachedFunction {
    /// Run one sync call (or background refresh) of `key` through the
    /// protocol. `caller` is `None` for a refresh. `missed`: the caller
    /// looked the key up just before and found nothing, which is the
    /// protocol's first look if it asks for one (a memory miss looks once).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn drive<'py>(
        slf: &Bound<'py, Self>,
        r: &Resolved,
        key: HashedKey<'_>,
        run: &Run<'_, 'py>,
        mut protocol: Protocol,
        missed: bool,
        caller: Option<Caller<'_, 'py>>,
        key_args: Option<Py<PyDict>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let this = slf.get();
        let py = slf.py();
        let writes_before = r.region.writes();
        let mut held = Held {
            key_args,
            ..Held::default()
        };
        let mut guard: Option<KeyGuard<'_>> = None;
        let mut token: Option<LockToken> = None;
        let mut result: Option<Bound<'py, PyAny>> = None;
        let mut error: Option<PyErr> = None;

        let mut perform = |step: Step| -> PyResult<Event> {
            Ok(match step {
                Step::Look => this.look_local(py, r, key, &mut held)?,
                Step::LookOrLock => {
                    match (&r.region.near, this.look_near(py, r, key, &mut held)?) {
                        (_, Some(event)) => event,
                        (Some(near), None) => {
                            let redis = redis_of(r);
                            let pass = near.pass(key);
                            let out = py.detach(|| redis.get_or_lock_expiring(key.text));
                            this.looked_or_locked_near(
                                py, r, key, pass, out, &mut held, &mut token,
                            )?
                        }
                        (None, None) => {
                            let redis = redis_of(r);
                            let out = py.detach(|| redis.get_or_lock(key.text));
                            this.looked_or_locked(py, r, out, &mut held, &mut token)?
                        }
                    }
                }
                Step::Lock { wait } => match &r.region.store {
                    Store::Redis(redis) => match py.detach(|| redis.try_lock(key.text)) {
                        Ok(Some(t)) => {
                            token = Some(t);
                            Event::Locked {
                                waited: false,
                                stored_meanwhile: false,
                            }
                        }
                        out => this.settled(py, r, out.map(|_| ()), Event::Busy)?,
                    },
                    _ => {
                        let locks = &r.region.locks;
                        let (g, waited) = match locks.try_acquire(key) {
                            Some(g) => (Some(g), false),
                            None if wait.is_zero() => (None, true),
                            None => (py.detach(|| locks.acquire(key, wait)), true),
                        };
                        if waited {
                            py.check_signals()?;
                        }
                        match g {
                            Some(g) => {
                                guard = Some(g);
                                Event::Locked {
                                    waited,
                                    stored_meanwhile: r.region.store.blocking()
                                        && r.region.writes() != writes_before,
                                }
                            }
                            None => Event::Busy,
                        }
                    }
                },
                Step::AwaitValue { newer_than, wait } => {
                    let redis = redis_of(r);
                    let out = py.detach(|| redis.wait_for_newer(key.text, newer_than, wait));
                    let event = this.awaited(py, r, out, &mut held)?;
                    if !wait.is_zero() {
                        py.check_signals()?;
                    }
                    event
                }
                Step::Discard => {
                    let redis = redis_of(r);
                    let hit = held.unreadable.take().expect("a value to discard");
                    let out = py.detach(|| redis.delete_if_unchanged(key.text, &hit));
                    r.region.wrote_key(key);
                    this.settled(py, r, out, Event::Discarded)?
                }
                Step::Keep => held.keep(),
                Step::ClaimRefresh => match this.refreshes.claim(key.hash) {
                    true => Event::Claimed,
                    false => Event::NotClaimed,
                },
                Step::Run => {
                    this.stats.miss_serialized();
                    match run() {
                        Ok(v) => {
                            result = Some(v);
                            Event::Ran
                        }
                        Err(e) => {
                            error = Some(e);
                            Event::Failed
                        }
                    }
                }
                Step::Store { extra } => {
                    let value = result.as_ref().expect("a result to store");
                    match &r.region.store {
                        Store::Redis(redis) => {
                            let to_store =
                                this.prepare_store(r, value, extra, held.key_args.as_ref())?;
                            let near = r.region.near.as_ref();
                            // A near cache settles its own entry of a value it writes.
                            let settled = near.is_some() && matches!(to_store, Some((_, Some(_))));
                            let out = match (to_store, token.take()) {
                                (Some((ttl, Some(data))), t) if settled => {
                                    let near = near.expect("a near cache");
                                    near.store(py, redis, key, value, &data, ttl, t.as_ref())
                                }
                                (Some((ttl, Some(data))), Some(t)) => {
                                    py.detach(|| redis.store_and_unlock(key.text, &data, ttl, &t))
                                }
                                (Some((ttl, Some(data))), None) => {
                                    py.detach(|| redis.set(key.text, &data, ttl))
                                }
                                (_, Some(t)) => py.detach(|| redis.unlock(key.text, &t)),
                                (_, None) => Ok(()),
                            };
                            if !settled {
                                // The next call must see this value, not a near copy.
                                r.region.wrote_key(key);
                            }
                            this.settled(py, r, out, Event::Stored)?
                        }
                        _ => this.store_local(py, r, key, value, extra, held.key_args.as_ref())?,
                    }
                }
                terminal => unreachable!("{terminal:?} is not performed"),
            })
        };

        let (mut step, used_look) = protocol.start_after_look(missed);
        if used_look {
            r.region.up();
        }
        let ended = loop {
            if step.is_terminal() {
                break Ok(step);
            }
            match perform(step) {
                Ok(event) => step = protocol.next(event),
                Err(e) => break Err(e),
            }
        };
        // Whatever happened, let go of the lock.
        drop(guard);
        if let (Some(t), Store::Redis(redis)) = (token.take(), &r.region.store) {
            // Best effort: if it fails, the lock expires after lock_timeout.
            let _ = py.detach(|| redis.unlock(key.text, &t));
        }
        let served = |found: Option<Found>| found.expect("a value to serve").value;
        match ended? {
            Step::ServeFound => {
                this.stats.hit();
                Ok(Some(served(held.found)))
            }
            Step::ServeStale { refresh } => {
                this.stats.hit();
                let found = held.found.expect("a value to serve");
                if refresh {
                    let caller = caller.expect("only a caller's call serves stale values");
                    Refresh::start(slf, key, found.created_at, caller.args, caller.kwargs)?;
                }
                Ok(Some(found.value))
            }
            Step::ReturnResult => Ok(Some(result.expect("a result").unbind())),
            Step::RaiseError => Err(error.expect("an error")),
            Step::ServeKept => Ok(Some(served(held.kept))),
            Step::RaiseLockTimeout => Err(CacheLockTimeout::new_err(format!(
                "{}: gave up after waiting {:?} for another caller's computation \
                 (on_lock_timeout='raise')",
                this.name, r.lock_timeout
            ))),
            Step::RaiseUnavailable => Err(r.region.refused()),
            Step::Done => match error {
                Some(e) => Err(e),
                None => Ok(None),
            },
            other => unreachable!("{other:?} is not terminal"),
        }
    }

    /// A sync call of `key` that was not a plain memory hit (`missed`: the
    /// caller's memory lookup found nothing, see [`Self::drive`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn call_through_protocol<'py>(
        slf: &Bound<'py, Self>,
        r: &Resolved,
        key: HashedKey<'_>,
        run: &Run<'_, 'py>,
        overwrite: bool,
        missed: bool,
        args: &[Bound<'py, PyAny>],
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let mode = if overwrite {
            Mode::Overwrite
        } else {
            Mode::Call
        };
        let this = slf.get();
        let protocol = Protocol::new(this.options(r, mode));
        let key_args = this.key_args_for(slf.py(), args, kwargs)?;
        let caller = Caller { args, kwargs };
        Ok(
            Self::drive(slf, r, key, run, protocol, missed, Some(caller), key_args)?
                .expect("a call returns a value"),
        )
    }

    /// Run a background refresh of `key` (stale since `created_at`) on this
    /// thread; the refresh's own errors are returned for logging.
    pub(super) fn refresh_now(
        slf: &Bound<'_, Self>,
        key: &str,
        created_at: f64,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let this = slf.get();
        let r = this.resolved(slf.py())?;
        let func = this.func.bind(slf.py());
        let run = || func.call(args, kwargs);
        let protocol = Protocol::refresh(this.options(&r, Mode::Refresh), created_at);
        let key_args = this.key_args_for(slf.py(), args.as_slice(), kwargs)?;
        Self::drive(
            slf,
            &r,
            HashedKey::new(key),
            &run,
            protocol,
            false,
            None,
            key_args,
        )
        .map(|_| ())
    }
}

fn redis_of(r: &Resolved) -> &crate::backend::redis::RedisBackend {
    match &r.region.store {
        Store::Redis(redis) => redis,
        _ => unreachable!("a Distributed step on a region that is not Redis"),
    }
}
