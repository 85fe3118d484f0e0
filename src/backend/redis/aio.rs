//! The async face of [`RedisBackend`]: the same operations and round trips
//! as the sync face, on one multiplexed connection per process (one cluster
//! connection on a cluster), for tokio. Replies are read by the same
//! functions, so both faces agree byte for byte.

use std::future::Future;
use std::time::{Duration, Instant};

use redis::{RedisResult, Value};

use super::topology::AsyncConn;
use super::{
    is_dead_connection, is_wrong_type, ttl_secs, GetOrLock, LockToken, Poll, RedisBackend,
    POLL_FIRST, POLL_MAX,
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

    /// Async [`RedisBackend::get`]: one `GET`.
    pub async fn get_async(&self, key: &str) -> Result<Option<Hit<Vec<u8>>>> {
        let raw: Option<Vec<u8>> = self
            .run_async(|mut c| async move {
                match redis::cmd("GET").arg(key).query_async(&mut c).await {
                    // Not a string: no cachu value, a miss (removed if still so).
                    Err(e) if is_wrong_type(&e) => {
                        let _: Value = self
                            .scripts
                            .compare_delete
                            .key(key)
                            .arg(&b""[..])
                            .invoke_async(&mut c)
                            .await?;
                        Ok(None)
                    }
                    other => other,
                }
            })
            .await?;
        Ok(raw.and_then(|raw| self.decode_for(key, raw)))
    }

    /// Async [`RedisBackend::get_or_lock`]: one script call.
    pub async fn get_or_lock_async(&self, key: &str) -> Result<GetOrLock> {
        let token = LockToken::random();
        let lock = &self.lock_key_of(key);
        let secs = self.lock_secs();
        let tok = token.as_str();
        let reply: Value = self
            .run_async(|mut c| async move {
                self.scripts
                    .get_or_lock
                    .key(key)
                    .key(lock)
                    .arg(tok)
                    .arg(secs)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match self.read_get_or_lock(key, reply, token)? {
            Some(found) => Ok(found),
            // A value that must not be used: lock as for a missing one.
            None => Ok(self
                .try_lock_async(key)
                .await?
                .map_or(GetOrLock::Busy, GetOrLock::Locked)),
        }
    }

    /// Async [`RedisBackend::store_and_unlock`]: one script call.
    pub async fn store_and_unlock_async(
        &self,
        key: &str,
        value: &[u8],
        ttl: f64,
        token: &LockToken,
    ) -> Result<()> {
        let payload = &self.encode_for(key, value, now());
        let lock = &self.lock_key_of(key);
        let secs = ttl_secs(ttl).unwrap_or(0);
        let _: Value = self
            .run_async(|mut c| async move {
                self.scripts
                    .store_and_unlock
                    .key(key)
                    .key(lock)
                    .arg(&payload[..])
                    .arg(secs)
                    .arg(token.as_str())
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Async [`RedisBackend::unlock`].
    pub async fn unlock_async(&self, key: &str, token: &LockToken) -> Result<()> {
        let lock = &self.lock_key_of(key);
        let _: Value = self
            .run_async(|mut c| async move {
                self.scripts
                    .compare_delete
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

    /// Async `delete`.
    pub async fn delete_async(&self, key: &str) -> Result<()> {
        let _: Value = self
            .run_async(|mut c| async move { redis::cmd("DEL").arg(key).query_async(&mut c).await })
            .await?;
        Ok(())
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
