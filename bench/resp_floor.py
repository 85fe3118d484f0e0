"""The Redis floor: one GET round trip on a plain socket, no client library.

A hit of ours is measured against this (DESIGN.md, "Performance bar"): the
command is encoded once, written with one ``send`` on a ``TCP_NODELAY``
socket, and the bulk reply is read with as few ``recv`` calls as it needs.
Nothing is decoded: the value's bytes are returned as they arrived.

Standard library only, so both the benchmark driver and its workers (and
``bench/cluster.py``) can import it.
"""

from __future__ import annotations

import socket


def encode(*args: bytes) -> bytes:
    """One RESP command: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RawConnection:
    """A minimal RESP client on one loopback (or given) TCP connection."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def command(self, *args: bytes) -> object:
        """Any command, for set-up: returns the decoded reply."""
        self.sock.sendall(encode(*args))
        return self._reply()

    def _reply(self) -> object:
        line = self.reader.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.reader.read(n + 2)[:-2]
        if kind in (b"+", b":"):
            return rest
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise RuntimeError(f"redis error: {rest!r}")

    def getter(self):
        """``get(name) -> bytes | None``: the floor itself, one round trip per call.

        Reads the socket directly (not through ``self.reader``), so use either
        this or ``command`` on one connection at a time.
        """
        send, recv = self.sock.send, self.sock.recv
        commands: dict[bytes, bytes] = {}

        def get(name: bytes):
            cmd = commands.get(name)
            if cmd is None:
                cmd = commands[name] = encode(b"GET", name)
            send(cmd)
            data = recv(65536)
            end = data.index(b"\r\n")
            n = int(data[1:end])
            if n < 0:
                return None
            need = end + 4 + n
            while len(data) < need:
                data += recv(65536)
            return data[end + 2 : end + 2 + n]

        return get

    def runner(self, command_for):
        """``run(name) -> bytes``: one round trip of ``command_for(name)``
        (encoded once per name), returning the raw reply once it is whole.
        For a script call as the floor of a hit made by a script."""
        send, recv = self.sock.send, self.sock.recv
        commands: dict[bytes, bytes] = {}

        def run(name: bytes):
            cmd = commands.get(name)
            if cmd is None:
                cmd = commands[name] = encode(*command_for(name))
            send(cmd)
            data = recv(65536)
            while _reply_end(data, 0) < 0:
                data += recv(65536)
            return data

        return run

    def exchanger(self):
        """``exchange(data, replies) -> bytes``: write ``data`` (commands
        encoded by the caller, pipelined in one ``send``) and read until its
        ``replies`` replies are whole; returns them raw."""
        send, recv = self.sock.send, self.sock.recv

        def exchange(data: bytes, replies: int) -> bytes:
            send(data)
            out = recv(65536)
            while True:
                pos = 0
                for _ in range(replies):
                    pos = _reply_end(out, pos)
                    if pos < 0:
                        break
                if pos >= 0:
                    return out
                out += recv(65536)

        return exchange

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _reply_end(data: bytes, pos: int) -> int:
    """Where the RESP reply starting at ``pos`` ends, or -1 if not yet whole."""
    end = data.find(b"\r\n", pos)
    if end < 0:
        return -1
    kind, head = data[pos : pos + 1], data[pos + 1 : end]
    if kind == b"$":
        n = int(head)
        if n < 0:
            return end + 2
        stop = end + 2 + n + 2
        return stop if len(data) >= stop else -1
    if kind == b"*":
        pos = end + 2
        for _ in range(max(0, int(head))):
            pos = _reply_end(data, pos)
            if pos < 0:
                return -1
        return pos
    return end + 2
