"""Who on this worker watches whose presence, and the last status each was told.

The index is per process: a presence change reaches a worker once (only the
workers that watch the user are told, :mod:`tornchat.fanout.presence`) and is
written here to every local connection watching that user. The last status
sent per watched user is kept, so a repeat (the maintenance pass re-reads
every watched user) is written to nobody, and a new subscriber to a user
already watched here is answered without asking Redis. Bounded: at most
``per_connection`` users per connection (PROTOCOL §13: 500).

IOLoop thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from tornchat.contract import protocol
from tornchat.contract.records import PresenceStatus
from tornchat.errors import InvalidMessage
from tornchat.fanout.registry import Connection

log = logging.getLogger(__name__)

#: users one connection may watch at once (PROTOCOL §13)
MAX_WATCHED_PER_CONNECTION = 500


class PresenceWatchers:
    def __init__(self, per_connection: int = MAX_WATCHED_PER_CONNECTION) -> None:
        self._per_connection = per_connection
        self._by_user: dict[str, dict[str, Connection]] = {}
        self._by_connection: dict[str, set[str]] = {}
        self._latest: dict[str, PresenceStatus] = {}
        #: changes seen per user: tells a subscription whether one came while it asked Redis
        self._changes: dict[str, int] = {}

    def __len__(self) -> int:
        """Users watched on this worker."""
        return len(self._by_user)

    def users(self) -> list[str]:
        return list(self._by_user)

    def latest(self, user_id: str) -> PresenceStatus | None:
        return self._latest.get(user_id)

    def changes(self, user_id: str) -> int:
        return self._changes.get(user_id, 0)

    def add(self, connection: Connection, user_ids: Iterable[str]) -> list[str]:
        """Watch ``user_ids`` for ``connection``; all or none: InvalidMessage
        if the connection would watch more than the cap. Returns those it did
        not watch before."""
        watched = self._by_connection.get(connection.connection_id, set())
        new = [user for user in user_ids if user not in watched]
        if len(watched) + len(new) > self._per_connection:
            raise InvalidMessage(
                f"A connection may watch at most {self._per_connection} users' presence; "
                f"it watches {len(watched)} and this asks for {len(new)} more")
        if not new:
            return new
        self._by_connection[connection.connection_id] = watched
        for user in new:
            watched.add(user)
            self._by_user.setdefault(user, {})[connection.connection_id] = connection
        return new

    def remove(self, connection: Connection, user_ids: Iterable[str]) -> None:
        watched = self._by_connection.get(connection.connection_id)
        if watched is None:
            return
        for user in user_ids:
            if user in watched:
                watched.discard(user)
                self._unwatch(user, connection.connection_id)
        if not watched:
            del self._by_connection[connection.connection_id]

    def drop(self, connection: Connection) -> None:
        """The connection ended: it watches nothing any more."""
        for user in self._by_connection.pop(connection.connection_id, ()):
            self._unwatch(user, connection.connection_id)

    def _unwatch(self, user_id: str, connection_id: str) -> None:
        connections = self._by_user.get(user_id)
        if connections is None:
            return
        connections.pop(connection_id, None)
        if not connections:
            del self._by_user[user_id]
            self._latest.pop(user_id, None)
            self._changes.pop(user_id, None)

    def changed(self, status: PresenceStatus, exclude: str | None = None) -> int:
        """A user's status as the cluster now says it: written to every local
        watcher (but ``exclude``) unless it is what they were told last;
        returns the writes."""
        user_id = status.user_id
        connections = self._by_user.get(user_id)
        if connections is None or self._latest.get(user_id) == status:
            return 0
        self._latest[user_id] = status
        self._changes[user_id] = self._changes.get(user_id, 0) + 1
        frame = protocol.presence(status.to_wire())
        written = 0
        for connection in list(connections.values()):
            if connection.connection_id == exclude:
                continue
            try:
                if connection.send(frame):
                    written += 1
            except Exception:  # one bad socket must not stop the others
                log.warning("presence delivery to a connection failed", exc_info=True,
                            extra={"connectionId": connection.connection_id})
        return written
