"""Group commit: one thread that stores queued messages in batches.

Every message costs one transaction commit (an fsync on PostgreSQL) when
written alone. The writer takes whatever has queued while the previous batch
was committing and stores it in one transaction (``ChatStore.store_batch``),
so an idle server commits each message at once and a busy one amortises the
commit over up to ``max_batch`` messages, with no timer in between.

Thread rule: :meth:`store` is awaited on the IOLoop; results come back
through ``asyncio.wrap_future`` (``call_soon_threadsafe``). The thread owns
its database connection.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from concurrent.futures import Future

from tornchat.errors import ChatError, Unavailable
from tornchat.records import StoredMessage
from tornchat.store import ChatStore, NewMessage

log = logging.getLogger("tornchat.writer")

_Item = tuple[NewMessage, "Future[StoredMessage]"]
_STOP = object()


class GroupCommitWriter:
    def __init__(self, store: ChatStore, max_batch: int = 256) -> None:
        self._store = store
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="tornchat-writer", daemon=True)
        self._stopped = False

    def start(self) -> None:
        self._thread.start()

    async def store(self, message: NewMessage) -> StoredMessage:
        """Queue a message and wait until it is committed (or failed)."""
        if self._stopped:
            raise Unavailable("Server is shutting down; nothing was stored")
        future: Future[StoredMessage] = Future()
        self._queue.put((message, future))
        return await asyncio.wrap_future(future)

    def stop(self, timeout: float = 5.0) -> None:
        """Commit what is queued, then end the thread (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """False once the thread has ended; /health reports storage down then."""
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # never die silently: /health turns red via ``alive``
            log.critical("the group-commit writer thread died", exc_info=True)
            raise
        finally:
            self._store.release_connection()

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            batch: list[_Item] = [item]  # type: ignore[list-item]
            while len(batch) < self._max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stopping = True
                    break
                batch.append(more)  # type: ignore[arg-type]
            self._commit(batch)

    def _commit(self, batch: list[_Item]) -> None:
        live = [(message, future) for message, future in batch
                if future.set_running_or_notify_cancel()]  # the waiter may be gone
        if not live:
            return
        results = self._store_all([message for message, _ in live])
        if len(live) > 1 and any(not isinstance(r, ChatError | StoredMessage) for r in results):
            # One bad message must not fail its neighbours: store them one by one.
            results = [self._store_all([message])[0] for message, _ in live]
        for (_, future), result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _store_all(self, messages: list[NewMessage]) -> list[StoredMessage | BaseException]:
        try:
            results: list[StoredMessage | BaseException] = list(
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
