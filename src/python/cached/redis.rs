//! The Redis paths of a cached function: the sync decorated call (one
//! round trip to read or lock, one to store and unlock) and the pieces the
//! async wrapper awaits, run on the engine's runtime.

use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::{CachedFunction, Resolved, Run};
use crate::backend::redis::{GetOrLock, LockToken, RedisBackend};
use crate::backend::{Backend, Hit};
use crate::key::HashedKey;
use crate::python::aio;
use crate::python::errors::to_py;
use crate::python::interruptible;
use crate::python::redis_lock::RedisLock;
use crate::python::region::Store;
use crate::python::value::{dumps, loads};

/// What a value read from Redis is good for.
pub(super) enum Verdict {
    Value(Py<PyAny>),
    Rejected(f64),
    Unreadable,
}

impl CachedFunction {
    /// What to make of a value read from Redis: use it, recompute it
    /// (`validate` rejected it; it was stored at the given time), or read
    /// again (it did not unpickle and was removed).
    pub(super) fn accept(
        &self,
        py: Python<'_>,
        r: &Resolved,
        redis: &RedisBackend,
        key: HashedKey<'_>,
        hit: Hit<Vec<u8>>,
    ) -> PyResult<Verdict> {
        let value = match loads(py, &hit.value) {
            Ok(v) => v.unbind(),
            Err(e) => {
                log::warn!(
                    "dropping a cache entry of {} that could not be read: {e}",
                    crate::sign::key_function(key.text)
                );
                if let Err(e) = py.detach(|| redis.delete_if_unchanged(key.text, &hit)) {
                    r.region.degrade(py, to_py(e))?;
                }
                return Ok(Verdict::Unreadable);
            }
        };
        Ok(match self.validated(py, value, hit.created_at)? {
            Some(v) => Verdict::Value(v),
            None => Verdict::Rejected(hit.created_at),
        })
    }

    /// A decorated call on Redis: one round trip returns the value or takes
    /// the key's distributed lock; on a miss, compute, then store and release
    /// the lock in a second round trip. Callers that find the lock taken wait
    /// (without the GIL) for the owner's value, up to `lock_timeout`. When
    /// Redis is unreachable and the region fails open, the function just runs.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn call_redis<'py>(
        &self,
        py: Python<'py>,
        r: &Resolved,
        redis: &RedisBackend,
        key: HashedKey<'_>,
        run: &Run<'_, 'py>,
        overwrite: bool,
    ) -> PyResult<Py<PyAny>> {
        if overwrite {
            return self.compute_on_redis(py, r, redis, key, run, None);
        }
        // Until the lock timeout: read or lock; if another caller holds the
        // lock, wait for its value; if it let go without storing, try again,
        // so that one caller computes, not all of them. A value `validate`
        // rejects is recomputed under the lock too, and its waiters wait for
        // a newer one (`stale` is the rejected value's `created_at`).
        let deadline = Instant::now() + r.lock_timeout;
        let mut stale: Option<f64> = None;
        let token = loop {
            let probe = match stale {
                None => py.detach(|| redis.get_or_lock(key.text)),
                Some(_) => py
                    .detach(|| redis.try_lock(key.text))
                    .map(|t| t.map_or(GetOrLock::Busy, GetOrLock::Locked)),
            };
            let probe = match probe {
                Ok(p) => {
                    r.region.up();
                    p
                }
                Err(e) => {
                    r.region.degrade(py, to_py(e))?;
                    self.stats.miss();
                    return Ok(run()?.unbind());
                }
            };
            let hit = match probe {
                GetOrLock::Locked(token) if stale.is_some() => {
                    // The lock was free, but between reading the rejected
                    // value and taking it another caller may have stored a
                    // newer one: use that instead of computing again.
                    match py.detach(|| redis.wait_for_newer(key.text, stale, Duration::ZERO)) {
                        Ok(Some(hit)) => {
                            let _ = py.detach(|| redis.unlock(key.text, &token));
                            hit
                        }
                        _ => break Some(token),
                    }
                }
                GetOrLock::Locked(token) => break Some(token),
                GetOrLock::Hit(hit) => hit,
                GetOrLock::Busy => {
                    // In slices, so that Ctrl-C can end the wait between them.
                    let left = deadline.saturating_duration_since(Instant::now());
                    let slice = left.min(interruptible::SLICE);
                    match py.detach(|| redis.wait_for_newer(key.text, stale, slice)) {
                        Ok(Some(hit)) => hit,
                        Ok(None) if Instant::now() < deadline => {
                            // The slice ended, or the holder let go without
                            // storing: look (or lock) again.
                            py.check_signals()?;
                            continue;
                        }
                        Ok(None) => break None,
                        Err(e) => {
                            r.region.degrade(py, to_py(e))?;
                            break None;
                        }
                    }
                }
            };
            match self.accept(py, r, redis, key, hit)? {
                Verdict::Value(v) => {
                    self.stats.hit();
                    return Ok(v);
                }
                Verdict::Rejected(created_at) => stale = Some(created_at),
                Verdict::Unreadable => stale = None,
            }
            if Instant::now() >= deadline {
                break None;
            }
        };
        self.compute_on_redis(py, r, redis, key, run, token)
    }

    /// Run the function and store its result on Redis, releasing `token`'s
    /// lock in the same round trip (or on any failure).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn compute_on_redis<'py>(
        &self,
        py: Python<'py>,
        r: &Resolved,
        redis: &RedisBackend,
        key: HashedKey<'_>,
        run: &Run<'_, 'py>,
        token: Option<LockToken>,
    ) -> PyResult<Py<PyAny>> {
        let unlock = |token: &Option<LockToken>| {
            if let Some(t) = token {
                // Best effort: if it fails, the lock expires after lock_timeout.
                let _ = py.detach(|| redis.unlock(key.text, t));
            }
        };
        self.stats.miss();
        let prepared = run().and_then(|result| {
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

    /// `_aget_or_lock`, or `_atry_lock` when `lock_only`: one round trip that
    /// reads the value or takes the lock (or, `lock_only`, just takes it).
    pub(super) fn alock<'py>(
        &self,
        py: Python<'py>,
        key: String,
        lock_only: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let region = self.resolved(py)?.region.clone();
        let work_region = region.clone();
        let work_key = key.clone();
        aio::spawn(
            py,
            async move {
                let Store::Redis(redis) = &work_region.store else {
                    unreachable!("an async Redis lock on a region that is not Redis")
                };
                if lock_only {
                    let token = redis.try_lock_async(&work_key).await?;
                    Ok(token.map_or(GetOrLock::Busy, GetOrLock::Locked))
                } else {
                    redis.get_or_lock_async(&work_key).await
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

    /// Behind `_await_value` (documented there).
    pub(super) fn await_value<'py>(
        &self,
        py: Python<'py>,
        key: String,
        timeout: Option<f64>,
        newer_than: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let r = self.resolved(py)?;
        let timeout = timeout.map_or(r.lock_timeout, |t| Duration::from_secs_f64(t.max(0.0)));
        let region = r.region.clone();
        let work_region = region.clone();
        aio::spawn(
            py,
            async move {
                match &work_region.store {
                    Store::Redis(redis) => {
                        redis.wait_for_newer_async(&key, newer_than, timeout).await
                    }
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

    /// Behind `_accept` (documented there): after `-1`, the caller removes the
    /// value with `_adelete_unreadable` and reads again; after `0`, it
    /// recomputes under the lock.
    pub(super) fn accept_read(
        &self,
        py: Python<'_>,
        key: &str,
        data: &[u8],
        created_at: f64,
    ) -> PyResult<(i8, Option<Py<PyAny>>)> {
        let value = match loads(py, data) {
            Ok(v) => v.unbind(),
            Err(e) => {
                log::warn!(
                    "dropping a cache entry of {} that could not be read: {e}",
                    crate::sign::key_function(key)
                );
                return Ok((-1, None));
            }
        };
        Ok(match self.validated(py, value, created_at)? {
            Some(v) => {
                self.stats.hit();
                (1, Some(v))
            }
            None => (0, None),
        })
    }

    /// Async Redis: remove `key` if it still holds the unreadable value
    /// `data` stored at `created_at`. Resolves to None; a down Redis is
    /// logged when failing open.
    pub(super) fn adelete_unreadable<'py>(
        &self,
        py: Python<'py>,
        key: String,
        data: Vec<u8>,
        created_at: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let region = self.resolved(py)?.region.clone();
        let work_region = region.clone();
        aio::spawn(
            py,
            async move {
                let hit = Hit {
                    value: data,
                    created_at,
                };
                match &work_region.store {
                    Store::Redis(redis) => redis.delete_if_unchanged_async(&key, &hit).await,
                    _ => unreachable!("_adelete_unreadable on a region that is not Redis"),
                }
            },
            move |py, out| {
                if let Err(e) = out {
                    region.degrade(py, to_py(e))?;
                }
                Ok(py.None())
            },
        )
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
