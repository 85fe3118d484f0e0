//! A stored key's text: in the entry itself when it is short, as most keys
//! are (a prefix, a function's name and an argument or two), else on the
//! heap. A short key costs the growing store no allocation, and a hit no
//! trip to another cache line to compare it.

/// The longest key kept in the entry: what fits beside the length in the
/// 32 bytes of the type (a heap key takes 24).
const INLINE: usize = 30;

pub enum KeyText {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl KeyText {
    pub fn new(text: &str) -> Self {
        match u8::try_from(text.len()) {
            Ok(len) if text.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..text.len()].copy_from_slice(text.as_bytes());
                KeyText::Inline { len, bytes }
            }
            _ => KeyText::Heap(text.into()),
        }
    }

    /// Whether this is `text`. On every hit: a short key is compared in
    /// place, without a call to `memcmp`.
    #[inline]
    pub fn is(&self, text: &str) -> bool {
        match self {
            KeyText::Inline { len, bytes } => {
                usize::from(*len) == text.len() && same_short(bytes, text.as_bytes())
            }
            KeyText::Heap(b) => **b == *text,
        }
    }

    #[inline]
    fn as_bytes(&self) -> &[u8] {
        match self {
            // (The `min` spares the bounds check: `len` is at most INLINE.)
            KeyText::Inline { len, bytes } => &bytes[..usize::from(*len).min(INLINE)],
            KeyText::Heap(b) => b.as_bytes(),
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("made from a str")
    }
}

/// Whether the first `b.len()` bytes of `a` are `b`, for `b` no longer
/// than `a`: two overlapping loads of 16 (or 8) bytes from each, as
/// `memcmp` does for short lengths, but inline.
#[inline]
fn same_short(a: &[u8; INLINE], b: &[u8]) -> bool {
    let n = b.len();
    if n > INLINE {
        return false;
    }
    if n >= 16 {
        load::<16>(a, 0) == load::<16>(b, 0) && load::<16>(a, n - 16) == load::<16>(b, n - 16)
    } else if n >= 8 {
        load::<8>(a, 0) == load::<8>(b, 0) && load::<8>(a, n - 8) == load::<8>(b, n - 8)
    } else {
        a[..n] == *b
    }
}

#[inline(always)]
fn load<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    bytes[at..at + N].try_into().expect("N bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_inline_long_ones_on_the_heap_both_compare_exactly() {
        let long = "5m:module.function|argument=".to_string() + &"x".repeat(40);
        for text in [
            "",
            "k",
            "5m:bench_mem_grow|x=10000000",
            &"é".repeat(15),
            &long,
        ] {
            let k = KeyText::new(text);
            assert_eq!(matches!(k, KeyText::Inline { .. }), text.len() <= INLINE);
            assert_eq!(k.as_str(), text);
            assert!(k.is(text));
            assert!(!k.is(&format!("{text}!")));
            let mut shorter = text.to_string();
            if shorter.pop().is_some() {
                assert!(!k.is(&shorter));
            }
        }
        assert!(!KeyText::new("ab").is("ac"));
        // Every length, differing at every place (the two overlapping loads
        // of the in-place compare must each see their half).
        let text: String = ('a'..='z').chain('A'..='Z').take(INLINE).collect();
        for n in 0..=INLINE {
            let k = KeyText::new(&text[..n]);
            assert!(k.is(&text[..n]));
            for at in 0..n {
                let mut other = text.as_bytes()[..n].to_vec();
                other[at] = b'#';
                assert!(!k.is(std::str::from_utf8(&other).unwrap()), "{n} {at}");
            }
        }
        assert_eq!(std::mem::size_of::<KeyText>(), 32);
    }
}
