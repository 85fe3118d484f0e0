//! The async face of [`RedisBackend`]: the same operations and round trips
//! as the sync face, on one multiplexed connection per process, for tokio.
//! Replies are read by the same functions, so both faces agree byte for byte.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, Value};

use super::{lock_key, ttl_secs, GetOrLock, LockToken, Poll, RedisBackend, POLL_FIRST, POLL_MAX};
use crate::backend::Hit;
use crate::clock::now;
use crate::error::{Error, Result};

impl RedisBackend {
    /// The shared connection of this process, connecting on first use.
    async fn connection(&self) -> Result<MultiplexedConnection> {
        let pid = std::process::id();
        {
            let mut slot = self.aio.lock();
            match slot.take() {
                Some((owner, conn)) if owner == pid => {
                    *slot = Some((owner, conn.clone()));
                    return Ok(conn);
                }
                // Inherited across fork: its driver task lived in the
                // parent's runtime; forget it.
                Some((_, conn)) => std::mem::forget(conn),
                None => {}
            }
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout())
            .set_response_timeout(self.timeout());
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.unavailable(&e))?;
        *self.aio.lock() = Some((pid, conn.clone()));
        Ok(conn)
    }

    /// A failed round trip: drop the shared connection (the next call makes
    /// a new one) and describe the failure.
    fn failed(&self, e: &RedisError) -> Error {
        self.aio.lock().take();
        self.unavailable(e)
    }

    /// Async [`RedisBackend::get`]: one `GET`.
    pub async fn get_async(&self, key: &str) -> Result<Option<Hit<Vec<u8>>>> {
        let mut conn = self.connection().await?;
        let raw: Option<Vec<u8>> = match redis::cmd("GET").arg(key).query_async(&mut conn).await {
            // Not a string: no cachu value, a miss (removed if still so).
            Err(e) if super::is_wrong_type(&e) => {
                let _: Value = self
                    .scripts
                    .compare_delete
                    .key(key)
                    .arg(&b""[..])
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| self.failed(&e))?;
                None
            }
            other => other.map_err(|e| self.failed(&e))?,
        };
        Ok(raw.and_then(|raw| self.decode_for(key, raw)))
    }

    /// Async [`RedisBackend::get_or_lock`]: one script call.
    pub async fn get_or_lock_async(&self, key: &str) -> Result<GetOrLock> {
        let token = LockToken::random();
        let lock = lock_key(key);
        let mut conn = self.connection().await?;
        let reply: Value = self
            .scripts
            .get_or_lock
            .key(key)
            .key(&lock)
            .arg(token.as_str())
            .arg(self.lock_secs())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(&e))?;
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
        let payload = self.encode_for(key, value, now());
        let lock = lock_key(key);
        let mut conn = self.connection().await?;
        let _: Value = self
            .scripts
            .store_and_unlock
            .key(key)
            .key(&lock)
            .arg(&payload[..])
            .arg(ttl_secs(ttl).unwrap_or(0))
            .arg(token.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(())
    }

    /// Async [`RedisBackend::unlock`].
    pub async fn unlock_async(&self, key: &str, token: &LockToken) -> Result<()> {
        let lock = lock_key(key);
        let mut conn = self.connection().await?;
        let _: Value = self
            .scripts
            .compare_delete
            .key(&lock)
            .arg(token.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(())
    }

    /// Async `set`: `SETEX` (or `DEL` for a TTL of zero or less).
    pub async fn set_async(&self, key: &str, value: &[u8], ttl: f64) -> Result<()> {
        let mut conn = self.connection().await?;
        let done: RedisResultUnit = match ttl_secs(ttl) {
            Some(secs) => {
                redis::cmd("SETEX")
                    .arg(key)
                    .arg(secs)
                    .arg(&self.encode_for(key, value, now())[..])
                    .query_async(&mut conn)
                    .await
            }
            None => redis::cmd("DEL").arg(key).query_async(&mut conn).await,
        };
        done.map(|_| ()).map_err(|e| self.failed(&e))
    }

    /// Async `delete`.
    pub async fn delete_async(&self, key: &str) -> Result<()> {
        let mut conn = self.connection().await?;
        let _: Value = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(())
    }

    /// Async [`RedisBackend::delete_if_unchanged`].
    pub async fn delete_if_unchanged_async(&self, key: &str, hit: &Hit<Vec<u8>>) -> Result<()> {
        let forms = self.stored_forms(key, hit);
        let mut conn = self.connection().await?;
        let _: Value = self
            .scripts
            .compare_delete
            .key(key)
            .arg(&forms)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(())
    }

    /// Async [`RedisBackend::try_lock`]: one `SET NX`.
    pub async fn try_lock_async(&self, key: &str) -> Result<Option<LockToken>> {
        let token = LockToken::random();
        let mut conn = self.connection().await?;
        let reply: Value = redis::cmd("SET")
            .arg(lock_key(key))
            .arg(token.as_str())
            .arg("NX")
            .arg("EX")
            .arg(self.lock_secs())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failed(&e))?;
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
        let lock = lock_key(key);
        let mut pause = POLL_FIRST;
        loop {
            let mut conn = self.connection().await?;
            let reply: Value = self
                .scripts
                .poll
                .key(key)
                .key(&lock)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.failed(&e))?;
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

type RedisResultUnit = redis::RedisResult<Value>;
