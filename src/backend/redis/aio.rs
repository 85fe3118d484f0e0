//! The async face of [`RedisBackend`]: the same operations and round trips
//! as the sync face, on one multiplexed connection per process (one cluster
//! connection on a cluster), for tokio. Replies are read by the same
//! functions, so both faces agree byte for byte.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use redis::{RedisResult, Value};

use super::topology::AsyncConn;
use super::{
    is_dead_connection, key_strings, scan_cmd, ttl_secs, GetOrLock, Got, LockToken, Poll,
    RedisBackend, DELETE_BATCH, POLL_FIRST, POLL_MAX,
};
use crate::backend::Hit;
use crate::clock::now;
use crate::error::Result;

impl RedisBackend {
    /// The shared connection of this process, connecting on first use, and
    /// checked with a `PING` when it was idle longer than
    /// `health_check_interval`.
    async fn connection(&self) -> Result<AsyncConn> {
        // A forked child starts without one (the parent's lived in the
        // parent's runtime; it is forgotten, see `PerProcess`).
        let found = {
            let mut slot = self.aio.get().lock();
            slot.as_mut().map(|(conn, last_used)| {
                let seen = std::mem::replace(last_used, Instant::now());
                (conn.clone(), seen)
            })
        };
        if let Some((mut conn, last_used)) = found {
            if last_used.elapsed() < self.options.health_check_interval {
                return Ok(conn);
            }
            let pong: RedisResult<Value> = redis::cmd("PING").query_async(&mut conn).await;
            if pong.is_ok() {
                return Ok(conn);
            }
            self.aio.get().lock().take();
        }
        let conn = self
            .topology
            .connect_async(self.timeout())
            .await
            .map_err(|e| {
                self.topology.failed(&e);
                self.unavailable(&e)
            })?;
        *self.aio.get().lock() = Some((conn.clone(), Instant::now()));
        Ok(conn)
    }

    /// Run `op` on the shared connection. A round trip that failed at once
    /// on a broken connection is retried on a new connection, up to
    /// `retry_count` times; a timeout is not retried. A failed connection is
    /// dropped (the next call makes a new one), a cluster connection after a
    /// timeout too (see `topology`: the crate's may have stalled).
    pub(super) async fn run_async<T, F>(&self, op: impl Fn(AsyncConn) -> F) -> Result<T>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let mut retries_left = self.options.retry_count;
        loop {
            let conn = self.connection().await?;
            match op(conn).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    self.aio.get().lock().take();
                    self.topology.failed(&e);
                    if retries_left == 0 || !is_dead_connection(&e) {
                        return Err(self.unavailable(&e));
                    }
                    retries_left -= 1;
                }
            }
        }
    }

    /// Async [`Backend::get`](crate::backend::Backend::get): one `GET`
    /// (and a compare-and-delete of a value cachu did not write), read by
    /// the same code as the sync face.
    pub async fn get_async(&self, key: &str) -> Result<Option<Hit<Vec<u8>>>> {
        let got = self
            .run_async(|mut c| async move {
                self.read_get(key, redis::cmd("GET").arg(key).query_async(&mut c).await)
            })
            .await?;
        match got {
            Got::Read(found) => Ok(found),
            Got::Foreign(raw) => self.delete_foreign_async(key, &raw).await.map(|()| None),
        }
    }

    /// Async [`RedisBackend::delete_foreign`].
    pub(super) async fn delete_foreign_async(&self, key: &str, raw: &[u8]) -> Result<()> {
        let _: Value = self
            .run_async(|mut c| async move {
                self.scripts
                    .compare_delete
                    .key(key)
                    .arg(raw)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Async [`RedisBackend::get_or_lock_by`].
    pub(super) async fn get_or_lock_by_async(
        &self,
        key: &str,
        script: &redis::Script,
        with_ttl: bool,
    ) -> Result<(GetOrLock, f64)> {
        let token = LockToken::random();
        let lock = &self.lock_key_of(key);
        let secs = self.lock_secs();
        let tok = token.as_str();
        let reply: Value = self
            .run_async(|mut c| async move {
                script
                    .key(key)
                    .key(lock)
                    .arg(tok)
                    .arg(secs)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let (reply, left) = if with_ttl {
            super::expiring::split_ttl(reply)
        } else {
            (reply, 0.0)
        };
        match self.read_get_or_lock(key, reply, token)? {
            Some(found) => Ok((found, left)),
            // A value that must not be used: lock as for a missing one.
            None => Ok((
                self.try_lock_async(key)
                    .await?
                    .map_or(GetOrLock::Busy, GetOrLock::Locked),
                0.0,
            )),
        }
    }

    /// Async [`RedisBackend::unlock`].
    pub async fn unlock_async(&self, key: &str, token: &LockToken) -> Result<()> {
        let lock = &self.lock_key_of(key);
        let _: Value = self
            .run_async(|mut c| async move {
                self.scripts
                    .release
                    .key(lock)
                    .arg(token.as_str())
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Async `set`: `SETEX` (or `DEL` for a TTL of zero or less).
    pub async fn set_async(&self, key: &str, value: &[u8], ttl: f64) -> Result<()> {
        let payload = &self.encode_for(key, value, now());
        let _: Value = match ttl_secs(ttl) {
            Some(secs) => {
                self.run_async(|mut c| async move {
                    redis::cmd("SETEX")
                        .arg(key)
                        .arg(secs)
                        .arg(&payload[..])
                        .query_async(&mut c)
                        .await
                })
                .await?
            }
            None => {
                self.run_async(|mut c| async move {
                    redis::cmd("DEL").arg(key).query_async(&mut c).await
                })
                .await?
            }
        };
        Ok(())
    }

    /// Async `delete`: whether a value was there.
    pub async fn delete_async(&self, key: &str) -> Result<bool> {
        let n: u64 = self
            .run_async(|mut c| async move { redis::cmd("DEL").arg(key).query_async(&mut c).await })
            .await?;
        Ok(n > 0)
    }

    /// Async `clear`: `SCAN` every master, `UNLINK` in batches; how many
    /// keys were removed.
    pub async fn clear_async(&self, pattern: Option<&str>) -> Result<u64> {
        let pattern = pattern.unwrap_or("*");
        self.run_async(|mut c| async move {
            let mut removed = 0;
            for master in c.masters().await? {
                let mut cursor = 0;
                loop {
                    let reply = c.query_on(scan_cmd(cursor, pattern), &master).await?;
                    let (next, keys): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply)?;
                    for batch in keys.chunks(DELETE_BATCH) {
                        removed += self.unlink_async(&mut c, batch).await?;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Ok(removed)
        })
        .await
    }

    /// Async `keys`: the distinct keys matching `pattern`, in `SCAN` order.
    pub async fn keys_async(&self, pattern: Option<&str>) -> Result<Vec<String>> {
        Ok(key_strings(self.scan_keys_async(pattern).await?))
    }

    /// Async `count`.
    pub async fn count_async(&self, pattern: Option<&str>) -> Result<u64> {
        Ok(self.scan_keys_async(pattern).await?.len() as u64)
    }

    async fn scan_keys_async(&self, pattern: Option<&str>) -> Result<Vec<Vec<u8>>> {
        let pattern = pattern.unwrap_or("*");
        self.run_async(|mut c| async move {
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            for master in c.masters().await? {
                let mut cursor = 0;
                loop {
                    let reply = c.query_on(scan_cmd(cursor, pattern), &master).await?;
                    let (next, keys): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply)?;
                    out.extend(keys.into_iter().filter(|k| seen.insert(k.clone())));
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Ok(out)
        })
        .await
    }

    /// Async [`RedisBackend::unlink`].
    async fn unlink_async(&self, conn: &mut AsyncConn, keys: &[Vec<u8>]) -> RedisResult<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        if let Some(unlink) = self.unlink_cmd(keys) {
            match unlink.query_async::<u64>(conn).await {
                Err(e) if self.unlink_unknown(&e) => {}
                other => return other,
            }
        }
        redis::cmd("DEL").arg(keys).query_async(conn).await
    }

    /// Async [`RedisBackend::delete_if_unchanged`].
    pub async fn delete_if_unchanged_async(&self, key: &str, hit: &Hit<Vec<u8>>) -> Result<()> {
        let forms = &self.stored_forms(key, hit);
        let _: Value = self
            .run_async(|mut c| async move {
                self.scripts
                    .compare_delete
                    .key(key)
                    .arg(forms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Async [`RedisBackend::try_lock`]: one `SET NX`.
    pub async fn try_lock_async(&self, key: &str) -> Result<Option<LockToken>> {
        let token = LockToken::random();
        let lock = &self.lock_key_of(key);
        let secs = self.lock_secs();
        let tok = token.as_str();
        let reply: Value = self
            .run_async(|mut c| async move {
                redis::cmd("SET")
                    .arg(lock)
                    .arg(tok)
                    .arg("NX")
                    .arg("EX")
                    .arg(secs)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(matches!(reply, Value::Okay).then_some(token))
    }

    /// Async [`RedisBackend::wait_for_newer`]: polls without blocking a thread.
    pub async fn wait_for_newer_async(
        &self,
        key: &str,
        newer_than: Option<f64>,
        timeout: Duration,
    ) -> Result<Option<Hit<Vec<u8>>>> {
        let deadline = Instant::now() + timeout;
        let lock = &self.lock_key_of(key);
        let mut pause = POLL_FIRST;
        loop {
            let reply: Value = self
                .run_async(|mut c| async move {
                    self.scripts
                        .poll
                        .key(key)
                        .key(lock)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            if let Poll::Done(found) = self.read_poll(key, reply, newer_than)? {
                return Ok(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 3 / 2).min(POLL_MAX);
        }
    }
}
