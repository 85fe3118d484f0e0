//! The text of a call's key while it is built: on the stack for the common
//! sizes, so a hit allocates nothing for its key (an allocation and a free
//! were a tenth of an int-returning memory hit). Only a value that is kept
//! copies the text to the heap.

use std::fmt;
use std::mem::MaybeUninit;
use std::ops::Deref;

/// Keys up to this many bytes stay on the stack.
const INLINE: usize = 192;

/// A `String` that starts on the stack. Only whole `str`s are ever
/// appended, so the bytes are always UTF-8. Build it in place (it is too
/// big to move around cheaply).
pub struct KeyText {
    /// The first `len` bytes are the text, unless it `spilled`.
    inline: [MaybeUninit<u8>; INLINE],
    len: usize,
    /// The whole text once it outgrew `inline`.
    spilled: Option<String>,
}

impl Default for KeyText {
    #[inline]
    fn default() -> Self {
        Self {
            inline: [MaybeUninit::uninit(); INLINE],
            len: 0,
            spilled: None,
        }
    }
}

impl KeyText {
    #[inline]
    pub fn push_str(&mut self, s: &str) {
        if self.spilled.is_none() && s.len() <= INLINE - self.len {
            // SAFETY: `s.len()` bytes fit after `len` (checked above), and
            // `s` cannot overlap our own buffer, borrowed mutably here.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    s.as_ptr(),
                    self.inline.as_mut_ptr().add(self.len).cast::<u8>(),
                    s.len(),
                );
            }
            self.len += s.len();
        } else {
            self.spill(s.len()).push_str(s);
        }
    }

    #[cold]
    fn spill(&mut self, more: usize) -> &mut String {
        if self.spilled.is_none() {
            let mut heap = String::with_capacity((self.len + more).max(2 * INLINE));
            heap.push_str(self.inline_str());
            self.spilled = Some(heap);
        }
        self.spilled.as_mut().expect("spilled just above")
    }

    #[inline]
    pub fn push(&mut self, c: char) {
        self.push_str(c.encode_utf8(&mut [0; 4]));
    }

    #[inline]
    pub fn reserve(&mut self, additional: usize) {
        if let Some(heap) = &mut self.spilled {
            heap.reserve(additional);
        }
    }

    #[inline]
    fn inline_str(&self) -> &str {
        // SAFETY: the first `len` bytes were written by `push_str`, from
        // whole `str`s.
        unsafe {
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(
                self.inline.as_ptr().cast::<u8>(),
                self.len,
            ))
        }
    }

    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.spilled {
            Some(heap) => heap,
            None => self.inline_str(),
        }
    }
}

impl Deref for KeyText {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for KeyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_past_the_stack() {
        let mut k = KeyText::default();
        k.push_str("300_|p:f|");
        for i in 0..100 {
            k.push_str("x=");
            k.push('é');
            k.push_str(&i.to_string());
        }
        let mut s = String::from("300_|p:f|");
        for i in 0..100 {
            s.push_str("x=");
            s.push('é');
            s.push_str(&i.to_string());
        }
        assert!(s.len() > INLINE);
        assert_eq!(k.as_str(), s);
        assert_eq!(k.to_string(), s);
    }
}
