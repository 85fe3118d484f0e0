//! The work behind the call protocol's steps that both drivers share: the
//! options of a call, judging a value found, decoding what Redis returned,
//! and preparing a result for storing. Nothing here decides what comes next:
//! that is `crate::protocol`'s job.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::{CachedFunction, Resolved};
use crate::backend::redis::GetOrLock;
use crate::backend::Hit;
use crate::key::HashedKey;
use crate::protocol::{Event, Mode, Options, Shape};
use crate::python::errors::to_py;
use crate::python::near::Pass;
use crate::python::region::Store;
use crate::python::value::{dumps, loads};

/// A value the call found, with its `created_at`.
pub(super) struct Found {
    pub value: Py<PyAny>,
    pub created_at: f64,
}

/// What a step left for the driver to hold on to.
#[derive(Default)]
pub(super) struct Held {
    /// The last value found.
    pub found: Option<Found>,
    /// The stale value kept to fall back on.
    pub kept: Option<Found>,
    /// A Redis value that did not decode, to remove if unchanged.
    pub unreadable: Option<Hit<Vec<u8>>>,
    /// The call's key arguments, for the predicates that take them.
    pub key_args: Option<Py<PyDict>>,
}

impl Held {
    /// Record a decoded value and judge it: the event to report.
    pub fn found(&mut self, cf: &CachedFunction, py: Python<'_>, found: Found) -> PyResult<Event> {
        let created_at = found.created_at;
        let valid = cf.passes_validate(py, &found.value, created_at, self.key_args.as_ref())?;
        self.found = Some(found);
        Ok(Event::Found { created_at, valid })
    }

    /// Record what a Redis read returned (a value to decode, or nothing).
    pub fn read(
        &mut self,
        cf: &CachedFunction,
        py: Python<'_>,
        hit: Option<Hit<Vec<u8>>>,
    ) -> PyResult<Event> {
        let Some(hit) = hit else {
            return Ok(Event::NoValue);
        };
        match loads(py, &hit.value) {
            Ok(v) => {
                let created_at = hit.created_at;
                self.found(
                    cf,
                    py,
                    Found {
                        value: v.unbind(),
                        created_at,
                    },
                )
            }
            Err(e) => {
                log::warn!(
                    "dropping a cache entry of {} that could not be read: {e}",
                    cf.name
                );
                self.unreadable = Some(hit);
                Ok(Event::Unreadable)
            }
        }
    }

    /// Keep the value just found as the fallback.
    pub fn keep(&mut self) -> Event {
        self.kept = self.found.take();
        Event::Kept
    }
}

impl CachedFunction {
    /// The protocol's settings for a call of this function.
    pub(super) fn options(&self, r: &Resolved, mode: Mode) -> Options {
        let shape = match &r.region.store {
            Store::Redis(_) => Shape::Distributed,
            store => Shape::Local {
                blocking: store.blocking(),
            },
        };
        Options {
            shape,
            mode,
            ttl: self.fixed_ttl(),
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
            lock_timeout: r.lock_timeout,
            on_lock_timeout: r.on_lock_timeout,
            cache_deadline: r.cache_deadline,
            backend_usable: r.region.allows_call(),
            fail_open: r.region.fail_open(),
        }
    }

    /// Whether `validate` accepts `value` (true without one).
    pub(super) fn passes_validate(
        &self,
        py: Python<'_>,
        value: &Py<PyAny>,
        created_at: f64,
        key_args: Option<&Py<PyDict>>,
    ) -> PyResult<bool> {
        Ok(self
            .validated(py, value.clone_ref(py), created_at, key_args)?
            .is_some())
    }

    /// Look a Local key up: the event, with the value held.
    pub(super) fn look_local(
        &self,
        py: Python<'_>,
        r: &Resolved,
        key: HashedKey<'_>,
        held: &mut Held,
    ) -> PyResult<Event> {
        match r.region.lookup(py, key) {
            Ok(Some((value, created_at))) => {
                r.region.up();
                held.found(self, py, Found { value, created_at })
            }
            Ok(None) => {
                r.region.up();
                Ok(Event::Missing)
            }
            Err(e) => r.region.degrade(py, e).map(|_| Event::Unavailable),
        }
    }

    /// A Local look that never waits (an event loop's file read): `None`
    /// when it would wait.
    pub(super) fn look_nowait(
        &self,
        py: Python<'_>,
        r: &Resolved,
        key: HashedKey<'_>,
        held: &mut Held,
    ) -> PyResult<Option<Event>> {
        Ok(match r.region.lookup_nowait(py, key) {
            None => None,
            Some(Ok(Some((value, created_at)))) => {
                Some(held.found(self, py, Found { value, created_at })?)
            }
            Some(Ok(None)) => Some(Event::Missing),
            Some(Err(e)) => Some(r.region.degrade(py, e).map(|_| Event::Unavailable)?),
        })
    }

    /// What a look-or-lock returned, as an event (a token taken is handed
    /// back through `token`).
    pub(super) fn looked_or_locked(
        &self,
        py: Python<'_>,
        r: &Resolved,
        out: crate::Result<GetOrLock>,
        held: &mut Held,
        token: &mut Option<crate::backend::redis::LockToken>,
    ) -> PyResult<Event> {
        match out {
            Ok(GetOrLock::Hit(hit)) => {
                r.region.up();
                held.read(self, py, Some(hit))
            }
            Ok(GetOrLock::Locked(t)) => {
                r.region.up();
                *token = Some(t);
                Ok(Event::Locked {
                    waited: false,
                    stored_meanwhile: false,
                })
            }
            Ok(GetOrLock::Busy) => {
                r.region.up();
                Ok(Event::Busy)
            }
            Err(e) => r.region.degrade(py, to_py(e)).map(|_| Event::Unavailable),
        }
    }

    /// A Distributed look served by the region's near cache: the `Found`
    /// event, with the value held; `None` without a near entry.
    pub(super) fn look_near(
        &self,
        py: Python<'_>,
        r: &Resolved,
        key: HashedKey<'_>,
        held: &mut Held,
    ) -> PyResult<Option<Event>> {
        let Some(near) = &r.region.near else {
            return Ok(None);
        };
        match near.lookup(py, key) {
            Some((value, created_at)) => {
                Ok(Some(held.found(self, py, Found { value, created_at })?))
            }
            None => Ok(None),
        }
    }

    /// What a look-or-lock of a region with a near cache returned (with the
    /// key's seconds left), as an event; a value found is kept near if the
    /// read was sent under `pass`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn looked_or_locked_near(
        &self,
        py: Python<'_>,
        r: &Resolved,
        key: HashedKey<'_>,
        pass: Option<Pass>,
        out: crate::Result<(GetOrLock, f64)>,
        held: &mut Held,
        token: &mut Option<crate::backend::redis::LockToken>,
    ) -> PyResult<Event> {
        let (out, left) = match out {
            Ok((found, left)) => (Ok(found), left),
            Err(e) => (Err(e), 0.0),
        };
        let was_hit = matches!(out, Ok(GetOrLock::Hit(_)));
        let event = self.looked_or_locked(py, r, out, held, token)?;
        if let (true, Event::Found { .. }, Some(pass), Some(near), Some(found)) =
            (was_hit, &event, pass, &r.region.near, &held.found)
        {
            near.keep(key, pass, found.value.bind(py), found.created_at, left);
        }
        Ok(event)
    }

    /// An I/O outcome that carries nothing but success: `ok`, or the
    /// backend's failure as `Unavailable` (failing open) or an error.
    pub(super) fn settled(
        &self,
        py: Python<'_>,
        r: &Resolved,
        out: crate::Result<()>,
        ok: Event,
    ) -> PyResult<Event> {
        match out {
            Ok(()) => {
                r.region.up();
                Ok(ok)
            }
            Err(e) => r.region.degrade(py, to_py(e)).map(|_| Event::Unavailable),
        }
    }

    /// What a wait for another caller's value returned, as an event.
    pub(super) fn awaited(
        &self,
        py: Python<'_>,
        r: &Resolved,
        out: crate::Result<Option<Hit<Vec<u8>>>>,
        held: &mut Held,
    ) -> PyResult<Event> {
        match out {
            Ok(hit) => held.read(self, py, hit),
            Err(e) => r.region.degrade(py, to_py(e)).map(|_| Event::Unavailable),
        }
    }

    /// What storing `result` takes: the TTL (plus the stale windows'
    /// `extra`) and, for byte stores, its pickle; `None` when `cache_if`
    /// rejects it or its TTL is not positive.
    pub(super) fn prepare_store(
        &self,
        r: &Resolved,
        result: &Bound<'_, PyAny>,
        extra: f64,
        key_args: Option<&Py<PyDict>>,
    ) -> PyResult<Option<(f64, Option<Vec<u8>>)>> {
        let Some(ttl) = self.store_ttl(result, key_args)? else {
            return Ok(None);
        };
        if ttl.is_nan() || ttl <= 0.0 {
            // Nothing is stored; a Local store also removes what was there.
            return Ok(match r.region.store {
                Store::Redis(_) => None,
                _ => Some((ttl, None)),
            });
        }
        let data = match r.region.store {
            Store::Redis(_) => Some(dumps(result)?),
            _ => None,
        };
        Ok(Some((ttl + extra, data)))
    }

    /// Store a result in a Local region (the pickling, if any, happens here).
    pub(super) fn store_local(
        &self,
        py: Python<'_>,
        r: &Resolved,
        key: HashedKey<'_>,
        result: &Bound<'_, PyAny>,
        extra: f64,
        key_args: Option<&Py<PyDict>>,
    ) -> PyResult<Event> {
        let Some((ttl, _)) = self.prepare_store(r, result, extra, key_args)? else {
            return Ok(Event::Stored);
        };
        match r.region.store(py, key, result, ttl) {
            Ok(()) => {
                r.region.up();
                Ok(Event::Stored)
            }
            Err(e) => r.region.degrade(py, e).map(|_| Event::Unavailable),
        }
    }
}
