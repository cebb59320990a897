"""Make an open, idle WebSocket connection cost less memory.

An idle authenticated connection is mostly Tornado's objects, not ours, and
the target is about 12 KB of RSS per connection. A ``tracemalloc`` diff over
thousands of idle connections (docs/performance.md, "Idle memory") showed
three pieces that a connection keeps for its whole life but never uses
again once the socket is open:

- the upgrade request's headers. ``WebSocketHandler.get`` keeps them in a
  local variable while it awaits the connection's receive loop, so replacing
  ``request.headers`` frees nothing; emptying the object in place does;
- two empty ``collections.deque`` objects on the ``IOStream`` (its write
  buffer's chunk list and its write-future list): an empty deque allocates a
  64-slot block, about 700 bytes each. :class:`LazyDeque` allocates only
  while something is queued;
- the handler's attribute dict, which grows to a 1.5 KB table when Tornado
  plants seven "not supported for WebSockets" attributes on the instance
  (the handler overrides ``_detach_stream`` to skip that);
- the HTTP connection objects the request still points at once the stream
  is detached: Tornado's ``HTTP1Connection`` and ``HTTP1ServerConnection``,
  their shared context, the finished task of the request loop and its
  coroutine, futures (13 objects the cycle collector tracks, of 56 a
  waiting connection had; each full collection walks all of them, which is
  what a flood of connections that never authenticate makes expensive:
  docs/performance.md, "Connection floods"). The handler's template
  namespace goes too (``ui``: two more, and a cycle back to the handler).

Everything here is a fallback-safe adjustment of Tornado internals: when an
attribute does not look as expected (another Tornado version, a TLS stream),
it is left alone and the connection merely costs more.

Thread rule: IOLoop thread only (called from ``open``).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

from tornado.httputil import HTTPHeaders
from tornado.iostream import IOStream

T = TypeVar("T")

#: the IOStream attributes replaced: its write buffer's chunks, its write futures
_STREAM_DEQUES = (("_write_buffer", "_buffers"), (None, "_write_futures"))


class LazyDeque(Generic[T]):
    """The part of ``collections.deque`` that ``IOStream`` uses, storage on demand.

    Holds a real deque only while it has items, so an idle stream pays a
    two-pointer object instead of an empty 64-slot block; after a burst of
    queued writes drains, the block is freed again.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[T] = ()) -> None:
        queued = collections.deque(items)
        self._items: collections.deque[T] | None = queued or None

    def append(self, item: T) -> None:
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)

    def popleft(self) -> T:
        if self._items is None:
            raise IndexError("pop from an empty deque")
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item

    def clear(self) -> None:
        self._items = None

    def __getitem__(self, index: int) -> T:
        if self._items is None:
            raise IndexError("deque index out of range")
        return self._items[index]

    def __len__(self) -> int:
        return 0 if self._items is None else len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(()) if self._items is None else iter(self._items)


def forget_request_headers(headers: HTTPHeaders) -> None:
    """Empty ``headers`` in place (re-initialised: fresh, empty tables), so every
    holder of the object, Tornado's suspended ``get`` included, lets go of them."""
    HTTPHeaders.__init__(headers)


def forget_http_connection(request: Any) -> None:
    """Let go of the HTTP/1.1 connection objects behind an upgraded request.

    Once the WebSocket has the stream, Tornado reads nothing more through
    them, and they are referenced from the request alone; the request keeps
    what a log line of it needs (method, URI, remote address).
    """
    for name in ("connection", "server_connection"):
        if hasattr(request, name):
            setattr(request, name, None)


def lighten_stream(stream: Any) -> bool:
    """Swap a plain ``IOStream``'s empty-deque attributes for :class:`LazyDeque`.

    Queued items, if any, move over in order. Returns False (and changes
    nothing) if the stream is not a plain ``IOStream`` or does not have the
    attributes this was written against.
    """
    if type(stream) is not IOStream:
        return False
    targets = []
    for owner_name, name in _STREAM_DEQUES:
        owner = stream if owner_name is None else getattr(stream, owner_name, None)
        current = getattr(owner, name, None)
        if not isinstance(current, collections.deque):
            return False
        targets.append((owner, name, current))
    for owner, name, current in targets:
        setattr(owner, name, LazyDeque(current))
    return True
