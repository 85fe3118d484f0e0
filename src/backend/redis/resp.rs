//! Where the commands of a cached call's round trips are written: each is
//! defined once (in `look.rs`) against [`Commands`], and written either
//! straight into the bytes one write sends ([`Packed`], the sync face), or
//! into a [`Pipeline`] (the async face's connections take nothing else).
//!
//! Building `Cmd`s and packing them cost a sync miss about 5,000
//! instructions (callgrind), more than reading the replies; writing the
//! protocol's bytes directly costs a few hundred.

use redis::{Cmd, Pipeline};

/// A sink for commands, each given as its words (its name first).
pub(super) trait Commands {
    fn command(&mut self, words: &[&[u8]]);
}

/// Commands in the Redis protocol (RESP), as one write sends them.
pub(super) struct Packed {
    bytes: Vec<u8>,
    count: usize,
}

/// A decimal number's bytes, as a command word.
pub(super) struct Number(itoa::Buffer);

impl Number {
    pub(super) fn new() -> Self {
        Self(itoa::Buffer::new())
    }

    pub(super) fn of(&mut self, n: u64) -> &[u8] {
        self.0.format(n).as_bytes()
    }
}

/// Room for a command's framing: its `*n` line and a `$len` line per word.
const FRAMING: usize = 16;
const PER_WORD: usize = 16;

impl Packed {
    /// Empty, with room for about `bytes` bytes of words.
    pub(super) fn with_capacity(bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes + 2 * FRAMING + 8 * PER_WORD),
            count: 0,
        }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// How many commands (so how many replies to read).
    pub(super) fn count(&self) -> usize {
        self.count
    }

    /// `kind`, `n` in decimal, CRLF: written in one copy (a `*` or `$` line
    /// per word). The digits by hand: `itoa` and a copy into the line cost a
    /// miss about 200 instructions more (callgrind).
    fn line(&mut self, kind: u8, mut n: usize) {
        let mut line = [0u8; 24];
        let mut at = line.len() - 2;
        line[at..].copy_from_slice(b"\r\n");
        loop {
            at -= 1;
            line[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        at -= 1;
        line[at] = kind;
        self.bytes.extend_from_slice(&line[at..]);
    }
}

impl Commands for Packed {
    fn command(&mut self, words: &[&[u8]]) {
        let room: usize = words.iter().map(|w| w.len() + PER_WORD).sum();
        self.bytes.reserve(room + FRAMING);
        self.line(b'*', words.len());
        for word in words {
            self.line(b'$', word.len());
            self.bytes.extend_from_slice(word);
            self.bytes.extend_from_slice(b"\r\n");
        }
        self.count += 1;
    }
}

impl Commands for Pipeline {
    fn command(&mut self, words: &[&[u8]]) {
        let bytes = words.iter().map(|w| w.len()).sum();
        let mut cmd = Cmd::with_capacity(words.len(), bytes);
        for word in words {
            cmd.arg(*word);
        }
        self.add_command(cmd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_is_what_redis_packs() {
        let mut number = Number::new();
        let long = vec![b'x'; 1234];
        let words: [&[u8]; 5] = [b"SETEX", b"k\r\n", number.of(300), b"", &long];
        let mut packed = Packed::with_capacity(0);
        packed.command(&words);
        packed.command(&[b"GET", b"k"]);
        let mut pipe = Pipeline::new();
        pipe.command(&words);
        pipe.command(&[b"GET", b"k"]);
        assert_eq!(packed.bytes(), &pipe.get_packed_pipeline()[..]);
        assert_eq!(packed.count(), 2);
    }
}
