"""Open-loop load from several processes: the benchmark's load generator.

:class:`ClientPool` (in the benchmark's process) drives N worker processes
over pipes. Each worker runs one asyncio loop holding whole groups (every
member of a group lives in one worker, so a message's sender and receivers
share a clock) and idle connections.

Open loop: message *k* of a step is due at ``start + k / rate`` and carries
that *intended* time in its stamp, whatever happens. If the server (or the
generator) stalls, the backlog is sent as soon as possible and the wait is
counted as latency instead of silently lowering the rate (no coordinated
omission). ``lag_ms`` reports how far the sender fell behind its schedule,
which tells a saturated generator from a slow server.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import resource
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from loadtest.links import LINKS, Link, Recorder
from loadtest.stamp import stamp
from tornchat.auth import mint_token

CONNECT_CONCURRENCY = 100
TOKEN_TTL = 6 * 3600


def raise_fd_limit(wanted: int = 200_000) -> int:
    """Lift RLIMIT_NOFILE as far as allowed (root may raise the hard limit too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in ((wanted, max(hard, wanted)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, target)
            return target[0]
        except (ValueError, OSError):
            continue
    return soft


#: where each kind of server under test takes WebSocket connections
WS_PATHS = {"tornchat": "/api/v1/chat", "socketio": "/socket.io/?EIO=4&transport=websocket",
            "trivial": "/"}


@dataclass
class Target:
    """What a worker connects to: protocol kind, URL and the JWT secret."""

    kind: str
    url: str
    secret: str

    @classmethod
    def local(cls, kind: str, port: int, secret: str) -> Target:
        """A server of ``kind`` on this machine's ``port``."""
        return cls(kind, f"ws://127.0.0.1:{port}{WS_PATHS[kind]}", secret)


@dataclass
class Group:
    key: str
    members: list[str]
    links: list[Link] = field(default_factory=list)
    conversation_id: str = ""


class Worker:
    """One load-generator process: commands in, results out, over a pipe."""

    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe
        self.recorder = Recorder()
        self.groups: list[Group] = []
        self.idle: list[Link] = []
        self.target: Target | None = None

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                command, args = await loop.run_in_executor(None, self.pipe.recv)
                if command == "stop":
                    break
                try:
                    result = await getattr(self, f"cmd_{command}")(*args)
                except Exception as exc:
                    result = {"error": f"{type(exc).__name__}: {exc}"}
                self.pipe.send(result)
        finally:
            await self._close_all()
            self.pipe.send({"stopped": True})

    async def _open(self, user_id: str) -> Link:
        assert self.target is not None
        link = LINKS[self.target.kind](self.target.url, self.recorder)
        await link.open(user_id, mint_token(self.target.secret, user_id, TOKEN_TTL))
        return link

    async def _open_many(self, user_ids: list[str]) -> tuple[list[Link], list[str]]:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        errors: list[str] = []

        async def one(user_id: str) -> Link | None:
            async with gate:
                try:
                    return await self._open(user_id)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    return None

        links = await asyncio.gather(*(one(user) for user in user_ids))
        return [link for link in links if link is not None], errors

    async def cmd_groups(self, target: Target, groups: list[list[str]]) -> dict[str, Any]:
        """Connect every member of ``groups`` and create each group conversation."""
        self.target = target
        started = time.perf_counter()
        for index, members in enumerate(groups):
            self.groups.append(Group(key=f"g{index}-{members[0]}", members=members))
        users = [member for group in self.groups for member in group.members]
        links, errors = await self._open_many(users)
        if errors:
            return {"connected": len(links), "failed": len(errors), "error": errors[0]}
        by_user = dict(zip(users, links, strict=True))
        for group in self.groups:
            group.links = [by_user[member] for member in group.members]

        async def setup(group: Group) -> None:
            leader, others = group.links[0], group.members[1:]
            group.conversation_id = await leader.join(group.key, others)
            if target.kind == "socketio":
                await asyncio.gather(*(link.join(group.key, others) for link in group.links[1:]))

        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def gated(group: Group) -> None:
            async with gate:
                await setup(group)

        await asyncio.gather(*(gated(group) for group in self.groups))
        missing = [group.key for group in self.groups if not group.conversation_id]
        return {"connected": len(links), "failed": 0, "seconds": time.perf_counter() - started,
                "error": f"conversation setup failed for {missing[:3]}" if missing else None}

    async def cmd_idle(self, target: Target, user_ids: list[str]) -> dict[str, Any]:
        """Open and authenticate idle connections (kept until ``close_idle``)."""
        self.target = target
        started = time.perf_counter()
        links, errors = await self._open_many(user_ids)
        self.idle.extend(links)
        return {"connected": len(links), "failed": len(errors),
                "error": errors[0] if errors else None,
                "seconds": time.perf_counter() - started}

    async def cmd_close_idle(self) -> dict[str, Any]:
        idle, self.idle = self.idle, []
        await asyncio.gather(*(link.close() for link in idle), return_exceptions=True)
        return {"closed": len(idle)}

    async def cmd_reset(self) -> dict[str, Any]:
        """Close every connection, before moving to the next system under test."""
        await self._close_all()
        return {}

    async def cmd_run(self, rate: float, duration: float, warmup: float,
                      drain: float) -> dict[str, Any]:
        """Send at ``rate`` msg/s for warmup + duration seconds; measure the last part."""
        groups = self.groups
        cpu_before = time.process_time()
        start = round(time.time() + 0.05, 6)
        # stamps carry microseconds: round the bounds alike so edge messages agree
        window = (round(start + warmup, 6), round(start + warmup + duration, 6))
        self.recorder.reset(window)
        interval = 1.0 / rate
        total = int((warmup + duration) * rate)
        sent = expected = 0
        lag = 0.0
        k = 0
        while k < total:
            delay = start + k * interval - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.time()
            lag = max(lag, now - (start + k * interval))
            while k < total and start + k * interval <= now:
                intended = round(start + k * interval, 6)
                group = groups[k % len(groups)]
                link = group.links[(k // len(groups)) % len(group.links)]
                link.send(group.conversation_id, stamp(intended))
                if intended >= window[0]:
                    sent += 1
                    expected += len(group.links) - 1
                k += 1
        send_done = time.time()
        recorder = self.recorder
        deadline = send_done + drain
        while time.time() < deadline and (recorder.delivered < expected
                                          or recorder.acked < sent):
            await asyncio.sleep(0.02)
        return {"sent": sent, "expected": expected, "delivered": recorder.delivered,
                "acked": recorder.acked, "errors": dict(recorder.errors),
                "lag_ms": lag * 1000.0, "cpu_seconds": time.process_time() - cpu_before,
                "latencies": recorder.latencies.tobytes(),
                "ack_latencies": recorder.ack_latencies.tobytes()}

    async def _close_all(self) -> None:
        links = [*self.idle, *(link for group in self.groups for link in group.links)]
        self.idle, self.groups = [], []
        for batch in range(0, len(links), 500):
            await asyncio.gather(*(link.close() for link in links[batch:batch + 500]),
                                 return_exceptions=True)


def _worker_main(pipe: Connection) -> None:
    raise_fd_limit()
    try:  # uvloop halves the client's cost per delivery where it is installed
        import uvloop
    except ImportError:
        asyncio.run(Worker(pipe).serve())
    else:
        uvloop.run(Worker(pipe).serve())


@dataclass
class StepResult:
    """One fixed-rate step, merged over every worker process."""

    rate: float
    duration: float
    sent: int
    expected: int
    delivered: int
    acked: int
    errors: dict[str, int]
    lag_ms: float
    cpu_seconds: float
    latencies: array[float]
    ack_latencies: array[float]

    @property
    def delivered_per_second(self) -> float:
        return self.delivered / self.duration

    @property
    def loss(self) -> float:
        return 1.0 - self.delivered / self.expected if self.expected else 0.0


class ClientPool:
    """N load-generator processes, driven from the benchmark's process."""

    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._procs: list[Any] = []
        for _ in range(processes):
            ours, theirs = context.Pipe()
            proc = context.Process(target=_worker_main, args=(theirs,), daemon=True)
            proc.start()
            self._pipes.append(ours)
            self._procs.append(proc)

    @property
    def size(self) -> int:
        return len(self._pipes)

    def call(self, command: str, per_worker_args: list[tuple[Any, ...]],
             timeout: float = 600.0) -> list[dict[str, Any]]:
        for pipe, args in zip(self._pipes, per_worker_args, strict=True):
            pipe.send((command, args))
        results = []
        for pipe in self._pipes:
            if not pipe.poll(timeout):
                raise TimeoutError(f"load generator did not answer {command!r} in {timeout}s")
            results.append(pipe.recv())
        errors = [r["error"] for r in results if r.get("error")]
        if errors:
            raise RuntimeError(f"load generator {command!r} failed: {errors[0]}")
        return results

    def groups(self, target: Target, groups: list[list[str]]) -> dict[str, Any]:
        """Spread whole groups round-robin over the workers and connect them."""
        shares = [groups[i::self.size] for i in range(self.size)]
        results = self.call("groups", [(target, share) for share in shares])
        return {"connected": sum(r["connected"] for r in results),
                "seconds": max(r["seconds"] for r in results)}

    def idle(self, target: Target, user_ids: list[str]) -> dict[str, Any]:
        shares = [user_ids[i::self.size] for i in range(self.size)]
        results = self.call("idle", [(target, share) for share in shares])
        return {"connected": sum(r["connected"] for r in results),
                "failed": sum(r["failed"] for r in results),
                "seconds": max(r["seconds"] for r in results),
                "first_error": next((r["error"] for r in results if r["error"]), None)}

    def close_idle(self) -> None:
        self.call("close_idle", [()] * self.size)

    def reset(self) -> None:
        self.call("reset", [()] * self.size)

    def run(self, rate: float, duration: float, warmup: float, drain: float = 2.0) -> StepResult:
        share = rate / self.size
        results = self.call("run", [(share, duration, warmup, drain)] * self.size,
                            timeout=duration + warmup + drain + 120)
        latencies: array[float] = array("d")
        ack_latencies: array[float] = array("d")
        errors: dict[str, int] = {}
        for result in results:
            latencies.frombytes(result["latencies"])
            ack_latencies.frombytes(result["ack_latencies"])
            for code, count in result["errors"].items():
                errors[code] = errors.get(code, 0) + count
        return StepResult(rate=rate, duration=duration,
                          sent=sum(r["sent"] for r in results),
                          expected=sum(r["expected"] for r in results),
                          delivered=sum(r["delivered"] for r in results),
                          acked=sum(r["acked"] for r in results), errors=errors,
                          lag_ms=max(r["lag_ms"] for r in results),
                          cpu_seconds=sum(r["cpu_seconds"] for r in results),
                          latencies=latencies, ack_latencies=ack_latencies)

    def close(self) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop", ()))
        for proc in self._procs:
            proc.join(15)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        self._pipes, self._procs = [], []
