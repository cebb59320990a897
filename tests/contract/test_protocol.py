"""Frame schemas: what parses, what is rejected, how frames serialise."""

from __future__ import annotations

import pytest

from tornchat.contract import protocol
from tornchat.contract.ids import new_id
from tornchat.contract.timefmt import to_iso
from tornchat.errors import InvalidJson, InvalidMessage
from tornchat.ws.ratelimit import TokenBucket

LIMITS = protocol.Limits(max_message_length=10, max_recipients=2)


def parse(text: str) -> protocol.ClientFrame:
    return protocol.parse_client_frame(protocol.decode_object(text), LIMITS)


def test_each_client_frame_type_parses():
    assert parse('{"type":"ping"}') == protocol.Ping()
    assert parse('{"type":"auth","token":"t"}') == protocol.Auth("t")
    assert parse('{"type":"typing","conversationId":"c_1"}') == protocol.Typing("c_1")
    assert parse('{"type":"send_message","recipientIds":["b"],"content":"hi",'
                 '"clientMessageId":"k"}') == protocol.SendMessage(
        content="hi", recipient_ids=("b",), client_message_id="k")


@pytest.mark.parametrize("text", ["", "nope", "[]", '"string"', "1"])
def test_non_objects_are_invalid_json(text):
    with pytest.raises(InvalidJson):
        protocol.decode_object(text)


@pytest.mark.parametrize("text", [
    '{"type":1}',
    '{"type":"send_message","recipientIds":["a","b","c"],"content":"x"}',
    '{"type":"send_message","recipientIds":["a"],"content":"01234567890"}',
    '{"type":"send_message","recipientIds":"a","content":"x"}',
    '{"type":"send_message","conversationId":"","content":"x"}',
])
def test_bounds_and_types_are_enforced(text):
    with pytest.raises(InvalidMessage):
        parse(text)


def test_server_frames_are_compact_json_with_camel_case_fields():
    assert protocol.error("forbidden", "no", "k") == \
        '{"type":"error","code":"forbidden","error":"no","clientMessageId":"k"}'
    assert protocol.server_shutdown(5000) == \
        '{"type":"server_shutdown","data":{"reconnectAfterMs":5000}}'
    assert protocol.PONG == '{"type":"pong"}'


def test_ids_are_prefixed_unique_and_time_sortable():
    ids = [new_id("msg") for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(i.startswith("msg_") and len(i) == 30 for i in ids)
    assert ids[0][:14] <= ids[-1][:14]


def test_an_id_carries_its_creation_millisecond_in_crockford_base32():
    import time

    from tornchat.contract.ids import ALPHABET
    before = time.time_ns() // 1_000_000
    encoded = new_id("c").removeprefix("c_")
    after = time.time_ns() // 1_000_000
    value = 0
    for char in encoded:
        value = value * 32 + ALPHABET.index(char)
    assert value < 1 << 128
    assert before <= value >> 80 <= after


def test_timestamps_are_iso_utc_with_milliseconds():
    from datetime import datetime
    assert to_iso(datetime(2026, 1, 11, 12, 0, 0, 123456)) == "2026-01-11T12:00:00.123Z"


def test_token_bucket_allows_a_burst_then_the_sustained_rate():
    now = [0.0]
    bucket = TokenBucket(rate=2, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5
    assert bucket.take() is True
    assert bucket.take() is False


def test_after_a_refusal_the_bucket_refuses_until_half_a_seconds_worth_is_back():
    """Frames pipelined behind a refused one are refused too, even when a
    token came back meanwhile: a retry oldest first then keeps the order."""
    now = [0.0]
    bucket = TokenBucket(rate=20, burst=40, clock=lambda: now[0])
    assert all(bucket.take() for _ in range(40))
    assert bucket.take() is False
    now[0] += 0.1  # two tokens back: not yet
    assert bucket.take() is False
    now[0] += 0.3
    assert bucket.take() is False
    now[0] += 0.1  # ten: half a second's worth
    assert [bucket.take() for _ in range(11)] == [True] * 10 + [False]
