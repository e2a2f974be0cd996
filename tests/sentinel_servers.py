"""Redis Sentinel for the tests: one primary, one replica and three sentinels on loopback, each
sentinel in its own temp dir (it rewrites its conf file), all stopped afterwards. The servers
are ``redis_server.RedisServer``s; the replica is made one with ``REPLICAOF``.

``Forwarder``: a TCP port that forwards each new connection to a target that can be switched,
what a managed service's one DNS name does across a failover.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import tempfile
import threading
from typing import Any

import redis
from redis_server import RedisServer, _free_port, wait_for

SERVICE = "mymaster"
# Short enough for a kill to be failed over in a few seconds; long enough for a busy test
# machine not to fail over by itself.
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 5000


class Sentinel:
    """One ``redis-server --sentinel`` process."""

    def __init__(self, executable: str, primary_port: int) -> None:
        self.executable = executable
        self.port = _free_port()
        self.directory = tempfile.mkdtemp(prefix="memsession-sentinel-")
        self.conf = os.path.join(self.directory, "sentinel.conf")
        with open(self.conf, "w") as file:
            file.write(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.executable, self.conf, "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.directory,
        )
        wait_for(lambda: self.client().ping(), 15, f"sentinel on port {self.port}")

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)


class SentinelSet:
    """A primary, a replica and three sentinels monitoring them as ``mymaster``."""

    def __init__(self, executable: str) -> None:
        self.servers = [RedisServer(executable), RedisServer(executable)]
        self.sentinels: list[Sentinel] = []

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", sentinel.port) for sentinel in self.sentinels]

    def start(self) -> None:
        primary, replica = self.servers
        for server in self.servers:
            server.start()
        client = replica.client()
        try:
            client.execute_command("REPLICAOF", "127.0.0.1", str(primary.port))
        finally:
            client.close()
        self.wait_replicated()
        self.sentinels = [Sentinel(primary.executable, primary.port) for _ in range(3)]
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_settled()

    def ask(self, *command: Any) -> Any:
        client = self.sentinels[0].client()
        try:
            return client.execute_command(*command)
        finally:
            client.close()

    def primary_port(self, sentinel: Sentinel | None = None) -> int:
        """The primary's port as a sentinel names it now."""
        client = (sentinel or self.sentinels[0]).client()
        try:
            _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        finally:
            client.close()
        return int(port)

    def server(self, port: int) -> RedisServer:
        return next(server for server in self.servers if server.port == port)

    @property
    def primary(self) -> RedisServer:
        return self.server(self.primary_port())

    @property
    def replica(self) -> RedisServer:
        port = self.primary_port()
        return next(server for server in self.servers if server.port != port)

    def role(self, server: RedisServer) -> str:
        client = server.client()
        try:
            return client.info("replication")["role"]
        finally:
            client.close()

    def wait_replicated(self, timeout: float = 15) -> None:
        """Until the replica is in sync with the primary (its link up, nothing left to copy)."""

        def synced() -> bool:
            primary = self.servers[0] if not self.sentinels else self.primary
            client = primary.client()
            try:
                info = client.info("replication")
                if info.get("connected_slaves", 0) < 1:
                    return False
                return client.execute_command("WAIT", 1, 1000) >= 1 and (
                    info["slave0"]["state"] == "online"
                )
            finally:
                client.close()

        wait_for(synced, timeout, "the replica to be in sync")

    def wait_settled(self, timeout: float = 30) -> None:
        """Until every sentinel names the same primary, which says it is one, and knows the
        replica and the two other sentinels."""

        def settled() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                client = sentinel.client()
                try:
                    master = client.sentinel_master(SERVICE)
                    replicas = [
                        r
                        for r in client.sentinel_slaves(SERVICE)
                        if not (r["is_sdown"] or r["is_odown"])
                        and r.get("master-link-status") == "ok"
                    ]
                finally:
                    client.close()
                if master["num-other-sentinels"] < 2 or not replicas:
                    return False
                if master["is_sdown"] or master["is_odown"] or "failover" in master["flags"]:
                    return False
                ports.add(int(master["port"]))
            return len(ports) == 1 and self.role(self.server(ports.pop())) == "master"

        wait_for(settled, timeout, "the sentinels to agree on a primary with a replica")

    def failover(self) -> tuple[int, int]:
        """A planned failover (``SENTINEL FAILOVER``, nothing killed): the old and the new
        primary's ports, once the first sentinel names the new one."""
        old = self.primary_port()
        self.wait_replicated()
        self.ask("SENTINEL", "FAILOVER", SERVICE)
        new = wait_for(
            lambda: (port := self.primary_port()) != old and port, 30, "the sentinels to switch"
        )
        return old, new

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers:
            server.stop()


class Forwarder:
    """A loopback port whose new connections go to ``target`` (a port), switchable."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pipe(one: socket.socket, other: socket.socket) -> None:
        peers = {one: other, other: one}
        try:
            while True:
                readable, _, _ = select.select(list(peers), [], [], 1.0)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            one.close()
            other.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()
