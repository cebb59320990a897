"""The bus envelope carries a version, so a rolling upgrade can tell old workers
from new: this worker reads its own version and an old worker's unversioned
envelope, and drops (logging once) what a newer worker sends."""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
import pytest
import redis

from harness.redis_server import private_redis
from tornchat.fanout.bus import DISCONNECT, MESSAGE, PRESENCE, TYPING, Delivery
from tornchat.fanout.redis_bus import RedisBus, new_worker_id
from tornchat.fanout.redis_wire import (
    CHANNEL_PREFIX,
    ENVELOPE_VERSION,
    UnknownVersion,
    decode,
    encode,
    origin_of,
)
from tornchat.metrics import Metrics

DELIVERY = Delivery(kind=MESSAGE, conversation_id="c_env", user_ids=("a", "b"),
                    frame='{"type":"new_message"}', exclude_connection="conn-1", seq=7,
                    published_at=1700000000.25)


def old_worker_envelope(delivery: Delivery) -> bytes:
    """Exactly what a worker from before versioning publishes."""
    return b"old-worker|" + orjson.dumps({
        "kind": delivery.kind, "conversation_id": delivery.conversation_id,
        "user_ids": delivery.user_ids, "frame": delivery.frame,
        "exclude_connection": delivery.exclude_connection, "seq": delivery.seq,
        "published_at": delivery.published_at})


def future_envelope(version: int) -> bytes:
    return b"new-worker|" + orjson.dumps({"v": version, "kind": MESSAGE, "means": "other"})


def test_the_encoder_writes_the_oldest_version_that_carries_the_delivery_first():
    envelope = encode(origin_of("w1"), DELIVERY)
    origin, _, body = envelope.partition("|")
    assert origin == "w1"
    assert body.startswith('{"v":1,')  # version-1 workers handle a message right
    disconnect = Delivery(kind=DISCONNECT, conversation_id="", user_ids=("bob",),
                          frame="{}")
    body = encode(origin_of("w1"), disconnect).partition("|")[2]
    assert orjson.loads(body)["v"] == 2  # they would not close
    assert decode(encode(origin_of("w1"), disconnect).encode()) == disconnect
    presence = Delivery(kind=PRESENCE, conversation_id="", user_ids=("bob",), frame="{}")
    body = encode(origin_of("w1"), presence).partition("|")[2]
    assert orjson.loads(body)["v"] == ENVELOPE_VERSION == 3  # they would write it to bob


def test_an_envelope_decodes_to_the_delivery_it_carries():
    assert decode(encode(origin_of("w1"), DELIVERY).encode()) == DELIVERY


def test_an_unversioned_envelope_from_an_old_worker_is_read_as_today():
    assert decode(old_worker_envelope(DELIVERY)) == DELIVERY


def test_an_envelope_of_a_newer_version_is_refused_not_misread():
    with pytest.raises(UnknownVersion) as refused:
        decode(future_envelope(ENVELOPE_VERSION + 1))
    assert refused.value.version == ENVELOPE_VERSION + 1


@pytest.mark.parametrize("body", [b'"v"', b"[1, 2]", b'{"v": "2", "kind": "message"}'])
def test_a_malformed_envelope_is_a_type_error(body):
    with pytest.raises(TypeError):
        decode(b"w|" + body)


@pytest.mark.redis
async def test_a_bus_delivers_old_envelopes_and_drops_newer_ones_logging_once(tmp_path,
                                                                              caplog):
    caplog.set_level(logging.WARNING, logger="tornchat.fanout.redis_bus")
    typing_signal = Delivery(kind=TYPING, conversation_id="c_env", user_ids=("a",), frame="{}")
    with private_redis(str(tmp_path)) as server:
        received: list[Delivery] = []
        bus = RedisBus(server.url, new_worker_id(), Metrics(), probe_interval=0.2)
        await bus.start(received.append)
        publisher = redis.Redis.from_url(server.url)
        try:
            channel = CHANNEL_PREFIX + "c_env"
            publisher.publish(channel, old_worker_envelope(DELIVERY))
            for _ in range(3):
                publisher.publish(channel, future_envelope(ENVELOPE_VERSION + 1))
            publisher.publish(channel, old_worker_envelope(typing_signal))
            deadline = time.monotonic() + 5.0
            while len(received) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert received == [DELIVERY, typing_signal]
            warnings = [r.getMessage() for r in caplog.records
                        if "envelope version" in r.getMessage()]
            assert len(warnings) == 1, warnings
            assert f"version {ENVELOPE_VERSION + 1}" in warnings[0]
        finally:
            publisher.close()
            await bus.stop()
