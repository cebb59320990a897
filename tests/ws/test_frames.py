"""The delivery fast path of ws.py: frames built once, written straight to the socket."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from harness.rawws import RawWebSocket
from harness.wsclient import authed
from tornchat.auth import mint_token
from tornchat.contract import protocol
from tornchat.ws.framewriter import FrameCache, text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_text_frame_header_matches_rfc6455(size: int) -> None:
    text = "é" * (size // 2) + "x" * (size % 2)
    payload = text.encode()
    frame = text_frame(text)
    assert frame[0] == 0x81  # FIN + text, no RSV bits (no compression)
    length = frame[1]
    assert not length & 0x80  # servers never mask
    if len(payload) < 126:
        assert length == len(payload) and frame[2:] == payload
    elif len(payload) <= 0xFFFF:
        assert length == 126 and struct.unpack("!H", frame[2:4])[0] == len(payload)
        assert frame[4:] == payload
    else:
        assert length == 127 and struct.unpack("!Q", frame[2:10])[0] == len(payload)
        assert frame[10:] == payload


def test_last_frame_encodes_a_fan_out_once() -> None:
    cache = FrameCache()
    frame = protocol.new_message({"content": "hi"})
    first = cache.get(frame)
    assert cache.get(frame) is first  # same str object: same bytes, no re-encoding
    equal_but_new = "".join(frame)
    other = cache.get(protocol.new_message({"content": "other"}))
    assert other != first and cache.get(equal_but_new) == first


def test_encode_is_compact_utf8_and_survives_lone_surrogates() -> None:
    text = protocol.encode({"type": "x", "data": {"content": "héllo \"q\" ✓"}})
    assert text == '{"type":"x","data":{"content":"héllo \\"q\\" ✓"}}'
    assert json.loads(protocol.encode({"content": "a\ud800"}))["content"] == "a\ud800"


def test_decode_object_falls_back_to_the_standard_library() -> None:
    assert protocol.decode_object('{"a":"\\ud800"}') == {"a": "\ud800"}
    assert protocol.decode_object('{"type": "ping"}') == {"type": "ping"}


async def test_a_reader_that_stalls_gets_every_frame_in_order(start_server: Any) -> None:
    """Frames the kernel does not take at once are queued on the IOStream behind
    the part already sent, so a slow reader loses nothing and sees ``seq`` order."""
    server = await start_server(rate_limit_per_second=10_000.0, rate_limit_burst=10_000,
                                heartbeat_interval=60.0)
    alice = await authed(server.url, server.secret, "alice")
    bob = await RawWebSocket.connect(server.url)
    bob.send_text(json.dumps({"type": "auth", "token": mint_token(server.secret, "bob")}))
    assert json.loads(await bob.recv())["type"] == "auth_success"
    bob.transport.pause_reading()
    content = "x" * 3900
    first = await alice.request({"type": "send_message", "recipientIds": ["bob"],
                                 "content": content})
    conversation = first["data"]["conversationId"]
    count = 1200  # ~4.7 MB: more than loopback socket buffers hold
    for _ in range(count - 1):
        await alice.send({"type": "send_message", "conversationId": conversation,
                          "content": content})
    for _ in range(count - 1):
        await alice.expect("message_sent", timeout=30)
    bob.transport.resume_reading()
    seqs = [json.loads(await bob.recv())["data"]["seq"] for _ in range(count)]
    assert seqs == list(range(1, count + 1))
    alice.close()
    bob.close()
