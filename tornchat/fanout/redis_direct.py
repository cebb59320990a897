"""A lean blocking Redis connection: the writer threads' publishes and the
bus subscriber's reads, on one Redis.

Why hand-written: the group-commit writer publishes every committed batch
itself (:meth:`tornchat.fanout.redis_bus.RedisBus.publish_committed`), and
redis-py's blocking client spent about 60 ms of the writer's CPU per second
at 500 messages a second per worker (py-spy, 2 workers at 1,000 msg/s to groups of 10:
16-17 % of each worker's samples), in its layers per call: the retry
wrapper, the pool's checkout and pid check, argument filtering, the
encoder, the reply's socket checks. This connection does one thing: it
packs commands with hiredis (C), writes them in one ``sendall`` and parses
the replies with ``hiredis.Reader`` (C). No pool, no retry: a failure closes
the socket, raises a redis-py error (:data:`tornchat.fanout.redis_wire.REDIS_ERRORS`
covers them) and the next call reconnects; the bus decides what happens to
the deliveries. The subscriber thread reads over the same connection
(:meth:`DirectConnection.send`, :meth:`DirectConnection.replies`): redis-py's
pub/sub parsing was 13-15 % of each worker's samples there. Depends on
hiredis ≥ 3.0 (``pack_command``, ``Reader``).

It speaks to one Redis (``redis://`` or ``rediss://`` without query
options, with the URL's user, password and database number, which routed
mode's script needs for the connection slots): :func:`supports` says which
URLs; for any other the bus publishes through its queue instead.

Thread rule: one thread owns a connection (each writer thread has its own);
``close`` may come from another thread at shutdown, and the owner's call
then fails.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

#: one command: its name and arguments
Command = Sequence[str | bytes]
_READ_SIZE = 262144  # bytes per recv: a busy subscriber's batch in one call


def supports(url: str) -> bool:
    """``redis://`` or ``rediss://`` with a host and no query options (TLS
    certificates and other client options are redis-py's to apply)."""
    parts = urlsplit(url)
    return parts.scheme.lower() in ("redis", "rediss") and bool(parts.hostname) \
        and not parts.query


class DirectConnection:
    def __init__(self, url: str, timeout: float) -> None:
        if not supports(url):
            raise ValueError("a direct connection takes redis:// or rediss:// without options")
        parts = urlsplit(url)
        self._host = parts.hostname or ""  # supports() made sure there is one
        self._port = parts.port or 6379
        self._tls = parts.scheme.lower() == "rediss"
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        database = parts.path.strip("/")
        self._database = database if database not in ("", "0") else None
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._reader = hiredis.Reader()

    def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` in one write and return their replies, in order.

        Raises ``redis.exceptions.ConnectionError`` when Redis cannot be
        reached or stops answering within the timeout, ``ResponseError`` when
        a command was refused (after every reply was read, so the connection
        stays usable).
        """
        with self._failing_closes():
            sock = self._write(commands)
            replies = [self._reply(sock) for _ in commands]
        return _refused_raises(replies)

    def send(self, commands: Sequence[Command]) -> None:
        """Send ``commands`` without waiting for replies (a subscriber's
        SUBSCRIBE and PING: what comes back is read by :meth:`replies`)."""
        with self._failing_closes():
            self._write(commands)

    def replies(self, wait: float) -> list[Any]:
        """Every complete reply that arrives within ``wait`` seconds of waiting
        for the first (none: an empty list). For a subscribed connection,
        whose replies are pushed messages; an error reply (a refused
        SUBSCRIBE) raises ``ResponseError``."""
        with self._failing_closes():
            sock = self._socket()
            found = self._parsed()
            if not found:
                sock.settimeout(max(wait, 0.001))  # never 0: a non-blocking TLS read raises
                try:
                    self._feed(sock)
                except TimeoutError:
                    return found
                finally:
                    sock.settimeout(self._timeout)
                found = self._parsed()
        return _refused_raises(found)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._reader = hiredis.Reader()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    @contextlib.contextmanager
    def _failing_closes(self) -> Iterator[None]:
        """Any failure closes the connection (the stream is out of step) and
        surfaces as redis-py's ``ConnectionError``."""
        try:
            yield
        except (OSError, hiredis.HiredisError) as exc:
            self.close()
            raise RedisConnectionError(f"Redis at {self._host}:{self._port}: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def _socket(self) -> socket.socket:
        return self._sock if self._sock is not None else self._connect()

    def _write(self, commands: Sequence[Command]) -> socket.socket:
        sock = self._socket()
        sock.sendall(b"".join(_pack(command) for command in commands))
        return sock

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self._host, self._port), timeout=self._timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self._tls:
                sock = ssl.create_default_context().wrap_socket(sock,
                                                                server_hostname=self._host)
            self._sock = sock
            if self._password is not None:
                credentials: tuple[str, ...] = ((self._username, self._password)
                                                if self._username else (self._password,))
                self._setup(sock, "AUTH", *credentials)
            if self._database is not None:
                self._setup(sock, "SELECT", self._database)
        except BaseException:
            self.close()
            sock.close()
            raise
        return sock

    def _setup(self, sock: socket.socket, name: str, *args: str) -> None:
        sock.sendall(_pack((name, *args)))
        reply = self._reply(sock)
        if isinstance(reply, hiredis.ReplyError):
            raise OSError(f"{name} refused: {reply}")

    def _reply(self, sock: socket.socket) -> Any:
        """The next reply, reading (within the socket's timeout) until it is whole."""
        while True:
            reply = self._reader.gets()
            if reply is not False:
                return reply
            self._feed(sock)

    def _parsed(self) -> list[Any]:
        """Every reply already whole in the reader."""
        found = []
        reply = self._reader.gets()
        while reply is not False:
            found.append(reply)
            reply = self._reader.gets()
        return found

    def _feed(self, sock: socket.socket) -> None:
        data = sock.recv(_READ_SIZE)
        if not data:
            raise OSError("Redis closed the connection")
        self._reader.feed(data)


def _refused_raises(replies: list[Any]) -> list[Any]:
    """``replies``, or ``ResponseError`` for the first error reply among them."""
    for reply in replies:
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
    return replies


def _pack(command: Command) -> bytes:
    # hiredis's stub declares a one-element tuple; any number of arguments is meant
    return hiredis.pack_command(tuple(command))  # type: ignore[arg-type]
