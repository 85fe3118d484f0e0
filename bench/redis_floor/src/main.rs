//! The commands of a dogpile-safe Redis miss, sent by a compiled client that
//! does nothing else: no function, no pickle, no Python. What it costs is
//! the floor the server and the kernel put under any client that keeps
//! 0.2.7's lock contract (COMPAT.md: `SET lock:{key} NX EX`, released by its
//! owner's compare-and-delete script).
//!
//! ```text
//! redis_floor PORT DB RELEASE_SHA TTL PAYLOAD_BYTES
//! ```
//!
//! It reads commands on stdin, one per line, and answers each with one line,
//! the nanoseconds per call of that timed loop:
//!
//! - `miss N START`: N misses of fresh keys `bench:floormiss:{START..}`, each
//!   two round trips of two pipelined commands: `SET lock token NX EX 10` +
//!   `GET key`, then `SETEX key TTL payload` + `EVALSHA RELEASE_SHA 1 lock
//!   token`, as a miss of ours sends them.
//! - `get N`: N round trips of `GET bench:floorget`.
//!
//! Each goes over a plain socket that only finds where each reply ends,
//! decoding nothing: the floor. With a last word `crate` (`get N crate`,
//! `miss N START crate`) it goes over the `redis` crate's synchronous
//! connection instead (the client our engine uses): the same packed
//! commands, each reply parsed into a `Value` as the engine gets it, the
//! floor of any client built on that crate.

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// One command, as RESP: an array of bulk strings.
fn command(out: &mut Vec<u8>, words: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", words.len()).as_bytes());
    for word in words {
        out.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
        out.extend_from_slice(word);
        out.extend_from_slice(b"\r\n");
    }
}

/// Where the reply starting at `at` ends, if `buf` holds all of it. Only
/// the reply kinds these commands get: simple lines and bulk strings.
fn reply_end(buf: &[u8], at: usize) -> Option<usize> {
    let line = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let after = line + 2;
    if buf[at] != b'$' {
        return Some(after);
    }
    let len: i64 = std::str::from_utf8(&buf[at + 1..line]).ok()?.parse().ok()?;
    if len < 0 {
        return Some(after);
    }
    let end = after + len as usize + 2;
    (end <= buf.len()).then_some(end)
}

struct Client {
    sock: TcpStream,
    /// The replies read so far.
    buf: Vec<u8>,
    /// What one `read` fills: allocated (and zeroed) once.
    chunk: Box<[u8]>,
}

impl Client {
    /// Write `out` in one `write`, then read until `replies` replies are
    /// whole. Panics on an error reply: the floor must not time failures.
    fn exchange(&mut self, out: &[u8], replies: usize) -> io::Result<()> {
        self.sock.write_all(out)?;
        self.buf.clear();
        loop {
            let n = self.sock.read(&mut self.chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&self.chunk[..n]);
            let mut at = 0;
            let mut whole = 0;
            while whole < replies {
                match reply_end(&self.buf, at) {
                    Some(end) => {
                        assert!(
                            self.buf[at] != b'-',
                            "error reply: {:?}",
                            &self.buf[at..end]
                        );
                        at = end;
                        whole += 1;
                    }
                    None => break,
                }
            }
            if whole == replies {
                return Ok(());
            }
        }
    }
}

/// A client that sends packed commands and waits for their replies.
trait Exchange {
    fn exchange(&mut self, out: &[u8], replies: usize) -> io::Result<()>;
}

impl Exchange for Client {
    fn exchange(&mut self, out: &[u8], replies: usize) -> io::Result<()> {
        Client::exchange(self, out, replies)
    }
}

/// The `redis` crate's connection, sending the same bytes.
struct CrateClient(redis::Connection);

impl Exchange for CrateClient {
    fn exchange(&mut self, out: &[u8], replies: usize) -> io::Result<()> {
        use redis::ConnectionLike;
        // One command as the engine sends a hit's, several as a pipeline.
        let values = if replies == 1 {
            vec![self.0.req_packed_command(out)]
        } else {
            self.0
                .req_packed_commands(out, 0, replies)
                .map(|v| v.into_iter().map(Ok).collect())
                .unwrap_or_else(|e| vec![Err(e)])
        };
        for value in values {
            if let redis::Value::ServerError(e) = value.map_err(io::Error::other)? {
                panic!("error reply: {e:?}");
            }
        }
        Ok(())
    }
}

fn arg(args: &[String], i: usize, what: &str) -> String {
    args.get(i)
        .cloned()
        .unwrap_or_else(|| panic!("missing argument {i}: {what}"))
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = arg(&args, 1, "PORT").parse().expect("PORT: a number");
    let db = arg(&args, 2, "DB");
    let sha = arg(&args, 3, "RELEASE_SHA");
    let ttl = arg(&args, 4, "TTL");
    let payload_bytes: usize = arg(&args, 5, "PAYLOAD_BYTES")
        .parse()
        .expect("PAYLOAD_BYTES: a number");

    let sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_nodelay(true)?;
    let mut client = Client {
        sock,
        buf: Vec::with_capacity(16 * 1024),
        chunk: vec![0; 16 * 1024].into_boxed_slice(),
    };
    let payload = vec![b'p'; payload_bytes];
    let token = [b't'; 32];
    let mut out = Vec::with_capacity(512);
    command(&mut out, &[b"SELECT", db.as_bytes()]);
    command(&mut out, &[b"SET", b"bench:floorget", &payload]);
    client.exchange(&out, 2)?;

    let mut crate_client = CrateClient(
        redis::Client::open(format!("redis://127.0.0.1:{port}/{db}"))
            .and_then(|c| c.get_connection())
            .map_err(io::Error::other)?,
    );

    let mut get = Vec::new();
    command(&mut get, &[b"GET", b"bench:floorget"]);
    let stdout = io::stdout();
    for line in io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |i: usize| -> u64 {
            words
                .get(i)
                .and_then(|w| w.parse().ok())
                .expect("a count after the command")
        };
        let via_crate = words.last() == Some(&"crate");
        let client: &mut dyn Exchange = if via_crate {
            &mut crate_client
        } else {
            &mut client
        };
        let ns = match words.first() {
            Some(&"get") => {
                let n = number(1);
                let start = Instant::now();
                for _ in 0..n {
                    client.exchange(&get, 1)?;
                }
                start.elapsed().as_nanos() as f64 / n as f64
            }
            Some(&"miss") => {
                let (n, first) = (number(1), number(2));
                let start = Instant::now();
                for i in first..first + n {
                    let key = format!("bench:floormiss:{i}");
                    let lock = format!("lock:{key}");
                    out.clear();
                    command(
                        &mut out,
                        &[b"SET", lock.as_bytes(), &token, b"NX", b"EX", b"10"],
                    );
                    command(&mut out, &[b"GET", key.as_bytes()]);
                    client.exchange(&out, 2)?;
                    out.clear();
                    command(
                        &mut out,
                        &[b"SETEX", key.as_bytes(), ttl.as_bytes(), &payload],
                    );
                    command(
                        &mut out,
                        &[b"EVALSHA", sha.as_bytes(), b"1", lock.as_bytes(), &token],
                    );
                    client.exchange(&out, 2)?;
                }
                start.elapsed().as_nanos() as f64 / n as f64
            }
            _ => panic!("unknown command: {line:?}"),
        };
        writeln!(stdout.lock(), "{ns}")?;
    }
    Ok(())
}
