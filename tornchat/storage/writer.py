"""Group commit: one thread that stores queued messages in batches.

Every message costs one transaction commit (an fsync on PostgreSQL) when
written alone. The writer takes whatever has queued while the previous batch
was committing and stores it in one transaction (``ChatStore.store_batch``),
so an idle server commits each message at once and a busy one amortises the
commit over up to ``max_batch`` messages, with no timer in between.

Thread rule: :meth:`store` is awaited on the IOLoop; a batch's results come
back in one ``call_soon_threadsafe`` per event loop (the asyncio form of
``add_callback``), which then settles each waiter on its own loop. The
thread owns its database connection. The hook set with :meth:`on_committed`
runs on this thread, after the waiters are scheduled: it is how a committed
batch reaches the other worker processes without waiting for this process's
IOLoop (:meth:`tornchat.fanout.bus.Bus.publish_committed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

from tornchat.contract.records import StoredMessage
from tornchat.errors import ChatError, Unavailable
from tornchat.metrics import StageTimes
from tornchat.storage.store import ChatStore, NewMessage

log = logging.getLogger(__name__)

#: a message, its waiter, and when it was submitted (time.monotonic, 0.0 untimed)
_Item = tuple[NewMessage, "asyncio.Future[StoredMessage]", float]
_Outcome = StoredMessage | BaseException
_STOP = object()
#: called on the writer thread with each batch's stored messages
CommittedHook = Callable[[Sequence[StoredMessage]], None]


class GroupCommitWriter:
    """``threads`` writer threads, each with its own queue and connection:
    with more than one, batches of different conversations commit side by
    side. A conversation's messages always go to the same thread (by a hash
    of its id), so they are stored in the order they were submitted, as with
    one thread."""

    def __init__(self, store: ChatStore, max_batch: int = 256,
                 stages: StageTimes | None = None, threads: int = 1) -> None:
        self._store = store
        self._stages = stages if stages is not None and stages.enabled else None
        self._max_batch = max_batch
        self._queues: list[queue.SimpleQueue[object]] = [queue.SimpleQueue()
                                                         for _ in range(threads)]
        self._threads = [threading.Thread(target=self._run, args=(own,), daemon=True,
                                          name=f"tornchat-writer-{n}" if n else "tornchat-writer")
                         for n, own in enumerate(self._queues)]
        self._stopped = False
        self._committed: CommittedHook | None = None

    def on_committed(self, hook: CommittedHook) -> None:
        """Run ``hook`` on the writer thread with every batch's stored messages
        (set before :meth:`start`). It must not block for long: the next batch
        waits for it."""
        self._committed = hook

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, message: NewMessage) -> asyncio.Future[StoredMessage]:
        """Queue a message; the future settles (on this loop) once it is
        committed, or with the error that kept it from being stored."""
        if self._stopped:
            raise Unavailable("Server is shutting down; nothing was stored")
        future: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
        queues = self._queues
        own = queues[hash(message.conversation_id) % len(queues)] if len(queues) > 1 else queues[0]
        own.put((message, future, time.monotonic() if self._stages else 0.0))
        return future

    async def store(self, message: NewMessage) -> StoredMessage:
        """Queue a message and wait until it is committed (or failed)."""
        return await self.submit(message)

    def stop(self, timeout: float = 5.0) -> None:
        """Commit what is queued, then end the thread (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + timeout
        for own in self._queues:
            own.put(_STOP)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def alive(self) -> bool:
        """False once a thread has ended; /health reports storage down then."""
        return all(thread.is_alive() for thread in self._threads)

    def _run(self, own: queue.SimpleQueue[object]) -> None:
        try:
            self._loop(own)
        except BaseException:  # never die silently: /health turns red via ``alive``
            log.critical("the group-commit writer thread died", exc_info=True)
            raise
        finally:
            self._store.release_connection()

    def _loop(self, own: queue.SimpleQueue[object]) -> None:
        stopping = False
        while not stopping:
            item = own.get()
            if item is _STOP:
                break
            batch: list[_Item] = [item]  # type: ignore[list-item]
            while len(batch) < self._max_batch:
                try:
                    more = own.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stopping = True
                    break
                batch.append(more)  # type: ignore[arg-type]
            self._commit(batch)

    def _commit(self, batch: list[_Item]) -> None:
        started = time.monotonic()
        results = self._store_all([message for message, _, _ in batch])
        if len(batch) > 1 and any(not isinstance(r, ChatError | StoredMessage) for r in results):
            # One bad message must not fail its neighbours: store them one by one.
            results = [self._store_all([message])[0] for message, _, _ in batch]
        committed = time.monotonic()
        if self._stages is not None:
            for _, _, submitted in batch:
                self._stages.observe("queue", started - submitted)
                self._stages.observe("database", committed - started)
        by_loop: defaultdict[asyncio.AbstractEventLoop,
                             list[tuple[asyncio.Future[StoredMessage], _Outcome]]]
        by_loop = defaultdict(list)
        for (_, future, _), result in zip(batch, results, strict=True):
            by_loop[future.get_loop()].append((future, result))
        for loop, settled in by_loop.items():
            # RuntimeError: that loop is closed, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, settled, self._stages, committed)
        if self._committed is not None:
            stored = [result for result in results if isinstance(result, StoredMessage)]
            if stored:
                try:
                    self._committed(stored)
                except Exception:  # the messages are stored: never fail them for this
                    log.exception("the committed-batch hook failed",
                                  extra={"batch": len(stored)})

    def _store_all(self, messages: list[NewMessage]) -> list[_Outcome]:
        try:
            results: list[_Outcome] = list(
                self._store.store_batch(messages))
        except ChatError as exc:
            return [exc] * len(messages)
        except Exception as exc:  # a bug fails these requests, never the thread
            log.exception("storing a batch failed", extra={"batch": len(messages)})
            return [exc] * len(messages)
        if len(results) != len(messages):
            error = RuntimeError("store returned a result count unlike the batch")
            return [error] * len(messages)
        return results


def _settle(settled: list[tuple[asyncio.Future[StoredMessage], _Outcome]],
            stages: StageTimes | None = None, committed: float = 0.0) -> None:
    """On the waiters' loop: resolve each future still waited for."""
    if stages is not None:
        handoff = time.monotonic() - committed
        for _ in settled:
            stages.observe("handoff", handoff)
    for future, result in settled:
        if future.done():  # cancelled: its client went away
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
