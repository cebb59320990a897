"""The peer: what a Python developer would build instead, with python-socketio.

``AsyncServer`` in Tornado mode, ``AsyncRedisManager`` for cross-process
fan-out, WebSocket transport only, N forked worker processes sharing one
listening socket (like ``tornchat serve --processes N``). It does the
benchmark's workload the idiomatic Socket.IO way:

- ``connect`` verifies the same HS256 JWT (``auth={"token": ...}``) and
  refuses the connection otherwise;
- ``join`` puts the socket in a room (one room per group conversation);
- ``send_message`` numbers the message per room (in process memory), emits
  ``new_message`` to the room except the sender, and returns the message as
  the acknowledgement (the peer of tornchat's ``message_sent``).

It stores nothing: no PostgreSQL, no outbox. That flatters the peer, so a
tornchat/peer ratio above 1 is a conservative result.

Run alone: ``python -m loadtest.peer_socketio --port 4900 --processes 2
--redis-url redis://127.0.0.1:6379/0``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import time
from typing import Any

import jwt
import socketio
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.process import fork_processes

from tornchat.config import DEV_SECRET


class Health(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write({"status": "ok", "pid": os.getpid()})


def build_server(redis_url: str, secret: str) -> socketio.AsyncServer:
    """The Socket.IO server with the chat handlers registered."""
    manager = socketio.AsyncRedisManager(redis_url, channel=f"peer-{os.getppid()}")
    sio = socketio.AsyncServer(async_mode="tornado", client_manager=manager,
                               transports=["websocket"], logger=False,
                               engineio_logger=False, cors_allowed_origins="*")
    seqs: dict[str, int] = {}
    ids = itertools.count(1)

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: dict[str, Any] | None) -> bool:
        try:
            claims = jwt.decode((auth or {}).get("token", ""), secret, algorithms=["HS256"],
                                options={"require": ["exp"]})
        except jwt.InvalidTokenError:
            return False
        await sio.save_session(sid, {"userId": claims["sub"]})
        return True

    @sio.event
    async def join(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        await sio.enter_room(sid, data["room"])
        return {"ok": True}

    @sio.event
    async def send_message(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        session = await sio.get_session(sid)
        room = data["conversationId"]
        seq = seqs[room] = seqs.get(room, 0) + 1
        message = {"id": f"m{os.getpid()}-{next(ids)}", "conversationId": room,
                   "senderId": session["userId"], "content": data.get("content"),
                   "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                   "seq": seq}
        await sio.emit("new_message", message, to=room, skip_sid=sid)
        return message

    return sio


async def run_worker(sockets: list[Any], redis_url: str, secret: str) -> None:
    sio = build_server(redis_url, secret)
    app = tornado.web.Application([
        (r"/socket.io/", socketio.get_tornado_handler(sio)),
        (r"/health", Health),
    ])
    server = HTTPServer(app)
    server.add_sockets(sockets)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4900)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL",
                                                              "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    secret = os.environ.get("ACCESS_TOKEN_SECRET") or DEV_SECRET
    sockets = bind_sockets(args.port, args.host, backlog=4096)
    if args.processes > 1:
        fork_processes(args.processes, max_restarts=0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_worker(sockets, args.redis_url, secret))


if __name__ == "__main__":
    main()
