//! Signed values: an HMAC-SHA256 trailer after the payload, so that a value
//! planted in Redis or in a cache file by someone without the key is never
//! handed up (the Python layer would unpickle it, running its code).
//!
//! Layout of a signed value, as the byte backends store it (in Redis after
//! the 8 bytes of `created_at`, in SQLite in the `value` column):
//!
//! ```text
//! payload | tag (32 bytes) | "CHS1"
//! tag = HMAC-SHA256(signing key, u64_le(len(cache key)) | cache key
//!                                | f64_le(created_at) | payload)
//! ```
//!
//! The payload is a pickle, and pickle stops reading at its STOP opcode, so
//! a reader that knows nothing of signing (cachu 0.2.7) still reads a signed
//! value as a hit. The tag binds the value to its key and its `created_at`:
//! a signed value copied under another key, or given another age, does not
//! verify. Of several keys the first signs and every one verifies, so keys
//! rotate without a cold cache.
//!
//! ```
//! use cachu::sign::Signer;
//!
//! let old = Signer::new(["old key"]).unwrap();
//! let rotated = Signer::new(["new key", "old key"]).unwrap();
//! let mut stored = b"payload".to_vec();
//! old.append("5m:f|x=1", 1.5, &mut stored);
//! assert_eq!(rotated.verify("5m:f|x=1", 1.5, &stored), Some(7));
//! assert_eq!(rotated.verify("5m:f|x=2", 1.5, &stored), None);
//! assert_eq!(rotated.verify("5m:f|x=1", 1.5, b"payload"), None);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::clock;
use crate::error::{Error, Result};

/// What ends every signed value: the format's name and version.
pub const MARKER: &[u8; 4] = b"CHS1";
/// Bytes of the HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;
/// Bytes a signature adds after the payload.
pub const TRAILER_LEN: usize = TAG_LEN + MARKER.len();
/// Least seconds between two warnings about rejected values of one region.
const WARN_EVERY_SECS: u64 = 3600;

type HmacSha256 = Hmac<Sha256>;

/// The signing keys: the first signs, all verify. Keyed once, so signing
/// and verifying only hash the message. Its `Debug` never shows a key.
#[derive(Clone)]
pub struct Signer {
    keys: Vec<HmacSha256>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({} key(s))", self.keys.len())
    }
}

impl Signer {
    /// A signer over `keys` (the first signs). No key, or an empty one, is
    /// [`Error::BadConfig`] (whose message shows no key).
    pub fn new<K: AsRef<[u8]>>(keys: impl IntoIterator<Item = K>) -> Result<Self> {
        let mut macs = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            let key = key.as_ref();
            if key.is_empty() {
                return Err(Error::BadConfig(format!(
                    "signing_key: key number {} is empty",
                    i + 1
                )));
            }
            macs.push(HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length"));
        }
        if macs.is_empty() {
            return Err(Error::BadConfig("signing_key: no key given".into()));
        }
        Ok(Self { keys: macs })
    }

    fn mac(keyed: &HmacSha256, key: &str, created_at: f64, payload: &[u8]) -> HmacSha256 {
        let mut mac = keyed.clone();
        mac.update(&(key.len() as u64).to_le_bytes());
        mac.update(key.as_bytes());
        mac.update(&created_at.to_le_bytes());
        mac.update(payload);
        mac
    }

    /// Appends the trailer signing `out` (the payload) for `key` and
    /// `created_at`.
    pub fn append(&self, key: &str, created_at: f64, out: &mut Vec<u8>) {
        self.append_after(key, created_at, out, 0);
    }

    /// Like [`Signer::append`], for a payload that starts at `start` in
    /// `out` (after a header that is not signed as such).
    pub fn append_after(&self, key: &str, created_at: f64, out: &mut Vec<u8>, start: usize) {
        self.append_with(0, key, created_at, out, start);
    }

    /// Like [`Signer::append_after`], signing with key number `index`.
    fn append_with(
        &self,
        index: usize,
        key: &str,
        created_at: f64,
        out: &mut Vec<u8>,
        start: usize,
    ) {
        let tag = Self::mac(&self.keys[index], key, created_at, &out[start..]).finalize();
        out.extend_from_slice(&tag.into_bytes());
        out.extend_from_slice(MARKER);
    }

    /// The length of the payload of `stored` if its trailer verifies under
    /// one of the keys for `key` and `created_at`; `None` if it carries no
    /// trailer or a wrong one.
    pub fn verify(&self, key: &str, created_at: f64, stored: &[u8]) -> Option<usize> {
        let len = stored.len().checked_sub(TRAILER_LEN)?;
        if &stored[len + TAG_LEN..] != MARKER {
            return None;
        }
        let (payload, tag) = (&stored[..len], &stored[len..len + TAG_LEN]);
        self.keys
            .iter()
            .any(|k| {
                Self::mac(k, key, created_at, payload)
                    .verify_slice(tag)
                    .is_ok()
            })
            .then_some(len)
    }
}

/// What one byte backend does about signatures: nothing (no signer), or
/// sign what it writes and verify what it reads, warning about rejected
/// values at most once an hour.
#[derive(Debug, Default)]
pub struct Signing {
    signer: Option<Arc<Signer>>,
    /// Unix seconds of the last warning (0: none yet).
    warned_at: AtomicU64,
}

impl Signing {
    pub fn new(signer: Option<Arc<Signer>>) -> Self {
        Self {
            signer,
            warned_at: AtomicU64::new(0),
        }
    }

    /// Whether values are signed and verified.
    pub fn enabled(&self) -> bool {
        self.signer.is_some()
    }

    /// Appends the trailer of the payload `out[start..]`, if signing.
    #[inline]
    pub fn seal(&self, key: &str, created_at: f64, out: &mut Vec<u8>, start: usize) {
        if let Some(s) = &self.signer {
            s.append_after(key, created_at, out, start);
        }
    }

    /// Every form `raw` (a payload after `start`) takes when stored: as it
    /// is when not signing, else signed by each key in turn. A value read
    /// back (its trailer removed) was stored as one of these.
    pub fn stored_forms(
        &self,
        key: &str,
        created_at: f64,
        raw: Vec<u8>,
        start: usize,
    ) -> Vec<Vec<u8>> {
        let Some(signer) = &self.signer else {
            return vec![raw];
        };
        (0..signer.keys.len())
            .map(|i| {
                let mut form = raw.clone();
                signer.append_with(i, key, created_at, &mut form, start);
                form
            })
            .collect()
    }

    /// The payload of `stored` (`raw[start..]`) with its trailer removed if
    /// it verifies; `raw` as it is when not signing; `None` (logged at most
    /// once an hour, naming `place` and the key's function, not its
    /// arguments) if it must not be used.
    #[inline]
    pub fn open(
        &self,
        key: &str,
        created_at: f64,
        mut raw: Vec<u8>,
        start: usize,
        place: &dyn fmt::Display,
    ) -> Option<Vec<u8>> {
        let Some(signer) = &self.signer else {
            return Some(raw);
        };
        match signer.verify(key, created_at, raw.get(start..)?) {
            Some(len) => {
                raw.truncate(start + len);
                Some(raw)
            }
            None => {
                self.rejected(key, place);
                None
            }
        }
    }

    fn rejected(&self, key: &str, place: &dyn fmt::Display) {
        let now = clock::now() as u64;
        let last = self.warned_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY_SECS;
        if due
            && self
                .warned_at
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(
                "cachu: a value of {} in {place} is unsigned or wrongly signed: not used, \
                 recomputed and replaced (logged at most once an hour per region)",
                key_function(key)
            );
        } else {
            log::debug!(
                "cachu: rejected an unsigned or wrongly signed value of {key:?} in {place}"
            );
        }
    }
}

/// The part of a cache key that names its region and function, without the
/// arguments: `5m:v1:get_user` of `5m:v1:get_user|user_id=1`. What messages
/// at WARNING and above may show of a key.
pub fn key_function(key: &str) -> &str {
    key.split('|').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(s: &Signer, key: &str, at: f64, payload: &[u8]) -> Vec<u8> {
        let mut out = payload.to_vec();
        s.append(key, at, &mut out);
        out
    }

    #[test]
    fn round_trip_and_layout() {
        let s = Signer::new([b"k".as_slice()]).unwrap();
        let out = signed(&s, "5m:f|x=1", 10.0, b"\x80\x04K\x01.");
        assert_eq!(out.len(), 5 + TRAILER_LEN);
        assert_eq!(&out[out.len() - 4..], MARKER);
        assert_eq!(&out[..5], b"\x80\x04K\x01.");
        assert_eq!(s.verify("5m:f|x=1", 10.0, &out), Some(5));
        // Deterministic: the same value signs the same.
        assert_eq!(out, signed(&s, "5m:f|x=1", 10.0, b"\x80\x04K\x01."));
        // Empty payloads too.
        assert_eq!(s.verify("k", 0.0, &signed(&s, "k", 0.0, b"")), Some(0));
    }

    #[test]
    fn rejects_what_it_did_not_sign() {
        let s = Signer::new(["right"]).unwrap();
        let other = Signer::new(["wrong"]).unwrap();
        let good = signed(&s, "5m:f|x=1", 10.0, b"payload");
        assert_eq!(s.verify("5m:f|x=1", 10.0, b"payload"), None);
        assert_eq!(s.verify("5m:f|x=1", 10.0, b""), None);
        assert_eq!(
            s.verify(
                "5m:f|x=1",
                10.0,
                &signed(&other, "5m:f|x=1", 10.0, b"payload")
            ),
            None
        );
        // Another key, another age, a flipped bit anywhere.
        assert_eq!(s.verify("5m:f|x=2", 10.0, &good), None);
        assert_eq!(s.verify("5m:f|x=1", 11.0, &good), None);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 1;
            assert_eq!(s.verify("5m:f|x=1", 10.0, &bad), None, "bit flipped at {i}");
        }
        // A trailer moved: payload bytes cannot pass for key bytes.
        assert_eq!(s.verify("5m:f|x=1p", 10.0, &good[1..]), None);
    }

    #[test]
    fn rotation() {
        let old = Signer::new(["old"]).unwrap();
        let new = Signer::new(["new", "old"]).unwrap();
        let only_new = Signer::new(["new"]).unwrap();
        let by_old = signed(&old, "k", 1.0, b"v");
        let by_new = signed(&new, "k", 1.0, b"v");
        assert_eq!(new.verify("k", 1.0, &by_old), Some(1));
        assert_eq!(only_new.verify("k", 1.0, &by_new), Some(1));
        assert_eq!(old.verify("k", 1.0, &by_new), None);
        assert_eq!(only_new.verify("k", 1.0, &by_old), None);
    }

    #[test]
    fn bad_keys_are_config_errors_without_the_key() {
        let err = Signer::new(Vec::<Vec<u8>>::new()).unwrap_err();
        assert!(matches!(err, Error::BadConfig(_)));
        let err = Signer::new(["secret-one", ""]).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(err.to_string().contains("signing_key"), "{err}");
        assert_eq!(
            format!("{:?}", Signer::new(["hush"]).unwrap()),
            "Signer(1 key(s))"
        );
    }

    #[test]
    fn signing_strips_after_a_header() {
        let signing = Signing::new(Some(Arc::new(Signer::new(["k"]).unwrap())));
        let mut raw = b"HEADER--payload".to_vec();
        signing.seal("key", 2.0, &mut raw, 8);
        let place = "here";
        assert_eq!(
            signing.open("key", 2.0, raw.clone(), 8, &place).unwrap(),
            b"HEADER--payload"
        );
        assert_eq!(signing.open("key", 3.0, raw.clone(), 8, &place), None);
        let rotated = Signing::new(Some(Arc::new(Signer::new(["new", "k"]).unwrap())));
        let forms = rotated.stored_forms("key", 2.0, b"HEADER--payload".to_vec(), 8);
        assert_eq!(forms.len(), 2);
        assert_eq!(forms[1], raw);
        let off = Signing::default();
        assert_eq!(
            off.open("key", 2.0, b"HEADER--x".to_vec(), 8, &place)
                .unwrap(),
            b"HEADER--x"
        );
        assert_eq!(key_function("5m:v1:get_user|user_id=1"), "5m:v1:get_user");
        assert_eq!(key_function("plain"), "plain");
    }
}
