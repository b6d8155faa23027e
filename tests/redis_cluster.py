"""A real Redis Cluster for tests: three masters on loopback, formed by hand, then torn down.

Each node is a `redis-server --cluster-enabled yes` with its client port and its cluster bus
port both picked free (`--cluster-port`), so nothing assumes port + 10000 is free. The slots
are split in three with CLUSTER ADDSLOTSRANGE, the nodes introduced with CLUSTER MEET, and
the cluster is ready once every node reports `cluster_state:ok`.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.crc import key_slot

SLOTS = 16384
READY_WITHIN = 30.0  # seconds for processes to start and the cluster to agree


@dataclass
class ClusterNode:
    """One master of the cluster: its client port, bus port and process."""

    port: int
    bus_port: int
    process: subprocess.Popen[bytes]
    slots: set[int] = field(default_factory=set)  # the slots it serves, once formed

    def client(self) -> redis.Redis:
        """A plain client for this node alone (no redirections followed)."""
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=5)

    def pause(self) -> None:
        """Stop the process answering (SIGSTOP): its connections stay open, replies never come."""
        self.process.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """End the process at once (SIGKILL): connections to it are refused from now on."""
        self.process.kill()
        self.process.wait(timeout=10)

    def resume(self) -> None:
        """Let a paused node answer again."""
        self.process.send_signal(signal.SIGCONT)


@dataclass
class RedisClusterServers:
    """Three masters owning a third of the slots each."""

    nodes: list[ClusterNode]

    @property
    def url(self) -> str:
        """Any one node's URL: the client discovers the rest."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def node_for(self, key: str) -> ClusterNode:
        """The master serving `key`'s slot (its hash tag's, if it has one)."""
        slot = key_slot(key.encode())
        return next(node for node in self.nodes if slot in node.slots)

    def move(self, key: str, to: ClusterNode) -> None:
        """Hand `key`'s (empty) slot to another master, telling every node: clients that
        knew the old owner get MOVED until they learn the new one."""
        slot = key_slot(key.encode())
        with to.client() as client:
            target = client.execute_command("CLUSTER MYID").decode()
        for node in [to, *(n for n in self.nodes if n is not to)]:
            with node.client() as client:
                client.execute_command("CLUSTER SETSLOT", slot, "NODE", target)
            node.slots.discard(slot)
        to.slots.add(slot)

    def wait_for_state(self, state: str, nodes: list[ClusterNode]) -> None:
        """Return once every node of `nodes` reports `cluster_state:<state>`."""
        for node in nodes:
            _until(_in_state(node, state), f"node {node.port} did not reach {state}")

    def flush(self) -> None:
        """Empty every node."""
        for node in self.nodes:
            with node.client() as client:
                client.flushall()

    def keys_by_node(self) -> list[list[bytes]]:
        """The keys each node holds, node by node."""
        found = []
        for node in self.nodes:
            with node.client() as client:
                found.append(sorted(client.keys("*")))
        return found

    def stop(self) -> None:
        """Terminate every node (resuming any paused one first) and wait for them."""
        for node in self.nodes:
            node.resume()
            node.process.terminate()
        for node in self.nodes:
            node.process.wait(timeout=10)


def _launch(binary: str, port: int, bus_port: int, workdir: Path, timeout_ms: int) -> ClusterNode:
    args = [
        binary,
        "--port", str(port),
        "--cluster-port", str(bus_port),
        "--bind", "127.0.0.1",
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(workdir / f"nodes-{port}.conf"),
        "--cluster-node-timeout", str(timeout_ms),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
    ]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return ClusterNode(port, bus_port, process)


def _until(ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"redis cluster: {what} within {READY_WITHIN}s")


def _answers(node: ClusterNode) -> Callable[[], bool]:
    def ready() -> bool:
        with node.client() as client:
            return bool(client.ping())

    return ready


def _in_state(node: ClusterNode, state: str) -> Callable[[], bool]:
    def ready() -> bool:
        with node.client() as client:
            return bool(client.cluster("INFO")["cluster_state"] == state)

    return ready


def _form(nodes: list[ClusterNode]) -> None:
    """Give each node its third of the slots and introduce them to the first."""
    share = SLOTS // len(nodes)
    for i, node in enumerate(nodes):
        end = SLOTS if i == len(nodes) - 1 else (i + 1) * share
        node.slots = set(range(i * share, end))
        with node.client() as client:
            client.execute_command("CLUSTER ADDSLOTSRANGE", i * share, end - 1)
    with nodes[0].client() as client:
        for node in nodes[1:]:
            client.execute_command("CLUSTER MEET", "127.0.0.1", node.port, node.bus_port)
    for node in nodes:
        _until(_in_state(node, "ok"), f"node {node.port} did not reach cluster_state:ok")


def start_cluster(
    workdir: Path, ports: list[int], masters: int = 3, node_timeout_ms: int = 5000
) -> RedisClusterServers:
    """Start `masters` nodes on `ports` (two per node: client, bus) and form the cluster.
    A node silent for `node_timeout_ms` is failed by the others (the cluster then refuses
    every command, having no replica to promote)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run scripts/test, which installs it")
    pairs = [(ports[2 * i], ports[2 * i + 1]) for i in range(masters)]
    nodes = [_launch(binary, port, bus, workdir, node_timeout_ms) for port, bus in pairs]
    servers = RedisClusterServers(nodes)
    try:
        for node in nodes:
            _until(_answers(node), f"node {node.port} did not start")
        _form(nodes)
    except BaseException:
        servers.stop()
        raise
    return servers
