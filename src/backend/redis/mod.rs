//! The Redis backend: values shared with the reference implementation byte
//! for byte, and a dogpile lock it understands.
//!
//! Layout (see `COMPAT.md`): the value under a key is 8 bytes of `created_at`
//! (a native-endian `f64` of Unix seconds, Python's `struct.pack('d', ...)`)
//! followed by the payload, written with `SETEX key ttl value`. The dogpile
//! lock of a key is `lock:{key}`, holding a random token, taken with
//! `SET NX EX int(lock_timeout)` and released only by its owner.
//!
//! Round trips: a read is one `GET`; a cached call's look-or-lock and its
//! store are one round trip each ([`RedisBackend::get_or_lock`], then
//! [`RedisBackend::store_and_unlock`]; which commands, in `look.rs`). Both
//! touch two keys (the value and its lock) in one round trip, which on a
//! Redis Cluster must share a hash slot: there the lock is
//! [`cluster_lock_key`], which does for every key.
//!
//! Topologies (see [`url`] for the URL forms): one server, a Redis Cluster
//! (the `redis` crate follows `MOVED`/`ASK` and refreshes its slot map), or
//! the master that a set of Sentinels names (asked again after a connection
//! to it failed, which is how a failover is followed).
//!
//! Connections: a small pool of synchronous connections (one per server, or
//! one cluster connection spanning the masters), made on first use and
//! shared by every thread. Each operation checks one out and puts it back
//! when it succeeded; a connection that saw an error is dropped (but a
//! cluster connection outlives a timeout of one node). A
//! connection idle for longer than [`RedisOptions::health_check_interval`]
//! is checked with a `PING` before use. A round trip that fails at once on a
//! broken connection (the server restarted, or closed an idle connection)
//! empties the pool and is retried on a fresh connection, up to
//! [`RedisOptions::retry_count`] times; a timeout is never retried. Every
//! connect, read and write is bounded by [`RedisOptions::socket_timeout`].
//! After a `fork` the child never touches the connections it inherited (nor
//! the pool's lock, which a parent thread may have held): they are forgotten
//! (not closed, which would disturb the parent's session) and the child
//! connects afresh ([`PerProcess`]).
//!
//! `keys`, `count` and `clear` walk the keyspace with `SCAN MATCH pattern
//! COUNT 1000` and delete with `UNLINK` (`DEL` on servers before 4.0) in
//! batches of 500, so clearing many keys never blocks the server for long.
//! Like the reference, they see every key of the database that matches,
//! including `lock:*` keys and keys not written by cachu. On a cluster they
//! walk every master.
//!
//! Signing ([`crate::sign`], with [`RedisBackend::with_signer`]): the
//! payload after the header carries its signature's trailer, and a value
//! whose trailer is missing or wrong is never handed up: a read finds
//! nothing, [`RedisBackend::get_or_lock`] takes the lock as for a missing
//! value (one more round trip), and waits go on as if no value were there.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::{ConnectionLike, RedisError, RedisResult, Script, Value};

mod aio;
mod expiring;
mod kept_write;
mod link;
mod look;
pub mod near;
mod plain;
mod presence;
mod reply;
mod resp;
mod topology;
pub mod url;

pub use topology::cluster_lock_key;
use topology::{AsyncConn, Conn, Topology};

use super::{Backend, Hit};
use crate::clock::now;
use crate::error::{Error, Result};
use crate::fork::PerProcess;
use crate::sign::{Signer, Signing, TRAILER_LEN};

/// Bytes of `created_at` in front of every stored payload.
const HEADER: usize = 8;
/// The `COUNT` hint of every `SCAN`.
const SCAN_COUNT: usize = 1000;
/// Keys per `UNLINK` while clearing.
const DELETE_BATCH: usize = 500;
/// The longest TTL sent to Redis (about a thousand years); longer or
/// infinite TTLs are clamped to it, as Redis rejects expiry overflows.
const MAX_TTL_SECS: u64 = 1000 * 365 * 86_400;
/// First and longest pause between two polls of [`RedisBackend::wait_for`].
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(20);

/// One round trip: the value if it is there, else try to take the lock.
/// Returns `{1, value}`, `{2}` (lock taken) or `{0}` (someone else holds it).
/// A value too short to carry the 8-byte header, or not a string at all
/// (`WRONGTYPE`), was not written by cachu: it is deleted and counts as
/// missing. So is a lock key that is not a string (no cachu lock).
const GET_OR_LOCK_LUA: &str = r"
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'string' then
  if string.len(v) >= 8 then return {1, v} end
  redis.call('DEL', KEYS[1])
elseif v then
  redis.call('DEL', KEYS[1])
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then return {2} end
if redis.call('TYPE', KEYS[2])['ok'] ~= 'string' then
  redis.call('DEL', KEYS[2])
  if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then return {2} end
end
return {0}
";

/// Release a dogpile lock by its owner: delete `KEYS[1]` if it holds the
/// token `ARGV[1]`. The one script a miss runs (after its store), so it
/// does nothing else: a server runs it in about 0.25 us less than the
/// compare-and-delete below.
const RELEASE_LUA: &str = r"
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Compare-and-delete: remove `KEYS[1]` only if it holds exactly one of
/// the `ARGV` (or is not a string at all, which no cachu value or lock is).
/// Releases a lock by its owner, and removes a malformed value without
/// clobbering a good one written meanwhile (a signed value is given in each
/// form it may have been stored in: signed by each key).
const COMPARE_DELETE_LUA: &str = r"
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' then
  return redis.call('DEL', KEYS[1])
end
for i = 1, #ARGV do
  if v == ARGV[i] then
    return redis.call('DEL', KEYS[1])
  end
end
return 0
";

/// One poll of a waiter: `{1, value}` if the value is there, else
/// `{0, 1}` while the lock is held and `{0, 0}` once it is gone.
const POLL_LUA: &str = r"
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' then v = false end
local l = redis.call('EXISTS', KEYS[2])
if v and string.len(v) >= 8 then return {1, v, l} end
return {0, l}
";

/// Settings of a [`RedisBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Bound on connecting and on each read or write of a round trip. Zero
    /// means no bound.
    pub socket_timeout: Duration,
    /// Lifetime of a dogpile lock (`EX`, whole seconds, at least 1).
    pub lock_timeout: Duration,
    /// Idle connections kept for reuse; more may be open while many threads
    /// work at once, the extra ones are closed when put back.
    pub max_idle_connections: usize,
    /// Retries, each on a fresh connection, of a round trip that failed at
    /// once on a broken connection (never of a timeout).
    pub retry_count: u32,
    /// A pooled connection idle for longer than this is checked with a
    /// `PING` before use. Zero checks before every use.
    pub health_check_interval: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            socket_timeout: Duration::from_secs(3),
            lock_timeout: Duration::from_secs(10),
            max_idle_connections: 16,
            retry_count: 1,
            health_check_interval: Duration::from_secs(30),
        }
    }
}

/// Proof of holding the dogpile lock of one key: the random token stored
/// under `lock:{key}`. Release it with [`RedisBackend::store_and_unlock`] or
/// [`RedisBackend::unlock`]; if it is simply dropped the lock expires after
/// `lock_timeout`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockToken(String);

impl LockToken {
    /// A fresh token (32 hex digits): a random number drawn once per
    /// process (again in a forked child), then a counter. Tokens only need
    /// to be distinct across threads, processes and forks; drawing a random
    /// number per lock cost more than the rest of a Redis hit's own work.
    pub fn random() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        // The generation the seed was drawn in, plus one (0: never drawn).
        static SEED_OF: AtomicU64 = AtomicU64::new(0);
        static SEED: AtomicU64 = AtomicU64::new(0);
        let generation = crate::fork::generation() + 1;
        let seed = if SEED_OF.load(Ordering::Acquire) == generation {
            SEED.load(Ordering::Relaxed)
        } else {
            let seed = Self::draw_seed();
            // Racing threads each draw one; any of them will do, since the
            // counter keeps their tokens apart.
            SEED.store(seed, Ordering::Relaxed);
            SEED_OF.store(generation, Ordering::Release);
            seed
        };
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut text = [0u8; 32];
        let words = u128::from(seed) << 64 | u128::from(n);
        for (i, digit) in text.iter_mut().enumerate() {
            let nibble = (words >> (4 * (31 - i))) & 0xf;
            *digit = b"0123456789abcdef"[nibble as usize];
        }
        Self(String::from_utf8(text.to_vec()).expect("hex digits are ASCII"))
    }

    #[cold]
    fn draw_seed() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        // `RandomState` is keyed from the OS's randomness; the pid and the
        // clock set children of one fork apart.
        let mut h = RandomState::new().build_hasher();
        h.write_u32(crate::fork::pid());
        h.write_u128(nanos);
        h.finish()
    }

    /// The token as stored in Redis.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The outcome of [`RedisBackend::get_or_lock`].
#[derive(Debug, Clone, PartialEq)]
pub enum GetOrLock {
    /// The value was there.
    Hit(Hit<Vec<u8>>),
    /// The value was missing and this caller now holds the lock: compute,
    /// then [`RedisBackend::store_and_unlock`] (or [`RedisBackend::unlock`]).
    Locked(LockToken),
    /// The value was missing and someone else holds the lock: wait for it
    /// with [`RedisBackend::wait_for`].
    Busy,
}

/// The dogpile lock key of `key`: `lock:{key}`, as the reference names it.
pub fn lock_key(key: &str) -> String {
    let mut out = String::with_capacity(5 + key.len());
    out.push_str("lock:");
    out.push_str(key);
    out
}

/// Idle connections of this process, with when each was last used.
type Pool = Mutex<Vec<(Conn, Instant)>>;

/// The multiplexed connection of the async face, and when it was last used.
type AsyncSlot = Mutex<Option<(AsyncConn, Instant)>>;

enum Poll {
    Done(Option<Hit<Vec<u8>>>),
    Wait,
}

/// What a `GET` found.
enum Got {
    /// A cachu value (none if missing, or if it does not verify).
    Read(Option<Hit<Vec<u8>>>),
    /// A value cachu did not write (too short for the header; empty for one
    /// that is not a string): a miss, removed unless replaced meanwhile.
    Foreign(Vec<u8>),
}

struct Scripts {
    get_or_lock: Script,
    compare_delete: Script,
    release: Script,
    poll: Script,
    /// The near cache's reads: with the key's remaining TTL.
    expiring: expiring::Scripts,
}

/// A cache backend storing bytes in one Redis database. See the module
/// documentation for the layout, pooling and timeouts.
pub struct RedisBackend {
    /// Shared with the near cache's tracking task.
    topology: Arc<Topology>,
    /// On a cluster, a client per seed node: the near cache's tracking
    /// reaches every master through them.
    cluster_seeds: Vec<redis::Client>,
    /// Where the server is, without credentials, for error messages.
    target: String,
    options: RedisOptions,
    pool: PerProcess<Pool>,
    scripts: Scripts,
    /// The server does not know `UNLINK` (before 4.0): delete with `DEL`.
    no_unlink: AtomicBool,
    aio: PerProcess<AsyncSlot>,
    signing: Signing,
    /// Which keys were found last time (see `look.rs`).
    presence: presence::Presence,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("target", &self.target)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// A backend for `url`; parses and checks the URL (and reads any TLS
    /// files it names) but does not connect. The URL forms (one server, a
    /// cluster, a Sentinel service) are described in [`url`].
    pub fn new(url: &str, options: RedisOptions) -> Result<Self> {
        let (topology, target) = url::parse(url, &options)?;
        Ok(Self {
            topology: Arc::new(topology),
            cluster_seeds: url::cluster_seeds(url)?,
            target,
            options,
            pool: PerProcess::default(),
            scripts: Scripts {
                get_or_lock: Script::new(GET_OR_LOCK_LUA),
                compare_delete: Script::new(COMPARE_DELETE_LUA),
                release: Script::new(RELEASE_LUA),
                poll: Script::new(POLL_LUA),
                expiring: expiring::Scripts::new(),
            },
            no_unlink: AtomicBool::new(false),
            aio: PerProcess::default(),
            signing: Signing::default(),
            presence: presence::Presence::default(),
        })
    }

    /// This backend, signing the values it writes and handing up only
    /// values that verify (with `Some`); see [`crate::sign`].
    pub fn with_signer(mut self, signer: Option<Arc<Signer>>) -> Self {
        self.signing = Signing::new(signer);
        self
    }

    /// What is stored for `value` under `key`: the header, the payload and,
    /// when signing, the trailer.
    fn encode_for(&self, key: &str, value: &[u8], created_at: f64) -> Vec<u8> {
        let mut out = encode(value, created_at);
        self.signing.seal(key, created_at, &mut out, HEADER);
        out
    }

    /// The hit stored as `raw` under `key`; `None` if it is too short or,
    /// when signing, its trailer does not verify.
    fn decode_for(&self, key: &str, raw: Vec<u8>) -> Option<Hit<Vec<u8>>> {
        let created_at = f64::from_ne_bytes(raw.get(..HEADER)?.try_into().ok()?);
        decode(
            self.signing
                .open(key, created_at, raw, HEADER, &self.target)?,
        )
    }

    /// A backend for the Redis Cluster that any of `seeds` (`host:port`)
    /// belongs to; like `new("redis+cluster://seed,seed...", options)`.
    pub fn cluster<S: AsRef<str>>(
        seeds: impl IntoIterator<Item = S>,
        options: RedisOptions,
    ) -> Result<Self> {
        let seeds: Vec<String> = seeds.into_iter().map(|s| s.as_ref().to_owned()).collect();
        Self::new(&format!("redis+cluster://{}", seeds.join(",")), options)
    }

    /// A backend for the master that the Sentinels at `sentinels`
    /// (`host:port`) name `service_name`, followed across failovers; like
    /// `new("redis+sentinel://sentinel,sentinel.../service_name", options)`.
    pub fn sentinel<S: AsRef<str>>(
        sentinels: impl IntoIterator<Item = S>,
        service_name: &str,
        options: RedisOptions,
    ) -> Result<Self> {
        let sentinels: Vec<String> = sentinels
            .into_iter()
            .map(|s| s.as_ref().to_owned())
            .collect();
        Self::new(
            &format!("redis+sentinel://{}/{service_name}", sentinels.join(",")),
            options,
        )
    }

    /// Whether this backend talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.topology.is_cluster()
    }

    /// The dogpile lock key of `key` on this backend's servers: [`lock_key`]
    /// on one server, [`cluster_lock_key`] on a cluster.
    pub fn lock_key_of(&self, key: &str) -> String {
        if self.topology.is_cluster() {
            cluster_lock_key(key)
        } else {
            lock_key(key)
        }
    }

    /// The options this backend was made with.
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// The server's address (no credentials), as error messages name it.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// One `PING` round trip.
    pub fn ping(&self) -> Result<()> {
        self.run(|c| redis::cmd("PING").query::<Value>(c))
            .map(|_| ())
    }

    /// [`RedisBackend::get_or_lock`] with `script`: the plain one, or one
    /// whose hit also carries the key's seconds left (`with_ttl`: see
    /// `expiring.rs`). The seconds are 0 unless it is such a hit.
    pub(super) fn get_or_lock_by(
        &self,
        key: &str,
        script: &Script,
        with_ttl: bool,
    ) -> Result<(GetOrLock, f64)> {
        let token = LockToken::random();
        let lock = self.lock_key_of(key);
        let secs = self.lock_secs();
        let reply = self.run(|c| {
            script
                .key(key)
                .key(&lock)
                .arg(token.as_str())
                .arg(secs)
                .invoke::<Value>(c)
        })?;
        let (reply, left) = if with_ttl {
            expiring::split_ttl(reply)
        } else {
            (reply, 0.0)
        };
        match self.read_get_or_lock(key, reply, token)? {
            Some(found) => Ok((found, left)),
            // A value that must not be used: lock as for a missing one.
            None => Ok((
                self.try_lock(key)?
                    .map_or(GetOrLock::Busy, GetOrLock::Locked),
                0.0,
            )),
        }
    }

    /// The reply of the get-or-lock script; `None` for a value that is
    /// there but does not verify (the lock was not taken).
    fn read_get_or_lock(
        &self,
        key: &str,
        reply: Value,
        token: LockToken,
    ) -> Result<Option<GetOrLock>> {
        let mut items = into_items(reply);
        match items.first().map(as_int) {
            Some(Some(1)) if items.len() == 2 => {
                let raw = into_bytes(items.swap_remove(1));
                if raw.len() < HEADER {
                    return Err(self.bad_reply("get_or_lock"));
                }
                Ok(self.decode_for(key, raw).map(GetOrLock::Hit))
            }
            Some(Some(2)) => Ok(Some(GetOrLock::Locked(token))),
            Some(Some(0)) => Ok(Some(GetOrLock::Busy)),
            _ => Err(self.bad_reply("get_or_lock")),
        }
    }

    /// The reply of one poll: `Done(Some(hit))` once a value (newer than
    /// `newer_than`, if given) is there, `Done(None)` once the lock is gone
    /// without one, `Wait` meanwhile.
    /// A value that does not verify counts as no value.
    fn read_poll(&self, key: &str, reply: Value, newer_than: Option<f64>) -> Result<Poll> {
        let mut items = into_items(reply);
        let locked = match items.last().and_then(as_int) {
            Some(l) => l != 0,
            None => return Err(self.bad_reply("wait_for")),
        };
        match (items.len(), items.first().and_then(as_int)) {
            (3, Some(1)) => {
                let raw = into_bytes(items.swap_remove(1));
                if raw.len() < HEADER {
                    return Err(self.bad_reply("wait_for"));
                }
                let hit = self.decode_for(key, raw);
                if let Some(hit) = hit.filter(|h| newer_than.is_none_or(|t| h.created_at > t)) {
                    Ok(Poll::Done(Some(hit)))
                } else if locked {
                    Ok(Poll::Wait)
                } else {
                    Ok(Poll::Done(None))
                }
            }
            (2, Some(0)) if locked => Ok(Poll::Wait),
            (2, Some(0)) => Ok(Poll::Done(None)),
            _ => Err(self.bad_reply("wait_for")),
        }
    }

    /// One round trip: remove `key` only if it still holds `hit` (a value
    /// that turned out unreadable); a value stored since is kept.
    pub fn delete_if_unchanged(&self, key: &str, hit: &Hit<Vec<u8>>) -> Result<()> {
        let forms = self.stored_forms(key, hit);
        self.run(|c| {
            self.scripts
                .compare_delete
                .key(key)
                .arg(&forms)
                .invoke::<Value>(c)
        })
        .map(|_| ())
    }

    /// One round trip: remove the value cachu did not write (`raw`, empty
    /// for one of the wrong type) from `key`, unless it changed meanwhile.
    fn delete_foreign(&self, key: &str, raw: &[u8]) -> Result<()> {
        self.run(|c| {
            self.scripts
                .compare_delete
                .key(key)
                .arg(raw)
                .invoke::<Value>(c)
        })
        .map(|_| ())
    }

    /// Every form in which `hit` may be stored under `key` (signed by any
    /// of the keys, when signing).
    fn stored_forms(&self, key: &str, hit: &Hit<Vec<u8>>) -> Vec<Vec<u8>> {
        self.signing.stored_forms(
            key,
            hit.created_at,
            encode(&hit.value, hit.created_at),
            HEADER,
        )
    }

    /// One round trip: take the dogpile lock of `key` if it is free, whatever
    /// the value (used to recompute a value that `validate` rejected).
    pub fn try_lock(&self, key: &str) -> Result<Option<LockToken>> {
        let token = LockToken::random();
        let lock = self.lock_key_of(key);
        let secs = self.lock_secs();
        let reply = self.run(|c| {
            redis::cmd("SET")
                .arg(&lock)
                .arg(token.as_str())
                .arg("NX")
                .arg("EX")
                .arg(secs)
                .query::<Value>(c)
        })?;
        Ok(matches!(reply, Value::Okay).then_some(token))
    }

    /// Release the lock of `key` if `token` still holds it (after a failed
    /// computation). A lock since taken by someone else is left alone.
    pub fn unlock(&self, key: &str, token: &LockToken) -> Result<()> {
        let lock = self.lock_key_of(key);
        self.run(|c| {
            self.scripts
                .release
                .key(&lock)
                .arg(token.as_str())
                .invoke::<Value>(c)
        })
        .map(|_| ())
    }

    /// Wait, polling with one round trip every 5 to 20 ms, until the value of
    /// `key` appears (returned), its lock disappears without a value, or
    /// `timeout` passes (both `None`: compute it yourself).
    pub fn wait_for(&self, key: &str, timeout: Duration) -> Result<Option<Hit<Vec<u8>>>> {
        self.wait_for_newer(key, None, timeout)
    }

    /// [`RedisBackend::wait_for`] a value stored after `newer_than` (a
    /// `created_at`): an older value present meanwhile is waited out while
    /// the lock is held.
    pub fn wait_for_newer(
        &self,
        key: &str,
        newer_than: Option<f64>,
        timeout: Duration,
    ) -> Result<Option<Hit<Vec<u8>>>> {
        let deadline = Instant::now() + timeout;
        let lock = self.lock_key_of(key);
        let mut pause = POLL_FIRST;
        loop {
            let reply = self.run(|c| self.scripts.poll.key(key).key(&lock).invoke::<Value>(c))?;
            if let Poll::Done(found) = self.read_poll(key, reply, newer_than)? {
                return Ok(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            std::thread::sleep(pause.min(left));
            pause = (pause * 3 / 2).min(POLL_MAX);
        }
    }

    fn lock_secs(&self) -> u64 {
        self.options.lock_timeout.as_secs().clamp(1, MAX_TTL_SECS)
    }

    /// Run `op` on a pooled connection. A round trip that failed at once
    /// on a broken connection is retried, each time on a fresh connection,
    /// up to `retry_count` times; a timeout is not retried.
    fn run<T>(&self, mut op: impl FnMut(&mut Conn) -> RedisResult<T>) -> Result<T> {
        let mut conn = match self.take_idle() {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let mut retries_left = self.options.retry_count;
        loop {
            match op(&mut conn) {
                Ok(v) => {
                    self.put_back(conn);
                    return Ok(v);
                }
                Err(e) => {
                    self.topology.failed(&e);
                    if conn.outlives(&e) {
                        self.put_back(conn);
                        return Err(self.unavailable(&e));
                    }
                    drop(conn);
                    if retries_left == 0 || !is_dead_connection(&e) {
                        return Err(self.unavailable(&e));
                    }
                    retries_left -= 1;
                    // Its siblings most likely died with it (server restart).
                    self.discard_idle();
                    conn = self.connect()?;
                }
            }
        }
    }

    /// An idle connection of this process, checked with a `PING` if it was
    /// idle for longer than `health_check_interval` (one found dead is
    /// dropped, and so are its siblings).
    fn take_idle(&self) -> Option<Conn> {
        let (mut conn, last_used) = self.pool.get().lock().pop()?;
        if last_used.elapsed() < self.options.health_check_interval || conn.check_connection() {
            return Some(conn);
        }
        drop(conn);
        self.discard_idle();
        None
    }

    fn put_back(&self, conn: Conn) {
        if !conn.is_open() {
            return;
        }
        let mut pool = self.pool.get().lock();
        if pool.len() < self.options.max_idle_connections {
            pool.push((conn, Instant::now()));
            return;
        }
        drop(pool);
        drop(conn);
    }

    fn discard_idle(&self) {
        let idle = std::mem::take(&mut *self.pool.get().lock());
        // Closed outside the lock.
        drop(idle);
    }

    fn connect(&self) -> Result<Conn> {
        let timeout = self.timeout();
        let attempt = catch_unwind(AssertUnwindSafe(|| self.topology.connect(timeout)));
        match attempt {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => {
                self.topology.failed(&e);
                Err(self.unavailable(&e))
            }
            Err(_) => Err(Error::Unavailable(format!(
                "redis {}: connecting failed unexpectedly",
                self.target
            ))),
        }
    }

    fn timeout(&self) -> Option<Duration> {
        let t = self.options.socket_timeout;
        (!t.is_zero()).then_some(t)
    }

    fn unavailable(&self, e: &RedisError) -> Error {
        if topology::is_timeout(e) {
            Error::Unavailable(format!(
                "redis {}: timed out after {:?} ({})",
                self.target,
                self.options.socket_timeout,
                topology::timeout_cause(e)
            ))
        } else {
            Error::Unavailable(format!("redis {}: {e}", self.target))
        }
    }

    fn bad_reply(&self, what: &str) -> Error {
        Error::Unavailable(format!("redis {}: unexpected reply to {what}", self.target))
    }

    /// Walk the keys matching `pattern` with `SCAN` on every master,
    /// handing each batch to `each` on the same connection.
    fn scan(
        conn: &mut Conn,
        pattern: &str,
        mut each: impl FnMut(&mut Conn, Vec<Vec<u8>>) -> RedisResult<()>,
    ) -> RedisResult<()> {
        let mut batches = Vec::new();
        conn.for_each_master(|query| {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) =
                    redis::from_redis_value(query(&scan_cmd(cursor, pattern))?)?;
                batches.push(keys);
                if next == 0 {
                    return Ok(());
                }
                cursor = next;
            }
        })?;
        for keys in batches {
            each(conn, keys)?;
        }
        Ok(())
    }

    /// Delete `keys` with one `UNLINK` (or `DEL`); how many existed.
    fn unlink(&self, conn: &mut Conn, keys: &[Vec<u8>]) -> RedisResult<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        if let Some(unlink) = self.unlink_cmd(keys) {
            match unlink.query::<u64>(conn) {
                Err(e) if self.unlink_unknown(&e) => {}
                other => return other,
            }
        }
        redis::cmd("DEL").arg(keys).query::<u64>(conn)
    }

    /// `UNLINK keys`, unless the server is known not to have it (then `DEL`).
    fn unlink_cmd(&self, keys: &[Vec<u8>]) -> Option<redis::Cmd> {
        let mut cmd = redis::cmd("UNLINK");
        cmd.arg(keys);
        (!self.no_unlink.load(Ordering::Relaxed)).then_some(cmd)
    }

    /// Whether `e` says the server has no `UNLINK` (remembered: use `DEL`).
    fn unlink_unknown(&self, e: &RedisError) -> bool {
        let unknown = is_unknown_command(e);
        if unknown {
            self.no_unlink.store(true, Ordering::Relaxed);
        }
        unknown
    }

    /// What the reply to `GET key` holds (`WRONGTYPE` counts as a value
    /// cachu did not write).
    fn read_get(&self, key: &str, reply: RedisResult<Option<Vec<u8>>>) -> RedisResult<Got> {
        let raw = match reply {
            Err(e) if is_wrong_type(&e) => return Ok(Got::Foreign(Vec::new())),
            other => other?,
        };
        Ok(match raw {
            None => Got::Read(None),
            Some(raw) if raw.len() >= HEADER => Got::Read(self.decode_for(key, raw)),
            Some(raw) => Got::Foreign(raw),
        })
    }

    /// The distinct keys matching `pattern`, in `SCAN` order.
    fn scan_keys(&self, pattern: Option<&str>) -> Result<Vec<Vec<u8>>> {
        let pattern = pattern.unwrap_or("*");
        self.run(|c| {
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            Self::scan(c, pattern, |_, keys| {
                for k in keys {
                    if seen.insert(k.clone()) {
                        out.push(k);
                    }
                }
                Ok(())
            })?;
            Ok(out)
        })
    }
}

impl Backend for RedisBackend {
    fn get(&self, key: &str) -> Result<Option<Hit<Vec<u8>>>> {
        let got = self.run(|c| self.read_get(key, redis::cmd("GET").arg(key).query(c)))?;
        match got {
            Got::Read(found) => Ok(found),
            Got::Foreign(raw) => self.delete_foreign(key, &raw).map(|()| None),
        }
    }

    fn set(&self, key: &str, value: &[u8], ttl: f64) -> Result<()> {
        match ttl_secs(ttl) {
            Some(secs) => {
                let payload = self.encode_for(key, value, now());
                self.run(|c| {
                    redis::cmd("SETEX")
                        .arg(key)
                        .arg(secs)
                        .arg(&payload[..])
                        .query::<()>(c)
                })
            }
            None => self
                .run(|c| redis::cmd("DEL").arg(key).query::<u64>(c))
                .map(|_| ()),
        }
    }

    fn delete(&self, key: &str) -> Result<bool> {
        self.run(|c| redis::cmd("DEL").arg(key).query::<u64>(c))
            .map(|n| n > 0)
    }

    fn clear(&self, pattern: Option<&str>) -> Result<u64> {
        let pattern = pattern.unwrap_or("*");
        self.run(|c| {
            let mut removed = 0u64;
            let mut batch: Vec<Vec<u8>> = Vec::with_capacity(DELETE_BATCH);
            Self::scan(c, pattern, |c, keys| {
                for k in keys {
                    batch.push(k);
                    if batch.len() >= DELETE_BATCH {
                        removed += self.unlink(c, &batch)?;
                        batch.clear();
                    }
                }
                Ok(())
            })?;
            removed += self.unlink(c, &batch)?;
            Ok(removed)
        })
    }

    fn keys(&self, pattern: Option<&str>) -> Result<Vec<String>> {
        Ok(key_strings(self.scan_keys(pattern)?))
    }

    fn count(&self, pattern: Option<&str>) -> Result<u64> {
        Ok(self.scan_keys(pattern)?.len() as u64)
    }

    fn close(&self) {
        self.discard_idle();
    }
}

/// `url` with its secrets replaced by `***`, for messages: the password of
/// the user info (everything up to the last `@`, the user name kept), and
/// the value of any `password` query parameter. The one masking function of
/// the engine (the Python layer calls it too); it errs on masking too much.
pub fn redact(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let (head, rest) = url.split_at(start);
    let mut out = String::with_capacity(url.len());
    out.push_str(head);
    let rest = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str("***"),
            }
            &rest[at..]
        }
        None => rest,
    };
    // `password=` in the query (redis-py reads it there too).
    let mut tail = rest;
    while let Some(i) = find_ignore_case(tail, "password=") {
        let value = i + "password=".len();
        // `sentinel_password=` too (the `redis+sentinel://` form).
        let boundary = i == 0 || matches!(tail.as_bytes()[i - 1], b'?' | b'&' | b';' | b'_');
        out.push_str(&tail[..value]);
        tail = &tail[value..];
        if boundary {
            let end = tail.find(['&', ';', '#']).unwrap_or(tail.len());
            out.push_str("***");
            tail = &tail[end..];
        }
    }
    out.push_str(tail);
    out
}

fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Keys as text (a key that is not UTF-8, which cachu never writes, with
/// replacement characters).
fn key_strings(keys: Vec<Vec<u8>>) -> Vec<String> {
    keys.into_iter()
        .map(|k| match String::from_utf8(k) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
        .collect()
}

/// One `SCAN` step from `cursor`.
fn scan_cmd(cursor: u64, pattern: &str) -> redis::Cmd {
    let mut scan = redis::cmd("SCAN");
    scan.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_COUNT);
    scan
}

/// Whole seconds for `SETEX`: a fractional TTL rounds up, to at least 1;
/// `None` for a TTL of zero or less (or NaN): store nothing.
fn ttl_secs(ttl: f64) -> Option<u64> {
    if ttl > 0.0 {
        // `as` saturates: infinity becomes u64::MAX, then clamped.
        Some((ttl.ceil() as u64).clamp(1, MAX_TTL_SECS))
    } else {
        None
    }
}

/// `created_at` as a native-endian f64, then the payload.
fn encode(value: &[u8], created_at: f64) -> Vec<u8> {
    // Room for a signature's trailer, which may follow.
    let mut out = Vec::with_capacity(HEADER + value.len() + TRAILER_LEN);
    out.extend_from_slice(&created_at.to_ne_bytes());
    out.extend_from_slice(value);
    out
}

/// The inverse of [`encode`]; `None` for a value shorter than the header.
fn decode(mut raw: Vec<u8>) -> Option<Hit<Vec<u8>>> {
    let head: [u8; HEADER] = raw.get(..HEADER)?.try_into().ok()?;
    raw.drain(..HEADER);
    Some(Hit {
        value: raw,
        created_at: f64::from_ne_bytes(head),
    })
}

fn into_items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) | Value::Set(items) => items,
        _ => Vec::new(),
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

fn into_bytes(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        _ => Vec::new(),
    }
}

/// The connection itself failed (closed by the server, reset, broken
/// pipe), as an idle connection does after a server restart; not a timeout.
fn is_dead_connection(e: &RedisError) -> bool {
    !topology::is_timeout(e)
        && (e.is_connection_dropped()
            || e.is_io_error()
            // A cluster connection that lost every node connection at once.
            || e.kind() == redis::ErrorKind::ClusterConnectionNotFound)
}

/// `WRONGTYPE`: the key holds a list, hash, ... where a value was expected.
pub(super) fn is_wrong_type(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE")
}

fn is_unknown_command(e: &RedisError) -> bool {
    e.code() == Some("ERR")
        && e.to_string()
            .to_ascii_lowercase()
            .contains("unknown command")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounding() {
        assert_eq!(ttl_secs(0.0), None);
        assert_eq!(ttl_secs(-5.0), None);
        assert_eq!(ttl_secs(f64::NAN), None);
        assert_eq!(ttl_secs(0.2), Some(1));
        assert_eq!(ttl_secs(1.0), Some(1));
        assert_eq!(ttl_secs(1.5), Some(2));
        assert_eq!(ttl_secs(300.0), Some(300));
        assert_eq!(ttl_secs(f64::INFINITY), Some(MAX_TTL_SECS));
    }

    #[test]
    fn layout() {
        let raw = encode(b"abc", 1234.5);
        assert_eq!(&raw[..8], &1234.5f64.to_ne_bytes());
        assert_eq!(&raw[8..], b"abc");
        let hit = decode(raw).unwrap();
        assert_eq!(hit.value, b"abc");
        assert_eq!(hit.created_at, 1234.5);
        assert_eq!(decode(vec![1, 2, 3]), None);
        assert_eq!(decode(encode(b"", 1.0)).unwrap().value, b"");
    }

    #[test]
    fn tokens_differ() {
        let a = LockToken::random();
        let b = LockToken::random();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
    }

    #[cfg(unix)]
    #[test]
    fn a_forked_child_draws_its_own_tokens() {
        let parent = LockToken::random();
        // SAFETY: the child only makes a token, compares and exits.
        match unsafe { libc::fork() } {
            0 => {
                let child = LockToken::random();
                // Same counter position is possible; the seed half must differ.
                let ok = child.as_str()[..16] != parent.as_str()[..16];
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            pid => {
                let mut status = 0;
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
                assert_eq!(LockToken::random().as_str()[..16], parent.as_str()[..16]);
            }
        }
    }

    #[test]
    fn urls() {
        let o = RedisOptions::default;
        assert_eq!(
            RedisBackend::new("redis://localhost:6379/0", o())
                .unwrap()
                .target(),
            "redis://localhost:6379/0"
        );
        assert_eq!(
            RedisBackend::new("redis://u:secret@127.0.0.1:7000/3", o())
                .unwrap()
                .target(),
            "redis://127.0.0.1:7000/3"
        );
        assert_eq!(
            RedisBackend::new("redis://127.0.0.1?db=2", o())
                .unwrap()
                .target(),
            "redis://127.0.0.1:6379/2"
        );
        assert_eq!(
            RedisBackend::new("redis://127.0.0.1/1?db=2", o())
                .unwrap()
                .target(),
            "redis://127.0.0.1:6379/2"
        );
        assert_eq!(
            RedisBackend::new("unix:///tmp/r.sock?db=4", o())
                .unwrap()
                .target(),
            "unix:///tmp/r.sock?db=4"
        );
        assert_eq!(
            RedisBackend::new("rediss://h:6380/1?ssl_cert_reqs=none", o())
                .unwrap()
                .target(),
            "rediss://h:6380/1"
        );
        assert!(RedisBackend::new("rediss://h:6380/1?ssl_check_hostname=false", o()).is_ok());
        for bad in [
            "http://localhost",
            "localhost:6379",
            "",
            "redis://localhost/abc",
            "redis://localhost:99999/0",
            "rediss://h/0?ssl_cert_reqs=maybe",
            "rediss://h/0?ssl_ca_certs=/nonexistent/ca.pem",
            "unix:///tmp/r.sock?db=x",
        ] {
            let err = RedisBackend::new(bad, o()).unwrap_err();
            assert!(
                err.to_string().contains("invalid redis_url"),
                "{bad}: {err}"
            );
        }
        let err = RedisBackend::new("redis://u:secret@h/x", o()).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        assert_eq!(redact("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact("redis://h/0"), "redis://h/0");
        assert_eq!(redact("redis://u:p/w@d@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("u:pw@h"), "u:***@h");
        assert_eq!(
            redact("unix:///s.sock?db=1&Password=pw&username=u"),
            "unix:///s.sock?db=1&Password=***&username=u"
        );
        assert_eq!(
            redact("redis://h/0?password=pw"),
            "redis://h/0?password=***"
        );
        assert_eq!(redact("redis://h/0?xpassword=1"), "redis://h/0?xpassword=1");
        assert_eq!(redact("rediss://h:1/0#frag"), "rediss://h:1/0#frag");
        assert_eq!(
            redact("redis+cluster://u:pw@a:1,b:2"),
            "redis+cluster://u:***@a:1,b:2"
        );
        assert_eq!(
            redact("redis+sentinel://s:1/m?sentinel_password=pw"),
            "redis+sentinel://s:1/m?sentinel_password=***"
        );
    }
}
