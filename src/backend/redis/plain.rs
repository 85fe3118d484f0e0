//! A synchronous connection to one server over plain TCP in RESP2 that reads
//! its replies itself ([`reply`]), in place of the `redis` crate's
//! `Connection` for the sync face of `redis://` URLs and of masters found by
//! sentinels. The crate's reader costs a hit about 0.4 us and a miss about
//! 0.8 us (its four replies) on a loopback round trip of 7 us: the rows
//! "redis crate GET" and "redis crate, same commands" of `make bench`.
//!
//! Everything else keeps the crate's connection: TLS, Unix sockets, RESP3
//! (the near cache's invalidations), the cluster's node connections and the
//! async face. The crate still packs and interprets every command: this
//! type only carries bytes and makes `Value`s, as the crate's does.
//!
//! It opens as the crate's opens: the same `AUTH` (retried without the user
//! name for a server older than ACLs), `SELECT` and `CLIENT SETINFO`, with
//! the same errors; and it sets `TCP_NODELAY`, as the benchmark's floor
//! does. One difference: a connection that failed a read or a write (a
//! timeout included) is closed, where the crate's would skip the late
//! reply; the pool drops closed connections.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ConnectionLike, ErrorKind, Pipeline, ProtocolVersion,
    RedisConnectionInfo, RedisError, RedisResult, ServerErrorKind, Value,
};

use super::reply;

/// What one read fills at most, to begin with: a reply longer than this
/// grows the buffer.
const BUF: usize = 16 * 1024;

pub(super) struct Plain {
    sock: TcpStream,
    /// Bytes received; `buf[start..end]` are not read yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    db: i64,
    open: bool,
}

impl Plain {
    /// Whether this type speaks to `info`'s server: TCP without TLS, RESP2.
    pub(super) fn serves(info: &ConnectionInfo) -> bool {
        matches!(info.addr(), ConnectionAddr::Tcp(..))
            && info.redis_settings().protocol() == ProtocolVersion::RESP2
    }

    /// Connect and open as the crate does; every step (the connect
    /// included) bounded by `timeout`.
    pub(super) fn connect(info: &ConnectionInfo, timeout: Option<Duration>) -> RedisResult<Self> {
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "a plain connection is for TCP without TLS",
            )));
        };
        let sock = match timeout {
            None => TcpStream::connect((host.as_str(), *port))?,
            Some(t) => connect_within((host.as_str(), *port), t)?,
        };
        sock.set_nodelay(true)?;
        sock.set_read_timeout(timeout)?;
        sock.set_write_timeout(timeout)?;
        let mut conn = Self {
            sock,
            buf: vec![0; BUF],
            start: 0,
            end: 0,
            db: info.redis_settings().db(),
            open: true,
        };
        conn.open_as(info.redis_settings(), true)?;
        Ok(conn)
    }

    /// `AUTH`, `SELECT` and `CLIENT SETINFO`, in one write, as the crate's
    /// connection sends them; their errors as the crate words them.
    fn open_as(&mut self, settings: &RedisConnectionInfo, with_user: bool) -> RedisResult<()> {
        let mut pipe = Pipeline::new();
        let auth = settings.password().map(|password| {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username().filter(|_| with_user) {
                auth.arg(user);
            }
            pipe.add_command(auth.arg(password).to_owned());
            pipe.len() - 1
        });
        let select = (self.db != 0).then(|| {
            pipe.cmd("SELECT").arg(self.db);
            pipe.len() - 1
        });
        if !settings.skip_set_lib_name() {
            if let (Some(name), Some(version)) = (settings.lib_name(), settings.lib_ver()) {
                // Errors ignored, as the command's own documentation asks.
                pipe.cmd("CLIENT").arg("SETINFO").arg("LIB-NAME").arg(name);
                pipe.cmd("CLIENT")
                    .arg("SETINFO")
                    .arg("LIB-VER")
                    .arg(version);
            }
        }
        if pipe.is_empty() {
            return Ok(());
        }
        let replies = self.req_packed_commands(&pipe.get_packed_pipeline(), 0, pipe.len())?;
        if let Some(Value::ServerError(e)) = auth.and_then(|i| replies.get(i)) {
            let old_server = e
                .details()
                .is_some_and(|d| d.contains("wrong number of arguments for 'auth' command"));
            if with_user && settings.username().is_some() && old_server {
                return self.open_as(settings, false);
            }
            return Err(RedisError::from((
                ErrorKind::AuthenticationFailed,
                "Password authentication failed",
            )));
        }
        if let Some(Value::ServerError(e)) = select.and_then(|i| replies.get(i)) {
            return Err(RedisError::from((
                ServerErrorKind::ResponseError.into(),
                "Redis server refused to switch database",
                e.details().unwrap_or_default().to_owned(),
            )));
        }
        Ok(())
    }

    pub(super) fn send_packed_command(&mut self, bytes: &[u8]) -> RedisResult<()> {
        if !self.open {
            // A reply of the failed exchange may still come: never read it
            // as this command's.
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection failed earlier and is closed",
            )
            .into());
        }
        if let Err(e) = self.sock.write_all(bytes) {
            self.open = false;
            return Err(e.into());
        }
        Ok(())
    }

    /// The next reply.
    pub(super) fn recv_response(&mut self) -> RedisResult<Value> {
        loop {
            match reply::read(&self.buf[self.start..self.end]) {
                Ok(Some((value, used))) => {
                    self.start += used;
                    if self.start == self.end {
                        (self.start, self.end) = (0, 0);
                        if self.buf.len() > 4 * BUF {
                            // A large reply grew it: a pooled connection
                            // does not keep that memory.
                            self.buf = vec![0; BUF];
                        }
                    }
                    return Ok(value);
                }
                Ok(None) => {}
                Err(e) => {
                    self.open = false;
                    return Err(e);
                }
            }
            if let Err(e) = self.fill() {
                self.open = false;
                return Err(e.into());
            }
        }
    }

    /// Read what the socket has into the buffer's free end, making room
    /// first (moving the unread bytes to the front, or growing).
    fn fill(&mut self) -> io::Result<()> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        loop {
            match self.sock.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ))
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) fn set_read_timeout(&self, timeout: Option<Duration>) -> RedisResult<()> {
        Ok(self.sock.set_read_timeout(timeout)?)
    }

    pub(super) fn set_write_timeout(&self, timeout: Option<Duration>) -> RedisResult<()> {
        Ok(self.sock.set_write_timeout(timeout)?)
    }
}

/// Connect to the first of `addr`'s addresses that answers within
/// `timeout` each; the last failure if none does.
fn connect_within(addr: (&str, u16), timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(sock) => return Ok(sock),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the host has no address")))
}

impl ConnectionLike for Plain {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.send_packed_command(cmd)?;
        self.recv_response()
    }

    /// The replies of `count` commands after the first `offset` (those of a
    /// transaction's `MULTI` and queued commands): an error among those is
    /// the transaction's.
    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.send_packed_command(cmd)?;
        let mut replies = Vec::with_capacity(count);
        let mut aborted = None;
        for i in 0..offset + count {
            let value = self.recv_response()?;
            if i >= offset {
                replies.push(value);
            } else if let Value::ServerError(e) = value {
                aborted.get_or_insert(e);
            }
        }
        match aborted {
            Some(e) => Err(e.into()),
            None => Ok(replies),
        }
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        self.req_packed_command(&cmd.get_packed_command())
    }

    fn get_db(&self) -> i64 {
        self.db
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<String>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        self.open
    }
}
