//! The Redis paths of a cached function: the sync decorated call (one
//! round trip to read or lock, one to store and unlock) and the pieces the
//! async wrapper awaits, run on the engine's runtime.

use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use super::{CachedFunction, Resolved};
use crate::backend::redis::{GetOrLock, LockToken, RedisBackend};
use crate::backend::{Backend, Hit};
use crate::key::HashedKey;
use crate::python::aio;
use crate::python::errors::to_py;
use crate::python::redis_lock::RedisLock;
use crate::python::region::Store;
use crate::python::value::{dumps, loads};
use crate::runtime;

impl CachedFunction {
    /// A value read from Redis, if it unpickles and passes `validate`; an
    /// unreadable one is removed.
    pub(super) fn accept(
        &self,
        py: Python<'_>,
        r: &Resolved,
        key: HashedKey<'_>,
        hit: Hit<Vec<u8>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let value = match loads(py, &hit.value) {
            Ok(v) => v.unbind(),
            Err(e) => {
                log::warn!(
                    "dropping cache entry {:?} that could not be read: {e}",
                    key.text
                );
                if let Err(e) = r.region.delete(py, key) {
                    r.region.degrade(py, e)?;
                }
                return Ok(None);
            }
        };
        self.validated(py, value, hit.created_at)
    }

    /// A decorated call on Redis: one round trip returns the value or takes
    /// the key's distributed lock; on a miss, compute, then store and release
    /// the lock in a second round trip. Callers that find the lock taken wait
    /// (without the GIL) for the owner's value, up to `lock_timeout`. When
    /// Redis is unreachable and the region fails open, the function just runs.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn call_redis(
        &self,
        py: Python<'_>,
        r: &Resolved,
        redis: &RedisBackend,
        key: HashedKey<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        overwrite: bool,
    ) -> PyResult<Py<PyAny>> {
        if overwrite {
            return self.compute_on_redis(py, r, redis, key, args, kwargs, None);
        }
        // Until the lock timeout: read or lock; if another caller holds the
        // lock, wait for its value; if it let go without storing, try again
        // (one of the waiters then computes, not all of them).
        let deadline = Instant::now() + r.lock_timeout;
        let token = loop {
            let probe = match py.detach(|| redis.get_or_lock(key.text)) {
                Ok(p) => {
                    r.region.up();
                    p
                }
                Err(e) => {
                    r.region.degrade(py, to_py(e))?;
                    self.stats.miss();
                    return Ok(self.func.bind(py).call(args, kwargs)?.unbind());
                }
            };
            match probe {
                GetOrLock::Hit(hit) => match self.accept(py, r, key, hit)? {
                    Some(v) => {
                        self.stats.hit();
                        return Ok(v);
                    }
                    None => break None,
                },
                GetOrLock::Locked(token) => break Some(token),
                GetOrLock::Busy => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match py.detach(|| redis.wait_for(key.text, left)) {
                        Ok(Some(hit)) => match self.accept(py, r, key, hit)? {
                            Some(v) => {
                                self.stats.hit();
                                return Ok(v);
                            }
                            None => break None,
                        },
                        Ok(None) if Instant::now() < deadline => continue,
                        Ok(None) => break None,
                        Err(e) => {
                            r.region.degrade(py, to_py(e))?;
                            break None;
                        }
                    }
                }
            }
        };
        self.compute_on_redis(py, r, redis, key, args, kwargs, token)
    }

    /// Run the function and store its result on Redis, releasing `token`'s
    /// lock in the same round trip (or on any failure).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn compute_on_redis(
        &self,
        py: Python<'_>,
        r: &Resolved,
        redis: &RedisBackend,
        key: HashedKey<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        token: Option<LockToken>,
    ) -> PyResult<Py<PyAny>> {
        let unlock = |token: &Option<LockToken>| {
            if let Some(t) = token {
                // Best effort: if it fails, the lock expires after lock_timeout.
                let _ = py.detach(|| redis.unlock(key.text, t));
            }
        };
        self.stats.miss();
        let prepared = self.func.bind(py).call(args, kwargs).and_then(|result| {
            let ttl = self.store_ttl(&result)?;
            let data = ttl.map(|_| dumps(&result)).transpose()?;
            Ok((result, ttl.zip(data)))
        });
        let (result, to_store) = match prepared {
            Ok(p) => p,
            Err(e) => {
                unlock(&token);
                return Err(e);
            }
        };
        let written = match (&to_store, &token) {
            (Some((ttl, data)), Some(t)) => {
                py.detach(|| redis.store_and_unlock(key.text, data, *ttl, t))
            }
            (Some((ttl, data)), None) => py.detach(|| redis.set(key.text, data, *ttl)),
            (None, _) => {
                unlock(&token);
                Ok(())
            }
        };
        match written {
            Ok(()) => r.region.up(),
            Err(e) => r.region.degrade(py, to_py(e))?,
        }
        Ok(result.unbind())
    }

    /// Async Redis, one round trip: resolves to `(1, (data, created_at))` for
    /// a stored value (check it with `_accept`), `(2, RedisLock)` when the
    /// caller took the key's lock, `(0, None)` when another holds it, and
    /// `(3, None)` when Redis is down and the region fails open.
    pub(super) fn aget_or_lock<'py>(
        &self,
        py: Python<'py>,
        key: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let region = self.resolved(py)?.region.clone();
        let work_region = region.clone();
        let work_key = key.clone();
        aio::spawn(
            py,
            async move {
                match &work_region.store {
                    Store::Redis(redis) => redis.get_or_lock_async(&work_key).await,
                    _ => unreachable!("_aget_or_lock on a region that is not Redis"),
                }
            },
            move |py, out| {
                let reply = match out {
                    Ok(GetOrLock::Hit(hit)) => {
                        (1, (PyBytes::new(py, &hit.value), hit.created_at)).into_pyobject(py)?
                    }
                    Ok(GetOrLock::Locked(token)) => {
                        (2, RedisLock::new(region.clone(), key, token)).into_pyobject(py)?
                    }
                    Ok(GetOrLock::Busy) => (0, py.None()).into_pyobject(py)?,
                    Err(e) => {
                        region.degrade(py, to_py(e))?;
                        return Ok((3, py.None()).into_pyobject(py)?.into_any().unbind());
                    }
                };
                region.up();
                Ok(reply.into_any().unbind())
            },
        )
    }

    /// Async Redis: wait (suspended) for another caller's value, up to the
    /// lock timeout. Resolves to `(data, created_at)` or `None`.
    pub(super) fn await_value<'py>(
        &self,
        py: Python<'py>,
        key: String,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let r = self.resolved(py)?;
        let timeout = timeout.map_or(r.lock_timeout, |t| Duration::from_secs_f64(t.max(0.0)));
        let region = r.region.clone();
        let work_region = region.clone();
        aio::spawn(
            py,
            async move {
                match &work_region.store {
                    Store::Redis(redis) => redis.wait_for_async(&key, timeout).await,
                    _ => unreachable!("_await_value on a region that is not Redis"),
                }
            },
            move |py, out| match out {
                Ok(Some(hit)) => Ok((PyBytes::new(py, &hit.value), hit.created_at)
                    .into_pyobject(py)?
                    .into_any()
                    .unbind()),
                Ok(None) => Ok(py.None()),
                Err(e) => region.degrade(py, to_py(e)).map(|_| py.None()),
            },
        )
    }

    /// A value read by the async Redis path: `(True, value)` if it unpickles
    /// and passes `validate` (a hit is counted), else `(False, None)`; an
    /// unreadable value is deleted in the background.
    pub(super) fn accept_read(
        &self,
        py: Python<'_>,
        key: String,
        data: &[u8],
        created_at: f64,
    ) -> PyResult<(bool, Option<Py<PyAny>>)> {
        let value = match loads(py, data) {
            Ok(v) => v.unbind(),
            Err(e) => {
                log::warn!("dropping cache entry {key:?} that could not be read: {e}");
                let region = self.resolved(py)?.region.clone();
                runtime::handle().spawn(async move {
                    if let Store::Redis(redis) = &region.store {
                        let _ = redis.delete_async(&key).await;
                    }
                });
                return Ok((false, None));
            }
        };
        Ok(match self.validated(py, value, created_at)? {
            Some(v) => {
                self.stats.hit();
                (true, Some(v))
            }
            None => (false, None),
        })
    }

    /// Async Redis: store a computed result (`cache_if`, TTL, pickle happen
    /// now, on the caller's thread), releasing `lock` in the same round trip
    /// when given. Resolves to None; a down Redis is logged when failing open.
    pub(super) fn astore<'py>(
        &self,
        py: Python<'py>,
        key: String,
        result: &Bound<'py, PyAny>,
        lock: Option<&Bound<'py, RedisLock>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let token = lock.and_then(|l| l.get().take());
        let prepared = self
            .store_ttl(result)
            .and_then(|ttl| ttl.map(|t| dumps(result).map(|d| (t, d))).transpose());
        let region = self.resolved(py)?.region.clone();
        let to_store = match prepared {
            Ok(p) => p,
            Err(e) => {
                if let Some(token) = token {
                    // Dropping an unused lock releases it.
                    drop(RedisLock::new(region, key, token));
                }
                return Err(e);
            }
        };
        let work_region = region.clone();
        aio::spawn(
            py,
            async move {
                let Store::Redis(redis) = &work_region.store else {
                    unreachable!("_astore on a region that is not Redis")
                };
                match (to_store, token) {
                    (Some((ttl, data)), Some(t)) => {
                        redis.store_and_unlock_async(&key, &data, ttl, &t).await
                    }
                    (Some((ttl, data)), None) => redis.set_async(&key, &data, ttl).await,
                    (None, Some(t)) => redis.unlock_async(&key, &t).await,
                    (None, None) => Ok(()),
                }
            },
            move |py, out| {
                match out {
                    Ok(()) => region.up(),
                    Err(e) => region.degrade(py, to_py(e))?,
                }
                Ok(py.None())
            },
        )
    }
}
