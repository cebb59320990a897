"""The writer thread's lean Redis connection against a real redis-server:
commands in one write, replies in order, a refused command that leaves the
connection usable, passwords, and failures that are redis-py's errors (so
the bus's outage handling covers them) followed by a reconnect."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from harness.ports import free_port
from harness.redis_server import RedisServer, private_redis, redis_server_installed
from harness.services import unavailable
from tornchat.fanout.redis_direct import DirectConnection, supports
from tornchat.fanout.redis_wire import PUBLISH_MANY

pytestmark = [pytest.mark.redis]


def test_commands_go_in_one_write_and_replies_come_back_in_order(tmp_path):
    with private_redis(str(tmp_path)) as server:
        connection = DirectConnection(server.url, 1.0)
        assert connection.execute([("SET", "k", "v"), ("GET", "k"), ("INCR", "n"),
                                   ("EVAL", PUBLISH_MANY, "0", "chat:a", "x", "chat:b", "y")]
                                  ) == [b"OK", b"v", 1, 2]
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            connection.execute([("INCR", "n"), ("LPUSH", "k", "x"), ("INCR", "n")])
        assert connection.execute([("GET", "n")]) == [b"3"]  # both INCRs ran; still in step
        connection.close()


def test_a_password_in_the_url_is_sent(tmp_path):
    if not redis_server_installed():
        unavailable("redis-server is not installed")
    server = RedisServer(free_port(), str(tmp_path), ("--requirepass", "s3cret")).start()
    try:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/0"
        assert DirectConnection(url, 1.0).execute([("PING",)]) == [b"PONG"]
        with pytest.raises(RedisConnectionError, match="AUTH refused"):
            DirectConnection(f"redis://:wrong@127.0.0.1:{server.port}/0", 1.0).execute(
                [("PING",)])
    finally:
        server.kill()


def test_an_outage_raises_a_redis_error_and_the_next_call_reconnects(tmp_path):
    with private_redis(str(tmp_path)) as server:
        connection = DirectConnection(server.url, 0.3)
        assert connection.execute([("PING",)]) == [b"PONG"]
        server.kill()
        with pytest.raises(RedisConnectionError):
            connection.execute([("PING",)])
        server.start()
        assert connection.execute([("PING",)]) == [b"PONG"]
        server.pause()  # hung: the call gives up after the timeout
        started = time.monotonic()
        with pytest.raises(RedisConnectionError):
            connection.execute([("PING",)])
        assert time.monotonic() - started < 1.5
        server.resume()
        assert connection.execute([("PING",)]) == [b"PONG"]
        connection.close()


def test_the_url_database_is_selected_for_the_scripts_that_read_keys(tmp_path):
    with private_redis(str(tmp_path)) as server:
        url = f"redis://127.0.0.1:{server.port}/3"
        assert DirectConnection(url, 1.0).execute([("SET", "slot", "x")]) == [b"OK"]
        assert redis.Redis.from_url(url).get("slot") == b"x"
        assert redis.Redis.from_url(server.url).get("slot") is None


def test_only_plain_redis_urls_are_taken():
    assert supports("redis://10.0.0.5:6379/0") and supports("rediss://:pw@cache:6380")
    assert not supports("unix:///run/redis.sock")
    assert not supports("rediss://cache:6380/0?ssl_ca_certs=/etc/ca.pem")
    assert not supports("redis+cluster://10.0.0.5:7000/")


def test_a_reply_that_cannot_be_parsed_closes_the_connection_and_the_next_call_starts_afresh():
    """A peer that answers garbage, then (on the next connection) PONG."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    answers = [b"?not resp\r\n", b"+PONG\r\n"]

    def serve() -> None:
        for answer in answers:
            peer, _ = listener.accept()
            peer.recv(4096)
            peer.sendall(answer)
            peer.recv(4096)  # until the client closes it
            peer.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    connection = DirectConnection(f"redis://127.0.0.1:{port}/0", 1.0)
    with pytest.raises(RedisConnectionError):
        connection.execute([("PING",)])
    assert connection.execute([("PING",)]) == [b"PONG"]
    connection.close()
    server.join(5)
    listener.close()


def test_a_subscriber_gets_pushed_messages_and_a_refused_command_raises(tmp_path):
    with private_redis(str(tmp_path)) as server:
        subscriber = DirectConnection(server.url, 1.0)
        subscriber.send([("SUBSCRIBE", "chat"), ("PING", "ready")])
        seen: list = []
        while [b"pong", b"ready"] not in seen:
            seen.extend(subscriber.replies(0.5))
        DirectConnection(server.url, 1.0).execute([("PUBLISH", "chat", "hello")])
        assert subscriber.replies(1.0) == [[b"message", b"chat", b"hello"]]
        assert subscriber.replies(0.05) == []  # nothing more: an empty wait
        subscriber.send([("GET", "k")])  # not allowed while subscribed
        with pytest.raises(ResponseError):
            subscriber.replies(1.0)
        subscriber.close()
