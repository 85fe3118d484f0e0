//! A synchronous connection to one server that may leave replies unread:
//! a command whose answer the caller does not need (the release of a lock
//! taken in passing) is sent at once, and its reply is read before the
//! connection's next command.
//!
//! The command reaches the server as early as if its reply were awaited,
//! and in order with everything else on the connection; only the wait for
//! the reply moves to the connection's next use, where it is most likely
//! in the socket's buffer already. A reply read late is only checked: a
//! server error there is logged, since its call is over.

use std::time::Duration;

use redis::{Cmd, Connection, ConnectionLike, RedisResult, Value};

use super::plain::Plain;

pub(super) struct Link {
    conn: Wire,
    /// Replies of commands already sent, not read yet.
    unread: usize,
}

/// The connection under a link: the crate's, or a [`Plain`] one (plain TCP
/// in RESP2, which reads its replies faster).
enum Wire {
    Crate(Connection),
    Plain(Plain),
}

/// `$body` with `$c` bound to the wire's connection, whichever it is.
macro_rules! on_wire {
    ($wire:expr, $c:ident => $body:expr) => {
        match $wire {
            Wire::Crate($c) => $body,
            Wire::Plain($c) => $body,
        }
    };
}

impl Link {
    pub(super) fn new(conn: Connection) -> Self {
        Self {
            conn: Wire::Crate(conn),
            unread: 0,
        }
    }

    pub(super) fn plain(conn: Plain) -> Self {
        Self {
            conn: Wire::Plain(conn),
            unread: 0,
        }
    }

    /// Read the replies left unread (a broken connection or a timeout there
    /// is an error of the command about to be sent).
    fn settle(&mut self) -> RedisResult<()> {
        while self.unread > 0 {
            let reply = on_wire!(&mut self.conn, c => c.recv_response())?;
            if matches!(reply, Value::Push { .. }) {
                // A RESP3 push message, not a reply.
                continue;
            }
            self.unread -= 1;
            if let Value::ServerError(e) = reply {
                log::warn!("redis: a command sent earlier on this connection failed: {e:?}");
            }
        }
        Ok(())
    }

    /// Send `packed` (`count` commands) without waiting for the replies.
    pub(super) fn send_unawaited(&mut self, packed: &[u8], count: usize) -> RedisResult<()> {
        self.settle()?;
        on_wire!(&mut self.conn, c => c.send_packed_command(packed))?;
        self.unread = count;
        Ok(())
    }

    pub(super) fn set_timeouts(&self, timeout: Option<Duration>) -> RedisResult<()> {
        on_wire!(&self.conn, c => c.set_read_timeout(timeout))?;
        on_wire!(&self.conn, c => c.set_write_timeout(timeout))
    }
}

impl ConnectionLike for Link {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.settle()?;
        on_wire!(&mut self.conn, c => c.req_packed_command(cmd))
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.settle()?;
        on_wire!(&mut self.conn, c => c.req_packed_commands(cmd, offset, count))
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        self.settle()?;
        on_wire!(&mut self.conn, c => c.req_command(cmd))
    }

    fn get_db(&self) -> i64 {
        on_wire!(&self.conn, c => c.get_db())
    }

    fn supports_pipelining(&self) -> bool {
        on_wire!(&self.conn, c => c.supports_pipelining())
    }

    fn check_connection(&mut self) -> bool {
        self.settle().is_ok() && on_wire!(&mut self.conn, c => c.check_connection())
    }

    fn is_open(&self) -> bool {
        on_wire!(&self.conn, c => c.is_open())
    }
}
