//! `RedisLock`: a distributed dogpile lock held by an async caller while it
//! computes. Storing the result through it releases it in the same round
//! trip; if it is dropped unused (the task was cancelled or failed), it is
//! released in the background.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;

use super::region::{Region, Store};
use crate::backend::redis::LockToken;
use crate::runtime;

#[pyclass(module = "cachu", name = "RedisLock", frozen)]
pub struct RedisLock {
    region: Arc<Region>,
    key: String,
    token: Mutex<Option<LockToken>>,
}

impl RedisLock {
    pub fn new(region: Arc<Region>, key: String, token: LockToken) -> Self {
        Self {
            region,
            key,
            token: Mutex::new(Some(token)),
        }
    }

    /// The token, taken out: whoever takes it releases the lock.
    pub fn take(&self) -> Option<LockToken> {
        self.token.lock().take()
    }

    fn release_in_background(&self) {
        if let Some(token) = self.take() {
            let (region, key) = (self.region.clone(), self.key.clone());
            runtime::handle().spawn(async move {
                if let Store::Redis(redis) = &region.store {
                    // If this fails the lock expires after lock_timeout.
                    let _ = redis.unlock_async(&key, &token).await;
                }
            });
        }
    }
}

#[pymethods]
impl RedisLock {
    /// Release the lock without storing anything.
    fn release(&self) {
        self.release_in_background();
    }
}

impl Drop for RedisLock {
    fn drop(&mut self) {
        self.release_in_background();
    }
}
