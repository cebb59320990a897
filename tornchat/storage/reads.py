"""What a client reads back: its conversation list, one conversation, history
pages and the windows a ``sync`` replays.

Every query is served by an index (docs/storage.md lists which):

- a user's conversations start from ``participant (user_id, conversation_id)``
  and reach each conversation and its newest message by primary key and
  ``message (conversation_id, seq)``; the page is the top ``limit`` by
  ``(last_message_at, id)``, a keyset cursor, so paging while messages arrive
  never repeats or skips a conversation that did not move;
- history is a ``seq`` range on ``message (conversation_id, seq)``: ``seq`` is
  gap-free, so the range is computed from the conversation's ``last_seq``
  before the read and the rows come back contiguous by construction.

Thread rule: blocking; runs on the store's executor, never on the IOLoop.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tornchat.contract.records import ConversationView, MessagePage, StoredMessage, SyncWindow
from tornchat.contract.timefmt import to_iso
from tornchat.errors import Forbidden, InvalidRequest, NotFound
from tornchat.storage.dialect import MESSAGE_COLUMNS
from tornchat.storage.store import ChatStore

_LAST_MESSAGE_COLUMNS = ", ".join(f"m.{column.strip()}" for column in MESSAGE_COLUMNS.split(","))
# The user's conversations ({where}: more conditions, {order}: ORDER BY and
# LIMIT), then the last message of only those that made the page.
_CONVERSATION_SELECT = (
    "SELECT t.id, t.created_at, t.last_message_at, t.last_seq, t.last_read_seq, "
    f"{_LAST_MESSAGE_COLUMNS} FROM (SELECT c.id, c.created_at, c.last_message_at, "
    "c.last_seq, p.last_read_seq FROM participant AS p "
    "JOIN conversation AS c ON c.id = p.conversation_id "
    "WHERE p.user_id = {p}{where}{order}) AS t "
    "LEFT JOIN message AS m ON m.conversation_id = t.id AND m.seq = t.last_seq "
    "ORDER BY t.last_message_at DESC, t.id DESC")


def encode_cursor(view: ConversationView) -> str:
    """An opaque cursor naming the position just after ``view`` in the list."""
    raw = json.dumps([to_iso(view.last_message_at), view.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (lastMessageAt, id) a cursor names; InvalidRequest for anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded))
        moment, conversation_id = decoded if isinstance(decoded, list) else (None, None)
        if not isinstance(moment, str) or not isinstance(conversation_id, str):
            raise ValueError(cursor)
        parsed = datetime.fromisoformat(moment.removesuffix("Z"))
        if parsed.tzinfo is not None:
            raise ValueError(cursor)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidRequest("'cursor' is not a cursor this server handed out") from None
    return parsed, conversation_id


def history_range(last_seq: int, limit: int, before: int | None, after: int | None
                  ) -> tuple[int, int]:
    """The ``[low, high]`` seq range a history request asks for (may be empty).

    No bound: the newest ``limit``. ``before``: the ``limit`` just below it.
    ``after``: the ``limit`` just above it. Both: between them, from the low end.
    """
    high = last_seq if before is None else min(before - 1, last_seq)
    if after is None:
        return max(1, high - limit + 1), high
    return after + 1, min(high, after + limit)


class ConversationReads:
    """Blocking read queries over a :class:`ChatStore`'s database."""

    def __init__(self, store: ChatStore) -> None:
        self._store = store
        self._database = store.database
        self._param = store.database.param

    # -- conversations ---------------------------------------------------

    def conversations(self, user_id: str, limit: int, cursor: str | None
                      ) -> tuple[list[ConversationView], str | None]:
        """A page of the user's conversations, newest ``lastMessageAt`` first
        (ties by id), and the cursor of the next page (None on the last)."""
        p = self._param
        where = ""
        params: list[Any] = [user_id]
        if cursor is not None:
            moment, conversation_id = decode_cursor(cursor)
            where = f" AND (c.last_message_at < {p} OR (c.last_message_at = {p} AND c.id < {p}))"
            params += [moment, moment, conversation_id]
        sql = _CONVERSATION_SELECT.format(
            p=p, where=where, order=f" ORDER BY c.last_message_at DESC, c.id DESC LIMIT {p}")
        params.append(limit + 1)
        with self._store.session():
            rows = self._database.execute_sql(sql, params).fetchall()
            views = self._views(rows[:limit])
        return views, (encode_cursor(views[-1]) if len(rows) > limit else None)

    def conversation(self, user_id: str, conversation_id: str) -> ConversationView:
        """One conversation of the user's; NotFound or Forbidden otherwise."""
        with self._store.session():
            self._store.member_participants(conversation_id, user_id)
            rows = self._database.execute_sql(
                _CONVERSATION_SELECT.format(p=self._param, where=f" AND c.id = {self._param}",
                                            order=""), (user_id, conversation_id)).fetchall()
            return self._views(rows)[0]

    def _views(self, rows: Sequence[tuple[Any, ...]]) -> list[ConversationView]:
        timestamp = self._store.dialect.timestamp
        members = self._store.participants_of_many([row[0] for row in rows])
        views = []
        for row in rows:
            conversation_id, created_at, last_message_at, last_seq, last_read_seq = row[:5]
            last = None if row[5] is None else self._store.dialect.stored_message(row[5:])
            views.append(ConversationView(
                id=conversation_id, participants=members[conversation_id],
                created_at=timestamp(created_at), last_message_at=timestamp(last_message_at),
                last_seq=last_seq, last_read_seq=last_read_seq, last_message=last))
        return views

    # -- contacts --------------------------------------------------------

    def contacts(self, user_id: str, candidates: Sequence[str]) -> set[str]:
        """Those of ``candidates`` who share at least one conversation with
        the user (who may see each other's presence): one query, from the
        user's own ``participant`` rows to the others' by conversation."""
        if not candidates:
            return set()
        p = self._param
        marks = ", ".join([p] * len(candidates))
        with self._store.session():
            rows = self._database.execute_sql(
                "SELECT DISTINCT other.user_id FROM participant AS mine "
                "JOIN participant AS other ON other.conversation_id = mine.conversation_id "
                f"WHERE mine.user_id = {p} AND other.user_id IN ({marks})",
                [user_id, *candidates]).fetchall()
        return {row[0] for row in rows}

    # -- messages --------------------------------------------------------

    def messages(self, user_id: str, conversation_id: str, limit: int,
                 before: int | None, after: int | None) -> MessagePage:
        """A contiguous, ascending page of history (bounds exclusive)."""
        with self._store.session():
            self._store.member_participants(conversation_id, user_id)
            [(last_seq,)] = self._database.execute_sql(
                f"SELECT last_seq FROM conversation WHERE id = {self._param}",
                (conversation_id,)).fetchall()
            low, high = history_range(last_seq, limit, before, after)
            messages = self._ranges([(conversation_id, low, high)]).get(conversation_id, [])
        # an empty range (bounds next to each other, or beyond the ends) still
        # says truly whether messages lie on either side of it
        return MessagePage(messages=tuple(messages),
                           has_more_before=min(low - 1, last_seq) >= 1,
                           has_more_after=max(high, low - 1) < last_seq, last_seq=last_seq)

    def sync_windows(self, user_id: str, known: Sequence[tuple[str, int]], max_replay: int
                     ) -> tuple[list[SyncWindow], list[tuple[str, str]]]:
        """For each (conversation, highest seq the client has): the messages
        it missed (at most the newest ``max_replay``), and (id, error code)
        for the conversations it may not read."""
        ids = [conversation_id for conversation_id, _ in known]
        p = self._param
        readable: list[tuple[str, int, int, int]] = []  # (id, known, last_seq, last_read)
        errors: list[tuple[str, str]] = []
        with self._store.session():
            positions: dict[str, tuple[int, int | None]] = {}
            for chunk in _chunks(ids, 500):
                marks = ", ".join([p] * len(chunk))
                for cid, last_seq, last_read in self._database.execute_sql(
                        "SELECT c.id, c.last_seq, p.last_read_seq FROM conversation AS c "
                        f"LEFT JOIN participant AS p ON p.conversation_id = c.id "
                        f"AND p.user_id = {p} WHERE c.id IN ({marks})",
                        [user_id, *chunk]).fetchall():
                    positions[cid] = (last_seq, last_read)
            for conversation_id, seq in known:
                last_seq, last_read = positions.get(conversation_id, (0, None))
                if conversation_id not in positions:
                    errors.append((conversation_id, NotFound.code))
                elif last_read is None:
                    errors.append((conversation_id, Forbidden.code))
                else:
                    readable.append((conversation_id, seq, last_seq, last_read))
            replay = self._ranges([(cid, max(seq + 1, last - max_replay + 1), last)
                                   for cid, seq, last, _ in readable])
        windows = [SyncWindow(conversation_id=cid, known_seq=seq,
                              messages=tuple(replay.get(cid, ())), last_seq=last,
                              last_read_seq=last_read)
                   for cid, seq, last, last_read in readable]
        return windows, errors

    def _ranges(self, ranges: Sequence[tuple[str, int, int]]
                ) -> dict[str, list[StoredMessage]]:
        """The messages of each ``(conversation, low, high)`` seq range, ascending:
        one query for many ranges, each an index range scan."""
        found: dict[str, list[StoredMessage]] = {}
        p = self._param
        for chunk in _chunks([r for r in ranges if r[1] <= r[2]], 100):
            where = " OR ".join([f"(conversation_id = {p} AND seq BETWEEN {p} AND {p})"]
                                * len(chunk))
            rows = self._database.execute_sql(
                f"SELECT {MESSAGE_COLUMNS} FROM message WHERE {where} "
                "ORDER BY conversation_id, seq",
                [value for item in chunk for value in item]).fetchall()
            members = self._store.participants_of_many([item[0] for item in chunk])
            stored_message = self._store.dialect.stored_message
            for row in rows:
                found.setdefault(row[1], []).append(
                    stored_message(row, participants=members[row[1]]))
        return found


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start:start + size] for start in range(0, len(items), size)]
