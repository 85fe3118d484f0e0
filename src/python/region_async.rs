//! The awaitable face of a region, for coroutines (the backend objects'
//! `aget`/`aset`/..., the CRUD functions and a coroutine function's helpers):
//! what never waits runs inline (memory, null, a file read SQLite serves at
//! once), a Redis round trip runs on the engine's runtime (`aio`), and what
//! would block on SQLite runs in the loop's thread pool. Every operation
//! answers `(True, result)` when it is already done, or `(False,
//! awaitable)`; the shim awaits the second kind (`cachu._offloop.settle`).
//! What an operation does is the sync face's code: only where it runs
//! differs.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::aio;
use super::errors::to_py;
use super::region::{Found, Region, Store, Unreadable};
use super::value::dumps;
use crate::backend::Hit;
use crate::key::HashedKey;

/// `(done, value)`: the result, or an awaitable of it.
pub type Answer = (bool, Py<PyAny>);

/// A finished operation's answer.
pub fn done(value: Py<PyAny>) -> Answer {
    (true, value)
}

/// `callable(*args, **kwargs)` (a sync face's method) in the loop's thread pool.
pub fn in_pool(
    callable: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Answer> {
    let py = callable.py();
    let off_loop = py.import("cachu._offloop")?.getattr("off_loop")?;
    let mut all = vec![callable.clone()];
    all.extend(args.iter());
    let coro = off_loop.call(PyTuple::new(py, all)?, kwargs)?;
    Ok((false, coro.unbind()))
}

/// How an operation on `store` runs for a coroutine.
pub enum Where<'a> {
    /// On the loop's thread: it never waits.
    Inline,
    /// In the loop's thread pool: it may wait on SQLite.
    Pool,
    /// On the engine's runtime: a Redis round trip.
    Native(&'a crate::backend::redis::RedisBackend),
}

impl Store {
    /// Where an operation that writes or walks keys runs (a read of a file
    /// region may still run inline: see [`Region::alookup`]).
    pub fn runs(&self) -> Where<'_> {
        match self {
            Store::Memory(_) | Store::Null => Where::Inline,
            Store::File(_) => Where::Pool,
            Store::Redis(r) => Where::Native(r),
        }
    }
}

/// The Redis backend of a region known to be on Redis.
fn redis(region: &Region) -> &crate::backend::redis::RedisBackend {
    match &region.store {
        Store::Redis(r) => r,
        _ => unreachable!("a native operation on a region that is not Redis"),
    }
}

impl Region {
    /// Look `key` up; `finish` turns what was found into the result, on the
    /// loop's thread. `pool` is the sync face's answer, run in the thread
    /// pool when a file read would wait.
    pub fn alookup<F>(
        self: &Arc<Self>,
        py: Python<'_>,
        key: String,
        pool: impl FnOnce() -> PyResult<Answer>,
        finish: F,
    ) -> PyResult<Answer>
    where
        F: FnOnce(Python<'_>, Found) -> PyResult<Py<PyAny>> + Send + 'static,
    {
        match self.store.runs() {
            Where::Inline => Ok(done(finish(py, self.lookup(py, HashedKey::new(&key))?)?)),
            Where::Pool => match self.lookup_nowait(py, HashedKey::new(&key)) {
                Some(found) => Ok(done(finish(py, found?)?)),
                None => pool(),
            },
            Where::Native(_) => {
                let near = self.near.as_ref();
                if let Some(found) = near.and_then(|n| n.lookup(py, HashedKey::new(&key))) {
                    // A near entry is served inline, as a memory hit is.
                    return Ok(done(finish(py, Some(found))?));
                }
                // Taken before the read is sent (see the near cache's guarantee).
                let pass = near.and_then(|n| n.pass(HashedKey::new(&key)));
                let region = self.clone();
                let work = {
                    let region = region.clone();
                    let key = key.clone();
                    async move {
                        let redis = redis(&region);
                        match region.near {
                            Some(_) => redis.get_expiring_async(&key).await,
                            None => Ok(redis.get_async(&key).await?.map(|hit| (hit, 0.0))),
                        }
                    }
                };
                let then =
                    move |py: Python<'_>, out: crate::Result<Option<(Hit<Vec<u8>>, f64)>>| {
                        let read = out.map_err(to_py)?;
                        let left = read.as_ref().map_or(0.0, |(_, left)| *left);
                        match region.unpickle(py, &key, read.map(|(hit, _)| hit)) {
                            Ok(found) => {
                                if let (Some((v, created_at)), Some(pass), Some(near)) =
                                    (&found, pass, &region.near)
                                {
                                    near.keep(
                                        HashedKey::new(&key),
                                        pass,
                                        v.bind(py),
                                        *created_at,
                                        left,
                                    );
                                }
                                Ok(done(finish(py, found)?))
                            }
                            // Removed before the miss is answered, as a sync read does.
                            Err(Unreadable) => {
                                let removal =
                                    async move { redis(&region).delete_async(&key).await };
                                // A failed removal is no error of the read (nor of a sync one).
                                let answer = move |py: Python<'_>, _: crate::Result<bool>| {
                                    Ok(done(finish(py, None)?))
                                };
                                Ok((false, aio::spawn_then(py, removal, answer)?.unbind()))
                            }
                        }
                    };
                Ok((false, aio::spawn_then(py, work, then)?.unbind()))
            }
        }
    }

    /// Store `value` (pickled here, on the loop's thread) under `key` in a
    /// Redis region for `ttl` seconds (none, and the old value removed,
    /// for `ttl <= 0`); a near cache keeps it.
    pub fn aset_native(
        self: &Arc<Self>,
        py: Python<'_>,
        key: String,
        value: &Bound<'_, PyAny>,
        ttl: f64,
    ) -> PyResult<Answer> {
        let data = dumps(value)?;
        let keep = (self.near.as_ref()).map(|near| near.keeping(HashedKey::new(&key), value));
        let region = self.clone();
        let work = async move {
            let out = match (&region.near, keep) {
                // The near cache settles its own entry of a value it writes.
                (Some(near), Some(keep)) => {
                    near.store_async(redis(&region), &key, &data, ttl, None, keep)
                        .await
                }
                _ => {
                    let out = redis(&region).set_async(&key, &data, ttl).await;
                    region.wrote_key(HashedKey::new(&key));
                    out
                }
            };
            region.wrote();
            out
        };
        native(py, work, |py, ()| Ok(py.None()))
    }

    /// Remove `key` from a Redis region: whether it was there (`answer`),
    /// else None.
    pub fn adelete_native(
        self: &Arc<Self>,
        py: Python<'_>,
        key: String,
        answer: bool,
    ) -> PyResult<Answer> {
        let region = self.clone();
        let work = async move {
            let out = redis(&region).delete_async(&key).await;
            region.wrote();
            region.wrote_key(HashedKey::new(&key));
            out
        };
        native(py, work, move |py, removed| {
            Ok(match answer {
                true => pyo3::types::PyBool::new(py, removed)
                    .to_owned()
                    .into_any()
                    .unbind(),
                false => py.None(),
            })
        })
    }

    /// Clear the keys of a Redis region matching `pattern`: how many.
    pub fn aclear_native(
        self: &Arc<Self>,
        py: Python<'_>,
        pattern: Option<String>,
    ) -> PyResult<Answer> {
        let region = self.clone();
        let work = async move {
            let out = redis(&region).clear_async(pattern.as_deref()).await;
            region.wrote();
            if let Some(near) = &region.near {
                near.flush();
            }
            out
        };
        native(py, work, |py, n| {
            Ok(n.into_pyobject(py)?.into_any().unbind())
        })
    }

    /// The keys of a Redis region matching `pattern`, as a list.
    pub fn akeys_native(
        self: &Arc<Self>,
        py: Python<'_>,
        pattern: Option<String>,
    ) -> PyResult<Answer> {
        let region = self.clone();
        let work = async move { redis(&region).keys_async(pattern.as_deref()).await };
        native(py, work, |py, keys| {
            Ok(pyo3::types::PyList::new(py, keys)?.into_any().unbind())
        })
    }

    /// How many keys of a Redis region match `pattern`.
    pub fn acount_native(
        self: &Arc<Self>,
        py: Python<'_>,
        pattern: Option<String>,
    ) -> PyResult<Answer> {
        let region = self.clone();
        let work = async move { redis(&region).count_async(pattern.as_deref()).await };
        native(py, work, |py, n| {
            Ok(n.into_pyobject(py)?.into_any().unbind())
        })
    }
}

/// A Redis operation whose result needs no user code to convert: converted
/// on the runtime's thread, errors mapped to cachu's exceptions.
fn native<T, W, F>(py: Python<'_>, work: W, convert: F) -> PyResult<Answer>
where
    T: Send + 'static,
    W: std::future::Future<Output = crate::Result<T>> + Send + 'static,
    F: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let fut = aio::spawn(py, work, move |py, out| convert(py, out.map_err(to_py)?))?;
    Ok((false, fut.unbind()))
}
