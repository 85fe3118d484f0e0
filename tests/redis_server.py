"""Real ``redis-server`` processes for the Redis tests.

Every server listens on 127.0.0.1 only (or on a unix socket), persists
nothing (``--save '' --appendonly no``) and is killed by its owner. No test
ever talks to a Redis it did not start here.

If ``redis-server`` is not on PATH the tests fail (they do not skip): run
``tests/ensure_redis`` to install it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
import redis

ENSURE_HINT = (
    "redis-server is not on PATH, so the Redis tests cannot run. "
    "Install it with `bash tests/ensure_redis` (Debian package redis-server)."
)


def redis_server_binary() -> str:
    """The path of ``redis-server``; fails the calling test if it is missing."""
    path = shutil.which("redis-server")
    if path is None:
        pytest.fail(ENSURE_HINT, pytrace=False)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_tmpdir(prefix: str = "cr") -> str:
    """A short directory name: unix socket paths must stay under ~100 bytes."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


class RedisServer:
    """One ``redis-server`` process.

    ``tls`` is ``None`` or a dict with ``cert``, ``key`` and ``ca`` paths: the
    server then listens with TLS only. ``unixsocket`` makes it listen on that
    socket only (``unixsocket=True``: ``r.sock`` in its short working
    directory). ``password`` sets ``requirepass``.
    """

    def __init__(
        self,
        workdir: str | None = None,
        *,
        port: int | None = None,
        unixsocket: str | bool | None = None,
        password: str | None = None,
        tls: dict | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = redis_server_binary()
        self._own_workdir = workdir is None
        self.workdir = workdir or short_tmpdir()
        if unixsocket is True:
            unixsocket = os.path.join(self.workdir, "r.sock")
        self.port = None if unixsocket else (port or free_port())
        self.unixsocket = unixsocket
        self.password = password
        self.tls = tls
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen | None = None
        self.logfile = os.path.join(self.workdir, "redis.log")

    # -- addresses -------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL cachu and redis-py use for database 0."""
        auth = f":{self.password}@" if self.password else ""
        if self.unixsocket:
            return f"unix://{self.unixsocket}?db=0" + (
                f"&password={self.password}" if self.password else ""
            )
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def client(self, **kwargs) -> redis.Redis:
        """A raw redis-py client (the test's peer), database 0."""
        opts = {"socket_timeout": 5, "socket_connect_timeout": 5, "password": self.password}
        opts.update(kwargs)
        if self.unixsocket:
            return redis.Redis(unix_socket_path=self.unixsocket, **opts)
        if self.tls:
            return redis.Redis(
                host="127.0.0.1",
                port=self.port,
                ssl=True,
                ssl_ca_certs=self.tls["ca"],
                **opts,
            )
        return redis.Redis(host="127.0.0.1", port=self.port, **opts)

    # -- life cycle ------------------------------------------------------

    def _command(self) -> list[str]:
        cmd = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.workdir,
            "--logfile",
            self.logfile,
            "--daemonize",
            "no",
            "--databases",
            "4",
        ]
        if self.unixsocket:
            cmd += ["--port", "0", "--unixsocket", self.unixsocket, "--unixsocketperm", "700"]
        elif self.tls:
            cmd += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                self.tls["cert"],
                "--tls-key-file",
                self.tls["key"],
                "--tls-ca-cert-file",
                self.tls["ca"],
                "--tls-auth-clients",
                "no",
            ]
        else:
            cmd += ["--port", str(self.port)]
        if self.password:
            cmd += ["--requirepass", self.password]
        return cmd + list(self.extra_args)

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server (on the same port as before, after a stop) and
        wait until it answers PING."""
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                if self.proc.stderr:
                    self.proc.stderr.close()
                self.proc = None
                raise RuntimeError(
                    f"redis-server exited at start ({self._command()}):\n{err}\n{self.log()}"
                )
            try:
                c = self.client(socket_timeout=1, socket_connect_timeout=1)
                try:
                    if c.ping():
                        return self
                finally:
                    c.close()
            except redis.RedisError as e:
                last_error = e
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {timeout}s: {last_error}")

    def stop(self) -> None:
        """Kill the server (SIGKILL: nothing is saved, clients see resets)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop, and remove the working directory if it was made here."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log(self) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def start_server(**kwargs) -> RedisServer:
    """Start a server, retrying on another port if the chosen one was taken
    between picking it and binding it."""
    last: Exception | None = None
    for _ in range(3):
        server = RedisServer(**kwargs)
        try:
            return server.start()
        except RuntimeError as e:
            server.close()
            last = e
            if kwargs.get("port") or kwargs.get("unixsocket"):
                break
    raise RuntimeError(f"could not start redis-server: {last}")


# -- TLS material ----------------------------------------------------------


def openssl_binary() -> str | None:
    return shutil.which("openssl")


def _openssl(*args: str, cwd: str) -> None:
    proc = subprocess.run(
        [openssl_binary() or "openssl", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")


def make_ca(directory: str, name: str) -> dict:
    """A self-signed CA (EC P-256): ``{'cert': ..., 'key': ...}``."""
    cert = os.path.join(directory, f"{name}.pem")
    key = os.path.join(directory, f"{name}.key")
    ext = os.path.join(directory, f"{name}.ext")
    with open(ext, "w") as f:
        f.write(
            "[v3_ca]\n"
            "basicConstraints = critical, CA:TRUE\n"
            "keyUsage = critical, keyCertSign, cRLSign\n"
            "subjectKeyIdentifier = hash\n"
        )
    _openssl(
        "req",
        "-x509",
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-keyout",
        key,
        "-out",
        cert,
        "-days",
        "2",
        "-subj",
        f"/CN=cachu test {name}",
        "-config",
        ext,
        "-extensions",
        "v3_ca",
        cwd=directory,
    )
    return {"cert": cert, "key": key}


def make_server_cert(
    directory: str, ca: dict, name: str = "server", *, client_auth: bool = False
) -> dict:
    """A server certificate for 127.0.0.1 / localhost signed by ``ca``;
    ``client_auth`` lets the server present it as a client too (a cluster
    node to the others over the bus, a replica to its master, a sentinel to
    what it watches)."""
    cert = os.path.join(directory, f"{name}.pem")
    key = os.path.join(directory, f"{name}.key")
    csr = os.path.join(directory, f"{name}.csr")
    ext = os.path.join(directory, f"{name}.ext")
    with open(ext, "w") as f:
        f.write(
            "basicConstraints = CA:FALSE\n"
            "keyUsage = critical, digitalSignature, keyEncipherment\n"
            f"extendedKeyUsage = serverAuth{', clientAuth' if client_auth else ''}\n"
            "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
        )
    _openssl(
        "req",
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-keyout",
        key,
        "-out",
        csr,
        "-subj",
        "/CN=127.0.0.1",
        cwd=directory,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca["cert"],
        "-CAkey",
        ca["key"],
        "-CAcreateserial",
        "-out",
        cert,
        "-days",
        "2",
        "-extfile",
        ext,
        cwd=directory,
    )
    return {"cert": cert, "key": key}


def redis_supports_tls() -> tuple[bool, str]:
    """Whether this ``redis-server`` was built with TLS, and why not."""
    out = subprocess.run(
        [
            redis_server_binary(),
            "--port",
            "0",
            "--tls-port",
            "1",
            "--tls-cert-file",
            "/nonexistent",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    text = out.stdout + out.stderr
    if "not built with TLS" in text or "Unrecognized option" in text or "Bad directive" in text:
        return False, f"redis-server has no TLS support: {text.strip()[-300:]}"
    return True, ""


def tls_material(directory: str) -> dict:
    """What a TLS-only topology of servers needs, made in ``directory``: a
    CA (``ca``), a certificate and key signed by it that every server
    presents as server and as client (``cert``, ``key``), and a CA that
    signed nothing (``other_ca``). A missing ``openssl`` or a
    ``redis-server`` without TLS fails the test."""
    if openssl_binary() is None:
        pytest.fail("openssl CLI not found: cannot make test certificates", pytrace=False)
    ok, why = redis_supports_tls()
    if not ok:
        pytest.fail(why, pytrace=False)
    ca = make_ca(directory, "ca")
    cert = make_server_cert(directory, ca, "node", client_auth=True)
    other = make_ca(directory, "other-ca")
    return {"ca": ca["cert"], "cert": cert["cert"], "key": cert["key"], "other_ca": other["cert"]}
