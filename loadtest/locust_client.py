"""A tornchat WebSocket client for Locust: every action fires ``events.request``.

Locust's documented pattern for protocols other than HTTP (see its
``custom_xmlrpc_client`` example): wrap a gevent-friendly client, time each
action, and report it through the environment's ``request`` event so it shows
in Locust's statistics like an HTTP request.

The blocking ``websocket-client`` library is cooperative under Locust, which
monkey-patches sockets with gevent. One greenlet per connection reads frames:

- ``message_sent`` is reported as ``send_message`` with the time from send to
  acknowledgement;
- ``new_message`` is reported as ``deliver`` with the time from the sender's
  stamp inside the content (:mod:`loadtest.stamp`) to arrival, so a stalled
  server shows as latency rather than hiding behind a blocked ``recv``;
- ``error`` frames and lost connections are reported as failures.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from typing import Any

import gevent
import websocket

from loadtest.stamp import latency_ms, stamp

REQUEST_TYPE = "WS"


class ProtocolError(Exception):
    """The server answered with something the protocol does not allow here."""


class ChatClient:
    """One authenticated tornchat connection reporting to Locust's ``request`` event."""

    def __init__(self, url: str, request_event: Any, timeout: float = 10.0) -> None:
        self.url = url
        self._request = request_event
        self._timeout = timeout
        self._ws: websocket.WebSocket | None = None
        self._reader: gevent.Greenlet | None = None
        self._pending: dict[str, float] = {}
        self._ids = itertools.count()
        self._closing = False
        self.user_id: str | None = None
        #: conversationId learned from acknowledgements, by the key given to send
        self.conversations: dict[str, str] = {}
        self._conversation_keys: dict[str, str] = {}

    # -- reporting ------------------------------------------------------------

    def _fire(self, name: str, started: float | None = None, elapsed_ms: float | None = None,
              length: int = 0, exception: BaseException | None = None) -> None:
        if elapsed_ms is None:
            elapsed_ms = (time.perf_counter() - started) * 1000.0 if started else 0.0
        self._request.fire(request_type=REQUEST_TYPE, name=name, response_time=elapsed_ms,
                           response_length=length, exception=exception, context={})

    # -- actions --------------------------------------------------------------

    def connect(self, token: str) -> bool:
        """Open the socket and authenticate; reported as ``connect+auth``."""
        started = time.perf_counter()
        try:
            self._ws = websocket.create_connection(self.url, timeout=self._timeout,
                                                   enable_multithread=False)
            self._ws.send(json.dumps({"type": "auth", "token": token}))
            reply = json.loads(self._ws.recv())
            if reply.get("type") != "auth_success":
                raise ProtocolError(f"auth refused: {reply}")
        except Exception as exc:
            self._fire("connect+auth", started, exception=exc)
            self._drop()
            return False
        self.user_id = reply["data"]["userId"]
        self._fire("connect+auth", started)
        self._ws.settimeout(None)
        self._reader = gevent.spawn(self._read_loop)
        return True

    def send_message(self, content: str | None = None, *,
                     recipient_ids: Sequence[str] | None = None,
                     conversation_id: str | None = None, key: str | None = None) -> None:
        """Send one message; its acknowledgement and deliveries are timed on arrival.

        ``key`` names the conversation so its id, learned from the first
        acknowledgement, can be found in :attr:`conversations` afterwards.
        """
        if self._ws is None:
            return
        client_message_id = f"m{next(self._ids)}"
        frame: dict[str, Any] = {"type": "send_message", "content": content or stamp(),
                                 "clientMessageId": client_message_id}
        if conversation_id is not None:
            frame["conversationId"] = conversation_id
        else:
            frame["recipientIds"] = list(recipient_ids or ())
        if key is not None:
            self._conversation_keys[client_message_id] = key
        self._pending[client_message_id] = time.perf_counter()
        self._write(frame, "send_message")

    def ping(self) -> None:
        """An application-level ping; the pong is reported as ``ping``."""
        self._pending["ping"] = time.perf_counter()
        self._write({"type": "ping"}, "ping")

    def close(self) -> None:
        self._closing = True
        self._drop()
        if self._reader is not None:
            self._reader.kill(block=False)
            self._reader = None

    @property
    def connected(self) -> bool:
        return self._ws is not None

    # -- internals ------------------------------------------------------------

    def _write(self, frame: dict[str, Any], name: str) -> None:
        assert self._ws is not None
        try:
            self._ws.send(json.dumps(frame))
        except Exception as exc:
            self._fire(name, exception=exc)
            self._drop()

    def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close(timeout=1)
            except Exception:  # already gone: nothing left to release
                ws.shutdown()

    def _read_loop(self) -> None:
        try:
            while self._ws is not None:
                text = self._ws.recv()
                if not text:
                    raise ProtocolError("connection closed by server")
                self._on_frame(json.loads(text), len(text))
        except Exception as exc:
            if not self._closing:
                self._fire("connection", exception=exc)
                self._drop()

    def _on_frame(self, frame: dict[str, Any], length: int) -> None:
        kind = frame.get("type")
        if kind == "new_message":
            elapsed = latency_ms(frame.get("data", {}).get("content"))
            if elapsed is not None:
                self._fire("deliver", elapsed_ms=elapsed, length=length)
        elif kind == "message_sent":
            client_message_id = str(frame.get("clientMessageId"))
            started = self._pending.pop(client_message_id, None)
            key = self._conversation_keys.pop(client_message_id, None)
            if key is not None:
                self.conversations[key] = frame["data"]["conversationId"]
            self._fire("send_message", started, length=length)
        elif kind == "pong":
            self._fire("ping", self._pending.pop("ping", None), length=length)
        elif kind == "error":
            started = self._pending.pop(frame.get("clientMessageId") or "", None)
            self._fire("send_message", started, length=length,
                       exception=ProtocolError(f"{frame.get('code')}: {frame.get('error')}"))
        elif kind == "server_shutdown":
            self._fire("connection", exception=ProtocolError("server shutting down"))
