//! `CachedFunction`: what `@cache` returns for a sync function. Calling it is
//! the hot path, done in one Rust call: read the flags, build the key, look
//! it up, and otherwise run the call protocol (`crate::protocol`): the
//! blocking driver is in `blocking.rs`, the async one in `asynchronous.rs`
//! (with its Python half in `cachu/_async.py`).

mod asynchronous;
mod blocking;
mod refresh;
mod steps;
mod vectorcall;

pub use asynchronous::{warm as warm_async_steps, AsyncCall, AsyncStep};
pub use vectorcall::enable_vectorcall;

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::aio;
use super::errors::to_py;
use super::gil_slot::GilSlot;
use super::keyplan::KeyPlan;
use super::keytext::KeyText;
use super::region::{Found, PyBackend, Region, Store};
use super::region_async::{done, in_pool, Answer, Where};
use super::state;
use crate::key::{self, HashedKey};
use crate::protocol::OnLockTimeout;
use crate::stats::Stats;
use refresh::Claims;

unsafe extern "C" {
    // CPython's bound-method constructor (`types.MethodType`); pyo3-ffi does
    // not declare it.
    fn PyMethod_New(func: *mut ffi::PyObject, obj: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// How long entries live: fixed, or computed from each result.
pub enum Ttl {
    Fixed(f64),
    PerResult(Py<PyAny>),
}

/// Which of the `ttl`, `cache_if` and `validate` callables take the call's
/// key arguments as a second argument (read once, at decoration).
#[derive(Clone, Copy, Default)]
struct WithArgs {
    ttl: bool,
    cache_if: bool,
    validate: bool,
}

impl WithArgs {
    fn any(self) -> bool {
        self.ttl || self.cache_if || self.validate
    }
}

/// Runs the undecorated function with the call's arguments.
pub(super) type Run<'a, 'py> = dyn Fn() -> PyResult<Bound<'py, PyAny>> + 'a;

/// Runs the undecorated function with the call's positional arguments and
/// these keyword arguments.
pub(super) type Invoke<'a, 'py> =
    dyn Fn(Option<&Bound<'py, PyDict>>) -> PyResult<Bound<'py, PyAny>> + 'a;

/// What a function's calls need from configuration, refreshed when the
/// configuration generation changes.
struct Resolved {
    generation: u64,
    /// `"{region}:{key_prefix}{name}|"` (with `|{tag}||` for a tag).
    head: String,
    key_prefix: String,
    region: Arc<Region>,
    backend: Py<PyBackend>,
    lock_timeout: Duration,
    on_lock_timeout: OnLockTimeout,
    cache_deadline: Option<Duration>,
}

/// A [`Resolved`] as a Python object, so that a call can hold it by a
/// reference count the GIL protects instead of an atomic one.
#[pyclass(frozen)]
struct Resolution(Arc<Resolved>);

#[pyclass(module = "cachu", name = "CachedFunction", dict, weakref, frozen)]
pub struct CachedFunction {
    /// Where CPython finds this object's vectorcall entry point (the type's
    /// `tp_vectorcall_offset` points here; see `vectorcall.rs`).
    vectorcall: ffi::vectorcallfunc,
    /// Any value found is served as it is: no `validate`, no stale windows
    /// (the protocol agrees; this only spares a memory hit its setup).
    plain_hits: bool,
    func: Py<PyAny>,
    name: String,
    tag: String,
    /// The package whose settings apply, for `cachu.disable(package=...)`.
    package: Option<String>,
    region_ttl: i64,
    ttl: Ttl,
    plan: KeyPlan,
    cache_if: Option<Py<PyAny>>,
    validate: Option<Py<PyAny>>,
    entry_type: Py<PyAny>,
    with_args: WithArgs,
    /// Seconds after expiry a value is served while one refresh runs.
    stale_while_revalidate: f64,
    /// Seconds after expiry a value replaces the function's error.
    stale_if_error: f64,
    /// `() -> (key_prefix, Backend, lock_timeout, on_lock_timeout,
    /// cache_deadline)`, called by the shim's rules.
    resolver: Py<PyAny>,
    resolved: GilSlot<Resolution>,
    stats: Arc<Stats>,
    /// Background refreshes running in this process.
    refreshes: Claims,
}

/// `get`'s answer: the value found, else `default`, else `KeyError`.
fn found_or_default(
    found: Found,
    key: &str,
    default: Option<Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    match (found, default) {
        (Some((v, _)), _) => Ok(v),
        (None, Some(d)) => Ok(d.unbind()),
        (None, None) => Err(PyKeyError::new_err(format!(
            "No cached value for key {key}"
        ))),
    }
}

impl CachedFunction {
    /// `get(default?, **kwargs)`'s region, key and default.
    fn lookup_args<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<(Arc<Resolved>, String, Option<Bound<'py, PyAny>>)> {
        let kwargs = kwargs.map(|k| k.copy()).transpose()?;
        let mut default = match args.len() {
            0 => None,
            1 => Some(args.get_item(0)?),
            n => {
                return Err(PyTypeError::new_err(format!(
                    "get() takes at most 1 positional argument (the default), {n} given"
                )))
            }
        };
        if let Some(kw) = &kwargs {
            if let Some(d) = kw.get_item("default")? {
                default = Some(d);
                kw.del_item("default")?;
            }
        }
        let r = self.resolved(py)?;
        let key = self.key_string(py, &r, kwargs.as_ref())?;
        Ok((r, key, default))
    }

    /// `set(value, **kwargs)`'s region, key and TTL (kept for the stale
    /// windows too, as a computed result is).
    fn set_args(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<(Arc<Resolved>, String, f64)> {
        let r = self.resolved(py)?;
        let key = self.key_string(py, &r, kwargs)?;
        let key_args = self.key_args_for(py, &[], kwargs)?;
        let mut ttl = self.ttl_for(value, key_args.as_ref())?;
        if ttl > 0.0 {
            ttl += self.options(&r, crate::protocol::Mode::Call).keep_extra();
        }
        Ok((r, key, ttl))
    }

    #[inline]
    fn resolved(&self, py: Python<'_>) -> PyResult<Arc<Resolved>> {
        Ok(self.resolution(py)?.get().0.clone())
    }

    /// What the configuration says for this function now, worked out again
    /// when it changed.
    #[inline]
    fn resolution(&self, py: Python<'_>) -> PyResult<Py<Resolution>> {
        let generation = state::generation();
        if let Some(r) = self.resolved.load(py) {
            if r.get().0.generation == generation {
                return Ok(r);
            }
        }
        self.resolve(py, generation)
    }

    #[cold]
    fn resolve(&self, py: Python<'_>, generation: u64) -> PyResult<Py<Resolution>> {
        let (key_prefix, backend, lock_timeout, on_lock_timeout, cache_deadline): (
            String,
            Bound<'_, PyBackend>,
            f64,
            String,
            Option<f64>,
        ) = self.resolver.bind(py).call0()?.extract()?;
        let mut head = key::key_head(self.region_ttl, &key_prefix);
        head.push_str(&key::base_head(&self.name, &self.tag));
        let r = Arc::new(Resolved {
            generation,
            head,
            key_prefix,
            region: backend.get().region.clone(),
            backend: backend.unbind(),
            lock_timeout: Duration::from_secs_f64(lock_timeout.max(0.0)),
            on_lock_timeout: match on_lock_timeout.as_str() {
                "raise" => OnLockTimeout::Raise,
                _ => OnLockTimeout::Run,
            },
            cache_deadline: cache_deadline.map(|d| Duration::from_secs_f64(d.max(0.0))),
        });
        let r = Py::new(py, Resolution(r))?;
        self.resolved.store(py, r.clone_ref(py));
        Ok(r)
    }

    #[inline]
    fn write_key(
        &self,
        py: Python<'_>,
        r: &Resolved,
        k: &mut KeyText,
        args: &[Bound<'_, PyAny>],
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        k.push_str(&r.head);
        self.plan.write_params(py, k, args, kwargs)
    }

    /// The key for these keyword arguments, owned (the helpers' awaitable
    /// faces move it into their work).
    fn key_string(
        &self,
        py: Python<'_>,
        r: &Resolved,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<String> {
        let mut key = KeyText::default();
        self.write_key(py, r, &mut key, &[], kwargs)?;
        Ok(key.as_str().to_owned())
    }

    /// The TTL when it is a number: fresh values are told from stale ones
    /// by it (a TTL computed per result has no stale windows).
    fn fixed_ttl(&self) -> Option<f64> {
        match self.ttl {
            Ttl::Fixed(t) => Some(t),
            Ttl::PerResult(_) => None,
        }
    }

    /// `f(first)`, or `f(first, key_args)` for a callable that takes the
    /// call's key arguments (decided once, at decoration).
    fn call_predicate<'py>(
        f: &Py<PyAny>,
        first: &Bound<'py, PyAny>,
        key_args: Option<&Py<PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let f = f.bind(first.py());
        match key_args {
            Some(a) => f.call1((first, a.bind(first.py()))),
            None => f.call1((first,)),
        }
    }

    /// The key arguments the predicates that take them are given.
    fn key_args_for(
        &self,
        py: Python<'_>,
        args: &[Bound<'_, PyAny>],
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Option<Py<PyDict>>> {
        if !self.with_args.any() {
            return Ok(None);
        }
        Ok(Some(self.plan.key_args(py, args, kwargs)?.unbind()))
    }

    fn ttl_for(&self, result: &Bound<'_, PyAny>, key_args: Option<&Py<PyDict>>) -> PyResult<f64> {
        match &self.ttl {
            Ttl::Fixed(t) => Ok(*t),
            Ttl::PerResult(f) => {
                let t = Self::call_predicate(f, result, key_args.filter(|_| self.with_args.ttl))?;
                t.extract::<f64>().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "the ttl callable of {} returned {}, not a number of seconds",
                        self.name,
                        t.repr().map(|r| r.to_string()).unwrap_or_default()
                    ))
                })
            }
        }
    }

    /// The TTL to store `result` for, or `None` if `cache_if` rejects it.
    fn store_ttl(
        &self,
        result: &Bound<'_, PyAny>,
        key_args: Option<&Py<PyDict>>,
    ) -> PyResult<Option<f64>> {
        if let Some(cache_if) = &self.cache_if {
            let args = key_args.filter(|_| self.with_args.cache_if);
            if !Self::call_predicate(cache_if, result, args)?.is_truthy()? {
                return Ok(None);
            }
        }
        self.ttl_for(result, key_args).map(Some)
    }

    /// `value` unless `validate` rejects it.
    fn validated(
        &self,
        py: Python<'_>,
        value: Py<PyAny>,
        created_at: f64,
        key_args: Option<&Py<PyDict>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        if let Some(validate) = &self.validate {
            let age = crate::clock::now() - created_at;
            let entry = self
                .entry_type
                .bind(py)
                .call1((value.clone_ref(py), created_at, age))?;
            let args = key_args.filter(|_| self.with_args.validate);
            if !Self::call_predicate(validate, &entry, args)?.is_truthy()? {
                return Ok(None);
            }
        }
        Ok(Some(value))
    }

    /// An inert instance, only to find where PyO3 lays the struct out.
    fn for_layout(py: Python<'_>) -> PyResult<Self> {
        let none = || py.None();
        let ttl = 0i32.into_pyobject(py)?.into_any();
        Self::new(
            none(),
            String::new(),
            String::new(),
            0,
            &ttl,
            Vec::new(),
            Vec::new(),
            None,
            None,
            none(),
            0.0,
            0.0,
            none(),
            None,
            None,
            Vec::new(),
        )
    }

    /// A call: `positional` and `kwargs` are its arguments; `invoke` runs the
    /// function with them, given the keyword arguments left once the
    /// per-call flags are taken out (each call protocol has its cheapest way).
    pub(super) fn call<'py>(
        slf: &Bound<'py, Self>,
        positional: &[Bound<'py, PyAny>],
        kwargs: Option<&Bound<'py, PyDict>>,
        invoke: &Invoke<'_, 'py>,
    ) -> PyResult<Py<PyAny>> {
        let this = slf.get();
        let py = slf.py();
        let (kwargs, skip, overwrite) = Self::split_flags(py, kwargs)?;
        let kwargs = kwargs.as_ref();
        let run = || invoke(kwargs);
        if skip || state::disabled_for(this.package.as_deref(), &this.tag) {
            return Ok(run()?.unbind());
        }
        let mut text = KeyText::default();
        let resolution = this.resolution(py)?;
        let r = &resolution.get().0;
        this.write_key(py, r, &mut text, positional, kwargs)?;
        let key = HashedKey::new(&text);
        let mut missed = false;
        if !overwrite && this.plain_hits {
            // A memory hit needs no protocol (without `validate` or stale
            // windows, any value found is served).
            if let Store::Memory(_) = r.region.store {
                if let Some((v, _)) = r.region.lookup(py, key)? {
                    this.stats.hit_serialized();
                    return Ok(v);
                }
                missed = true;
            } else if let Some(near) = &r.region.near {
                // A Redis region's near entry is served as a memory hit is.
                if let Some((v, _)) = near.lookup(py, key) {
                    this.stats.hit_serialized();
                    return Ok(v);
                }
            }
        }
        // `resolution` keeps `r` alive through the call, by a reference
        // count the GIL protects (an `Arc` clone was two locked instructions).
        Self::call_through_protocol(slf, r, key, &run, overwrite, missed, positional, kwargs)
    }

    /// Keyword arguments minus the per-call flags, and the flags' values.
    fn split_flags<'py>(
        py: Python<'py>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<(Option<Bound<'py, PyDict>>, bool, bool)> {
        let Some(kw) = kwargs.filter(|k| !k.is_empty()) else {
            return Ok((None, false, false));
        };
        let skip_name = intern!(py, "_skip_cache");
        let over_name = intern!(py, "_overwrite_cache");
        let skip = kw.get_item(skip_name)?;
        let over = kw.get_item(over_name)?;
        if skip.is_none() && over.is_none() {
            return Ok((Some(kw.clone()), false, false));
        }
        let kw = kw.copy()?;
        let _ = kw.del_item(skip_name);
        let _ = kw.del_item(over_name);
        let truthy = |v: Option<Bound<'_, PyAny>>| {
            v.map(|v| v.is_truthy())
                .transpose()
                .map(|b| b.unwrap_or(false))
        };
        Ok((Some(kw), truthy(skip)?, truthy(over)?))
    }
}

/// `module.qualname` of a decorated function, for messages (`name` if it
/// has neither).
fn owner_name(func: &Bound<'_, PyAny>, name: &str) -> String {
    let py = func.py();
    let text = |attr: &Bound<'_, pyo3::types::PyString>| {
        func.getattr(attr)
            .ok()
            .and_then(|v| v.extract::<String>().ok())
    };
    let qualname = text(intern!(py, "__qualname__")).unwrap_or_else(|| name.to_owned());
    match text(intern!(py, "__module__")) {
        Some(module) => format!("{module}.{qualname}"),
        None => qualname,
    }
}

#[pymethods]
impl CachedFunction {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (func, name, tag, region_ttl, ttl, params, exclude, cache_if, validate, entry_type, stale_while_revalidate, stale_if_error, resolver, keep_in_key=None, package=None, with_args=Vec::new()))]
    fn new(
        func: Py<PyAny>,
        name: String,
        tag: String,
        region_ttl: i64,
        ttl: &Bound<'_, PyAny>,
        params: Vec<(String, bool, Py<PyAny>)>,
        exclude: Vec<String>,
        cache_if: Option<Py<PyAny>>,
        validate: Option<Py<PyAny>>,
        entry_type: Py<PyAny>,
        stale_while_revalidate: f64,
        stale_if_error: f64,
        resolver: Py<PyAny>,
        keep_in_key: Option<Vec<String>>,
        package: Option<String>,
        with_args: Vec<String>,
    ) -> PyResult<Self> {
        let takes = |name: &str| with_args.iter().any(|n| n == name);
        let with_args = WithArgs {
            ttl: takes("ttl"),
            cache_if: takes("cache_if"),
            validate: takes("validate"),
        };
        let owner = owner_name(func.bind(ttl.py()), &name);
        let ttl = if ttl.is_callable() {
            Ttl::PerResult(ttl.clone().unbind())
        } else {
            Ttl::Fixed(ttl.extract()?)
        };
        let plain_hits =
            validate.is_none() && stale_while_revalidate <= 0.0 && stale_if_error <= 0.0;
        Ok(Self {
            vectorcall: vectorcall::entry,
            plain_hits,
            func,
            name,
            tag,
            package,
            region_ttl,
            ttl,
            plan: KeyPlan::new(
                params
                    .into_iter()
                    .map(|(name, has_default, default)| (name, has_default.then_some(default)))
                    .collect(),
                exclude,
                keep_in_key.unwrap_or_default(),
                owner,
            ),
            cache_if,
            validate,
            entry_type,
            with_args,
            stale_while_revalidate,
            stale_if_error,
            resolver,
            resolved: GilSlot::empty(),
            stats: Stats::registered(),
            refreshes: Claims::default(),
        })
    }

    /// The `tp_call` face; CPython mostly takes the vectorcall one
    /// (`vectorcall.rs`), which makes no argument tuple.
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        slf: &Bound<'_, Self>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let func = slf.get().func.bind(slf.py());
        Self::call(slf, args.as_slice(), kwargs, &|kw| func.call(args, kw))
    }

    /// Pickled (and copied) by reference, as a function is: the name under
    /// which its module holds it (`functools.wraps` set `__qualname__` and
    /// `__module__`), so `multiprocessing` can hand it to workers.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.getattr(intern!(slf.py(), "__qualname__"))
    }

    /// Bind as a method when looked up on an instance.
    fn __get__(
        slf: &Bound<'_, Self>,
        obj: Option<&Bound<'_, PyAny>>,
        _owner: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        match obj {
            Some(obj) if !obj.is_none() => unsafe {
                Ok(Bound::from_owned_ptr_or_err(
                    slf.py(),
                    PyMethod_New(slf.as_ptr(), obj.as_ptr()),
                )?
                .unbind())
            },
            _ => Ok(slf.clone().into_any().unbind()),
        }
    }

    /// The cached value for these keyword arguments, without calling the
    /// function. Raises `KeyError` if there is none, unless `default` is given.
    #[pyo3(signature = (*args, **kwargs))]
    fn get(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let (r, key, default) = self.lookup_args(py, args, kwargs)?;
        let found = r.region.lookup(py, HashedKey::new(&key))?;
        found_or_default(found, &key, default)
    }

    /// Store `value` as the result for these keyword arguments.
    #[pyo3(signature = (value, **kwargs))]
    fn set(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let (r, key, ttl) = self.set_args(py, value, kwargs)?;
        r.region.store(py, HashedKey::new(&key), value, ttl)
    }

    /// Remove the cached value for these keyword arguments.
    #[pyo3(signature = (**kwargs))]
    fn invalidate(&self, py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let r = self.resolved(py)?;
        let mut key = KeyText::default();
        self.write_key(py, &r, &mut key, &[], kwargs)?;
        r.region.delete(py, HashedKey::new(&key)).map(|_| ())
    }

    /// Awaitable `get`: `(True, value)` or `(False, awaitable)`.
    #[pyo3(signature = (*args, **kwargs))]
    fn _aget(
        slf: &Bound<'_, Self>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Answer> {
        let py = slf.py();
        let (r, key, default) = slf.get().lookup_args(py, args, kwargs)?;
        let default = default.map(Bound::unbind);
        r.region.alookup(
            py,
            key.clone(),
            || in_pool(&slf.getattr("get")?, args, kwargs),
            move |py, found| found_or_default(found, &key, default.map(|d| d.into_bound(py))),
        )
    }

    /// Awaitable `set`: `(True, None)` or `(False, awaitable)`.
    #[pyo3(signature = (value, **kwargs))]
    fn _aset(
        slf: &Bound<'_, Self>,
        value: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Answer> {
        let py = slf.py();
        let (r, key, ttl) = slf.get().set_args(py, value, kwargs)?;
        match r.region.store.runs() {
            Where::Inline => {
                r.region.store(py, HashedKey::new(&key), value, ttl)?;
                Ok(done(py.None()))
            }
            Where::Pool => in_pool(&slf.getattr("set")?, &PyTuple::new(py, [value])?, kwargs),
            Where::Native(_) => {
                if ttl.is_nan() || ttl <= 0.0 {
                    // Nothing stored, and what was there removed, as `set` does.
                    return r.region.adelete_native(py, key, false);
                }
                r.region.aset_native(py, key, value, ttl)
            }
        }
    }

    /// Awaitable `invalidate`: `(True, None)` or `(False, awaitable)`.
    #[pyo3(signature = (**kwargs))]
    fn _ainvalidate(slf: &Bound<'_, Self>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Answer> {
        let py = slf.py();
        let this = slf.get();
        let r = this.resolved(py)?;
        let key = this.key_string(py, &r, kwargs)?;
        match r.region.store.runs() {
            Where::Inline => {
                r.region.delete(py, HashedKey::new(&key))?;
                Ok(done(py.None()))
            }
            Where::Pool => in_pool(&slf.getattr("invalidate")?, &PyTuple::empty(py), kwargs),
            Where::Native(_) => r.region.adelete_native(py, key, false),
        }
    }

    /// Awaitable `_info`: `(True, (hits, misses, currsize))` or `(False,
    /// awaitable)`.
    fn _ainfo(slf: &Bound<'_, Self>) -> PyResult<Answer> {
        let py = slf.py();
        let this = slf.get();
        let r = this.resolved(py)?;
        match r.region.store.runs() {
            Where::Inline => Ok(done(this._info(py)?.into_pyobject(py)?.into_any().unbind())),
            Where::Pool => in_pool(&slf.getattr("_info")?, &PyTuple::empty(py), None),
            Where::Native(_) => {
                let stats = this.stats.clone();
                let pattern = key::function_pattern(&r.key_prefix, &this.name);
                let region = r.region.clone();
                let work = async move {
                    let Store::Redis(redis) = &region.store else {
                        unreachable!("a native count on a region that is not Redis")
                    };
                    redis.count_async(Some(&pattern)).await
                };
                let fut = aio::spawn(py, work, move |py, out| {
                    // The counters as they are once the count is in.
                    let (hits, misses) = stats.get();
                    let count = out.map_err(to_py)?;
                    Ok((hits, misses, count).into_pyobject(py)?.into_any().unbind())
                })?;
                Ok((false, fut.unbind()))
            }
        }
    }

    /// Invalidate, then call with these keyword arguments (and cache anew).
    #[pyo3(signature = (**kwargs))]
    fn refresh(slf: &Bound<'_, Self>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Py<PyAny>> {
        slf.get().invalidate(slf.py(), kwargs)?;
        Self::__call__(slf, &PyTuple::empty(slf.py()), kwargs)
    }

    /// Call the undecorated function: no cache read or write.
    #[pyo3(signature = (*args, **kwargs))]
    fn original(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        Ok(self.func.bind(py).call(args, kwargs)?.unbind())
    }

    /// The mangled cache key for these keyword arguments.
    #[pyo3(signature = (**kwargs))]
    fn _key(&self, py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<String> {
        let r = self.resolved(py)?;
        let mut key = KeyText::default();
        self.write_key(py, &r, &mut key, &[], kwargs)?;
        Ok(key.to_string())
    }

    /// The backend instance this function's entries live in.
    fn _backend(&self, py: Python<'_>) -> PyResult<Py<PyBackend>> {
        Ok(self.resolved(py)?.backend.clone_ref(py))
    }

    /// `(hits, misses, currsize)`.
    fn _info(&self, py: Python<'_>) -> PyResult<(u64, u64, u64)> {
        let r = self.resolved(py)?;
        let (hits, misses) = self.stats.get();
        let pattern = key::function_pattern(&r.key_prefix, &self.name);
        Ok((hits, misses, r.region.count(py, Some(&pattern))?))
    }

    /// For the async wrapper: `(True, value)` on a memory hit (counted);
    /// `(False, None)` while caching is disabled (just call the function);
    /// `(False, AsyncCall)` otherwise: the call protocol, for the async
    /// driver to run (`cachu._async`).
    #[pyo3(signature = (args, kwargs, overwrite))]
    fn _acall(
        slf: &Bound<'_, Self>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        overwrite: bool,
    ) -> PyResult<(bool, Option<Py<PyAny>>)> {
        asynchronous::AsyncCall::begin(slf, args, kwargs, overwrite)
    }

    /// The TTL region this function's entries live in (`-1` for a callable TTL).
    #[getter]
    fn _region_ttl(&self) -> i64 {
        self.region_ttl
    }

    fn __repr__(&self) -> String {
        format!("<cachu.CachedFunction {}>", self.name)
    }
}
