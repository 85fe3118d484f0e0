//! Replies in RESP2, read from the bytes a connection has received: the
//! reader of [`Plain`](super::plain::Plain).
//!
//! It makes the same [`Value`]s as the `redis` crate's parser, which costs
//! about 0.4 us a reply (it runs `combine`'s partial-parse machinery over a
//! buffer it zeroes before every read): on a loopback round trip of 5.6 us,
//! a `GET` through the crate took 6.1 us and through this reader 5.7 us.
//! An error reply, rare, is handed whole to the crate's parser, so that it
//! becomes the crate's own `ServerError`.

use redis::{ErrorKind, RedisError, RedisResult, Value};

/// The first reply in `buf`, and how many bytes it took; `None` if `buf`
/// does not hold all of it yet.
pub(super) fn read(buf: &[u8]) -> RedisResult<Option<(Value, usize)>> {
    read_at(buf, 0, 0)
}

/// Arrays nested deeper than this are refused (no server reply is).
const MAX_DEPTH: u32 = 64;

fn read_at(buf: &[u8], at: usize, depth: u32) -> RedisResult<Option<(Value, usize)>> {
    let Some(kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some(line_end) = line_end(buf, at + 1)? else {
        return Ok(None);
    };
    let line = &buf[at + 1..line_end];
    let next = line_end + 2;
    let value = match kind {
        b'+' if line == b"OK" => Value::Okay,
        b'+' => Value::SimpleString(text(line)?.to_owned()),
        b':' => Value::Int(number(line)?),
        b'$' => {
            let len = number(line)?;
            if len < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            // The server's word: a length no address can reach is garbage,
            // not a reason to wrap around (or to truncate on 32 bits).
            let end = usize::try_from(len)
                .ok()
                .and_then(|len| next.checked_add(len))
                .filter(|end| end.checked_add(2).is_some())
                .ok_or_else(|| garbage("a bulk string longer than memory"))?;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(garbage("a bulk string longer than its length"));
            }
            return Ok(Some((Value::BulkString(buf[next..end].to_vec()), end + 2)));
        }
        b'*' => {
            let len = number(line)?;
            if len < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            if depth >= MAX_DEPTH {
                return Err(garbage("arrays nested too deep"));
            }
            // Room for what the bytes at hand can hold, not what the
            // length says: it is the server's word, read before the items.
            let mut items = Vec::with_capacity((len as usize).min(buf.len() - next));
            let mut end = next;
            for _ in 0..len {
                match read_at(buf, end, depth + 1)? {
                    Some((item, after)) => {
                        items.push(item);
                        end = after;
                    }
                    None => return Ok(None),
                }
            }
            return Ok(Some((Value::Array(items), end)));
        }
        b'-' => match redis::parse_redis_value(&buf[at..next])? {
            e @ Value::ServerError(_) => e,
            _ => return Err(garbage("an error reply the parser did not take")),
        },
        _ => return Err(garbage("a reply of a kind RESP2 does not have")),
    };
    Ok(Some((value, next)))
}

/// Where the line starting at `from` ends (its `\r\n`), if it is whole.
#[inline]
fn line_end(buf: &[u8], from: usize) -> RedisResult<Option<usize>> {
    let Some(at) = buf
        .get(from..)
        .and_then(|b| b.iter().position(|&b| b == b'\n'))
    else {
        return Ok(None);
    };
    match (from + at).checked_sub(1) {
        Some(cr) if cr >= from && buf[cr] == b'\r' => Ok(Some(cr)),
        _ => Err(garbage("a line not ended by CRLF")),
    }
}

fn number(line: &[u8]) -> RedisResult<i64> {
    text(line)?
        .parse()
        .map_err(|_| garbage("a number that is not one"))
}

fn text(line: &[u8]) -> RedisResult<&str> {
    std::str::from_utf8(line).map_err(|_| garbage("a line that is not UTF-8"))
}

fn garbage(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::Parse, "redis: unreadable reply", what.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the crate's own parser makes of each reply, and how many bytes
    /// it is: this reader must agree on both.
    fn same_as_crate(reply: &[u8]) {
        let mine = read(reply).expect("readable").expect("whole");
        assert_eq!(
            mine.0,
            redis::parse_redis_value(reply).expect("the crate reads it")
        );
        assert_eq!(mine.1, reply.len(), "{reply:?}");
    }

    #[test]
    fn reads_every_reply_kind_as_the_crate_does() {
        for reply in [
            &b"+OK\r\n"[..],
            b"+PONG\r\n",
            b":0\r\n",
            b":-42\r\n",
            b"$-1\r\n",
            b"$0\r\n\r\n",
            b"$5\r\nhe\r\no\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*3\r\n$1\r\na\r\n:7\r\n*2\r\n+OK\r\n$-1\r\n",
            b"-ERR unknown command 'x'\r\n",
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            b"-NOSCRIPT No matching script. Please use EVAL.\r\n",
        ] {
            same_as_crate(reply);
        }
    }

    #[test]
    fn a_reply_cut_anywhere_is_not_whole_yet() {
        let reply = b"*3\r\n$5\r\nhello\r\n:12\r\n*1\r\n-ERR x\r\n";
        for cut in 0..reply.len() {
            assert_eq!(
                read(&reply[..cut]).expect("readable so far"),
                None,
                "cut at {cut}"
            );
        }
        same_as_crate(reply);
    }

    #[test]
    fn replies_in_a_row_are_read_one_at_a_time() {
        let bytes = b"+OK\r\n$3\r\nabc\r\n:1\r\n";
        let (first, used) = read(bytes).unwrap().unwrap();
        assert_eq!((first, used), (Value::Okay, 5));
        let (second, more) = read(&bytes[used..]).unwrap().unwrap();
        assert_eq!(second, Value::BulkString(b"abc".to_vec()));
        assert_eq!(
            read(&bytes[used + more..]).unwrap().unwrap().0,
            Value::Int(1)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_value() {
        for bad in [
            &b"?what\r\n"[..],
            b":12x\r\n",
            b"$3\r\nabcd\r\n",
            b"$x\r\n",
            b"+\xff\r\n",
            b"+OK\n",
        ] {
            let err = read(bad).expect_err("garbage");
            assert_eq!(err.kind(), ErrorKind::Parse, "{bad:?}");
        }
    }

    #[test]
    fn a_length_the_bytes_cannot_hold_reserves_nothing_for_it() {
        // A huge announced array with one item at hand: not whole, no panic.
        assert_eq!(read(b"*4000000000\r\n:1\r\n").unwrap(), None);
        // A huge announced string with two bytes at hand: not whole either.
        assert_eq!(read(b"$9223372036854775807\r\nab").unwrap(), None);
    }
}
