//! The reads of a near cache: the same reads as the plain ones, each also
//! returning how long the key has left to live (`PTTL`) in the same round
//! trip, so that the near cache lets its copy expire with the server's.
//! A value that is not there, or that will not be kept, comes with 0.

use redis::{Script, Value};

use super::near::TrackingSource;
use super::{as_int, into_items, GetOrLock, RedisBackend, GET_OR_LOCK_LUA, HEADER};
use crate::backend::{Backend, Hit};
use crate::error::Result;

/// A value read, with the seconds its key has left.
type Expiring = Option<(Hit<Vec<u8>>, f64)>;

/// `{value, pttl}` for a cachu value, `0` for no value, `1` for anything
/// else (read again by the plain `get`, which removes it).
const GET_LUA: &str = r"
local v = redis.pcall('GET', KEYS[1])
if v == false then return 0 end
if type(v) == 'string' and string.len(v) >= 8 then
  return {v, redis.call('PTTL', KEYS[1])}
end
return 1
";

/// The hit of the get-or-lock script, with the key's `PTTL` after the value.
const HIT: &str = "if string.len(v) >= 8 then return {1, v} end";
const HIT_WITH_TTL: &str =
    "if string.len(v) >= 8 then return {1, v, redis.call('PTTL', KEYS[1])} end";

pub(super) struct Scripts {
    get: Script,
    get_or_lock: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            get: Script::new(GET_LUA),
            get_or_lock: Script::new(&get_or_lock_lua()),
        }
    }
}

/// The get-or-lock script, answering a hit with `{1, value, pttl}`.
fn get_or_lock_lua() -> String {
    debug_assert!(GET_OR_LOCK_LUA.contains(HIT));
    GET_OR_LOCK_LUA.replacen(HIT, HIT_WITH_TTL, 1)
}

/// Seconds left from a `PTTL` reply: no expiry is forever, a missing key
/// has none left.
fn seconds_left(pttl: Option<i64>) -> f64 {
    match pttl {
        Some(-1) => f64::INFINITY,
        Some(ms) if ms > 0 => ms as f64 / 1000.0,
        _ => 0.0,
    }
}

/// The get-or-lock reply without its trailing `PTTL`, and the seconds left.
pub(super) fn split_ttl(reply: Value) -> (Value, f64) {
    let mut items = into_items(reply);
    if items.len() == 3 && items.first().and_then(as_int) == Some(1) {
        let left = seconds_left(items.pop().as_ref().and_then(as_int));
        return (Value::Array(items), left);
    }
    (Value::Array(items), 0.0)
}

impl RedisBackend {
    /// What the near cache's tracking connects to.
    pub fn tracking_source(&self) -> TrackingSource {
        TrackingSource {
            topology: self.topology.clone(),
            cluster_seeds: self.cluster_seeds.clone(),
            timeout: self.timeout(),
        }
    }

    /// [`Backend::get`], with the seconds the key has left.
    pub fn get_expiring(&self, key: &str) -> Result<Expiring> {
        let reply = self.run(|c| self.scripts.expiring.get.key(key).invoke::<Value>(c))?;
        self.read_expiring(key, reply)
            .unwrap_or_else(|| Ok(Backend::get(self, key)?.map(|hit| (hit, 0.0))))
    }

    /// Async [`RedisBackend::get_expiring`].
    pub async fn get_expiring_async(&self, key: &str) -> Result<Expiring> {
        let reply: Value = self
            .run_async(|mut c| async move {
                self.scripts
                    .expiring
                    .get
                    .key(key)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match self.read_expiring(key, reply) {
            Some(read) => read,
            None => Ok(self.get_async(key).await?.map(|hit| (hit, 0.0))),
        }
    }

    /// The reply of the get script; `None` for a value to read the plain way.
    fn read_expiring(&self, key: &str, reply: Value) -> Option<Result<Expiring>> {
        match reply {
            Value::Int(0) => Some(Ok(None)),
            Value::Array(mut items) if items.len() == 2 => {
                let left = seconds_left(as_int(&items[1]));
                let raw = super::into_bytes(items.swap_remove(0));
                if raw.len() < HEADER {
                    return Some(Err(self.bad_reply("get")));
                }
                Some(Ok(self.decode_for(key, raw).map(|hit| (hit, left))))
            }
            _ => None,
        }
    }

    /// [`RedisBackend::get_or_lock`], with the seconds the key has left
    /// (0 unless it is a hit).
    pub fn get_or_lock_expiring(&self, key: &str) -> Result<(GetOrLock, f64)> {
        self.get_or_lock_by(key, &self.scripts.expiring.get_or_lock, true)
    }

    /// Async [`RedisBackend::get_or_lock_expiring`].
    pub async fn get_or_lock_expiring_async(&self, key: &str) -> Result<(GetOrLock, f64)> {
        self.get_or_lock_by_async(key, &self.scripts.expiring.get_or_lock, true)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hit_carries_the_ttl() {
        assert!(GET_OR_LOCK_LUA.contains(HIT));
        let lua = get_or_lock_lua();
        assert!(lua.contains("PTTL") && !lua.contains(HIT));
        assert_eq!(seconds_left(Some(-1)), f64::INFINITY);
        assert_eq!(seconds_left(Some(-2)), 0.0);
        assert_eq!(seconds_left(Some(1500)), 1.5);
        assert_eq!(seconds_left(None), 0.0);
        let (rest, left) = split_ttl(Value::Array(vec![
            Value::Int(1),
            Value::BulkString(b"v".to_vec()),
            Value::Int(2000),
        ]));
        assert_eq!(left, 2.0);
        assert_eq!(into_items(rest).len(), 2);
        let (_, left) = split_ttl(Value::Array(vec![Value::Int(2)]));
        assert_eq!(left, 0.0);
    }
}
