"""Where each user's shared state lives in Redis: the key layout.

On one Redis the keys are what they have always been (``tornchat:conns:{user}``,
``tornchat:presence:{user}``, ``tornchat:presence:watch:{user}``, one due set
``tornchat:presence:due``), so workers of an older release and this one agree
during a rolling upgrade.

On a Redis Cluster every Lua script must touch keys of one hash slot only.
Presence's sweep reads the slots, state and watchers of whichever users are
due, so a user's keys and the due set that names them must share a slot.
Users are therefore spread over :data:`CLUSTER_PARTITIONS` partitions (CRC-32
of the user id), and every key of a partition carries the partition's hash
tag: ``tornchat:{p7-12}:conns:alice``, ``tornchat:{p7-12}:presence:due``
(tags chosen so the partitions fall on evenly spaced slots:
:func:`spread_tags`). A script about one user touches one partition; one
about many users (a presence lookup, a slot refresh) is called once per
partition. Sixteen partitions spread user state evenly over 2, 4, 8 or 16
shards (and nearly evenly over other counts); the routed publisher's
slot-set reads, one per recipient and message, follow the same spread.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

CLUSTER_PARTITIONS = 16


def spread_tags(partitions: int) -> tuple[str, ...]:
    """One hash tag per partition, partition ``i`` on a slot in the ``i``-th of
    ``partitions`` equal ranges of the 16,384 slots: a cluster whose slots are
    split evenly (``redis-cli --cluster create`` does) then holds an equal share
    of the partitions on every shard, up to ``partitions`` shards. The plain
    tags ``p0`` … ``p15`` fall on slots in pairs: 4 / 5 / 7 partitions on 3
    shards, none at all on half of 8. Deterministic: every worker and every
    version computes the same tags."""
    width = REDIS_CLUSTER_HASH_SLOTS // partitions
    tags = []
    for index in range(partitions):
        attempt = 0
        while key_slot(f"p{index}-{attempt}".encode()) // width != index:
            attempt += 1
        tags.append(f"p{index}-{attempt}")
    return tuple(tags)


@dataclass(frozen=True, slots=True)
class KeyLayout:
    partitions: int
    #: keys carry a ``{pN-k}`` hash tag (a cluster)
    tagged: bool
    tags: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.tagged and not self.tags:
            object.__setattr__(self, "tags", spread_tags(self.partitions))

    def partition(self, user_id: str) -> int:
        if self.partitions == 1:
            return 0
        return zlib.crc32(user_id.encode()) % self.partitions

    def base(self, partition: int) -> str:
        return f"tornchat:{{{self.tags[partition]}}}:" if self.tagged else "tornchat:"

    # -- per partition: what scripts build user keys from ------------------

    def slot_prefix(self, partition: int) -> str:
        return self.base(partition) + "conns:"

    def state_prefix(self, partition: int) -> str:
        return self.base(partition) + "presence:"

    def watch_prefix(self, partition: int) -> str:
        return self.base(partition) + "presence:watch:"

    def due_key(self, partition: int) -> str:
        return self.base(partition) + "presence:due"

    # -- per user ----------------------------------------------------------

    def slot_key(self, user_id: str) -> str:
        return self.slot_prefix(self.partition(user_id)) + user_id

    def state_key(self, user_id: str) -> str:
        return self.state_prefix(self.partition(user_id)) + user_id

    def watch_key(self, user_id: str) -> str:
        return self.watch_prefix(self.partition(user_id)) + user_id

    def user_due_key(self, user_id: str) -> str:
        return self.due_key(self.partition(user_id))

    def by_partition(self, user_ids: Iterable[str]) -> dict[int, list[str]]:
        """The users grouped by partition, each group in the order given."""
        groups: dict[int, list[str]] = {}
        for user in user_ids:
            groups.setdefault(self.partition(user), []).append(user)
        return groups


SINGLE = KeyLayout(partitions=1, tagged=False)
CLUSTER = KeyLayout(partitions=CLUSTER_PARTITIONS, tagged=True)


def layout_for(url: str) -> KeyLayout:
    """:data:`CLUSTER` for a ``redis+cluster://`` URL, else :data:`SINGLE`."""
    from tornchat.fanout.redis_wire import is_cluster_url

    return CLUSTER if is_cluster_url(url) else SINGLE
