"""``TORNCHAT_STAGE_TIMING=1`` times each stage of a message's path on
``/metrics`` (``tornchat_stage_seconds{stage}``); off, nothing is recorded."""

from __future__ import annotations

from tornado.httpclient import AsyncHTTPClient

from harness.wsclient import authed


async def stage_counts(server) -> dict[str, float]:
    answer = await AsyncHTTPClient().fetch(server.http_url + "/metrics")
    counts = {}
    for line in answer.body.decode().splitlines():
        if line.startswith("tornchat_stage_seconds_count{"):
            stage = line.split('stage="')[1].split('"')[0]
            counts[stage] = float(line.rsplit(" ", 1)[1])
    return counts


async def exchange(server, messages: int) -> None:
    alice = await authed(server.url, server.secret, "alice")
    bob = await authed(server.url, server.secret, "bob")
    ack = await alice.request({"type": "send_message", "recipientIds": ["bob"], "content": "0"})
    for i in range(1, messages):
        await alice.request({"type": "send_message", "content": str(i),
                             "conversationId": ack["data"]["conversationId"]})
    for _ in range(messages):
        await bob.expect("new_message")
    alice.close()
    bob.close()


async def test_on_every_local_stage_is_timed_once_per_message(io_loop, start_server):
    server = await start_server(stage_timing=1)
    await exchange(server, 5)
    counts = await stage_counts(server)
    for stage in ("queue", "database", "handoff"):
        assert counts[stage] == 5, (stage, counts)
    assert counts["write"] >= 5  # the sender's reply path writes nothing; bob's does
    assert counts.get("redis", 0) == 0  # one process, no Redis hop


async def test_off_by_default_nothing_is_recorded(server):
    await exchange(server, 2)
    assert all(count == 0 for count in (await stage_counts(server)).values())
