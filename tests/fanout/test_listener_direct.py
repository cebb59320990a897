"""The bus subscriber over the lean connection: a message that arrives in the
same read as the PONG proving the subscription is delivered, not dropped
(a scripted Redis on a real socket answers the whole handshake and a message
in one write)."""

from __future__ import annotations

import asyncio
import socket
import threading

from tornado.ioloop import IOLoop

from tornchat.fanout.redis_listener import Listener

HANDSHAKE_AND_MESSAGE = (
    b"*3\r\n$9\r\nsubscribe\r\n$4\r\nchat\r\n:1\r\n"
    b"*2\r\n$4\r\npong\r\n$14\r\ntornchat-ready\r\n"
    b"*3\r\n$7\r\nmessage\r\n$4\r\nchat\r\n$5\r\nhello\r\n")


async def test_a_message_in_the_same_read_as_the_pong_is_delivered():
    listener_socket = socket.create_server(("127.0.0.1", 0))
    port = listener_socket.getsockname()[1]
    done = threading.Event()

    def scripted_redis() -> None:
        peer, _ = listener_socket.accept()
        peer.recv(4096)  # SUBSCRIBE chat, PING tornchat-ready
        peer.sendall(HANDSHAKE_AND_MESSAGE)
        done.wait(10)
        peer.close()

    threading.Thread(target=scripted_redis, daemon=True).start()
    batches: list[list[tuple[bytes, bytes]]] = []
    states: list[bool] = []
    listener = Listener(f"redis://127.0.0.1:{port}/0", ["chat"], [], IOLoop.current(),
                        on_batch=lambda batch, read_at: batches.append(batch),
                        on_state=lambda up, reason: states.append(up),
                        ping_interval=5.0, timeout=2.0)
    listener.start()
    try:
        for _ in range(200):
            if batches:
                break
            await asyncio.sleep(0.01)
        assert states[:1] == [True]
        assert batches == [[(b"chat", b"hello")]]
    finally:
        listener.stop()
        done.set()
        await asyncio.to_thread(listener.join, 3)
        listener_socket.close()
