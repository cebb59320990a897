"""The watchers' re-read (PROTOCOL §13) around a loss of the shared state.

A backend whose lookup answers from a script-set table (no Redis needed:
the rule under test is the re-read's own, tornchat/fanout/presence.py), and the
restore script on the real Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from tornchat.contract.records import OFFLINE, ONLINE, PresenceStatus
from tornchat.fanout.bus import InMemoryBus
from tornchat.fanout.presence import Presence


@dataclass
class Watcher:
    connection_id: str = "conn-1"
    user_id: str | None = "alice"
    frames: list[str] = field(default_factory=list)

    def send(self, frame: str) -> bool:
        self.frames.append(frame)
        return True

    def deliver_message(self, frame: str, conversation_id: str, seq: int) -> bool:
        return self.send(frame)

    def disconnect(self, frame: str) -> None:
        pass


class ScriptedPresence(Presence):
    def __init__(self) -> None:
        super().__init__(InMemoryBus(), grace=1.0, rewatch_interval=60.0)
        self.answers: dict[str, PresenceStatus] = {}

    async def connected(self, user_id: str) -> None:
        pass

    async def disconnected(self, user_id: str) -> None:
        pass

    async def restore(self, user_ids: Sequence[str]) -> None:
        pass

    async def sweep(self) -> None:
        pass

    async def lookup(self, user_ids: Sequence[str], watch: bool = False
                     ) -> list[PresenceStatus]:
        return [self.answers[user] for user in user_ids]


async def _watching_bob_online() -> tuple[ScriptedPresence, Watcher]:
    presence, watcher = ScriptedPresence(), Watcher()
    presence.answers["bob"] = PresenceStatus("bob", ONLINE)
    assert await presence.watch(watcher, ["bob"]) == [PresenceStatus("bob", ONLINE)]
    return presence, watcher


async def test_a_strict_reread_reports_a_user_without_a_record_offline():
    presence, _ = await _watching_bob_online()
    presence.answers["bob"] = PresenceStatus("bob", OFFLINE)  # no record, no lastSeenAt
    await presence.rewatch()
    assert presence.watchers.latest("bob") == PresenceStatus("bob", OFFLINE)


async def test_after_a_loss_no_record_is_not_taken_for_a_departure_until_the_state_is_back():
    presence, _ = await _watching_bob_online()
    presence.state_lost()
    presence.answers["bob"] = PresenceStatus("bob", OFFLINE)
    await presence.rewatch(after_loss=True)  # what every re-read is until restored
    assert presence.watchers.latest("bob") == PresenceStatus("bob", ONLINE)
    await presence.reread_after_loss()  # restored here; bob's worker may still be behind
    assert presence.watchers.latest("bob") == PresenceStatus("bob", ONLINE)


async def test_a_real_departure_is_reported_at_once_even_after_a_loss():
    presence, _ = await _watching_bob_online()
    presence.state_lost()
    left = PresenceStatus("bob", OFFLINE, "2026-12-02T06:00:00.000Z")
    presence.answers["bob"] = left  # a record says when he left: not a lost one
    await presence.reread_after_loss()
    assert presence.watchers.latest("bob") == left


async def test_periodic_rereads_stay_lenient_until_restored_and_once_more():
    presence, _ = await _watching_bob_online()
    assert not presence.periodic_reread_is_lenient()
    presence.state_lost()
    assert presence.periodic_reread_is_lenient()
    assert presence.periodic_reread_is_lenient()  # a restore that keeps failing
    await presence.reread_after_loss()
    assert presence.periodic_reread_is_lenient()  # a peer may reconnect later
    assert not presence.periodic_reread_is_lenient()


@pytest.mark.redis
async def test_the_restore_writes_a_record_only_for_users_with_a_live_slot_and_none_yet():
    """On the real Redis: bob is connected (a live slot) and lost his record;
    carol's connection ended while the restore was on its way (no slot); dave
    is recorded as leaving (his grace runs). Only bob gets a record."""
    import time
    import uuid

    import redis

    from harness.services import require_redis
    from tornchat.fanout.redis_keys import layout_for
    from tornchat.fanout.redis_presence import RedisPresence

    url = require_redis()
    keys = layout_for(url)
    bob, carol, dave = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("bob", "carol", "dave"))
    client = redis.Redis.from_url(url)
    later = int(time.time() * 1000) + 60_000
    client.zadd(keys.slot_key(bob), {"conn-b": later})
    client.zadd(keys.slot_key(dave), {"conn-d": later})
    client.hset(keys.state_key(dave), mapping={"state": "online", "left": "1"})
    presence = RedisPresence(url, "worker-test", InMemoryBus(), grace=1.0, slot_ttl=7.5,
                             rewatch_interval=3.0)
    try:
        await presence.restore([bob, carol, dave])
        assert client.hgetall(keys.state_key(bob)) == {b"state": b"online"}
        assert client.exists(keys.state_key(carol)) == 0
        assert client.hgetall(keys.state_key(dave)) == {b"state": b"online", b"left": b"1"}
        assert client.zscore(keys.user_due_key(bob), bob) == later
    finally:
        await presence.stop()
        client.delete(*(key for user in (bob, carol, dave) for key in (
            keys.slot_key(user), keys.state_key(user))))
        client.zrem(keys.user_due_key(bob), bob)
        client.close()
