//! A Redis region's near cache (`redis_near_cache`), holding Python values
//! in the memory store's form ([`Stored`]: shared, a template copied per
//! hit, or a pickle), so a near hit costs what a memory hit costs. The
//! coherence rules are the core's (`crate::backend::redis::near`); this only
//! turns values into the stored form and back.

use std::sync::{Arc, OnceLock};

use pyo3::prelude::*;

use super::value::Stored;
use crate::backend::redis::near::{Keep, NearCache, Ticket, TrackingSource};
use crate::backend::redis::{LockToken, RedisBackend};
use crate::clock::now;
use crate::fork::PerProcess;
use crate::key::HashedKey;

pub struct Near {
    /// This process's near cache, made on first use: a child of fork()
    /// never touches its parent's (whose locks the parent's tracking task,
    /// which runs without the GIL, may have held at the fork).
    cache: PerProcess<OnceLock<Arc<NearCache<Stored>>>>,
    capacity: u64,
    prefix: String,
    source: TrackingSource,
}

/// Permission to keep what a read returns: its ticket, and when the read
/// was sent (the key's remaining TTL counts from then).
#[derive(Clone, Copy)]
pub struct Pass {
    ticket: Ticket,
    read_at: f64,
}

impl Near {
    /// A near cache of `capacity` entries of `redis`'s keys under `prefix`;
    /// `None` when `capacity` is 0.
    pub fn new(redis: &RedisBackend, capacity: u64, prefix: &str) -> Option<Self> {
        if capacity == 0 {
            return None;
        }
        Some(Self {
            cache: PerProcess::new(OnceLock::new),
            capacity,
            prefix: prefix.to_owned(),
            source: redis.tracking_source(),
        })
    }

    /// The value kept for `key` and its `created_at`, copied as a memory
    /// hit is.
    #[inline]
    fn cache(&self) -> &Arc<NearCache<Stored>> {
        self.cache
            .get()
            .get_or_init(|| Arc::new(NearCache::new(self.capacity, &self.prefix)))
    }

    #[inline]
    pub fn lookup(&self, py: Python<'_>, key: HashedKey<'_>) -> Option<(Py<PyAny>, f64)> {
        let (found, dead) = self
            .cache()
            .get_with(key, |v, created| (v.fetch(py), created));
        drop(dead);
        let (fetched, created) = found?;
        match fetched.into_value(py) {
            Ok(v) => Some((v, created)),
            Err(_) => {
                // Unpickling failed (it worked when read): read it afresh.
                drop(self.cache().invalidate(key));
                None
            }
        }
    }

    /// Before sending a read of `key`: whether, and under what ticket, its
    /// value may be kept.
    pub fn pass(&self, key: HashedKey<'_>) -> Option<Pass> {
        let read_at = now();
        let ticket = self.cache().ticket(key, &self.source)?;
        Some(Pass { ticket, read_at })
    }

    /// Keep `value` (just read under `pass`, `left` seconds to live in
    /// Redis) for `key`. A value that cannot be prepared is not kept.
    pub fn keep(
        &self,
        key: HashedKey<'_>,
        pass: Pass,
        value: &Bound<'_, PyAny>,
        created_at: f64,
        left: f64,
    ) {
        if left <= 0.0 {
            return;
        }
        let Ok((stored, weight)) = Stored::prepare(value) else {
            return;
        };
        drop(self.cache().insert(
            key,
            pass.ticket,
            stored,
            weight,
            created_at,
            pass.read_at,
            left,
        ));
    }

    /// Before writing `value` under `key`: what lets the write keep it near
    /// (`None`: it cannot be kept, the write goes the plain way).
    pub fn keeping(&self, key: HashedKey<'_>, value: &Bound<'_, PyAny>) -> Option<Keep<Stored>> {
        let (value, weight) = Stored::prepare(value).ok()?;
        let pass = self.cache().write_pass(key, &self.source)?;
        Some(Keep {
            pass,
            value,
            weight,
        })
    }

    /// Store `data` (the pickle of `value`) under `key` for `ttl` seconds,
    /// releasing `token`'s lock if given, and keep `value` near: one round
    /// trip, after which reading `key` here needs none (unless another
    /// client changed it meanwhile). Lets go of the GIL while writing.
    #[allow(clippy::too_many_arguments)]
    pub fn store(
        &self,
        py: Python<'_>,
        redis: &RedisBackend,
        key: HashedKey<'_>,
        value: &Bound<'_, PyAny>,
        data: &[u8],
        ttl: f64,
        token: Option<&LockToken>,
    ) -> crate::Result<()> {
        let keep = self.keeping(key, value);
        let near = self.cache();
        py.detach(|| redis.store_near(near, key.text, data, ttl, token, keep))
    }

    /// Async [`Near::store`], with what [`Near::keeping`] gave (on the
    /// loop's thread, under the GIL).
    pub async fn store_async(
        &self,
        redis: &RedisBackend,
        key: &str,
        data: &[u8],
        ttl: f64,
        token: Option<&LockToken>,
        keep: Option<Keep<Stored>>,
    ) -> crate::Result<()> {
        let near = self.cache().clone();
        redis
            .store_near_async(&near, key, data, ttl, token, keep)
            .await
    }

    /// This process wrote or deleted `key`: never serve what was kept.
    pub fn forget(&self, key: HashedKey<'_>) {
        drop(self.cache().invalidate(key));
    }

    /// The backend is being closed: stop tracking, drop everything.
    pub fn stop(&self) {
        drop(self.cache().stop());
    }

    /// This process cleared keys: drop everything.
    pub fn flush(&self) {
        drop(self.cache().flush());
    }

    /// Entries held now.
    pub fn len(&self) -> u64 {
        self.cache().len()
    }

    /// The most entries held.
    pub fn capacity(&self) -> u64 {
        self.cache().capacity()
    }

    /// `(tracking, flushes, invalidations)`: whether the server confirmed
    /// tracking, whole flushes and invalidation messages so far.
    pub fn state(&self) -> (bool, u64, u64) {
        (
            self.cache().tracking(),
            self.cache().flushes(),
            self.cache().invalidations(),
        )
    }
}
