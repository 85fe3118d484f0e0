//! One backend instance (a `(package, backend, ttl)` region), and its Python
//! face `cachu.Backend`.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyTuple};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::errors::{to_py, BackendUnavailableError};
use super::near::Near;
use super::region_async::{done, in_pool, Answer, Where};
use super::value::{dumps, loads, Stored};
use crate::backend::file::FileBackend;
use crate::backend::memory::sweep::{self, Sweep};
use crate::backend::memory::{Bounds, MemoryStore};
use crate::backend::redis::{RedisBackend, RedisOptions};
use crate::backend::Backend;
use crate::breaker::{Breaker, Transition};
use crate::clock::{now, now_coarse};
use crate::key::HashedKey;
use crate::lock::KeyLocks;
use crate::sign::{key_function, Signer};

// Regions live behind an Arc, one per (package, backend, ttl): size is moot.
#[allow(clippy::large_enum_variant)]
pub enum Store {
    Memory(MemoryStore<Stored>),
    Null,
    /// Byte stores: values travel as pickles.
    File(FileBackend),
    Redis(RedisBackend),
}

impl Store {
    /// The byte store behind a file or Redis region.
    #[inline]
    fn bytes(&self) -> Option<&dyn Backend> {
        match self {
            Store::File(f) => Some(f),
            Store::Redis(r) => Some(r),
            _ => None,
        }
    }

    /// Whether calls wait on I/O (and so release the GIL).
    #[inline]
    pub fn blocking(&self) -> bool {
        self.bytes().is_some()
    }
}

/// A value found and its `created_at`, if any.
pub type Found = Option<(Py<PyAny>, f64)>;

pub struct Region {
    pub store: Store,
    /// In-process dogpile locks for this region's keys.
    pub locks: KeyLocks,
    /// Decorated calls carry on without the cache when it is unreachable.
    fail_open: bool,
    /// Skips the backend during an outage (decorated calls only), so that
    /// an outage is logged once and costs one probe per back-off, not a
    /// timeout per call.
    breaker: Breaker,
    /// What opened the breaker, for the errors of calls it refuses.
    outage: Mutex<String>,
    /// Bumped after every write to a byte store through this region, once
    /// the write is done: a miss that saw no bump since before its lookup
    /// cannot have been filled in by another thread of this process.
    writes: AtomicU64,
    /// A Redis region's near cache (`redis_near_cache`), if on.
    pub near: Option<Near>,
}

impl Region {
    pub fn new(store: Store) -> Arc<Self> {
        Self::with_fail_open(store, false)
    }

    pub fn with_fail_open(store: Store, fail_open: bool) -> Arc<Self> {
        Self::with_near(store, fail_open, None)
    }

    pub fn with_near(store: Store, fail_open: bool, near: Option<Near>) -> Arc<Self> {
        Arc::new(Self {
            store,
            locks: KeyLocks::new(),
            fail_open,
            breaker: Breaker::new(),
            outage: Mutex::new(String::new()),
            writes: AtomicU64::new(0),
            near,
        })
    }

    /// How many writes to a byte store this region has finished.
    #[inline]
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Acquire)
    }

    #[inline]
    pub(super) fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Release);
    }

    /// A decorated call met `err`: if it is the backend being unreachable,
    /// open the breaker (logged once per outage), then carry on without the
    /// cache if the region fails open; otherwise hand the error back.
    pub fn degrade(&self, py: Python<'_>, err: PyErr) -> PyResult<()> {
        if !err.is_instance_of::<BackendUnavailableError>(py) {
            return Err(err);
        }
        if self.breaker.failed() == Transition::Opened {
            let calls = if self.fail_open {
                "calls run uncached"
            } else {
                "calls raise BackendUnavailableError at once (fail_open=False)"
            };
            log::warn!(
                "cache unavailable, {calls} (probing it every {:?} to {:?}) until it is back: {err}",
                crate::breaker::FIRST_BACKOFF,
                crate::breaker::MAX_BACKOFF
            );
            *self.outage.lock() = err.value(py).to_string();
        }
        if self.fail_open {
            Ok(())
        } else {
            Err(err)
        }
    }

    /// Whether decorated calls carry on without the cache when it is
    /// unreachable.
    pub fn fail_open(&self) -> bool {
        self.fail_open
    }

    /// The error of a decorated call refused while the breaker is open
    /// (`fail_open=False`): the backend is not tried until the next probe.
    pub fn refused(&self) -> PyErr {
        BackendUnavailableError::new_err(format!(
            "cache unavailable since a recent failure, not tried again until the next probe \
             (fail_open=False): {}",
            self.outage.lock()
        ))
    }

    /// A backend call succeeded: end the outage, if one was logged.
    #[inline]
    pub fn up(&self) {
        if self.breaker.succeeded() == Transition::Closed {
            log::info!("cache reachable again, caching resumed");
        }
    }

    /// [`Region::lookup`] of a file region if it can be done without waiting
    /// (see `FileBackend::get_nowait`); `None` for other stores or when it
    /// would wait. For event loops, which must not block.
    pub fn lookup_nowait(&self, py: Python<'_>, key: HashedKey<'_>) -> Option<PyResult<Found>> {
        let Store::File(f) = &self.store else {
            return None;
        };
        let hit = match f.get_nowait(key.text)? {
            Ok(hit) => hit,
            Err(e) => return Some(Err(to_py(e))),
        };
        Some(self.unpickle(py, key.text, hit).or_else(|Unreadable| {
            let _ = self.delete(py, key);
            Ok(None)
        }))
    }

    /// Whether a decorated call may use the backend now: false during an
    /// outage (the call runs the function without the cache), except for
    /// the one call that probes the backend once each back-off is over.
    #[inline]
    pub fn allows_call(&self) -> bool {
        self.breaker.allows()
    }

    /// The live value under `key` and its `created_at`. A value that fails
    /// to unpickle is a miss, and its entry is removed.
    #[inline]
    pub fn lookup(&self, py: Python<'_>, key: HashedKey<'_>) -> PyResult<Found> {
        match &self.store {
            Store::Memory(m) => {
                let (found, dead) =
                    m.get_with(key, now_coarse(), |v, created| (v.fetch(py), created));
                drop(dead);
                let Some((fetched, created)) = found else {
                    return Ok(None);
                };
                match fetched.into_value(py) {
                    Ok(v) => Ok(Some((v, created))),
                    Err(e) => {
                        self.discard(py, key, e);
                        Ok(None)
                    }
                }
            }
            Store::Null => Ok(None),
            Store::Redis(redis) if self.near.is_some() => self.lookup_near(py, redis, key),
            Store::File(_) | Store::Redis(_) => {
                let b = self.store.bytes().expect("byte store");
                let hit = py.detach(|| b.get(key.text)).map_err(to_py)?;
                self.unpickle(py, key.text, hit).or_else(|Unreadable| {
                    let _ = self.delete(py, key);
                    Ok(None)
                })
            }
        }
    }

    /// A byte store's hit, unpickled; `Unreadable` (logged) for an entry
    /// that does not unpickle, which the caller removes.
    pub fn unpickle(
        &self,
        py: Python<'_>,
        key: &str,
        hit: Option<crate::backend::Hit<Vec<u8>>>,
    ) -> Result<Found, Unreadable> {
        let Some(hit) = hit else { return Ok(None) };
        match loads(py, &hit.value) {
            Ok(v) => Ok(Some((v.unbind(), hit.created_at))),
            Err(e) => {
                log_unreadable(key, &e);
                Err(Unreadable)
            }
        }
    }

    /// [`Region::lookup`] of a Redis region with a near cache: the near
    /// entry, else a read that keeps what it found.
    fn lookup_near(
        &self,
        py: Python<'_>,
        redis: &RedisBackend,
        key: HashedKey<'_>,
    ) -> PyResult<Found> {
        let near = self.near.as_ref().expect("a near cache");
        if let Some(found) = near.lookup(py, key) {
            return Ok(Some(found));
        }
        let pass = near.pass(key);
        let read = py.detach(|| redis.get_expiring(key.text)).map_err(to_py)?;
        let Some((hit, left)) = read else {
            return Ok(None);
        };
        match loads(py, &hit.value) {
            Ok(v) => {
                if let Some(pass) = pass {
                    near.keep(key, pass, &v, hit.created_at, left);
                }
                Ok(Some((v.unbind(), hit.created_at)))
            }
            Err(e) => {
                self.discard(py, key, e);
                Ok(None)
            }
        }
    }

    /// This process changed `key` in Redis: its near entry must go.
    #[inline]
    pub fn wrote_key(&self, key: HashedKey<'_>) {
        if let Some(near) = &self.near {
            near.forget(key);
        }
    }

    fn discard(&self, py: Python<'_>, key: HashedKey<'_>, why: PyErr) {
        log_unreadable(key.text, &why);
        let _ = self.delete(py, key);
    }

    /// Store `value` for `ttl` seconds; `ttl <= 0` stores nothing and removes
    /// what was there. Fails (storing nothing) if the value cannot be pickled.
    pub fn store(
        &self,
        py: Python<'_>,
        key: HashedKey<'_>,
        value: &Bound<'_, PyAny>,
        ttl: f64,
    ) -> PyResult<()> {
        if ttl.is_nan() || ttl <= 0.0 {
            return self.delete(py, key).map(|_| ());
        }
        match &self.store {
            Store::Memory(m) => {
                let (stored, weight) = Stored::prepare(value)?;
                // The coarse clock is enough for `created_at` (validate's age)
                // and saves a precise read on every store.
                let t = now_coarse();
                drop(m.insert(key, stored, weight, t, t + ttl));
                Ok(())
            }
            Store::Null => Ok(()),
            Store::Redis(redis) if self.near.is_some() => {
                let data = dumps(value)?;
                let near = self.near.as_ref().expect("a near cache");
                // The near cache settles its own entry of a value it writes.
                let done = near.store(py, redis, key, value, &data, ttl, None);
                self.wrote();
                done.map_err(to_py)
            }
            Store::File(_) | Store::Redis(_) => {
                let b = self.store.bytes().expect("byte store");
                let data = dumps(value)?;
                let done = py.detach(|| b.set(key.text, &data, ttl));
                self.wrote();
                self.wrote_key(key);
                done.map_err(to_py)
            }
        }
    }

    pub fn delete(&self, py: Python<'_>, key: HashedKey<'_>) -> PyResult<bool> {
        match &self.store {
            Store::Memory(m) => Ok(m.remove(key, now()).is_some_and(|(_, live)| live)),
            Store::Null => Ok(false),
            Store::File(_) | Store::Redis(_) => {
                let b = self.store.bytes().expect("byte store");
                let done = py.detach(|| b.delete(key.text));
                self.wrote();
                self.wrote_key(key);
                done.map_err(to_py)
            }
        }
    }

    pub fn clear(&self, py: Python<'_>, pattern: Option<&str>) -> PyResult<u64> {
        match &self.store {
            Store::Memory(m) => {
                let (n, removed) = m.remove_matching(pattern, now());
                drop(removed);
                Ok(n)
            }
            Store::Null => Ok(0),
            Store::File(_) | Store::Redis(_) => {
                let b = self.store.bytes().expect("byte store");
                let done = py.detach(|| b.clear(pattern));
                self.wrote();
                if let Some(near) = &self.near {
                    near.flush();
                }
                done.map_err(to_py)
            }
        }
    }

    pub fn keys(&self, py: Python<'_>, pattern: Option<&str>) -> PyResult<Vec<String>> {
        match &self.store {
            Store::Memory(m) => Ok(m.keys_at(pattern, now())),
            Store::Null => Ok(Vec::new()),
            Store::File(_) | Store::Redis(_) => {
                let b = self.store.bytes().expect("byte store");
                py.detach(|| b.keys(pattern)).map_err(to_py)
            }
        }
    }

    pub fn count(&self, py: Python<'_>, pattern: Option<&str>) -> PyResult<u64> {
        match &self.store {
            Store::Memory(m) => Ok(m.count_at(pattern, now())),
            Store::Null => Ok(0),
            Store::File(_) | Store::Redis(_) => {
                let b = self.store.bytes().expect("byte store");
                py.detach(|| b.count(pattern)).map_err(to_py)
            }
        }
    }

    pub fn close(&self, py: Python<'_>) {
        if let Some(near) = &self.near {
            near.stop();
        }
        if let Some(b) = self.store.bytes() {
            py.detach(|| b.close());
        }
    }
}

/// An entry that could not be read (and is to be removed).
pub struct Unreadable;

fn log_unreadable(key: &str, why: &PyErr) {
    // The key's arguments may be personal data: only at debug.
    log::warn!(
        "dropping a cache entry of {} that could not be read: {why}",
        key_function(key)
    );
    log::debug!("the unreadable cache entry was {key:?}");
}

/// Idle memory regions are swept by the reads and writes of any memory
/// region (see `sweep::tick`), made by callers holding the GIL: a slice's
/// values (a few thousand at most) are released at once, in that call.
impl Sweep for Region {
    fn sweep_step(&self, now: f64) -> Option<f64> {
        let Store::Memory(m) = &self.store else {
            return None;
        };
        m.sweep_step(now, drop)
    }
}

/// `memory_maxsize` / `memory_max_bytes`: a positive int (bool is not one).
fn bound(name: &str, v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    match v.extract::<u64>() {
        Ok(n) if n > 0 && !v.is_instance_of::<pyo3::types::PyBool>() => Ok(Some(n)),
        _ => Err(PyValueError::new_err(format!(
            "{name} must be a positive integer or None, got {}",
            v.repr()?
        ))),
    }
}

fn sweep_interval(v: f64) -> PyResult<f64> {
    if v >= 0.0 {
        Ok(v)
    } else {
        Err(PyValueError::new_err(format!(
            "memory_sweep_interval must be a number of seconds >= 0 (inf: never), got {v}"
        )))
    }
}

/// The miss sentinel `cachu.backends.NO_VALUE`.
#[pyclass(module = "cachu.backends", name = "NoValue", frozen)]
pub struct NoValue;

#[pymethods]
impl NoValue {
    fn __repr__(&self) -> &'static str {
        "<NO_VALUE>"
    }
    fn __bool__(&self) -> bool {
        false
    }
}

static NO_VALUE: PyOnceLock<Py<NoValue>> = PyOnceLock::new();

pub fn no_value(py: Python<'_>) -> &Py<NoValue> {
    NO_VALUE.get_or_init(py, || Py::new(py, NoValue).expect("allocating NO_VALUE"))
}

/// A cache backend: `get`, `set`, `delete`, `clear`, `keys`, `count` over
/// mangled keys, values pickled or copied as the decorator stores them.
#[pyclass(module = "cachu", name = "Backend", subclass, frozen)]
pub struct PyBackend {
    pub region: Arc<Region>,
    kind: &'static str,
}

impl PyBackend {
    pub fn from_region(region: Arc<Region>, kind: &'static str) -> Self {
        Self { region, kind }
    }

    fn memory(&self) -> Option<&MemoryStore<Stored>> {
        match &self.region.store {
            Store::Memory(m) => Some(m),
            _ => None,
        }
    }
}

#[pymethods]
impl PyBackend {
    /// A new backend instance: `Backend('memory', maxsize=None,
    /// max_bytes=None, sweep_interval=60.0)`, `Backend('null')`,
    /// `Backend('file', path)` (an SQLite database at `path`; with
    /// `require_dir=False` its directory may be missing until first use), or
    /// `Backend('redis', url=..., socket_timeout=3.0, lock_timeout=10.0,
    /// fail_open=True, retry_count=1, health_check_interval=30.0)` (connects
    /// on first use, not here; `url` may name one server, a cluster or a
    /// Sentinel service). File and Redis backends given `signing_keys` (a
    /// list of bytes; the first signs) sign what they store and read only
    /// values that verify.
    #[new]
    #[pyo3(signature = (kind, path=None, *, url=None, socket_timeout=3.0, lock_timeout=10.0, fail_open=true, signing_keys=None, maxsize=None, max_bytes=None, sweep_interval=60.0, require_dir=true, retry_count=1, health_check_interval=30.0, near_cache=0, near_prefix=""))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        kind: &str,
        path: Option<std::path::PathBuf>,
        url: Option<&str>,
        socket_timeout: f64,
        lock_timeout: f64,
        fail_open: bool,
        signing_keys: Option<Vec<Vec<u8>>>,
        maxsize: Option<&Bound<'_, PyAny>>,
        max_bytes: Option<&Bound<'_, PyAny>>,
        sweep_interval: f64,
        require_dir: bool,
        retry_count: u32,
        health_check_interval: f64,
        near_cache: u64,
        near_prefix: &str,
    ) -> PyResult<Self> {
        let signer = signing_keys
            .map(|keys| Signer::new(keys).map(Arc::new))
            .transpose()
            .map_err(to_py)?;
        let seconds = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(PyValueError::new_err(format!(
                    "{name} must be a number of seconds >= 0, got {v}"
                )))
            }
        };
        let mut near = None;
        let (store, kind) = match (kind, path, url) {
            ("memory", None, None) => {
                let bounds = Bounds {
                    max_entries: bound("memory_maxsize", maxsize)?,
                    max_bytes: bound("memory_max_bytes", max_bytes)?,
                };
                let interval = self::sweep_interval(sweep_interval)?;
                (
                    Store::Memory(MemoryStore::with_bounds(bounds, interval)),
                    "memory",
                )
            }
            ("null", None, None) => (Store::Null, "null"),
            ("file", Some(path), None) => {
                let opened = if require_dir {
                    FileBackend::open(path)
                } else {
                    FileBackend::open_later(path)
                };
                (
                    Store::File(opened.map_err(to_py)?.with_signer(signer)),
                    "file",
                )
            }
            ("redis", None, Some(url)) => {
                let options = RedisOptions {
                    socket_timeout: seconds("redis_socket_timeout", socket_timeout)?,
                    lock_timeout: seconds("lock_timeout", lock_timeout)?,
                    retry_count,
                    health_check_interval: seconds(
                        "redis_health_check_interval",
                        health_check_interval,
                    )?,
                    ..RedisOptions::default()
                };
                let backend = RedisBackend::new(url, options).map_err(to_py)?;
                near = Near::new(&backend, near_cache, near_prefix);
                (Store::Redis(backend.with_signer(signer)), "redis")
            }
            ("file", _, _) => return Err(PyValueError::new_err("the file backend takes a path")),
            ("redis", _, _) => return Err(PyValueError::new_err("the redis backend takes url=")),
            (other, _, _) => {
                return Err(PyValueError::new_err(format!("unknown backend {other:?}")))
            }
        };
        let region = Region::with_near(store, fail_open, near);
        if let Store::Memory(_) = region.store {
            let weak: std::sync::Weak<dyn Sweep> = Arc::downgrade(&region) as _;
            sweep::watch(weak);
        }
        Ok(Self::from_region(region, kind))
    }

    /// Change a memory backend's bounds and sweep interval now; shrinking
    /// evicts down to the new bounds before it returns.
    #[pyo3(signature = (*, maxsize=None, max_bytes=None, sweep_interval=60.0))]
    fn set_bounds(
        &self,
        py: Python<'_>,
        maxsize: Option<&Bound<'_, PyAny>>,
        max_bytes: Option<&Bound<'_, PyAny>>,
        sweep_interval: f64,
    ) -> PyResult<()> {
        let Store::Memory(m) = &self.region.store else {
            return Err(PyValueError::new_err(format!(
                "only memory backends have bounds, this one is {}",
                self.kind
            )));
        };
        let bounds = Bounds {
            max_entries: bound("memory_maxsize", maxsize)?,
            max_bytes: bound("memory_max_bytes", max_bytes)?,
        };
        let interval = self::sweep_interval(sweep_interval)?;
        // Evicting runs no Python code; the evicted values drop here, with
        // the GIL, after the store's locks are released.
        let evicted = py.detach(|| m.set_bounds(bounds, interval));
        drop(evicted);
        Ok(())
    }

    /// A memory backend's `(maxsize, max_bytes, sweep_interval)`; None for
    /// other kinds.
    #[getter]
    fn bounds(&self) -> Option<(Option<u64>, Option<u64>, f64)> {
        self.memory().map(|m| {
            let b = m.bounds();
            (b.max_entries, b.max_bytes, m.sweep_interval())
        })
    }

    /// Live entries a memory backend removed to keep within its bounds,
    /// since it was made (None for other kinds).
    #[getter]
    fn evictions(&self) -> Option<u64> {
        self.memory().map(MemoryStore::evictions)
    }

    /// Expired entries a memory backend removed on its own (sweeps, the
    /// eviction hand), since it was made (None for other kinds).
    #[getter]
    fn expired_swept(&self) -> Option<u64> {
        self.memory().map(MemoryStore::expired_swept)
    }

    /// Bytes of values a memory backend holds now (None for other kinds).
    #[getter]
    fn nbytes(&self) -> Option<u64> {
        self.memory().map(MemoryStore::nbytes)
    }

    /// Entries a Redis backend's near cache holds now (0 when it has none;
    /// None for other kinds).
    #[getter]
    fn near_size(&self) -> Option<u64> {
        match &self.region.store {
            Store::Redis(_) => Some(self.region.near.as_ref().map_or(0, Near::len)),
            _ => None,
        }
    }

    /// A Redis backend's near cache: `(capacity, tracking, flushes,
    /// invalidations)`, None without one.
    #[getter]
    fn near_state(&self) -> Option<(u64, bool, u64, u64)> {
        self.region.near.as_ref().map(|n| {
            let (tracking, flushes, invalidations) = n.state();
            (n.capacity(), tracking, flushes, invalidations)
        })
    }

    /// Whether calls may wait on I/O (file, redis), so async callers run
    /// them off the event loop.
    #[getter]
    fn blocking(&self) -> bool {
        self.region.store.blocking()
    }

    /// `'memory'`, `'null'`, `'file'` or `'redis'`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.kind
    }

    /// The value under `key`, or `NO_VALUE`.
    fn get(&self, py: Python<'_>, key: &str) -> PyResult<Py<PyAny>> {
        Ok(match self.region.lookup(py, HashedKey::new(key))? {
            Some((v, _)) => v,
            None => no_value(py).clone_ref(py).into_any(),
        })
    }

    /// `(value, created_at)`, or `(NO_VALUE, None)`.
    fn get_with_metadata(&self, py: Python<'_>, key: &str) -> PyResult<(Py<PyAny>, Option<f64>)> {
        Ok(match self.region.lookup(py, HashedKey::new(key))? {
            Some((v, created)) => (v, Some(created)),
            None => (no_value(py).clone_ref(py).into_any(), None),
        })
    }

    /// Store `value` under `key` for `ttl` seconds (nothing if `ttl <= 0`).
    fn set(&self, py: Python<'_>, key: &str, value: &Bound<'_, PyAny>, ttl: f64) -> PyResult<()> {
        self.region.store(py, HashedKey::new(key), value, ttl)
    }

    /// Remove `key`.
    fn delete(&self, py: Python<'_>, key: &str) -> PyResult<()> {
        self.region.delete(py, HashedKey::new(key)).map(|_| ())
    }

    /// Remove the entries whose keys match the glob `pattern` (all if None);
    /// returns how many were removed.
    #[pyo3(signature = (pattern=None))]
    fn clear(&self, py: Python<'_>, pattern: Option<&str>) -> PyResult<u64> {
        self.region.clear(py, pattern)
    }

    /// An iterator over the live keys matching `pattern`.
    #[pyo3(signature = (pattern=None))]
    fn keys<'py>(&self, py: Python<'py>, pattern: Option<&str>) -> PyResult<Bound<'py, PyAny>> {
        let keys = self.region.keys(py, pattern)?;
        Ok(PyList::new(py, keys)?.try_iter()?.into_any())
    }

    /// How many live keys match `pattern`.
    #[pyo3(signature = (pattern=None))]
    fn count(&self, py: Python<'_>, pattern: Option<&str>) -> PyResult<u64> {
        self.region.count(py, pattern)
    }

    /// Release connections; the backend reopens them if used again.
    fn close(&self, py: Python<'_>) {
        self.region.close(py)
    }

    // The awaitable face (`aget`, `aset`, ... in `cachu.backends`): each
    // answers `(True, result)` or `(False, awaitable)`; see `region_async`.

    fn _aget(slf: &Bound<'_, Self>, key: String) -> PyResult<Answer> {
        let py = slf.py();
        slf.get().region.alookup(
            py,
            key.clone(),
            || in_pool(&slf.getattr("get")?, &PyTuple::new(py, [key])?, None),
            |py, found| {
                Ok(match found {
                    Some((v, _)) => v,
                    None => no_value(py).clone_ref(py).into_any(),
                })
            },
        )
    }

    fn _aget_with_metadata(slf: &Bound<'_, Self>, key: String) -> PyResult<Answer> {
        let py = slf.py();
        slf.get().region.alookup(
            py,
            key.clone(),
            || {
                let method = slf.getattr("get_with_metadata")?;
                in_pool(&method, &PyTuple::new(py, [key])?, None)
            },
            |py, found| {
                let pair = match found {
                    Some((v, created)) => (v, Some(created)),
                    None => (no_value(py).clone_ref(py).into_any(), None),
                };
                Ok(pair.into_pyobject(py)?.into_any().unbind())
            },
        )
    }

    fn _aset(
        slf: &Bound<'_, Self>,
        key: String,
        value: &Bound<'_, PyAny>,
        ttl: f64,
    ) -> PyResult<Answer> {
        let py = slf.py();
        let region = &slf.get().region;
        match region.store.runs() {
            Where::Inline => {
                region.store(py, HashedKey::new(&key), value, ttl)?;
                Ok(done(py.None()))
            }
            Where::Pool => {
                let key = key.into_pyobject(py)?.into_any();
                let ttl = ttl.into_pyobject(py)?.into_any();
                let args = PyTuple::new(py, [key, value.clone(), ttl])?;
                in_pool(&slf.getattr("set")?, &args, None)
            }
            Where::Native(_) => region.aset_native(py, key, value, ttl),
        }
    }

    fn _adelete(slf: &Bound<'_, Self>, key: String) -> PyResult<Answer> {
        let py = slf.py();
        let region = &slf.get().region;
        match region.store.runs() {
            Where::Inline => {
                region.delete(py, HashedKey::new(&key))?;
                Ok(done(py.None()))
            }
            Where::Pool => in_pool(&slf.getattr("delete")?, &PyTuple::new(py, [key])?, None),
            // The backend object's delete answers None, as the sync one does.
            Where::Native(_) => region.adelete_native(py, key, false),
        }
    }

    #[pyo3(signature = (pattern=None))]
    fn _aclear(slf: &Bound<'_, Self>, pattern: Option<String>) -> PyResult<Answer> {
        let py = slf.py();
        let region = &slf.get().region;
        match region.store.runs() {
            Where::Inline => Ok(done(
                region
                    .clear(py, pattern.as_deref())?
                    .into_pyobject(py)?
                    .into_any()
                    .unbind(),
            )),
            Where::Pool => in_pool(&slf.getattr("clear")?, &PyTuple::new(py, [pattern])?, None),
            Where::Native(_) => region.aclear_native(py, pattern),
        }
    }

    /// A list of the live keys matching `pattern` (the sync face's `keys`
    /// gives an iterator).
    #[pyo3(signature = (pattern=None))]
    fn _akeys(slf: &Bound<'_, Self>, pattern: Option<String>) -> PyResult<Answer> {
        let py = slf.py();
        let region = &slf.get().region;
        match region.store.runs() {
            Where::Inline => Ok(done(
                PyList::new(py, region.keys(py, pattern.as_deref())?)?
                    .into_any()
                    .unbind(),
            )),
            Where::Pool => {
                let keys = slf.getattr("_key_list")?;
                in_pool(&keys, &PyTuple::new(py, [pattern])?, None)
            }
            Where::Native(_) => region.akeys_native(py, pattern),
        }
    }

    #[pyo3(signature = (pattern=None))]
    fn _acount(slf: &Bound<'_, Self>, pattern: Option<String>) -> PyResult<Answer> {
        let py = slf.py();
        let region = &slf.get().region;
        match region.store.runs() {
            Where::Inline => Ok(done(
                region
                    .count(py, pattern.as_deref())?
                    .into_pyobject(py)?
                    .into_any()
                    .unbind(),
            )),
            Where::Pool => in_pool(&slf.getattr("count")?, &PyTuple::new(py, [pattern])?, None),
            Where::Native(_) => region.acount_native(py, pattern),
        }
    }

    /// Closing waits only for SQLite (Redis drops its idle sockets).
    fn _aclose(slf: &Bound<'_, Self>) -> PyResult<Answer> {
        let py = slf.py();
        match slf.get().region.store.runs() {
            Where::Pool => in_pool(&slf.getattr("close")?, &PyTuple::empty(py), None),
            _ => {
                slf.get().region.close(py);
                Ok(done(py.None()))
            }
        }
    }

    /// The live keys matching `pattern`, as a list.
    #[pyo3(signature = (pattern=None))]
    fn _key_list(&self, py: Python<'_>, pattern: Option<&str>) -> PyResult<Vec<String>> {
        self.region.keys(py, pattern)
    }

    fn __repr__(&self) -> String {
        format!("<cachu.Backend {}>", self.kind)
    }
}
