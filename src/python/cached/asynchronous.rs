//! The async driver of the call protocol, Rust half: an `AsyncCall` runs the
//! protocol for one coroutine call. It performs the steps that never wait
//! (memory lookups and stores, keeping a value, claiming a refresh) inline,
//! and hands the others to its Python half (`cachu._async`) as a named
//! `AsyncStep`: run the coroutine function, take the per-loop key lock, run
//! a blocking (SQLite) step in the loop's thread pool, or await a native
//! Redis round trip on the engine's runtime. Python performs them and
//! reports back; every decision stays in `crate::protocol`.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};

use super::steps::{Found, Held};
use super::{CachedFunction, Resolved};
use crate::backend::redis::{GetOrLock, LockToken};
use crate::backend::Hit;
use crate::key::HashedKey;
use crate::protocol::{Event, Mode, Protocol, Step};
use crate::python::aio;
use crate::python::errors::CacheLockTimeout;
use crate::python::keytext::KeyText;
use crate::python::near::Pass;
use crate::python::region::Store;
use crate::python::state;
use crate::runtime;

/// What the Python half of the async driver does next.
#[pyclass(module = "cachu", name = "AsyncStep", eq, eq_int, frozen)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsyncStep {
    /// Await the coroutine function, then report `ran(result)` or
    /// `failed(error)`.
    Run,
    /// Take the key's lock among this loop's tasks, waiting at most
    /// `wait` seconds; report `locked(waited)` or `busy()`.
    LocalLock,
    /// Run `perform()` in the loop's thread pool (it blocks on SQLite).
    Blocking,
    /// Await `io()` (a Redis round trip on the engine's runtime), then
    /// `resume()`.
    Native,
    /// The call is over: start `refresh_call()` as a task of this loop,
    /// then return `outcome()`.
    Refresh,
    /// The call is over: return `outcome()` (it raises for an error).
    Done,
}

/// The class's own instance of each step (`AsyncStep.Run`, ...), in the
/// enum's order. Handed to Python instead of a new object per step: a step
/// costs no allocation, and the driver tells steps apart by identity.
static STEPS: PyOnceLock<Vec<Py<AsyncStep>>> = PyOnceLock::new();

impl AsyncStep {
    /// The steps' names, in the enum's order.
    const NAMES: [&'static str; 6] = ["Run", "LocalLock", "Blocking", "Native", "Refresh", "Done"];

    /// This step as the class's own instance.
    fn shared(self, py: Python<'_>) -> PyResult<Py<AsyncStep>> {
        let steps = STEPS.get_or_try_init(py, || {
            let class = py.get_type::<AsyncStep>();
            Self::NAMES
                .iter()
                .map(|name| Ok(class.getattr(*name)?.cast_into::<AsyncStep>()?.unbind()))
                .collect::<PyResult<Vec<_>>>()
        })?;
        Ok(steps[self as usize].clone_ref(py))
    }
}

/// Make the shared steps while the module is imported (see `value::warm`).
pub fn warm(py: Python<'_>) -> PyResult<()> {
    AsyncStep::Run.shared(py).map(drop)
}

/// The outcome of a native step, set on the runtime's thread.
enum Io {
    LookOrLock(crate::Result<GetOrLock>),
    /// A look-or-lock of a region with a near cache: with the key's seconds
    /// left, and whether (and how) what it found may be kept near.
    LookOrLockNear(crate::Result<(GetOrLock, f64)>, Option<Pass>),
    Lock(crate::Result<Option<LockToken>>),
    Await(crate::Result<Option<Hit<Vec<u8>>>>),
    Discard(crate::Result<()>),
    /// A store, and whether a near cache settled its entry of the key.
    Store(crate::Result<()>, bool),
}

struct State {
    protocol: Protocol,
    step: Step,
    held: Held,
    result: Option<Py<PyAny>>,
    error: Option<PyErr>,
    token: Option<LockToken>,
    io: Option<Io>,
    writes_before: u64,
}

#[pyclass(module = "cachu", name = "AsyncCall", frozen)]
pub struct AsyncCall {
    func: Py<CachedFunction>,
    resolved: Arc<Resolved>,
    key: String,
    args: Py<PyTuple>,
    kwargs: Option<Py<PyDict>>,
    /// Taken out while a step works on it (never locked across Python code
    /// or a released GIL: a cancelled task's `close()` must not wait on a
    /// thread that waits for the GIL).
    state: Mutex<Option<Box<State>>>,
    /// The task let go of the call (`close()`): a round trip still in
    /// flight releases the lock it takes.
    closed: std::sync::atomic::AtomicBool,
}

impl AsyncCall {
    /// Behind `CachedFunction._acall`.
    pub fn begin(
        slf: &Bound<'_, CachedFunction>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        overwrite: bool,
    ) -> PyResult<(bool, Option<Py<PyAny>>)> {
        let this = slf.get();
        if state::disabled_for(this.package.as_deref(), &this.tag) {
            return Ok((false, None));
        }
        let py = slf.py();
        let resolution = this.resolution(py)?;
        let r = &resolution.get().0;
        let mut key = KeyText::default();
        this.write_key(py, r, &mut key, args.as_slice(), kwargs)?;
        let mut missed = false;
        if !overwrite && this.plain_hits {
            // A memory hit, or a file hit read without waiting, is one engine
            // call, as for sync calls.
            let found = match r.region.store {
                Store::Memory(_) => r.region.lookup(py, HashedKey::new(&key))?,
                Store::File(_) => match r.region.lookup_nowait(py, HashedKey::new(&key)) {
                    Some(found) => found?,
                    None => None,
                },
                Store::Redis(_) => match &r.region.near {
                    Some(near) => near.lookup(py, HashedKey::new(&key)),
                    None => None,
                },
                _ => None,
            };
            if let Some((v, _)) = found {
                this.stats.hit_serialized();
                return Ok((true, Some(v)));
            }
            // A memory lookup found nothing: the protocol's first look.
            missed = matches!(r.region.store, Store::Memory(_));
        }
        let mode = if overwrite {
            Mode::Overwrite
        } else {
            Mode::Call
        };
        let protocol = Protocol::new(this.options(r, mode));
        let call = Self::new(
            slf,
            r.clone(),
            key.to_string(),
            args,
            kwargs,
            protocol,
            missed,
        )?;
        Ok((false, Some(call.into_any().unbind())))
    }

    fn new<'py>(
        slf: &Bound<'py, CachedFunction>,
        resolved: Arc<Resolved>,
        key: String,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
        mut protocol: Protocol,
        missed: bool,
    ) -> PyResult<Bound<'py, AsyncCall>> {
        let py = slf.py();
        let (step, used_look) = protocol.start_after_look(missed);
        if used_look {
            resolved.region.up();
        }
        let key_args = slf.get().key_args_for(py, args.as_slice(), kwargs)?;
        let call = Bound::new(
            py,
            AsyncCall {
                func: slf.clone().unbind(),
                resolved: resolved.clone(),
                key,
                args: args.clone().unbind(),
                kwargs: kwargs.map(|k| k.clone().unbind()),
                state: Mutex::new(Some(Box::new(State {
                    protocol,
                    step,
                    held: Held {
                        key_args,
                        ..Held::default()
                    },
                    result: None,
                    error: None,
                    token: None,
                    io: None,
                    writes_before: resolved.region.writes(),
                }))),
                closed: std::sync::atomic::AtomicBool::new(false),
            },
        )?;
        call.get().settle(py)?;
        Ok(call)
    }

    fn cf<'py>(&self, py: Python<'py>) -> &Bound<'py, CachedFunction> {
        self.func.bind(py)
    }

    fn hashed(&self) -> HashedKey<'_> {
        HashedKey::new(&self.key)
    }

    /// Run `f` on the call's state, taken out of the lock meanwhile.
    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = self.state.lock().take().expect("one step at a time");
        let out = f(&mut st);
        *self.state.lock() = Some(st);
        out
    }

    /// Perform inline steps until one needs Python (or the call is over);
    /// that step, as the class's own object.
    fn settle(&self, py: Python<'_>) -> PyResult<Py<AsyncStep>> {
        self.with_state(|st| self.settle_locked(py, st))
    }

    fn settle_locked(&self, py: Python<'_>, st: &mut State) -> PyResult<Py<AsyncStep>> {
        let cf = self.cf(py).get();
        loop {
            if let (Step::Look, Store::File(_)) = (st.step, &self.resolved.region.store) {
                // Read inline when SQLite need not wait; else in the pool.
                if let Some(event) =
                    cf.look_nowait(py, &self.resolved, self.hashed(), &mut st.held)?
                {
                    st.step = st.protocol.next(event);
                    continue;
                }
            }
            if let (Step::LookOrLock, Some(_)) = (st.step, &self.resolved.region.near) {
                // A near entry is served inline, as a memory hit is.
                if let Some(event) =
                    cf.look_near(py, &self.resolved, self.hashed(), &mut st.held)?
                {
                    st.step = st.protocol.next(event);
                    continue;
                }
            }
            let visible = self.visible(st.step);
            if let Some(v) = visible {
                if v == AsyncStep::Run {
                    cf.stats.miss_serialized();
                }
                return v.shared(py);
            }
            let event = self.inline(py, st)?;
            st.step = st.protocol.next(event);
        }
    }

    /// How the Python half sees `step`; `None` if it runs inline.
    fn visible(&self, step: Step) -> Option<AsyncStep> {
        let r = &self.resolved;
        Some(match (step, &r.region.store) {
            (Step::Run, _) => AsyncStep::Run,
            (Step::ServeStale { refresh: true }, _) => AsyncStep::Refresh,
            (s, _) if s.is_terminal() => AsyncStep::Done,
            (Step::Keep | Step::ClaimRefresh, _) => return None,
            (_, Store::Redis(_)) => AsyncStep::Native,
            (Step::Lock { .. }, _) => AsyncStep::LocalLock,
            (_, Store::File(_)) => AsyncStep::Blocking,
            _ => return None,
        })
    }

    /// Perform an inline step (or a blocking one, from `perform`).
    fn inline(&self, py: Python<'_>, st: &mut State) -> PyResult<Event> {
        let cf = self.cf(py).get();
        let r = &self.resolved;
        let key = self.hashed();
        Ok(match st.step {
            Step::Look => cf.look_local(py, r, key, &mut st.held)?,
            Step::Keep => st.held.keep(),
            Step::ClaimRefresh => match cf.refreshes.claim(key.hash) {
                true => Event::Claimed,
                false => Event::NotClaimed,
            },
            Step::Store { extra } => {
                let result = st.result.as_ref().expect("a result to store").bind(py);
                cf.store_local(py, r, key, result, extra, st.held.key_args.as_ref())?
            }
            other => unreachable!("{other:?} does not run inline"),
        })
    }

    /// Feed `event` to the protocol and settle.
    fn advance(&self, py: Python<'_>, event: Event) -> PyResult<Py<AsyncStep>> {
        self.with_state(|st| {
            st.step = st.protocol.next(event);
            self.settle_locked(py, st)
        })
    }
}

/// Release the Redis lock the call holds, if any (in the background): the
/// token held, or one a round trip took that nobody resumed (a cancelled
/// task).
fn release(resolved: &Resolved, key: &str, st: &mut State) {
    let token = st.token.take().or_else(|| match st.io.take() {
        Some(Io::LookOrLock(Ok(GetOrLock::Locked(t))))
        | Some(Io::LookOrLockNear(Ok((GetOrLock::Locked(t), _)), _))
        | Some(Io::Lock(Ok(Some(t)))) => Some(t),
        _ => None,
    });
    if let (Some(token), Store::Redis(_)) = (token, &resolved.region.store) {
        let region = resolved.region.clone();
        let key = key.to_owned();
        runtime::handle().spawn(async move {
            if let Store::Redis(redis) = &region.store {
                // If this fails the lock expires after lock_timeout.
                let _ = redis.unlock_async(&key, &token).await;
            }
        });
    }
}

#[pymethods]
impl AsyncCall {
    /// The step the Python half performs now.
    #[getter]
    fn step(&self, py: Python<'_>) -> PyResult<Py<AsyncStep>> {
        let step = self
            .state
            .lock()
            .as_ref()
            .expect("not while a step works")
            .step;
        self.visible(step)
            .expect("settled on a visible step")
            .shared(py)
    }

    /// The cache key (the per-loop lock's name).
    #[getter]
    fn key(&self) -> &str {
        &self.key
    }

    /// Seconds `LocalLock` may wait.
    #[getter]
    fn wait(&self) -> f64 {
        match self.state.lock().as_ref().map(|st| st.step) {
            Some(Step::Lock { wait }) => wait.as_secs_f64(),
            _ => 0.0,
        }
    }

    /// The coroutine function returned `result`.
    fn ran(&self, py: Python<'_>, result: Py<PyAny>) -> PyResult<Py<AsyncStep>> {
        self.with_state(|st| st.result = Some(result));
        self.advance(py, Event::Ran)
    }

    /// The coroutine function raised `error`.
    fn failed(&self, py: Python<'_>, error: Bound<'_, PyAny>) -> PyResult<Py<AsyncStep>> {
        let error = PyErr::from_value(error);
        self.with_state(|st| st.error = Some(error));
        self.advance(py, Event::Failed)
    }

    /// The per-loop lock is ours (`waited`: another task held it first).
    fn locked(&self, py: Python<'_>, waited: bool) -> PyResult<Py<AsyncStep>> {
        let r = &self.resolved;
        let writes_before = self.with_state(|st| st.writes_before);
        let stored_meanwhile = r.region.store.blocking() && r.region.writes() != writes_before;
        self.advance(
            py,
            Event::Locked {
                waited,
                stored_meanwhile,
            },
        )
    }

    /// Another task held the per-loop lock for the whole wait.
    fn busy(&self, py: Python<'_>) -> PyResult<Py<AsyncStep>> {
        self.advance(py, Event::Busy)
    }

    /// Perform a blocking step (from the loop's thread pool); the GIL is
    /// released while SQLite works.
    fn perform(&self, py: Python<'_>) -> PyResult<Py<AsyncStep>> {
        self.with_state(|st| {
            let event = self.inline(py, st)?;
            st.step = st.protocol.next(event);
            self.settle_locked(py, st)
        })
    }

    /// Start the native step on the engine's runtime: an awaitable that
    /// resolves to None once it is done (then call `resume()`).
    fn io<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let region = this.resolved.region.clone();
        let key = this.key.clone();
        let cf = this.cf(py).get();
        let (step, token, unreadable, to_store, keep) = this.with_state(|st| -> PyResult<_> {
            let step = st.step;
            let mut keep = None;
            let to_store = match step {
                Step::Store { extra } => {
                    let result = st.result.as_ref().expect("a result to store").bind(py);
                    let args = st.held.key_args.as_ref();
                    let to_store = cf.prepare_store(&this.resolved, result, extra, args)?;
                    if let (Some((_, Some(_))), Some(near)) =
                        (&to_store, &this.resolved.region.near)
                    {
                        keep = Some(near.keeping(this.hashed(), result));
                    }
                    Some(to_store)
                }
                _ => None,
            };
            let token = match step {
                Step::Store { .. } => st.token.take(),
                _ => None,
            };
            Ok((step, token, st.held.unreadable.clone(), to_store, keep))
        })?;
        // Taken before the read is sent (see the near cache's guarantee).
        let pass = match (step, &this.resolved.region.near) {
            (Step::LookOrLock, Some(near)) => Some(near.pass(this.hashed())),
            _ => None,
        };
        let target = slf.clone().unbind();
        aio::spawn(
            py,
            async move {
                let Store::Redis(redis) = &region.store else {
                    unreachable!("a native step on a region that is not Redis")
                };
                match step {
                    Step::LookOrLock => match pass {
                        Some(pass) => {
                            Io::LookOrLockNear(redis.get_or_lock_expiring_async(&key).await, pass)
                        }
                        None => Io::LookOrLock(redis.get_or_lock_async(&key).await),
                    },
                    Step::Lock { .. } => Io::Lock(redis.try_lock_async(&key).await),
                    Step::AwaitValue { newer_than, wait } => {
                        Io::Await(redis.wait_for_newer_async(&key, newer_than, wait).await)
                    }
                    Step::Discard => {
                        let hit = unreadable.expect("a value to discard");
                        Io::Discard(redis.delete_if_unchanged_async(&key, &hit).await)
                    }
                    Step::Store { .. } => match (to_store.flatten(), token, keep) {
                        // A near cache settles its own entry of a value it writes.
                        (Some((ttl, Some(data))), t, Some(keep)) => {
                            let near = region.near.as_ref().expect("a near cache");
                            let t = t.as_ref();
                            Io::Store(
                                near.store_async(redis, &key, &data, ttl, t, keep).await,
                                true,
                            )
                        }
                        (Some((ttl, Some(data))), Some(t), None) => Io::Store(
                            redis.store_and_unlock_async(&key, &data, ttl, &t).await,
                            false,
                        ),
                        (Some((ttl, Some(data))), None, None) => {
                            Io::Store(redis.set_async(&key, &data, ttl).await, false)
                        }
                        (_, Some(t), _) => Io::Store(redis.unlock_async(&key, &t).await, false),
                        (_, None, _) => Io::Store(Ok(()), false),
                    },
                    other => unreachable!("{other:?} is not a native step"),
                }
            },
            move |py, io| {
                let call = target.bind(py).get();
                if let Some(st) = call.state.lock().as_mut() {
                    st.io = Some(io);
                    if call.closed.load(std::sync::atomic::Ordering::Acquire) {
                        // The task was cancelled meanwhile: let go of a lock
                        // this round trip took.
                        release(&call.resolved, &call.key, st);
                    }
                }
                Ok(py.None())
            },
        )
    }

    /// After `io()`: turn its outcome into the protocol's event and settle
    /// (decoding and `validate` run here, on the loop's thread).
    fn resume(&self, py: Python<'_>) -> PyResult<Py<AsyncStep>> {
        let cf = self.cf(py).get();
        let r = &self.resolved;
        self.with_state(|st| {
            let io = st.io.take().expect("resume() after io()");
            let event = match io {
                Io::LookOrLock(out) => {
                    cf.looked_or_locked(py, r, out, &mut st.held, &mut st.token)?
                }
                Io::LookOrLockNear(out, pass) => cf.looked_or_locked_near(
                    py,
                    r,
                    self.hashed(),
                    pass,
                    out,
                    &mut st.held,
                    &mut st.token,
                )?,
                Io::Lock(Ok(Some(token))) => {
                    st.token = Some(token);
                    Event::Locked {
                        waited: false,
                        stored_meanwhile: false,
                    }
                }
                Io::Lock(out) => cf.settled(py, r, out.map(|_| ()), Event::Busy)?,
                Io::Await(out) => cf.awaited(py, r, out, &mut st.held)?,
                Io::Discard(out) => {
                    st.held.unreadable = None;
                    r.region.wrote_key(self.hashed());
                    cf.settled(py, r, out, Event::Discarded)?
                }
                Io::Store(out, settled) => {
                    if !settled {
                        // The next call must see this value, not a near copy.
                        r.region.wrote_key(self.hashed());
                    }
                    cf.settled(py, r, out, Event::Stored)?
                }
            };
            st.step = st.protocol.next(event);
            self.settle_locked(py, st)
        })
    }

    /// The call's outcome, once it is over: the value, or the error raised.
    fn outcome(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let cf = self.cf(py).get();
        self.with_state(|st| {
            release(&self.resolved, &self.key, st);
            let served = |found: Option<Found>| found.expect("a value to serve").value;
            match st.step {
                Step::ServeFound | Step::ServeStale { .. } => {
                    cf.stats.hit();
                    Ok(served(st.held.found.take()))
                }
                Step::ReturnResult => Ok(st.result.take().expect("a result")),
                Step::RaiseError => Err(st.error.take().expect("an error")),
                Step::ServeKept => Ok(served(st.held.kept.take())),
                Step::RaiseLockTimeout => Err(CacheLockTimeout::new_err(format!(
                    "{}: gave up after waiting {:?} for another caller's computation \
                 (on_lock_timeout='raise')",
                    cf.name, self.resolved.lock_timeout
                ))),
                Step::RaiseUnavailable => Err(self.resolved.region.refused()),
                Step::Done => match st.error.take() {
                    Some(e) => Err(e),
                    None => Ok(py.None()),
                },
                other => unreachable!("outcome() before the call is over ({other:?})"),
            }
        })
    }

    /// For a `Refresh` step: the background refresh's own call, to run as a
    /// task of this loop (its claim is held until it ends).
    fn refresh_call<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, AsyncCall>> {
        let py = slf.py();
        let this = slf.get();
        let created_at =
            this.with_state(|st| st.held.found.as_ref().expect("a stale value").created_at);
        let cf = this.cf(py);
        let protocol =
            Protocol::refresh(cf.get().options(&this.resolved, Mode::Refresh), created_at);
        let kwargs = this.kwargs.as_ref().map(|k| k.bind(py).clone());
        AsyncCall::new(
            cf,
            this.resolved.clone(),
            this.key.clone(),
            this.args.bind(py),
            kwargs.as_ref(),
            protocol,
            false,
        )
    }

    /// A refresh call is over: release its claim; returns whether its
    /// failure (`failed`) is the first since the key last refreshed.
    fn finish_refresh(&self, py: Python<'_>, failed: bool) -> bool {
        self.cf(py)
            .get()
            .refreshes
            .finish(self.hashed().hash, failed)
    }

    /// Let go of anything held (a cancelled or failed task); idempotent.
    fn close(&self) {
        let mut st = self.state.lock();
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(st) = st.as_mut() {
            release(&self.resolved, &self.key, st);
        }
    }

    /// The decorated function's name (for log lines).
    #[getter]
    fn name(&self, py: Python<'_>) -> String {
        self.cf(py).get().name.clone()
    }
}

impl Drop for AsyncCall {
    fn drop(&mut self) {
        if let Some(st) = self.state.get_mut().as_mut() {
            release(&self.resolved, &self.key, st);
        }
    }
}
