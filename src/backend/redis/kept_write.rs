//! The writes of a region with a near cache. A write whose value is to be
//! kept near goes out on the near cache's tracking connection (for why
//! there, see [`NearCache::write_pass`]), as the same commands the plain
//! write sends; the value is kept once its reply is in, if
//! nothing touched the key meanwhile. Any other write goes the plain way,
//! and the near entry of its key is dropped.

use redis::aio::ConnectionLike as _;
use redis::{Pipeline, RedisError, RedisResult, Value};

use super::near::{Keep, NearCache};
use super::{look, topology, ttl_secs, LockToken, RedisBackend};
use crate::backend::Backend;
use crate::clock::now;
use crate::error::Result;
use crate::key::HashedKey;

/// How a write sent on the tracking connection ended.
enum Sent {
    /// Written (and the near entry settled), or failed in a way the plain
    /// write would not mend (a timeout: never retried).
    Done(Result<()>),
    /// Not written, or unknown (the connection failed): write the plain way.
    Plain,
}

impl RedisBackend {
    /// [`Backend::set`] of `key` (with `token`: [`RedisBackend::store_and_unlock`])
    /// in a region with the near cache `near`: with `keep`, on the tracking
    /// connection and `keep`'s value kept near; otherwise (or if that
    /// connection could not take it) the plain way, dropping the near entry.
    pub fn store_near<V: Send + Sync + 'static>(
        &self,
        near: &NearCache<V>,
        key: &str,
        value: &[u8],
        ttl: f64,
        token: Option<&LockToken>,
        keep: Option<Keep<V>>,
    ) -> Result<()> {
        // Not from the runtime's own threads (some odd path, a finaliser):
        // there it cannot block on the runtime.
        let keep = match (keep, tokio::runtime::Handle::try_current()) {
            (Some(keep), Ok(_)) => {
                keep.pass.refused();
                None
            }
            (keep, _) => keep,
        };
        if let Some(keep) = keep {
            let sent = crate::runtime::handle()
                .block_on(self.send_kept(near, key, value, ttl, token, keep));
            if let Sent::Done(out) = sent {
                return out;
            }
        }
        let out = match token {
            Some(t) => self.store_and_unlock(key, value, ttl, t),
            None => Backend::set(self, key, value, ttl),
        };
        drop(near.invalidate(HashedKey::new(key)));
        out
    }

    /// Async [`RedisBackend::store_near`].
    pub async fn store_near_async<V: Send + Sync + 'static>(
        &self,
        near: &NearCache<V>,
        key: &str,
        value: &[u8],
        ttl: f64,
        token: Option<&LockToken>,
        keep: Option<Keep<V>>,
    ) -> Result<()> {
        if let Some(keep) = keep {
            if let Sent::Done(out) = self.send_kept(near, key, value, ttl, token, keep).await {
                return out;
            }
        }
        let out = match token {
            Some(t) => self.store_and_unlock_async(key, value, ttl, t).await,
            None => self.set_async(key, value, ttl).await,
        };
        drop(near.invalidate(HashedKey::new(key)));
        out
    }

    /// Write on `keep`'s pass the commands the plain store sends: `SETEX`,
    /// and with `token` the lock's release after it (by `EVALSHA`: a
    /// script's own writes are pushed back even under NOLOOP, but the
    /// `SETEX` is the connection's, and the lock is no key of the prefix).
    async fn send_kept<V: Send + Sync + 'static>(
        &self,
        near: &NearCache<V>,
        key: &str,
        value: &[u8],
        ttl: f64,
        token: Option<&LockToken>,
        keep: Keep<V>,
    ) -> Sent {
        let Keep {
            mut pass,
            value: kept,
            weight,
        } = keep;
        let Some(secs) = ttl_secs(ttl) else {
            pass.refused();
            return Sent::Plain;
        };
        let created_at = now();
        let payload = self.encode_for(key, value, created_at);
        let conn = pass.connection();
        let reply: RedisResult<bool> = match token {
            None => {
                let mut pipe = Pipeline::with_capacity(1);
                look::store(&mut pipe, key, &payload, ttl);
                look::sole_reply(conn.req_packed_commands(&pipe, 0, 1).await)
                    .and_then(Value::extract_error)
                    .map(|_| true)
            }
            Some(t) => {
                let mut pipe = Pipeline::with_capacity(2);
                self.store_then_release(&mut pipe, key, &payload, ttl, t);
                look::read_store(conn.req_packed_commands(&pipe, 0, 2).await)
            }
        };
        let hashed = HashedKey::new(key);
        match reply {
            Ok(released) => {
                // Redis counts the TTL from when it ran the write, after now.
                let expires_at = created_at + secs as f64;
                drop(near.written(hashed, pass, kept, weight, created_at, expires_at));
                self.stored(key, ttl);
                Sent::Done(match (released, token) {
                    // The server did not know the release's script yet.
                    (false, Some(t)) => self.unlock_async(key, t).await,
                    _ => Ok(()),
                })
            }
            Err(e) if refused(&e) => {
                pass.refused();
                Sent::Plain
            }
            Err(e) => {
                // Dropping the pass ends the session (the write may still run).
                drop(pass);
                if topology::is_timeout(&e) {
                    drop(near.invalidate(hashed));
                    Sent::Done(Err(self.unavailable(&e)))
                } else {
                    log::debug!("near cache: a write on the tracking connection failed: {e}");
                    Sent::Plain
                }
            }
        }
    }
}

/// The server refused the write without running any of it: a cluster
/// redirection (the slot moved since the session began).
fn refused(e: &RedisError) -> bool {
    matches!(
        e.code(),
        Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN" | "CROSSSLOT")
    )
}
