"""Locust scenarios for tornchat: 1-to-1 chat, group chat, connect churn, idle.

Run against any running instance (the ``--host`` is the WebSocket URL; the
path defaults to ``/api/v1/chat``)::

    ACCESS_TOKEN_SECRET=... locust -f loadtest/locustfile.py --headless \\
        -u 200 -r 50 -t 60s --host ws://127.0.0.1:4004

Pick scenarios by class name (``... OneToOneUser GroupUser``); by default all
four run with their weights. Tokens are minted locally with
``ACCESS_TOKEN_SECRET`` (the server's secret; the development secret if
unset). The server's per-connection rate limit (20 frames/s by default) must
allow the chosen rate. Knobs, all environment variables:

- ``TORNCHAT_LOADTEST_RATE``: messages per second per chatting user (default 1);
- ``TORNCHAT_LOADTEST_GROUP_SIZE``: members of each group conversation (default 10).

Delivery latency (the ``deliver`` row) is the time from the send stamp inside
the message to its arrival at each recipient (:mod:`loadtest.stamp`).
"""

from __future__ import annotations

import itertools
import os
import uuid

from locust import User, between, constant_throughput, task

from loadtest.locust_client import ChatClient
from tornchat.auth import mint_token
from tornchat.config import DEV_SECRET

WS_PATH = "/api/v1/chat"
RUN_ID = os.environ.get("TORNCHAT_LOADTEST_RUN") or f"lt{uuid.uuid4().hex[:6]}-{os.getpid()}"
RATE = float(os.environ.get("TORNCHAT_LOADTEST_RATE", "1"))
GROUP_SIZE = int(os.environ.get("TORNCHAT_LOADTEST_GROUP_SIZE", "10"))


def chat_url(host: str | None) -> str:
    """The WebSocket URL for Locust's ``--host`` (scheme and path optional)."""
    url = host or "ws://127.0.0.1:4004"
    if url.startswith("http"):
        url = "ws" + url[4:]
    elif "://" not in url:
        url = f"ws://{url}"
    return url if url.split("://", 1)[1].count("/") else url.rstrip("/") + WS_PATH


def token_for(user_id: str) -> str:
    return mint_token(os.environ.get("ACCESS_TOKEN_SECRET") or DEV_SECRET, user_id, 24 * 3600)


class TornchatUser(User):
    """Abstract base: one WebSocket connection, authenticated as a unique user.

    Subclasses name their users through :meth:`user_id_for` so that users of
    one scenario can find each other (partners, group members).
    """

    abstract = True
    _counter = itertools.count()

    def __init__(self, environment: object) -> None:
        super().__init__(environment)
        self.index = next(type(self)._counter)
        self.user_id = self.user_id_for(self.index)
        self.client = ChatClient(chat_url(self.host), self.environment.events.request)

    @classmethod
    def user_id_for(cls, index: int) -> str:
        return f"{RUN_ID}-{cls.__name__}-{index}"

    def on_start(self) -> None:
        self.client.connect(token_for(self.user_id))

    def on_stop(self) -> None:
        self.client.close()

    def ensure_connected(self) -> bool:
        return self.client.connected or self.client.connect(token_for(self.user_id))


class OneToOneUser(TornchatUser):
    """Users in pairs (0-1, 2-3, …) chatting with each other."""

    weight = 4
    wait_time = constant_throughput(RATE)
    _counter = itertools.count()

    @task
    def send_to_partner(self) -> None:
        if not self.ensure_connected():
            return
        conversation = self.client.conversations.get("partner")
        if conversation is not None:
            self.client.send_message(conversation_id=conversation)
        else:
            partner = self.user_id_for(self.index ^ 1)
            self.client.send_message(recipient_ids=[partner], key="partner")


class GroupUser(TornchatUser):
    """Users in groups of ``GROUP_SIZE`` posting to their group conversation."""

    weight = 2
    wait_time = constant_throughput(RATE)
    _counter = itertools.count()

    @task
    def send_to_group(self) -> None:
        if not self.ensure_connected():
            return
        conversation = self.client.conversations.get("group")
        if conversation is not None:
            self.client.send_message(conversation_id=conversation)
            return
        first = self.index - self.index % GROUP_SIZE
        members = [self.user_id_for(i) for i in range(first, first + GROUP_SIZE)]
        self.client.send_message(recipient_ids=[m for m in members if m != self.user_id],
                                 key="group")


class ChurnUser(TornchatUser):
    """Connect, authenticate and disconnect, over and over (``connect+auth`` rows)."""

    weight = 1
    wait_time = between(0.5, 1.0)
    _counter = itertools.count()

    def on_start(self) -> None:
        """Connections are opened by the task, not held."""

    @task
    def connect_and_close(self) -> None:
        if self.client.connect(token_for(self.user_id)):
            self.client.close()
        self.client = ChatClient(self.client.url, self.environment.events.request)


class IdleUser(TornchatUser):
    """Holds an authenticated connection and pings now and then, like an open app."""

    weight = 3
    wait_time = between(20, 30)
    _counter = itertools.count()

    @task
    def keep_alive(self) -> None:
        if self.ensure_connected():
            self.client.ping()
