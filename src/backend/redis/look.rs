//! The round trips of a cached call on Redis: look up the value or take its
//! dogpile lock, then store the computed value and release the lock. The
//! commands are chosen for the fewest and cheapest round trips; the sync
//! and async faces send the same commands and read the replies with the
//! same functions.
//!
//! - **Look-or-lock** of a key found last time ([`Presence`]): a plain `GET`.
//!   If the value is gone after all, it goes on as for any other key.
//! - **Look-or-lock** of any other key: `SET lock token NX EX s` then `GET
//!   key`, in one write. The lock is tried first, so that a value stored by
//!   the lock's previous holder is always seen: if the lock was taken and a
//!   value is there after all (a key this process had not found before), the
//!   value is served and the lock released; on one server without waiting
//!   for the release's reply ([`Link`]), so that such a hit costs one round
//!   trip too.
//!   Replies the two commands cannot settle alone (the lock held by someone
//!   else and no value; a value cachu did not write) go to the get-or-lock
//!   script, which also cleans up keys of the wrong type.
//! - **Store**: `SETEX key ttl value`, then the lock's release by its owner
//!   (the release script: delete the lock if it holds our token), in one
//!   write.
//!
//! Measured against a raw `GET` on the same socket (server and client on
//! one CPU): the lock-then-get pair costs 1.33 `GET`s, the store pair 1.54
//! (a script call alone 1.5: the release is the one script a miss runs).
//!
//! [`Presence`]: super::presence::Presence
//! [`Link`]: super::link::Link

use redis::aio::ConnectionLike as _;
use redis::{ConnectionLike as _, Pipeline, RedisError, RedisResult, Value};

use super::resp::{Commands, Number, Packed};

use super::{into_bytes, is_wrong_type, ttl_secs, GetOrLock, Got, LockToken, RedisBackend};
use crate::backend::Hit;
use crate::clock::now;
use crate::error::Result;

/// What the lock-then-get pair settled.
enum Looked {
    Done(GetOrLock),
    /// A value is there although the lock was taken: serve it, release.
    ServeAndRelease(Hit<Vec<u8>>, LockToken),
    /// The lock is ours, and the key holds a value cachu did not write
    /// (`raw`; empty for one of the wrong type): remove it, then compute.
    ClearForeign(Vec<u8>, LockToken),
    /// The get-or-lock script decides (after releasing the lock, if it may
    /// have been taken).
    Careful(Option<LockToken>),
}

/// `GET key` (the hit's one command).
fn get(out: &mut impl Commands, key: &str) {
    out.command(&[b"GET", key.as_bytes()]);
}

/// A `GET`'s reply, as `Cmd::query` would give it.
fn bulk(reply: RedisResult<Value>) -> RedisResult<Option<Vec<u8>>> {
    Ok(redis::from_redis_value(reply?.extract_error()?)?)
}

/// The reply of a pipeline of one command (an async connection takes
/// nothing else).
pub(super) fn sole_reply(replies: RedisResult<Vec<Value>>) -> RedisResult<Value> {
    Ok(replies?.pop().unwrap_or(Value::Nil))
}

/// `SET lock token NX EX secs`, then `GET key`.
fn lock_then_get(out: &mut impl Commands, key: &str, lock: &str, token: &LockToken, secs: u64) {
    let mut secs_word = Number::new();
    out.command(&[
        b"SET",
        lock.as_bytes(),
        token.as_str().as_bytes(),
        b"NX",
        b"EX",
        secs_word.of(secs),
    ]);
    get(out, key);
}

/// `SETEX key secs payload` (`DEL key` for a TTL of zero or less).
pub(super) fn store(out: &mut impl Commands, key: &str, payload: &[u8], ttl: f64) {
    match ttl_secs(ttl) {
        Some(secs) => {
            let mut secs_word = Number::new();
            out.command(&[b"SETEX", key.as_bytes(), secs_word.of(secs), payload]);
        }
        None => out.command(&[b"DEL", key.as_bytes()]),
    }
}

/// Room for the words of a lock-then-get or store-then-release besides the
/// key and the payload: the lock's name, its token, numbers, a script's hash.
const ROOM: usize = 128;

/// Whether the store pair went through: an error for the `SETEX`'s (or the
/// release's) error, `false` if the server did not know the release's
/// script (then released by a call that loads it).
/// (A cluster connection answers a pipeline with its first error: a
/// `NOSCRIPT` there is the release's, as the `SETEX` cannot answer one.)
pub(super) fn read_store(replies: RedisResult<Vec<Value>>) -> RedisResult<bool> {
    let no_script =
        |e: &RedisError| e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript);
    let mut replies = match replies {
        Err(e) if no_script(&e) => return Ok(false),
        other => other?.into_iter(),
    };
    replies.next().unwrap_or(Value::Nil).extract_error()?;
    match replies.next().unwrap_or(Value::Nil).extract_error() {
        Ok(_) => Ok(true),
        Err(e) if no_script(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

impl RedisBackend {
    /// A value found by the look-or-lock's plain `GET`; `None`: go on as for
    /// a missing value.
    fn found_by_get(&self, key: &str, got: Got) -> Option<GetOrLock> {
        match got {
            Got::Read(Some(hit)) => Some(GetOrLock::Hit(hit)),
            _ => {
                self.presence.gone(key);
                None
            }
        }
    }

    /// Read the replies of [`lock_then_get`]: `[SET reply, GET reply]`.
    fn read_lock_then_get(
        &self,
        key: &str,
        replies: RedisResult<Vec<Value>>,
        token: LockToken,
    ) -> RedisResult<Looked> {
        let replies = match replies {
            // A cluster connection answers with the pipeline's first error:
            // whether the lock was taken is not known.
            Err(e) if is_wrong_type(&e) => return Ok(Looked::Careful(Some(token))),
            other => other?,
        };
        let mut replies = replies.into_iter();
        let locked = match replies.next().map(Value::extract_error).transpose()? {
            Some(Value::Okay) => true,
            Some(Value::Nil) => false,
            _ => return Ok(Looked::Careful(Some(token))),
        };
        let got = match replies.next().unwrap_or(Value::Nil).extract_error() {
            Ok(Value::Nil) => Got::Read(None),
            Ok(Value::BulkString(raw)) if raw.len() >= super::HEADER => {
                Got::Read(self.decode_for(key, raw))
            }
            Ok(other) => Got::Foreign(into_bytes(other)),
            Err(e) if is_wrong_type(&e) => Got::Foreign(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(match (got, locked) {
            (Got::Read(Some(hit)), true) => Looked::ServeAndRelease(hit, token),
            (Got::Read(Some(hit)), false) => Looked::Done(GetOrLock::Hit(hit)),
            // Missing, or a value that does not verify: compute it.
            (Got::Read(None), true) => Looked::Done(GetOrLock::Locked(token)),
            (Got::Foreign(raw), true) => Looked::ClearForeign(raw, token),
            (Got::Read(None), false) | (Got::Foreign(_), false) => Looked::Careful(None),
        })
    }

    /// One round trip (two for a key not found last time that turned out to
    /// be there, or a few more in the rare cases the script settles): the
    /// value of `key` if it is there, else try to take its dogpile lock.
    pub fn get_or_lock(&self, key: &str) -> Result<GetOrLock> {
        if self.presence.likely(key) {
            let mut packed = Packed::with_capacity(key.len());
            get(&mut packed, key);
            let got =
                self.run(|c| self.read_get(key, bulk(c.req_packed_command(packed.bytes()))))?;
            if let Some(found) = self.found_by_get(key, got) {
                return Ok(found);
            }
        }
        let token = LockToken::random();
        let mut packed = Packed::with_capacity(2 * key.len() + ROOM);
        let lock = self.lock_key_of(key);
        lock_then_get(&mut packed, key, &lock, &token, self.lock_secs());
        let looked = self.run(|c| {
            let replies = c.req_packed_commands(packed.bytes(), 0, packed.count());
            self.read_lock_then_get(key, replies, token.clone())
        })?;
        let found = match looked {
            Looked::Done(found) => found,
            Looked::ServeAndRelease(hit, token) => {
                // Not awaited: the hit does not depend on it. By the script's
                // text, as a `NOSCRIPT` read late could not be answered.
                let mut release = Packed::with_capacity(super::RELEASE_LUA.len() + ROOM);
                let words: [&[u8]; 5] = [
                    b"EVAL",
                    super::RELEASE_LUA.as_bytes(),
                    b"1",
                    lock.as_bytes(),
                    token.as_str().as_bytes(),
                ];
                release.command(&words);
                self.run(|c| c.send_unawaited(release.bytes(), release.count()))?;
                GetOrLock::Hit(hit)
            }
            Looked::ClearForeign(raw, token) => {
                self.delete_foreign(key, &raw)?;
                GetOrLock::Locked(token)
            }
            Looked::Careful(taken) => {
                if let Some(token) = taken {
                    self.unlock(key, &token)?;
                }
                self.get_or_lock_by(key, &self.scripts.get_or_lock, false)?
                    .0
            }
        };
        self.saw(key, &found);
        Ok(found)
    }

    /// Async [`RedisBackend::get_or_lock`].
    pub async fn get_or_lock_async(&self, key: &str) -> Result<GetOrLock> {
        if self.presence.likely(key) {
            let mut pipe = Pipeline::with_capacity(1);
            get(&mut pipe, key);
            let pipe = &pipe;
            let got = self
                .run_async(|mut c| async move {
                    let reply = sole_reply(c.req_packed_commands(pipe, 0, 1).await);
                    self.read_get(key, bulk(reply))
                })
                .await?;
            if let Some(found) = self.found_by_get(key, got) {
                return Ok(found);
            }
        }
        let token = &LockToken::random();
        let mut pipe = Pipeline::with_capacity(2);
        lock_then_get(
            &mut pipe,
            key,
            &self.lock_key_of(key),
            token,
            self.lock_secs(),
        );
        let pipe = &pipe;
        let looked = self
            .run_async(|mut c| async move {
                let replies = c.req_packed_commands(pipe, 0, 2).await;
                self.read_lock_then_get(key, replies, token.clone())
            })
            .await?;
        let found = match looked {
            Looked::Done(found) => found,
            Looked::ServeAndRelease(hit, token) => {
                self.unlock_async(key, &token).await?;
                GetOrLock::Hit(hit)
            }
            Looked::ClearForeign(raw, token) => {
                self.delete_foreign_async(key, &raw).await?;
                GetOrLock::Locked(token)
            }
            Looked::Careful(taken) => {
                if let Some(token) = taken {
                    self.unlock_async(key, &token).await?;
                }
                let script = &self.scripts.get_or_lock;
                self.get_or_lock_by_async(key, script, false).await?.0
            }
        };
        self.saw(key, &found);
        Ok(found)
    }

    /// Remember whether the look found the key.
    fn saw(&self, key: &str, found: &GetOrLock) {
        if matches!(found, GetOrLock::Hit(_)) {
            self.presence.found(key);
        }
    }

    /// Remember what a store left under `key`.
    pub(super) fn stored(&self, key: &str, ttl: f64) {
        match ttl_secs(ttl) {
            Some(_) => self.presence.found(key),
            None => self.presence.gone(key),
        }
    }

    /// `store(...)` then the release of `key`'s lock by `token`.
    pub(super) fn store_then_release(
        &self,
        out: &mut impl Commands,
        key: &str,
        payload: &[u8],
        ttl: f64,
        token: &LockToken,
    ) {
        store(out, key, payload, ttl);
        self.release(out, key, token);
    }

    /// The release of `key`'s lock by `token`: `EVALSHA` of the release
    /// script (known to the server after its first call; on a
    /// `NOSCRIPT`, [`RedisBackend::unlock`] loads it).
    fn release(&self, out: &mut impl Commands, key: &str, token: &LockToken) {
        let sha = self.scripts.release.get_hash();
        let lock = self.lock_key_of(key);
        out.command(&[
            b"EVALSHA",
            sha.as_bytes(),
            b"1",
            lock.as_bytes(),
            token.as_str().as_bytes(),
        ]);
    }

    /// One round trip: store `value` under `key` for `ttl` seconds (nothing,
    /// and remove the old value, when `ttl <= 0`), then release the lock if
    /// `token` still holds it.
    pub fn store_and_unlock(
        &self,
        key: &str,
        value: &[u8],
        ttl: f64,
        token: &LockToken,
    ) -> Result<()> {
        let payload = self.encode_for(key, value, now());
        let mut packed = Packed::with_capacity(2 * key.len() + payload.len() + ROOM);
        self.store_then_release(&mut packed, key, &payload, ttl, token);
        let released =
            self.run(|c| read_store(c.req_packed_commands(packed.bytes(), 0, packed.count())))?;
        if !released {
            self.unlock(key, token)?;
        }
        self.stored(key, ttl);
        Ok(())
    }

    /// Async [`RedisBackend::store_and_unlock`].
    pub async fn store_and_unlock_async(
        &self,
        key: &str,
        value: &[u8],
        ttl: f64,
        token: &LockToken,
    ) -> Result<()> {
        let payload = self.encode_for(key, value, now());
        let mut pipe = Pipeline::with_capacity(2);
        self.store_then_release(&mut pipe, key, &payload, ttl, token);
        let pipe = &pipe;
        let released = self
            .run_async(|mut c| async move { read_store(c.req_packed_commands(pipe, 0, 2).await) })
            .await?;
        if !released {
            self.unlock_async(key, token).await?;
        }
        self.stored(key, ttl);
        Ok(())
    }
}
