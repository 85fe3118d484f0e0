//! The call protocol: everything a cached call decides, as a state machine
//! that does no I/O.
//!
//! A driver asks for the first step ([`Protocol::start`]), performs it (a
//! lookup, taking a lock, waiting for another caller, running the function,
//! storing), and reports what happened as an [`Event`]; the protocol answers
//! with the next [`Step`], until a terminal one says what the call returns.
//! Two drivers run it: a blocking one for sync calls and an async one for
//! coroutines; neither makes a decision, so every rule below (dogpile locks,
//! second looks, rejected and unreadable values, stale serving, fallbacks on
//! error, lock timeouts, the cache deadline, failing open) holds the same way
//! for both faces and every backend.
//!
//! Judging a found value is split in two: the driver evaluates `validate`
//! (a user predicate) and reports its verdict with the value's `created_at`;
//! whether the value is fresh, stale but servable, or only a fallback is
//! decided here.

use std::time::{Duration, Instant};

use crate::clock;

/// How a backend's dogpile lock works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// In-process key locks (memory, file, null): waiting for another caller
    /// is waiting for its lock, then reading what it stored. `blocking`: a
    /// lookup waits on I/O, so another thread may store meanwhile.
    Local { blocking: bool },
    /// A lock shared by every process, which one round trip reads or takes
    /// (Redis): waiting is polling for the holder's value.
    Distributed,
}

/// What a caller does after waiting `lock_timeout` for another's computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnLockTimeout {
    /// Run the function itself (0.2.7).
    Run,
    /// Raise `CacheLockTimeout`.
    Raise,
}

/// Why a call is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A caller's call.
    Call,
    /// The caller asked to run the function and store its result
    /// (`_overwrite_cache=True`): no lookup.
    Overwrite,
    /// A background refresh of a value served stale: it computes only if it
    /// takes the lock at once, and never returns anything to a caller.
    Refresh,
}

/// The settings of one call.
#[derive(Clone, Debug)]
pub struct Options {
    pub shape: Shape,
    pub mode: Mode,
    /// The fixed TTL, which tells fresh values from stale ones; `None` for a
    /// TTL computed per result (no stale windows then).
    pub ttl: Option<f64>,
    /// Seconds after expiry during which a value is served at once while one
    /// refresh runs in the background.
    pub stale_while_revalidate: f64,
    /// Seconds after expiry during which a value replaces the function's error.
    pub stale_if_error: f64,
    pub lock_timeout: Duration,
    pub on_lock_timeout: OnLockTimeout,
    /// Most time the cache's own work may take in this call.
    pub cache_deadline: Option<Duration>,
    /// The backend may be used: false while its circuit breaker is open
    /// (it failed lately). The call then runs uncached, or with `fail_open`
    /// off raises at once (a refresh does nothing): either way it does not
    /// wait for a backend known to be out.
    pub backend_usable: bool,
    /// An unreachable backend makes the call run uncached (`fail_open`);
    /// otherwise the call raises.
    pub fail_open: bool,
}

impl Options {
    /// Seconds an entry is kept beyond its TTL for the stale windows.
    pub fn keep_extra(&self) -> f64 {
        if self.ttl.is_none() {
            return 0.0;
        }
        self.stale_while_revalidate
            .max(self.stale_if_error)
            .max(0.0)
    }
}

/// What a driver does next.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Step {
    /// Read the key's value (and judge it): report `Found`, `Missing`,
    /// `Unreadable` or `Unavailable`.
    Look,
    /// Distributed: in one round trip, read the value or, if there is none,
    /// take the lock: `Found`, `Locked`, `Busy`, `Unreadable` or `Unavailable`.
    LookOrLock,
    /// Take the key's lock. Local: waiting at most `wait` for its holder
    /// (`Locked` or `Busy`). Distributed: at once, whatever the value
    /// (`Locked` or `Busy`).
    Lock { wait: Duration },
    /// Distributed: wait at most `wait` for a value stored after
    /// `newer_than` (any value when `None`): `Found`, or `NoValue` once the
    /// time is up or the holder let go without storing.
    AwaitValue {
        newer_than: Option<f64>,
        wait: Duration,
    },
    /// Remove the value that did not decode, if it is still there
    /// unchanged: `Discarded`.
    Discard,
    /// Keep the value just found: the call falls back to it if the function
    /// fails (`Kept`).
    Keep,
    /// Claim the background refresh of this key in this process: `Claimed`
    /// (this caller starts it) or `NotClaimed` (one is already running).
    ClaimRefresh,
    /// Run the function (holding the lock if taken): `Ran` or `Failed`.
    Run,
    /// Store the function's result for its TTL plus `extra` seconds (the
    /// stale windows), unless `cache_if` rejects it; release the lock if
    /// held: `Stored` or `Unavailable`.
    Store { extra: f64 },
    // ---- terminal: release the lock if held, and end the call ----
    /// Return the value found (a hit).
    ServeFound,
    /// Return the value found although it is stale; `refresh`: start a
    /// background refresh of the key (this caller claimed it).
    ServeStale { refresh: bool },
    /// Return the function's result.
    ReturnResult,
    /// Raise the function's error.
    RaiseError,
    /// Return the kept value instead of the function's error.
    ServeKept,
    /// Raise `CacheLockTimeout`.
    RaiseLockTimeout,
    /// Raise `BackendUnavailableError` without trying the backend: its
    /// breaker is open and the region does not fail open.
    RaiseUnavailable,
    /// A refresh ends (nothing to return).
    Done,
}

impl Step {
    /// Whether the call ends with this step.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Step::ServeFound
                | Step::ServeStale { .. }
                | Step::ReturnResult
                | Step::RaiseError
                | Step::ServeKept
                | Step::RaiseLockTimeout
                | Step::RaiseUnavailable
                | Step::Done
        )
    }
}

/// What happened when the driver performed a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Event {
    /// A value stored at `created_at`; `valid` unless `validate` rejected it.
    Found {
        created_at: f64,
        valid: bool,
    },
    Missing,
    /// A value was there but did not decode (Local lookups have removed it).
    Unreadable,
    /// The lock is ours. `waited`: another caller held it first.
    /// `stored_meanwhile`: a store to this region finished since the look.
    Locked {
        waited: bool,
        stored_meanwhile: bool,
    },
    /// Another caller holds the lock (Local: past the wait given).
    Busy,
    NoValue,
    Discarded,
    Kept,
    Claimed,
    NotClaimed,
    Ran,
    Failed,
    Stored,
    /// The backend failed and the region fails open (the driver logged it;
    /// when the region does not fail open the driver raises instead).
    Unavailable,
}

/// Where a call is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Begin,
    /// The first look (or look-or-lock) is out.
    Looking,
    /// Local: the look after taking the lock.
    Relooking,
    Locking,
    Waiting,
    Discarding,
    /// The value found is being kept as the fallback; then `then`.
    Keeping,
    Claiming,
    Running,
    Storing,
    Over,
}

/// One call's decisions. See the module documentation.
#[derive(Debug)]
pub struct Protocol {
    opts: Options,
    state: State,
    /// When the call started waiting or working, read on first need (a
    /// plain hit never reads the clock, nor a miss whose lock is free); at
    /// once when a deadline is set.
    started: Option<Instant>,
    /// The wait of a lock step asked for before the clock started: the
    /// clock, if it starts later, starts that much earlier (the driver may
    /// have spent it waiting).
    unclocked_wait: Duration,
    /// Cache time spent before the function ran (the deadline's clock
    /// stops while it runs).
    spent_before_run: Option<Duration>,
    /// The lock is ours.
    holding: bool,
    /// A caller waited for a lock (Local) that never came: no second look.
    waited: bool,
    /// A stale value is kept to fall back on if the function fails.
    kept: bool,
    /// Distributed: `created_at` of a value this call will not use; only a
    /// newer one ends a wait.
    newer_than: Option<f64>,
    /// The function's result may be stored (not when the backend is down or
    /// the deadline has passed).
    may_store: bool,
    /// `created_at` of the last value found, for the stale decisions.
    found_at: f64,
}

/// The longest single wait a step asks for: waits come back to the driver at
/// least this often (a sync driver lets Ctrl-C through between them; a
/// Distributed caller looks again, in case the holder let go).
pub const WAIT_SLICE: Duration = Duration::from_millis(100);

impl Protocol {
    pub fn new(opts: Options) -> Self {
        Protocol {
            started: opts.cache_deadline.map(|_| Instant::now()),
            unclocked_wait: Duration::ZERO,
            opts,
            state: State::Begin,
            spent_before_run: None,
            holding: false,
            waited: false,
            kept: false,
            newer_than: None,
            may_store: true,
            found_at: 0.0,
        }
    }

    /// A background refresh of a value stored at `stale_created_at`: it
    /// computes only if it takes the lock at once and the value is still
    /// the stale one.
    pub fn refresh(mut opts: Options, stale_created_at: f64) -> Self {
        opts.mode = Mode::Refresh;
        let mut p = Protocol::new(opts);
        p.newer_than = Some(stale_created_at);
        p
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Whether the driver holds the key's lock now (terminal steps release it).
    pub fn holding(&self) -> bool {
        self.holding
    }

    /// The first step of a call whose caller has just looked the key up in
    /// a memory store and found nothing (`missed`): a first look is answered
    /// by that one (nothing that could store ran since), not asked again.
    /// The second value: whether that look was used.
    pub fn start_after_look(&mut self, missed: bool) -> (Step, bool) {
        let step = self.start();
        if missed && step == Step::Look {
            return (self.next(Event::Missing), true);
        }
        (step, false)
    }

    /// The first step.
    pub fn start(&mut self) -> Step {
        debug_assert_eq!(self.state, State::Begin);
        if !self.opts.backend_usable {
            return match self.opts.mode {
                // Nothing to refresh while the backend is out.
                Mode::Refresh => self.over(Step::Done),
                _ if self.opts.fail_open => self.run_uncached(),
                _ => self.over(Step::RaiseUnavailable),
            };
        }
        match self.opts.mode {
            Mode::Call => self.look(),
            Mode::Overwrite | Mode::Refresh => self.lock_or_run(),
        }
    }

    /// The step after `event`.
    pub fn next(&mut self, event: Event) -> Step {
        if event == Event::Unavailable {
            return self.unavailable();
        }
        match (self.state, event) {
            (State::Looking, Event::Found { created_at, valid }) => self.judge(created_at, valid),
            (State::Looking, Event::Missing) => self.lock_or_run(),
            (State::Looking, Event::Unreadable) => self.discard(),
            (State::Looking, Event::Locked { .. }) => {
                self.holding = true;
                self.run()
            }
            (State::Looking, Event::Busy) => self.wait(),

            (State::Relooking, Event::Found { created_at, valid }) => self.judge(created_at, valid),
            (State::Relooking, Event::Missing | Event::Unreadable) => self.run(),

            (
                State::Locking,
                Event::Locked {
                    waited,
                    stored_meanwhile,
                },
            ) => {
                self.holding = true;
                self.locked(waited, stored_meanwhile)
            }
            (State::Locking, Event::Busy) => self.busy(),

            (State::Waiting, Event::Found { created_at, valid }) => self.judge(created_at, valid),
            (State::Waiting, Event::NoValue) => {
                if self.holding {
                    // The check for a newer value made under the lock: none.
                    self.run()
                } else {
                    self.retry_or_give_up()
                }
            }

            (State::Discarding, Event::Discarded) => {
                self.newer_than = None;
                self.look()
            }
            (State::Keeping, Event::Kept) => {
                self.kept = true;
                if self.holding {
                    self.run()
                } else {
                    self.lock_or_run()
                }
            }
            (State::Claiming, Event::Claimed) => self.over(Step::ServeStale { refresh: true }),
            (State::Claiming, Event::NotClaimed) => self.over(Step::ServeStale { refresh: false }),

            (State::Running, Event::Ran) => self.after_run(),
            (State::Running, Event::Failed) => {
                if self.kept && self.opts.mode == Mode::Call {
                    self.over(Step::ServeKept)
                } else {
                    self.over(Step::RaiseError)
                }
            }
            (State::Storing, Event::Stored) => self.over(self.result_step()),

            (state, event) => panic!("call protocol: {event:?} cannot follow state {state:?}"),
        }
    }

    // ---- decisions ----

    fn look(&mut self) -> Step {
        if self.past_deadline() {
            return self.run_uncached();
        }
        self.state = State::Looking;
        match self.opts.shape {
            Shape::Local { .. } => Step::Look,
            Shape::Distributed => Step::LookOrLock,
        }
    }

    /// What a found value is good for.
    fn judge(&mut self, created_at: f64, valid: bool) -> Step {
        let after_lock = self.holding;
        if !valid {
            // Recompute it under the lock; Distributed waiters wait for a
            // value newer than this one.
            self.newer_than = Some(created_at);
            return if after_lock {
                self.run()
            } else {
                self.lock_or_run()
            };
        }
        self.found_at = created_at;
        // Without stale windows the backend keeps a value only while it is
        // fresh: no clock to read.
        let (age, ttl) = match self.opts.ttl {
            Some(ttl) if self.opts.keep_extra() > 0.0 => (clock::now() - created_at, ttl),
            _ => (0.0, f64::INFINITY),
        };
        if age <= ttl {
            // Fresh (a refresh that finds one under the lock is not needed).
            return match self.opts.mode {
                Mode::Refresh => self.over(Step::Done),
                _ => self.over(Step::ServeFound),
            };
        }
        if self.opts.mode == Mode::Refresh {
            // Still the stale value, and the lock is ours: refresh it.
            return self.run();
        }
        let late = age - ttl;
        if self.opts.mode == Mode::Call && !after_lock && late <= self.opts.stale_while_revalidate {
            self.state = State::Claiming;
            return Step::ClaimRefresh;
        }
        // Stale: compute anew, keeping it to fall back on while allowed.
        self.newer_than = Some(created_at);
        if self.opts.mode == Mode::Call && !self.kept && late <= self.opts.stale_if_error {
            self.state = State::Keeping;
            return Step::Keep;
        }
        if after_lock {
            self.run()
        } else {
            self.lock_or_run()
        }
    }

    /// Take the lock, or run without it where no lock is taken.
    fn lock_or_run(&mut self) -> Step {
        if self.opts.mode == Mode::Overwrite && self.opts.shape == Shape::Distributed {
            // 0.2.7 overwrites without the lock; so do we.
            return self.run();
        }
        if self.past_deadline() {
            return self.run_uncached();
        }
        self.state = State::Locking;
        let wait = match (self.opts.mode, self.opts.shape) {
            (Mode::Refresh, _) | (_, Shape::Distributed) => Duration::ZERO,
            _ => self.lock_wait(),
        };
        Step::Lock { wait }
    }

    /// How long a Local lock step may wait: the time left, at most a slice.
    /// Before the clock starts, all of `lock_timeout` is left (no deadline
    /// is set, or the clock would run): no clock is read, so a miss that
    /// finds its lock free reads none (see `spent`).
    fn lock_wait(&mut self) -> Duration {
        if self.started.is_none() {
            self.unclocked_wait = self.opts.lock_timeout.min(WAIT_SLICE);
            return self.unclocked_wait;
        }
        self.wait_left().min(WAIT_SLICE)
    }

    fn locked(&mut self, waited: bool, stored_meanwhile: bool) -> Step {
        let look_again = match self.opts.shape {
            // Distributed: only after passing over a value (rejected, stale,
            // or a refresh's), since one may have been stored meanwhile.
            Shape::Distributed => self.newer_than.is_some(),
            // Local: unless nothing can have been stored since the first look
            // (a refresh made no first look).
            Shape::Local { .. } => {
                waited || self.waited || stored_meanwhile || self.opts.mode == Mode::Refresh
            }
        };
        if self.opts.mode == Mode::Overwrite || !look_again {
            return self.run();
        }
        match self.opts.shape {
            Shape::Distributed => {
                self.state = State::Waiting;
                Step::AwaitValue {
                    newer_than: self.newer_than,
                    wait: Duration::ZERO,
                }
            }
            Shape::Local { .. } => {
                self.state = State::Relooking;
                Step::Look
            }
        }
    }

    /// Another caller holds the lock.
    fn busy(&mut self) -> Step {
        if self.opts.mode == Mode::Refresh {
            // Someone else computes it.
            return self.over(Step::Done);
        }
        match self.opts.shape {
            Shape::Distributed => self.wait(),
            Shape::Local { .. } => {
                self.waited = true;
                self.retry_or_give_up()
            }
        }
    }

    /// Distributed: wait for the holder's value.
    fn wait(&mut self) -> Step {
        self.state = State::Waiting;
        Step::AwaitValue {
            newer_than: self.newer_than,
            wait: self.wait_left().min(WAIT_SLICE),
        }
    }

    /// A wait slice ended without a value: try again while time is left.
    fn retry_or_give_up(&mut self) -> Step {
        if self.past_deadline() {
            return self.run_uncached();
        }
        if self.spent() < self.opts.lock_timeout {
            return match self.opts.shape {
                // The holder may have let go without storing: look (or lock) again.
                Shape::Distributed if self.newer_than.is_none() => self.look(),
                Shape::Distributed => {
                    self.state = State::Locking;
                    Step::Lock {
                        wait: Duration::ZERO,
                    }
                }
                Shape::Local { .. } => {
                    self.state = State::Locking;
                    Step::Lock {
                        wait: self.wait_left().min(WAIT_SLICE),
                    }
                }
            };
        }
        match self.opts.on_lock_timeout {
            OnLockTimeout::Raise => self.over(Step::RaiseLockTimeout),
            // Run without the lock, and store the result all the same.
            OnLockTimeout::Run => self.run(),
        }
    }

    fn discard(&mut self) -> Step {
        match self.opts.shape {
            Shape::Distributed => {
                self.state = State::Discarding;
                Step::Discard
            }
            // Local lookups remove what does not decode themselves.
            Shape::Local { .. } => self.lock_or_run(),
        }
    }

    fn run(&mut self) -> Step {
        if self.opts.cache_deadline.is_some() {
            // Only the deadline needs it.
            self.spent_before_run = Some(self.spent());
        }
        self.state = State::Running;
        Step::Run
    }

    fn run_uncached(&mut self) -> Step {
        self.may_store = false;
        self.run()
    }

    fn after_run(&mut self) -> Step {
        if !self.may_store || self.past_deadline() {
            return self.over(self.result_step());
        }
        self.state = State::Storing;
        Step::Store {
            extra: self.opts.keep_extra(),
        }
    }

    fn result_step(&self) -> Step {
        match self.opts.mode {
            Mode::Refresh => Step::Done,
            _ => Step::ReturnResult,
        }
    }

    /// The backend failed and the region fails open: carry on without it.
    fn unavailable(&mut self) -> Step {
        match self.state {
            State::Storing => self.over(self.result_step()),
            // A refresh has nothing to do without the backend.
            _ if self.opts.mode == Mode::Refresh => self.over(Step::Done),
            State::Running | State::Over | State::Begin => {
                panic!(
                    "call protocol: Unavailable cannot follow state {:?}",
                    self.state
                )
            }
            _ => self.run_uncached(),
        }
    }

    fn over(&mut self, step: Step) -> Step {
        self.state = State::Over;
        step
    }

    // ---- clocks ----

    /// Time left to wait for another caller: the lock timeout, and the cache
    /// deadline, whichever comes first.
    fn spent(&mut self) -> Duration {
        match self.started {
            Some(t) => t.elapsed(),
            // The clock starts now, back-dated by a wait already asked for
            // (one clock read, not two).
            None => {
                let now = Instant::now();
                self.started = Some(now.checked_sub(self.unclocked_wait).unwrap_or(now));
                self.unclocked_wait
            }
        }
    }

    fn wait_left(&mut self) -> Duration {
        let spent = self.spent();
        let lock_left = self.opts.lock_timeout.saturating_sub(spent);
        match self.opts.cache_deadline {
            Some(d) => lock_left.min(d.saturating_sub(spent)),
            None => lock_left,
        }
    }

    /// Whether the cache has spent its deadline in this call (time spent
    /// running the function does not count).
    fn past_deadline(&mut self) -> bool {
        let Some(deadline) = self.opts.cache_deadline else {
            return false;
        };
        let spent = match self.spent_before_run {
            // After the run only the store is left: it is made if the cache
            // work before the run left room for it.
            Some(before) => before,
            None => self.spent(),
        };
        spent >= deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(shape: Shape) -> Options {
        Options {
            shape,
            mode: Mode::Call,
            ttl: Some(300.0),
            stale_while_revalidate: 0.0,
            stale_if_error: 0.0,
            lock_timeout: Duration::from_secs(10),
            on_lock_timeout: OnLockTimeout::Run,
            cache_deadline: None,
            backend_usable: true,
            fail_open: true,
        }
    }

    const MEMORY: Shape = Shape::Local { blocking: false };
    const FILE: Shape = Shape::Local { blocking: true };

    fn fresh() -> Event {
        Event::Found {
            created_at: clock::now(),
            valid: true,
        }
    }

    fn aged(seconds: f64) -> Event {
        Event::Found {
            created_at: clock::now() - seconds,
            valid: true,
        }
    }

    /// Runs `events` through a protocol; returns every step it asked for.
    fn steps(o: Options, events: &[Event]) -> Vec<Step> {
        let mut p = Protocol::new(o);
        let mut out = vec![p.start()];
        for e in events {
            out.push(p.next(*e));
        }
        out
    }

    fn locked() -> Event {
        Event::Locked {
            waited: false,
            stored_meanwhile: false,
        }
    }

    #[test]
    fn local_hit() {
        assert_eq!(
            steps(opts(MEMORY), &[fresh()]),
            [Step::Look, Step::ServeFound]
        );
    }

    #[test]
    fn local_miss_uncontended_looks_once() {
        let s = steps(
            opts(MEMORY),
            &[Event::Missing, locked(), Event::Ran, Event::Stored],
        );
        assert_eq!(
            s,
            [
                Step::Look,
                Step::Lock { wait: WAIT_SLICE },
                Step::Run,
                Step::Store { extra: 0.0 },
                Step::ReturnResult
            ]
        );
    }

    #[test]
    fn local_waiter_looks_again_and_uses_the_holders_value() {
        let mut p = Protocol::new(opts(MEMORY));
        assert_eq!(p.start(), Step::Look);
        assert!(matches!(p.next(Event::Missing), Step::Lock { .. }));
        let relook = p.next(Event::Locked {
            waited: true,
            stored_meanwhile: false,
        });
        assert_eq!(relook, Step::Look);
        assert_eq!(p.next(fresh()), Step::ServeFound);
    }

    #[test]
    fn file_store_meanwhile_forces_second_look() {
        let mut p = Protocol::new(opts(FILE));
        p.start();
        p.next(Event::Missing);
        let s = p.next(Event::Locked {
            waited: false,
            stored_meanwhile: true,
        });
        assert_eq!(s, Step::Look);
        assert_eq!(p.next(Event::Missing), Step::Run);
    }

    #[test]
    fn local_lock_timeout_runs_or_raises() {
        let mut o = opts(MEMORY);
        o.lock_timeout = Duration::ZERO;
        let s = steps(
            o.clone(),
            &[Event::Missing, Event::Busy, Event::Ran, Event::Stored],
        );
        assert_eq!(s[2], Step::Run);
        assert_eq!(s[4], Step::ReturnResult);
        o.on_lock_timeout = OnLockTimeout::Raise;
        let s = steps(o, &[Event::Missing, Event::Busy]);
        assert_eq!(s[2], Step::RaiseLockTimeout);
    }

    #[test]
    fn a_callers_missed_look_is_the_first_look_only_when_one_is_asked() {
        let mut p = Protocol::new(opts(MEMORY));
        let (step, used) = p.start_after_look(true);
        assert!(used);
        assert!(matches!(step, Step::Lock { .. }), "{step:?}");
        let mut p = Protocol::new(opts(MEMORY));
        assert_eq!(p.start_after_look(false), (Step::Look, false));
        // An overwrite never looks first: the caller's look is not used.
        let mut o = opts(MEMORY);
        o.mode = Mode::Overwrite;
        let (step, used) = Protocol::new(o.clone()).start_after_look(true);
        assert!(!used);
        assert_eq!(step, Protocol::new(o).start());
    }

    #[test]
    fn a_first_lock_wait_counts_against_the_timeout_though_no_clock_ran() {
        // The first wait is asked for before any clock read; once it comes
        // back busy, what is left of the timeout is less by that wait.
        let mut o = opts(MEMORY);
        o.lock_timeout = WAIT_SLICE + WAIT_SLICE / 2;
        let mut p = Protocol::new(o.clone());
        p.start();
        assert_eq!(p.next(Event::Missing), Step::Lock { wait: WAIT_SLICE });
        match p.next(Event::Busy) {
            Step::Lock { wait } => assert!(wait <= WAIT_SLICE / 2, "{wait:?}"),
            other => panic!("{other:?}"),
        }
        // A timeout no longer than a slice is spent by the first wait.
        o.lock_timeout = WAIT_SLICE;
        o.on_lock_timeout = OnLockTimeout::Raise;
        let s = steps(o, &[Event::Missing, Event::Busy]);
        assert_eq!(s[2], Step::RaiseLockTimeout);
    }

    #[test]
    fn local_busy_slice_tries_again_within_the_timeout() {
        let s = steps(opts(MEMORY), &[Event::Missing, Event::Busy]);
        assert!(matches!(s[2], Step::Lock { .. }));
    }

    #[test]
    fn invalid_value_is_recomputed() {
        let s = steps(
            opts(MEMORY),
            &[
                Event::Found {
                    created_at: clock::now(),
                    valid: false,
                },
                locked(),
                Event::Ran,
            ],
        );
        assert!(matches!(s[1], Step::Lock { .. }));
        assert_eq!(s[2], Step::Run);
    }

    #[test]
    fn distributed_hit_and_miss() {
        let d = opts(Shape::Distributed);
        assert_eq!(
            steps(d.clone(), &[fresh()]),
            [Step::LookOrLock, Step::ServeFound]
        );
        let s = steps(d, &[locked(), Event::Ran, Event::Stored]);
        assert_eq!(
            s,
            [
                Step::LookOrLock,
                Step::Run,
                Step::Store { extra: 0.0 },
                Step::ReturnResult
            ]
        );
    }

    #[test]
    fn distributed_waiter_gets_the_holders_value() {
        let s = steps(opts(Shape::Distributed), &[Event::Busy, fresh()]);
        assert!(matches!(
            s[1],
            Step::AwaitValue {
                newer_than: None,
                ..
            }
        ));
        assert_eq!(s[2], Step::ServeFound);
    }

    #[test]
    fn distributed_holder_gone_without_value_looks_again() {
        let s = steps(
            opts(Shape::Distributed),
            &[Event::Busy, Event::NoValue, locked()],
        );
        assert_eq!(s[2], Step::LookOrLock);
        assert_eq!(s[3], Step::Run);
    }

    #[test]
    fn distributed_rejected_value_locks_and_checks_for_newer() {
        let at = clock::now();
        let mut p = Protocol::new(opts(Shape::Distributed));
        p.start();
        let s = p.next(Event::Found {
            created_at: at,
            valid: false,
        });
        assert_eq!(
            s,
            Step::Lock {
                wait: Duration::ZERO
            }
        );
        let s = p.next(locked());
        assert_eq!(
            s,
            Step::AwaitValue {
                newer_than: Some(at),
                wait: Duration::ZERO
            }
        );
        assert_eq!(p.next(Event::NoValue), Step::Run);
        assert!(p.holding());
    }

    #[test]
    fn distributed_unreadable_is_discarded_then_looked_again() {
        let s = steps(
            opts(Shape::Distributed),
            &[Event::Unreadable, Event::Discarded],
        );
        assert_eq!(s[1], Step::Discard);
        assert_eq!(s[2], Step::LookOrLock);
    }

    #[test]
    fn distributed_overwrite_runs_without_lock() {
        let mut o = opts(Shape::Distributed);
        o.mode = Mode::Overwrite;
        let s = steps(o, &[Event::Ran, Event::Stored]);
        assert_eq!(
            s,
            [Step::Run, Step::Store { extra: 0.0 }, Step::ReturnResult]
        );
    }

    #[test]
    fn local_overwrite_takes_the_lock_and_never_looks() {
        let mut o = opts(FILE);
        o.mode = Mode::Overwrite;
        let s = steps(
            o,
            &[
                Event::Locked {
                    waited: true,
                    stored_meanwhile: true,
                },
                Event::Ran,
            ],
        );
        assert!(matches!(s[0], Step::Lock { .. }));
        assert_eq!(s[1], Step::Run);
    }

    #[test]
    fn fail_open_runs_uncached() {
        for shape in [MEMORY, Shape::Distributed] {
            let s = steps(opts(shape), &[Event::Unavailable, Event::Ran]);
            assert_eq!(s[1], Step::Run);
            assert_eq!(s[2], Step::ReturnResult, "no store after an outage");
        }
        // A failed store still returns the result.
        let s = steps(
            opts(MEMORY),
            &[Event::Missing, locked(), Event::Ran, Event::Unavailable],
        );
        assert_eq!(s[4], Step::ReturnResult);
    }

    #[test]
    fn function_error_raises() {
        let s = steps(opts(MEMORY), &[Event::Missing, locked(), Event::Failed]);
        assert_eq!(s[3], Step::RaiseError);
    }

    #[test]
    fn stale_while_revalidate_serves_and_claims_one_refresh() {
        let mut o = opts(MEMORY);
        o.stale_while_revalidate = 60.0;
        let s = steps(o.clone(), &[aged(310.0), Event::Claimed]);
        assert_eq!(s[1], Step::ClaimRefresh);
        assert_eq!(s[2], Step::ServeStale { refresh: true });
        let s = steps(o.clone(), &[aged(310.0), Event::NotClaimed]);
        assert_eq!(s[2], Step::ServeStale { refresh: false });
        // Past the window: an ordinary miss.
        let s = steps(o, &[aged(400.0)]);
        assert!(matches!(s[1], Step::Lock { .. }));
    }

    #[test]
    fn entries_are_kept_for_the_longest_window() {
        let mut o = opts(MEMORY);
        o.stale_while_revalidate = 30.0;
        o.stale_if_error = 90.0;
        let s = steps(o.clone(), &[Event::Missing, locked(), Event::Ran]);
        assert_eq!(s[3], Step::Store { extra: 90.0 });
        o.ttl = None;
        let s = steps(o, &[Event::Missing, locked(), Event::Ran]);
        assert_eq!(
            s[3],
            Step::Store { extra: 0.0 },
            "no windows for a per-result ttl"
        );
    }

    #[test]
    fn stale_if_error_falls_back_inside_the_window_only() {
        let mut o = opts(MEMORY);
        o.stale_if_error = 60.0;
        let s = steps(
            o.clone(),
            &[aged(320.0), Event::Kept, locked(), Event::Failed],
        );
        assert_eq!(s[1], Step::Keep);
        assert!(matches!(s[2], Step::Lock { .. }));
        assert_eq!(s[4], Step::ServeKept);
        // The function succeeding replaces the stale value as usual.
        let s = steps(o.clone(), &[aged(320.0), Event::Kept, locked(), Event::Ran]);
        assert_eq!(s[4], Step::Store { extra: 60.0 });
        // Past the window, the error propagates.
        let s = steps(o, &[aged(400.0), locked(), Event::Failed]);
        assert_eq!(s[3], Step::RaiseError);
    }

    #[test]
    fn refresh_computes_only_under_an_immediate_lock() {
        let mut o = opts(Shape::Distributed);
        o.stale_while_revalidate = 60.0;
        let stale_at = clock::now() - 310.0;
        let steps = |events: &[Event]| {
            let mut p = Protocol::refresh(o.clone(), stale_at);
            let mut out = vec![p.start()];
            out.extend(events.iter().map(|e| p.next(*e)));
            out
        };
        let s = steps(&[Event::Busy]);
        assert_eq!(
            s,
            [
                Step::Lock {
                    wait: Duration::ZERO
                },
                Step::Done
            ]
        );
        // Under the lock it checks for a newer value first.
        let s = steps(&[locked(), Event::NoValue, Event::Ran, Event::Stored]);
        assert_eq!(
            s[1],
            Step::AwaitValue {
                newer_than: Some(stale_at),
                wait: Duration::ZERO
            }
        );
        assert_eq!(s[2], Step::Run);
        assert_eq!(s[4], Step::Done);
        let s = steps(&[locked(), fresh()]);
        assert_eq!(s[2], Step::Done, "refreshed meanwhile by someone else");
        // Local: looks again under the lock; computes if still stale.
        let mut l = opts(MEMORY);
        l.stale_while_revalidate = 60.0;
        let mut p = Protocol::refresh(l.clone(), stale_at);
        assert!(matches!(p.start(), Step::Lock { wait } if wait == Duration::ZERO));
        assert_eq!(p.next(locked()), Step::Look);
        assert_eq!(p.next(aged(310.0)), Step::Run);
        let mut p = Protocol::refresh(l, stale_at);
        p.start();
        assert_eq!(p.next(Event::Busy), Step::Done);
    }

    #[test]
    fn stale_value_found_under_the_lock_is_kept_not_locked_again() {
        let mut o = opts(MEMORY);
        o.stale_if_error = 60.0;
        let mut p = Protocol::new(o);
        p.start();
        p.next(Event::Missing);
        assert_eq!(
            p.next(Event::Locked {
                waited: true,
                stored_meanwhile: false
            }),
            Step::Look
        );
        assert_eq!(p.next(aged(320.0)), Step::Keep);
        assert_eq!(p.next(Event::Kept), Step::Run);
    }

    #[test]
    fn deadline_spent_runs_uncached() {
        let mut o = opts(Shape::Distributed);
        o.cache_deadline = Some(Duration::ZERO);
        let s = steps(o, &[Event::Ran]);
        assert_eq!(s, [Step::Run, Step::ReturnResult]);
    }

    #[test]
    fn waits_never_pass_the_deadline() {
        let mut o = opts(Shape::Distributed);
        o.cache_deadline = Some(Duration::from_millis(30));
        let mut p = Protocol::new(o);
        p.start();
        match p.next(Event::Busy) {
            Step::AwaitValue { wait, .. } => assert!(wait <= Duration::from_millis(30)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unusable_backend_is_skipped() {
        for shape in [MEMORY, FILE, Shape::Distributed] {
            let mut o = opts(shape);
            o.backend_usable = false;
            assert_eq!(
                steps(o.clone(), &[Event::Ran]),
                [Step::Run, Step::ReturnResult]
            );
            let mut p = Protocol::refresh(o.clone(), 0.0);
            assert_eq!(p.start(), Step::Done);
            // Not failing open: raise at once, never run nor wait.
            o.fail_open = false;
            for mode in [Mode::Call, Mode::Overwrite] {
                o.mode = mode;
                assert_eq!(steps(o.clone(), &[]), [Step::RaiseUnavailable]);
            }
            let mut p = Protocol::refresh(o, 0.0);
            assert_eq!(p.start(), Step::Done);
        }
    }

    #[test]
    fn terminal_steps() {
        assert!(Step::ServeFound.is_terminal());
        assert!(Step::Done.is_terminal());
        assert!(!Step::Run.is_terminal());
        assert!(!Step::Keep.is_terminal());
    }
}
