//! The near cache: recently read or written Redis entries kept in process
//! memory, as
//! whatever value type the caller decodes them into, and kept coherent with
//! the server by server-assisted invalidation (RESP3 `CLIENT TRACKING`).
//!
//! Tracking: one connection per near cache (per master on a cluster), in
//! RESP3, runs `CLIENT TRACKING ON BCAST PREFIX <prefix> NOLOOP`: from then
//! on the server pushes on it the name of every key under the prefix that
//! any client writes, deletes, or that expires or is evicted (a `FLUSHALL`
//! pushes a null: everything), except the writes made on that connection
//! itself. The connections that read and write values are untouched (BCAST
//! tracks by prefix, not by what a connection read), so with the near cache
//! off nothing changes, and a read needs no bookkeeping on the server. The
//! writes whose value is kept go out on the tracking connection (see
//! [`NearCache::write_pass`]).
//!
//! The guarantee: an entry is only ever kept if no invalidation of its key
//! (and no loss of the tracking connection) can have been missed between
//! the moment its read was sent and the moment it is kept. A reader takes a
//! [`Ticket`] before sending its read: the tracking session's epoch and the
//! key's stamp (a counter, one per stripe of keys, bumped by every
//! invalidation of a key of the stripe). The entry is kept only if both are
//! unchanged when it is inserted, checked under the stripe's lock that
//! invalidations take too (and under the gate a flush takes for writing),
//! so an invalidation that arrived before the insert is never undone by it.
//! No ticket is given while the tracking connection is not confirmed. A
//! value written is kept on the same terms, from the moment its write was
//! sent ([`NearCache::written`]).
//!
//! Everything is flushed, and the epoch bumped, when the tracking
//! connection drops or fails a health check (the server may have restarted
//! or pushed invalidations we never read), when it is (re)established, after
//! `fork` (the child has no tracking connection of its own yet), and on a
//! `FLUSHALL`/`FLUSHDB`. Entries also expire locally at their Redis expiry
//! (read with the value), a little early rather than late.
//!
//! Not the `redis` crate's own client-side cache (`caching`, experimental):
//! it keeps raw replies of plain read commands on async connections only,
//! so a hit would still decode (unpickle) the value, our sync connections
//! and our scripted and pipelined reads would not be covered, and a value
//! written could not be kept.
//!
//! The store is a bounded [`MemoryStore`] (W-TinyLFU, N entries). Values
//! removed are dropped on the thread that removed them, which may be the
//! runtime's thread handling a push: values that need care when dropped
//! (Python objects) must tolerate that (PyO3 defers such releases).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use redis::aio::{AsyncPushSender, MultiplexedConnection, SendError};
use redis::cluster_routing::Slot;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ProtocolVersion, PushInfo, PushKind, RedisError,
    Value,
};

use super::topology::Topology;
use crate::backend::memory::{Bounds, MemoryStore};
use crate::clock::{now, now_coarse};
use crate::key::HashedKey;

/// Stripes of key stamps: invalidations of keys of one stripe only ever
/// cost a concurrent read of another key of it its insert (a miss later).
const STRIPES: usize = 4096;
/// An entry expires locally this much before its Redis expiry: the hit path
/// reads a coarse clock (a few ms behind), and the expiry is measured from
/// before the read was sent.
const EXPIRY_MARGIN: f64 = 0.02;
/// The tracking connection is checked with a `PING` this often.
const HEALTH_EVERY: Duration = Duration::from_secs(1);
/// Pauses between attempts to (re)establish the tracking connection.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Proof, taken before a read is sent, that nothing was missed until the
/// value read is kept (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    stamp: u64,
}

/// The tracking session's state, which inserts read and flushes write.
struct Gate {
    /// Bumped by every flush; a ticket of an older epoch keeps nothing.
    epoch: u64,
    /// The session whose `CLIENT TRACKING` the server confirmed, if any.
    session: Option<u64>,
    /// The tracking task that should run: the fork generation it runs in
    /// and its number (an older task, or one of another generation, ends).
    task: Option<(u64, u64)>,
    tasks: u64,
    /// The latest session known lost (a loss may be reported before the
    /// session is confirmed up: it must then never count as up).
    lost: u64,
    /// The confirmed session's connections, which also carry the writes
    /// whose value is kept (see [`WritePass`]).
    writers: Option<Writers>,
}

/// A session's tracking connections, one per server tracked.
struct Writers {
    conns: Vec<MultiplexedConnection>,
    /// On a cluster: which of `conns` reaches the master serving each slot.
    slots: Option<HashMap<Slot, usize>>,
}

impl Writers {
    /// The connection to write `key` on: its master's (none if no master
    /// serves its slot as far as this session knows).
    fn route(&self, key: &str) -> Option<MultiplexedConnection> {
        let at = match &self.slots {
            Some(slots) => *slots.get(&Slot::for_key(key))?,
            None => 0,
        };
        self.conns.get(at).cloned()
    }
}

/// Leave to send a write of one key on the tracking connection (see
/// [`NearCache::write_pass`]), and keep the value written once its reply
/// comes ([`NearCache::written`]). Dropped unsettled (the write failed, or
/// was abandoned) it ends the session: the server may run the write
/// without any push telling us (NOLOOP), so nothing read meanwhile can be
/// trusted.
pub struct WritePass<V: Send + Sync + 'static> {
    near: Arc<NearCache<V>>,
    ticket: Ticket,
    session: u64,
    conn: MultiplexedConnection,
    settled: bool,
}

impl<V: Send + Sync + 'static> WritePass<V> {
    /// The connection to send the write on.
    pub fn connection(&mut self) -> &mut MultiplexedConnection {
        &mut self.conn
    }

    /// The server refused the write without running it (a cluster
    /// redirection): nothing to settle.
    pub fn refused(mut self) {
        self.settled = true;
    }
}

/// A value about to be written, to keep near once the write is done: the
/// pass it is written under, the value in the near cache's form, and its
/// weight.
pub struct Keep<V: Send + Sync + 'static> {
    pub pass: WritePass<V>,
    pub value: V,
    pub weight: u64,
}

impl<V: Send + Sync + 'static> Drop for WritePass<V> {
    fn drop(&mut self) {
        if !self.settled {
            drop(self.near.down(self.session));
        }
    }
}

/// Entries of one Redis backend's keys under `prefix`, kept coherent with
/// the server. See the module documentation.
pub struct NearCache<V> {
    store: MemoryStore<V>,
    prefix: String,
    capacity: u64,
    stamps: Box<[Mutex<u64>]>,
    gate: RwLock<Gate>,
    /// The fork generation the entries belong to.
    generation: AtomicU64,
    sessions: AtomicU64,
    /// Flushes since creation (tests and diagnostics).
    flushes: AtomicU64,
    /// Invalidation messages handled since creation.
    invalidations: AtomicU64,
    /// Wakes the tracking task when its session is lost.
    lost: tokio::sync::Notify,
}

impl<V: Send + Sync + 'static> NearCache<V> {
    /// A near cache of at most `capacity` entries of the keys starting with
    /// `prefix` (all keys for an empty prefix). It starts tracking on the
    /// first [`NearCache::ticket`].
    pub fn new(capacity: u64, prefix: &str) -> Self {
        let bounds = Bounds {
            max_entries: Some(capacity.max(1)),
            max_bytes: None,
        };
        Self {
            // No sweeps: entries go when read expired, evicted or invalidated.
            store: MemoryStore::with_bounds(bounds, f64::INFINITY),
            prefix: prefix.to_owned(),
            capacity,
            stamps: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            gate: RwLock::new(Gate {
                epoch: 0,
                session: None,
                task: None,
                tasks: 0,
                lost: 0,
                writers: None,
            }),
            generation: AtomicU64::new(crate::fork::generation()),
            sessions: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            lost: tokio::sync::Notify::new(),
        }
    }

    /// The most entries kept.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Entries held now (expired ones not yet removed included).
    pub fn len(&self) -> u64 {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whole flushes so far (connection lost or re-established, fork,
    /// `FLUSHALL`, a local clear).
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Invalidation messages received so far.
    pub fn invalidations(&self) -> u64 {
        self.invalidations.load(Ordering::Relaxed)
    }

    /// Whether the server confirmed tracking and it has not been lost since.
    pub fn tracking(&self) -> bool {
        self.gate.read().session.is_some()
    }

    /// Whether `key` is one this cache may hold.
    #[inline]
    pub fn covers(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
    }

    #[inline]
    fn stripe(&self, key: HashedKey<'_>) -> &Mutex<u64> {
        // The low bits: the store shards on the middle ones.
        &self.stamps[key.hash as usize % STRIPES]
    }

    /// A live entry of `key`: `f(value, created_at)` runs under the store's
    /// lock (clone a handle, nothing more). An expired entry is removed and
    /// handed back to drop. Nothing is found in a forked child until its own
    /// tracking is up.
    #[inline]
    pub fn get_with<R>(
        &self,
        key: HashedKey<'_>,
        f: impl FnOnce(&V, f64) -> R,
    ) -> (Option<R>, Option<V>) {
        let generation = crate::fork::generation();
        if self.generation.load(Ordering::Relaxed) != generation {
            self.forked(generation);
            return (None, None);
        }
        self.store.get_with(key, now_coarse(), f)
    }

    /// In a forked child: forget the parent's entries and tracking.
    #[cold]
    fn forked(&self, generation: u64) {
        let mut gate = self.gate.write();
        if self.generation.load(Ordering::Relaxed) == generation {
            return;
        }
        gate.session = None;
        gate.task = None;
        gate.writers = None;
        self.flush_locked(&mut gate);
        self.generation.store(generation, Ordering::Relaxed);
    }

    /// The gate, if values of `key` may be kept now: a key of this cache,
    /// and tracking confirmed in this process. Starts tracking (on
    /// `source`'s topology) if it does not run in this process yet.
    fn confirmed(
        self: &Arc<Self>,
        key: HashedKey<'_>,
        source: &TrackingSource,
    ) -> Option<RwLockReadGuard<'_, Gate>> {
        if !self.covers(key.text) {
            return None;
        }
        let generation = crate::fork::generation();
        if self.generation.load(Ordering::Relaxed) != generation {
            self.forked(generation);
        }
        let gate = self.gate.read();
        if gate.task.is_some_and(|(g, _)| g == generation) {
            gate.session?;
            Some(gate)
        } else {
            drop(gate);
            self.start_tracking(generation, source);
            None
        }
    }

    /// Before sending a read of `key`: the ticket to keep its value with, or
    /// `None` if it cannot be kept (not a key of this cache, or tracking is
    /// not confirmed).
    pub fn ticket(self: &Arc<Self>, key: HashedKey<'_>, source: &TrackingSource) -> Option<Ticket> {
        let epoch = self.confirmed(key, source)?.epoch;
        let stamp = *self.stripe(key).lock();
        Some(Ticket { epoch, stamp })
    }

    /// Before writing `key`: leave to send the write on the tracking
    /// connection of its server, so that the value written can be kept
    /// ([`NearCache::written`]); `None` if it cannot be (as for
    /// [`NearCache::ticket`], or no known master serves the key).
    ///
    /// Why this is sound: the tracking connection runs `BCAST NOLOOP`, so
    /// the server pushes on it every change of a key under the prefix
    /// except those whose latest writer in an event-loop cycle is this very
    /// connection; and on one connection the server's pushes and replies
    /// come in the order it made them. So once the reply to a write sent
    /// here is in, any change of the key by anyone else after the write is
    /// pushed, after that reply, and bumps the key's stamp: the value is
    /// kept only if the stamp did not move from before the write was sent
    /// to the moment it is kept (checked under the stripe's lock). Writes
    /// on the ordinary connections cannot give this: their reply and the
    /// push of a later change come on two sockets, in no known order, and
    /// the server folds the keys changed in one cycle into one push, so
    /// counting pushes cannot tell ours from another client's.
    pub fn write_pass(
        self: &Arc<Self>,
        key: HashedKey<'_>,
        source: &TrackingSource,
    ) -> Option<WritePass<V>> {
        let (epoch, session, conn) = {
            let gate = self.confirmed(key, source)?;
            let conn = gate.writers.as_ref()?.route(key.text)?;
            (gate.epoch, gate.session?, conn)
        };
        let stamp = *self.stripe(key).lock();
        Some(WritePass {
            near: self.clone(),
            ticket: Ticket { epoch, stamp },
            session,
            conn,
            settled: false,
        })
    }

    /// The write of `key` sent under `pass` succeeded: keep `value` (of
    /// `weight`, stored at `created_at`, expiring in Redis no earlier than
    /// `expires_at`) unless anything touched the key (or the session)
    /// since the pass was given; either way, reads sent before now keep
    /// nothing (they may have read the value this write replaced, and no
    /// push of it will come). Returns what was not kept or was removed.
    pub fn written(
        &self,
        key: HashedKey<'_>,
        mut pass: WritePass<V>,
        value: V,
        weight: u64,
        created_at: f64,
        expires_at: f64,
    ) -> Vec<V> {
        pass.settled = true;
        let expires_at = expires_at - EXPIRY_MARGIN;
        let gate = self.gate.read();
        let mut stamp = self.stripe(key).lock();
        let untouched = *stamp == pass.ticket.stamp
            && gate.epoch == pass.ticket.epoch
            && gate.session == Some(pass.session);
        *stamp = stamp.wrapping_add(1);
        let lives = expires_at.partial_cmp(&now()) == Some(std::cmp::Ordering::Greater);
        if untouched && lives {
            return self
                .store
                .insert(key, value, weight, created_at, expires_at);
        }
        let mut out = vec![value];
        out.extend(self.store.remove(key, 0.0).map(|(v, _)| v));
        out
    }

    /// Keep `value` (weighing `weight`) for `key`, read under `ticket`, for
    /// `ttl_left` seconds from `read_at` (when the read was sent), unless
    /// anything was invalidated meanwhile. Returns what was not kept or was
    /// removed, to drop.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &self,
        key: HashedKey<'_>,
        ticket: Ticket,
        value: V,
        weight: u64,
        created_at: f64,
        read_at: f64,
        ttl_left: f64,
    ) -> Vec<V> {
        let expires_at = read_at + ttl_left - EXPIRY_MARGIN;
        // Also true for NaN: nothing sure to live is kept.
        if expires_at.partial_cmp(&now()) != Some(std::cmp::Ordering::Greater) {
            return vec![value];
        }
        let gate = self.gate.read();
        if gate.epoch != ticket.epoch || gate.session.is_none() {
            return vec![value];
        }
        let stamp = self.stripe(key).lock();
        if *stamp != ticket.stamp {
            return vec![value];
        }
        self.store
            .insert(key, value, weight, created_at, expires_at)
    }

    /// Drop the entry of `key` and make reads of it under tickets taken so
    /// far keep nothing: the server invalidated it, or this process just
    /// wrote it.
    pub fn invalidate(&self, key: HashedKey<'_>) -> Option<V> {
        let mut stamp = self.stripe(key).lock();
        *stamp = stamp.wrapping_add(1);
        let removed = self.store.remove(key, 0.0).map(|(v, _)| v);
        drop(stamp);
        removed
    }

    /// Drop every entry and make every ticket taken so far keep nothing.
    pub fn flush(&self) -> Vec<V> {
        let mut gate = self.gate.write();
        self.flush_locked(&mut gate)
    }

    fn flush_locked(&self, gate: &mut Gate) -> Vec<V> {
        gate.epoch += 1;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.store.remove_matching(None, 0.0).1
    }

    /// Spawn the tracking task for this process, once per generation.
    #[cold]
    fn start_tracking(self: &Arc<Self>, generation: u64, source: &TrackingSource) {
        let task = {
            let mut gate = self.gate.write();
            if gate.task.is_some_and(|(g, _)| g == generation) {
                return;
            }
            gate.tasks += 1;
            let task = (generation, gate.tasks);
            gate.task = Some(task);
            task
        };
        let weak = Arc::downgrade(self);
        let source = source.clone();
        crate::runtime::handle().spawn(track(weak, source, task));
    }

    /// Stop tracking and drop every entry (the backend is being closed);
    /// the next [`NearCache::ticket`] starts tracking again.
    pub fn stop(&self) -> Vec<V> {
        let mut gate = self.gate.write();
        gate.task = None;
        gate.session = None;
        gate.writers = None;
        self.lost.notify_one();
        self.flush_locked(&mut gate)
    }

    /// Whether `task` is the tracking task that should run.
    fn runs(&self, task: (u64, u64)) -> bool {
        self.gate.read().task == Some(task) && crate::fork::generation() == task.0
    }

    /// The server confirmed tracking for `session` of `task` on `writers`:
    /// start afresh under it. False if the session was lost (or the task
    /// stopped) meanwhile.
    fn up(&self, session: u64, task: (u64, u64), writers: Writers) -> bool {
        let mut gate = self.gate.write();
        let alive = gate.lost < session && gate.task == Some(task);
        if alive {
            gate.session = Some(session);
            gate.writers = Some(writers);
        }
        drop(self.flush_locked(&mut gate));
        alive
    }

    /// `session` was lost (or may have missed a message): flush.
    fn down(&self, session: u64) -> Vec<V> {
        let mut gate = self.gate.write();
        gate.lost = gate.lost.max(session);
        if gate.session == Some(session) {
            gate.session = None;
            gate.writers = None;
            self.lost.notify_one();
        }
        self.flush_locked(&mut gate)
    }

    /// One push of `session`'s connection.
    fn pushed(&self, session: u64, push: PushInfo) {
        match push.kind {
            PushKind::Invalidate => {
                self.invalidations.fetch_add(1, Ordering::Relaxed);
                match push.data.into_iter().next() {
                    Some(Value::Array(keys)) | Some(Value::Set(keys)) => {
                        for key in keys {
                            let key = match key {
                                Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                                Value::SimpleString(s) => s,
                                _ => continue,
                            };
                            drop(self.invalidate(HashedKey::new(&key)));
                        }
                    }
                    // A null: the whole database was flushed.
                    _ => drop(self.flush()),
                }
            }
            PushKind::Disconnection => drop(self.down(session)),
            _ => {}
        }
    }
}

/// What the tracking task connects to: the backend's topology (and, on a
/// cluster, a client per seed node), and its bound on every connect and
/// round trip.
#[derive(Clone)]
pub struct TrackingSource {
    pub(super) topology: Arc<Topology>,
    pub(super) cluster_seeds: Vec<Client>,
    pub(super) timeout: Option<Duration>,
}

/// Hands a connection's pushes to its near cache, as they are read.
struct Pushes<V> {
    near: Weak<NearCache<V>>,
    session: u64,
}

impl<V: Send + Sync + 'static> AsyncPushSender for Pushes<V> {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        match self.near.upgrade() {
            Some(near) => {
                near.pushed(self.session, info);
                Ok(())
            }
            None => Err(SendError),
        }
    }
}

/// `client`, speaking RESP3 (pushes arrive on the connection).
fn resp3(client: &Client) -> redis::RedisResult<Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Client::open(info.set_redis_settings(settings))
}

/// `template` (a cluster seed's client: credentials, TLS) aimed at
/// `host:port`.
fn node_client(template: &Client, host: &str, port: u16) -> redis::RedisResult<Client> {
    let info = template.get_connection_info().clone();
    let addr = match info.addr().clone() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure,
            tls_params,
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    Client::open(info.set_addr(addr))
}

/// A master's address and the slot ranges it serves.
type Master = ((String, u16), Vec<(u16, u16)>);

/// The masters serving slots, from a `CLUSTER NODES` reply, sorted, with
/// the slots each serves (slots being migrated count for their owner).
fn masters_with_slots(nodes: &str) -> Vec<Master> {
    let mut out = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        // A master serving slots counts even if suspected down (`fail?`):
        // while it may still take writes it must be tracked (if it cannot
        // be reached, no session comes up and nothing is kept).
        let serves = fields.len() > 8;
        if !flags.split(',').any(|f| f == "master") || !serves {
            continue;
        }
        // `ip:port@cport[,hostname]`
        let addr = addr.split(['@', ',']).next().unwrap_or_default();
        let Some((host, port)) = addr.rsplit_once(':') else {
            continue;
        };
        let Ok(port @ 1..) = port.parse::<u16>() else {
            continue;
        };
        // `a-b` or `a`; `[a->-node]` / `[a-<-node]` are migrations.
        let ranges = fields[8..]
            .iter()
            .filter(|r| !r.starts_with('['))
            .filter_map(|r| match r.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => r.parse().ok().map(|a| (a, a)),
            })
            .collect();
        out.push(((host.trim_matches(['[', ']']).to_owned(), port), ranges));
    }
    out.sort();
    out
}

/// The masters serving slots, from a `CLUSTER NODES` reply, sorted.
#[cfg(test)]
fn masters_of(nodes: &str) -> Vec<(String, u16)> {
    addresses(masters_with_slots(nodes))
}

/// Which of `masters` serves each slot.
fn slot_map(masters: &[Master]) -> HashMap<Slot, usize> {
    let mut map = HashMap::new();
    for (at, (_, ranges)) in masters.iter().enumerate() {
        for &(first, last) in ranges {
            for n in first..=last {
                if let Some(slot) = Slot::new(n) {
                    map.insert(slot, at);
                }
            }
        }
    }
    map
}

/// The addresses of `masters`.
fn addresses(masters: Vec<Master>) -> Vec<(String, u16)> {
    masters.into_iter().map(|(addr, _)| addr).collect()
}

/// The masters of the cluster as `conn`'s node sees them.
async fn ask_masters(conn: &mut MultiplexedConnection) -> redis::RedisResult<Vec<Master>> {
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(conn).await?;
    Ok(masters_with_slots(&nodes))
}

/// The servers to track, now: the one server, the Sentinel's master, or
/// every master of the cluster (asked of the first seed that answers), and
/// on a cluster which of them serves each slot.
async fn servers(
    source: &TrackingSource,
) -> redis::RedisResult<(Vec<Client>, Option<HashMap<Slot, usize>>)> {
    match &*source.topology {
        Topology::Single(client) => Ok((vec![client.clone()], None)),
        Topology::Sentinel(master) => Ok((vec![master.client_async().await?], None)),
        Topology::Cluster(_) => {
            let mut last = None;
            for seed in &source.cluster_seeds {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(source.timeout)
                    .set_response_timeout(source.timeout);
                let asked = async {
                    let mut conn = seed
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?;
                    ask_masters(&mut conn).await
                };
                match asked.await {
                    Ok(masters) if !masters.is_empty() => {
                        let clients = masters
                            .iter()
                            .map(|((host, port), _)| node_client(seed, host, *port))
                            .collect::<redis::RedisResult<_>>()?;
                        return Ok((clients, Some(slot_map(&masters))));
                    }
                    Ok(_) => {}
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                RedisError::from((redis::ErrorKind::Io, "no cluster seed named its masters"))
            }))
        }
    }
}

/// Connect session `session` to every server and have each confirm
/// tracking (a cluster's masters each track their own keys). `NOLOOP`:
/// writes sent on these connections themselves are not pushed back (see
/// [`NearCache::write_pass`]).
async fn open_session<V: Send + Sync + 'static>(
    near: &Weak<NearCache<V>>,
    source: &TrackingSource,
    prefix: &str,
    session: u64,
) -> redis::RedisResult<Writers> {
    let (servers, slots) = servers(source).await?;
    let mut conns = Vec::new();
    for server in servers {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(source.timeout)
            .set_response_timeout(source.timeout)
            .set_push_sender(Pushes {
                near: near.clone(),
                session,
            });
        let mut conn = resp3(&server)?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("TRACKING").arg("ON").arg("BCAST");
        if !prefix.is_empty() {
            cmd.arg("PREFIX").arg(prefix);
        }
        cmd.arg("NOLOOP");
        let _: () = cmd.query_async(&mut conn).await?;
        conns.push(conn);
    }
    Ok(Writers { conns, slots })
}

/// One health check of a session: every connection answers a `PING`, and
/// on a cluster the masters are still the ones tracked.
async fn healthy(
    source: &TrackingSource,
    conns: &mut [MultiplexedConnection],
    masters: &[(String, u16)],
) -> bool {
    for conn in conns.iter_mut() {
        let pong: redis::RedisResult<Value> = redis::cmd("PING").query_async(conn).await;
        if pong.is_err() {
            return false;
        }
    }
    if let (Topology::Cluster(_), Some(conn)) = (&*source.topology, conns.first_mut()) {
        return ask_masters(conn)
            .await
            .is_ok_and(|now| addresses(now) == masters);
    }
    true
}

/// The tracking task of one near cache in one process: keep a confirmed
/// tracking session, flushing the cache whenever one is lost, until the
/// near cache is stopped or gone or the process forked.
async fn track<V: Send + Sync + 'static>(
    near: Weak<NearCache<V>>,
    source: TrackingSource,
    task: (u64, u64),
) {
    let mut pause = RETRY_FIRST;
    loop {
        let (session, prefix) = match near.upgrade() {
            Some(n) if n.runs(task) => (
                n.sessions.fetch_add(1, Ordering::Relaxed) + 1,
                n.prefix.clone(),
            ),
            _ => return,
        };
        let opened = async {
            let mut writers = open_session(&near, &source, &prefix, session).await?;
            let masters = match (&*source.topology, writers.conns.first_mut()) {
                (Topology::Cluster(_), Some(conn)) => addresses(ask_masters(conn).await?),
                _ => Vec::new(),
            };
            redis::RedisResult::Ok((writers, masters))
        }
        .await;
        let (writers, masters) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                // Reads go on without the near cache; they report the outage.
                log::debug!("near cache: tracking connection failed: {e}");
                source.topology.failed(&e);
                if let Some(n) = near.upgrade() {
                    drop(n.down(session));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
                continue;
            }
        };
        let mut conns = writers.conns.clone();
        match near.upgrade() {
            Some(n) if n.runs(task) => {
                if !n.up(session, task, writers) {
                    continue;
                }
            }
            _ => return,
        }
        pause = RETRY_FIRST;
        // Health: every second. A dropped connection reports itself at
        // once (a Disconnection push), which also wakes this loop.
        loop {
            let Some(n) = near.upgrade() else { return };
            let _ = tokio::time::timeout(HEALTH_EVERY, n.lost.notified()).await;
            if !n.runs(task) {
                return;
            }
            if n.gate.read().session != Some(session) {
                break;
            }
            drop(n);
            if !healthy(&source, &mut conns, &masters).await {
                if let Some(n) = near.upgrade() {
                    drop(n.down(session));
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_writers() -> Writers {
        Writers {
            conns: Vec::new(),
            slots: None,
        }
    }

    /// A near cache whose tracking is confirmed, without a server.
    fn tracking(capacity: u64) -> NearCache<u32> {
        let near = NearCache::new(capacity, "5m:");
        let task = (crate::fork::generation(), 1);
        near.gate.write().task = Some(task);
        assert!(near.up(1, task, no_writers()));
        near
    }

    fn ticket(near: &NearCache<u32>, key: HashedKey<'_>) -> Ticket {
        let gate = near.gate.read();
        assert!(gate.session.is_some());
        Ticket {
            epoch: gate.epoch,
            stamp: *near.stripe(key).lock(),
        }
    }

    fn keep(near: &NearCache<u32>, key: HashedKey<'_>, t: Ticket, v: u32) -> bool {
        near.insert(key, t, v, 1, now(), now(), 60.0).is_empty() && found(near, key) == Some(v)
    }

    fn found(near: &NearCache<u32>, key: HashedKey<'_>) -> Option<u32> {
        near.get_with(key, |v, _| *v).0
    }

    #[test]
    fn keeps_what_nothing_invalidated() {
        let near = tracking(10);
        let key = HashedKey::new("5m:f|x=1");
        let t = ticket(&near, key);
        assert!(keep(&near, key, t, 1));
        assert_eq!(near.len(), 1);
    }

    #[test]
    fn an_invalidation_before_the_insert_wins() {
        // The read returned v1; the invalidation of v2's write arrived
        // before v1 was kept: v1 must not be kept.
        let near = tracking(10);
        let key = HashedKey::new("5m:f|x=1");
        let t = ticket(&near, key);
        let _ = near.invalidate(key);
        assert!(!keep(&near, key, t, 1));
        assert_eq!(found(&near, key), None);
        // A read sent after the invalidation is kept.
        let t = ticket(&near, key);
        assert!(keep(&near, key, t, 2));
        // And a later invalidation removes it.
        let _ = near.invalidate(key);
        assert_eq!(found(&near, key), None);
    }

    #[test]
    fn a_lost_session_or_flush_voids_every_ticket() {
        let near = tracking(10);
        let key = HashedKey::new("5m:f|x=1");
        let t = ticket(&near, key);
        let _ = near.down(1);
        assert!(!near.tracking());
        assert!(!keep(&near, key, t, 1));
        // A session lost before it was confirmed never counts as up.
        let task = (crate::fork::generation(), 1);
        let _ = near.down(2);
        assert!(!near.up(2, task, no_writers()));
        assert!(near.up(3, task, no_writers()));
        let t = ticket(&near, key);
        assert!(keep(&near, key, t, 1));
        let t2 = ticket(&near, key);
        let _ = near.flush();
        assert_eq!(found(&near, key), None);
        assert!(!keep(&near, key, t2, 2));
        // Stopping voids tickets too, and the session.
        let t3 = ticket(&near, key);
        let _ = near.stop();
        assert!(!near.tracking());
        assert!(!keep(&near, key, t3, 3));
    }

    #[test]
    fn expires_with_the_server_and_stays_bounded() {
        let near = tracking(3);
        let key = HashedKey::new("5m:f|x=1");
        let t = ticket(&near, key);
        // Already expired (read long ago): not kept.
        let kept = near.insert(key, t, 1, 1, now(), now() - 10.0, 5.0);
        assert_eq!(kept, vec![1]);
        let t = ticket(&near, key);
        drop(near.insert(key, t, 1, 1, now(), now(), 0.01));
        assert_eq!(found(&near, key), None, "expires a margin early");
        for i in 0..100 {
            let text = format!("5m:f|x={i}");
            let k = HashedKey::new(&text);
            let t = ticket(&near, k);
            drop(near.insert(k, t, i, 1, now(), now(), 60.0));
        }
        assert!(near.len() <= 3);
        assert!(near.covers("5m:f|x=1") && !near.covers("lock:5m:f|x=1"));
    }

    #[test]
    fn pushes_invalidate_keys_or_everything() {
        let near = tracking(10);
        let a = HashedKey::new("5m:a");
        let b = HashedKey::new("5m:b");
        for k in [a, b] {
            let t = ticket(&near, k);
            assert!(keep(&near, k, t, 1));
        }
        near.pushed(
            1,
            PushInfo {
                kind: PushKind::Invalidate,
                data: vec![Value::Array(vec![Value::BulkString(b"5m:a".to_vec())])],
            },
        );
        assert_eq!(found(&near, a), None);
        assert_eq!(found(&near, b), Some(1));
        near.pushed(
            1,
            PushInfo {
                kind: PushKind::Invalidate,
                data: vec![Value::Nil],
            },
        );
        assert_eq!(found(&near, b), None);
        assert_eq!(near.invalidations(), 2);
        near.pushed(
            1,
            PushInfo {
                kind: PushKind::Disconnection,
                data: vec![],
            },
        );
        assert!(!near.tracking());
    }

    #[test]
    fn masters_serving_slots() {
        let nodes = "\
a1 127.0.0.1:30002@40002 master - 0 1 2 connected 5461-10922
b2 127.0.0.1:30005@40005 slave a1 0 1 5 connected
c3 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
d4 127.0.0.1:30003@40003 master,fail? - 0 1 3 connected 10923-16383
e5 127.0.0.1:30004@40004 master,fail - 0 1 4 disconnected
f6 :0@0 master,noaddr - 0 1 6 disconnected 1-2
";
        assert_eq!(
            masters_of(nodes),
            vec![
                ("127.0.0.1".to_owned(), 30001),
                ("127.0.0.1".to_owned(), 30002),
                ("127.0.0.1".to_owned(), 30003),
            ]
        );
        let masters = masters_with_slots(
            "c3 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [5460->-a1]\n\
             a1 127.0.0.1:30002@40002 master - 0 1 2 connected 5461-16382 16383\n",
        );
        assert_eq!(masters[0].1, vec![(0, 5460)]);
        assert_eq!(masters[1].1, vec![(5461, 16382), (16383, 16383)]);
        let map = slot_map(&masters);
        assert_eq!(map.len(), 16384);
        assert_eq!(map[&Slot::new(5460).unwrap()], 0);
        assert_eq!(map[&Slot::new(16383).unwrap()], 1);
    }
}
