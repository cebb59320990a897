"""The heartbeat: ping every authenticated session, drop those that stopped
answering, and keep the live sessions' connection slots from expiring.

A beat goes a slice at a time, yielding to the loop in between: with 10,000
connections a single pass would hold every message up for as long as it
runs. Each ping is a prebuilt frame written straight to the socket
(:data:`tornchat.ws.framewriter.PING_FRAME`); Tornado's ``ping()`` costs a
Future and a frame build per connection. IOLoop thread only.
"""

from __future__ import annotations

import asyncio
import logging

from tornado.ioloop import PeriodicCallback

from tornchat.fanout.slots import ConnectionSlots
from tornchat.ws.sessions import Session, Sessions

log = logging.getLogger(__name__)

_SLICE = 250  # sessions pinged per loop turn


class Heartbeat:
    def __init__(self, sessions: Sessions, slots: ConnectionSlots, interval: float) -> None:
        self._sessions = sessions
        self._slots = slots
        self._timer = PeriodicCallback(self.beat, interval * 1000)

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    async def restore_slots(self) -> None:
        """Write every authenticated session's slot again now, not at the next
        beat: after Redis came back (perhaps restarted empty) the routed bus
        finds this worker's users only through these entries."""
        await self._refresh(list(self._sessions))

    async def beat(self) -> None:
        """Ping every session; terminate those that missed the last pong."""
        sessions = self._sessions
        sessions.notice_clock_step()
        pinged: list[Session] = []
        snapshot = list(sessions)
        for start in range(0, len(snapshot), _SLICE):
            if start:
                await asyncio.sleep(0)
            for session in snapshot[start:start + _SLICE]:
                if session.user_id is None or session not in sessions:
                    continue
                if session.awaiting_pong:
                    log.info("heartbeat missed; terminating", extra={
                        "connectionId": session.connection_id, "userId": session.user_id})
                    session.terminate()
                    continue
                session.awaiting_pong = True
                session.send_ping()
                pinged.append(session)
        await self._refresh(pinged)

    async def _refresh(self, candidates: list[Session]) -> None:
        """Re-score the slots of those still open and authenticated: a slot
        refreshed after its connection closed (during a later slice of a beat)
        would count against the user until it expires."""
        sessions = self._sessions
        await self._slots.refresh([(session.user_id, session.connection_id)
                                   for session in candidates
                                   if session in sessions and session.user_id])
