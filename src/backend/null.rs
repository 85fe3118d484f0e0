//! The passthrough backend: stores nothing, every read misses.

use super::{Backend, Hit};
use crate::error::Result;

#[derive(Debug, Default, Clone, Copy)]
pub struct NullBackend;

impl Backend for NullBackend {
    fn get(&self, _key: &str) -> Result<Option<Hit<Vec<u8>>>> {
        Ok(None)
    }
    fn set(&self, _key: &str, _value: &[u8], _ttl: f64) -> Result<()> {
        Ok(())
    }
    fn delete(&self, _key: &str) -> Result<bool> {
        Ok(false)
    }
    fn clear(&self, _pattern: Option<&str>) -> Result<u64> {
        Ok(0)
    }
    fn keys(&self, _pattern: Option<&str>) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn count(&self, _pattern: Option<&str>) -> Result<u64> {
        Ok(0)
    }
}
