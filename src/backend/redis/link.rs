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

pub(super) struct Link {
    conn: Connection,
    /// Replies of commands already sent, not read yet.
    unread: usize,
}

impl Link {
    pub(super) fn new(conn: Connection) -> Self {
        Self { conn, unread: 0 }
    }

    /// Read the replies left unread (a broken connection or a timeout there
    /// is an error of the command about to be sent).
    fn settle(&mut self) -> RedisResult<()> {
        while self.unread > 0 {
            let reply = self.conn.recv_response()?;
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
        self.conn.send_packed_command(packed)?;
        self.unread = count;
        Ok(())
    }

    pub(super) fn set_timeouts(&self, timeout: Option<Duration>) -> RedisResult<()> {
        self.conn.set_read_timeout(timeout)?;
        self.conn.set_write_timeout(timeout)
    }
}

impl ConnectionLike for Link {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.settle()?;
        self.conn.req_packed_command(cmd)
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.settle()?;
        self.conn.req_packed_commands(cmd, offset, count)
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        self.settle()?;
        self.conn.req_command(cmd)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }

    fn supports_pipelining(&self) -> bool {
        self.conn.supports_pipelining()
    }

    fn check_connection(&mut self) -> bool {
        self.settle().is_ok() && self.conn.check_connection()
    }

    fn is_open(&self) -> bool {
        self.conn.is_open()
    }
}
