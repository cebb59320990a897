"""A private Redis Cluster of three masters from the local ``redis-server``,
on free ports: ``--cluster-enabled yes`` per node, then ``redis-cli --cluster
create``. For the cluster suite and the cluster benchmark; a node can be
killed and restarted (it keeps its ``nodes.conf``, so it rejoins as itself)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from harness.ports import free_port
from harness.redis_server import RedisServer, redis_server_installed
from harness.services import unavailable


@dataclass
class RedisCluster:
    """Three master nodes, no replicas, covering all 16,384 slots."""

    workdir: str
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        """tornchat's cluster URL: any one node's address."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/"

    def start(self, masters: int = 3) -> RedisCluster:
        for _ in range(masters):
            # two free_port() calls in a row may return the same port (neither
            # is bound yet): the node's own port and its bus port must differ
            port, bus_port = free_port(), free_port()
            while bus_port == port:
                bus_port = free_port()
            node_dir = os.path.join(self.workdir, f"node-{port}")
            os.makedirs(node_dir, exist_ok=True)
            self.nodes.append(RedisServer(port, node_dir, options=(
                # its own bus port: the default (port + 10000) may be taken or past 65535
                "--cluster-enabled", "yes", "--cluster-port", str(bus_port),
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000",
                # a node that lost a shard keeps serving the slots it has
                "--cluster-require-full-coverage", "no")).start())
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(["redis-cli", "--cluster", "create", *addresses,
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        self.wait_ok()
        return self

    def cli(self, node: RedisServer, *args: str) -> str:
        done = subprocess.run(["redis-cli", "-p", str(node.port), *args],
                              capture_output=True, text=True, timeout=10)
        return done.stdout

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every running node says ``cluster_state:ok``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [node for node in self.nodes if node.proc and node.proc.poll() is None]
            if all("cluster_state:ok" in self.cli(node, "cluster", "info") for node in running):
                return
            time.sleep(0.1)
        raise TimeoutError("the Redis Cluster did not reach cluster_state:ok")

    def node_of(self, key: str) -> RedisServer:
        """The master that owns ``key``'s hash slot."""
        slot = int(self.cli(self.nodes[0], "cluster", "keyslot", key).strip())
        return self._owner(slot)

    def _owner(self, slot: int) -> RedisServer:
        for line in self.cli(self.nodes[0], "cluster", "nodes").splitlines():
            parts = line.split()  # id addr@bus flags master ping pong epoch state slots...
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            for spec in parts[8:]:
                low, _, high = spec.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no node owns slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


@contextlib.contextmanager
def private_redis_cluster(workdir: str, masters: int = 3) -> Iterator[RedisCluster]:
    """A running 3-master cluster for one test (module); fails in CI, skips elsewhere,
    without ``redis-server`` and ``redis-cli``."""
    if not redis_server_installed() or shutil.which("redis-cli") is None:
        unavailable("redis-server and redis-cli are needed for a Redis Cluster")
    cluster = RedisCluster(workdir)
    try:
        yield cluster.start(masters)
    finally:
        cluster.stop()
