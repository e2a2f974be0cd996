"""System checks for the Redis engine: its settings (at startup), and Redis itself (``check
--deploy``). Only when ``SESSION_ENGINE`` is ``"django_memsession.redis"``; nothing here imports
redis unless the deploy check runs for that engine.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core.checks import CheckMessage, Error, Info, Warning

from .. import conf as root_conf
from .. import engines
from ..checks import errors
from . import conf


def _engine_in_use() -> bool:
    return engines.configured() == "redis"


def check_redis_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if not _engine_in_use():
        return []
    found = errors(conf.problems())
    if root_conf.conf.MAX_SESSIONS is not None:
        # Honouring a count would take a counter beside every write and a choice of what to
        # evict, which Redis makes itself (maxmemory-policy): not cheaply, so not at all.
        found.append(
            Warning(
                "MEMSESSION_MAX_SESSIONS has no effect on the Redis engine: Redis decides what "
                "to evict, by memory, not by count.",
                hint="Remove MEMSESSION_MAX_SESSIONS and bound Redis's memory instead: "
                "maxmemory (e.g. CONFIG SET maxmemory 1gb, and in redis.conf) with "
                "maxmemory-policy volatile-ttl, which evicts new anonymous sessions first.",
                id="memsession.W105",
                obj="settings",
            )
        )
    return found


POLICY_WARNINGS = {
    "noeviction": (
        "memsession.W101",
        "Redis runs maxmemory-policy noeviction: once it is full it refuses every write, so "
        "new visitors get no session and users cannot log in (a 503) until keys expire.",
    ),
    "allkeys": (
        "memsession.W102",
        "Redis runs maxmemory-policy {policy}: when full it evicts logged-in users as readily "
        "as one-shot anonymous sessions, and can evict the tombstone that stops a concurrent "
        "request from undoing a logout.",
    ),
    "volatile": (
        "memsession.W103",
        "Redis runs maxmemory-policy {policy}: when full it evicts sessions without regard to "
        "their TTL, so a flood of new anonymous sessions can evict logged-in users.",
    ),
}
POLICY_HINT = (
    "Set maxmemory-policy volatile-ttl (CONFIG SET maxmemory-policy volatile-ttl, and in "
    "redis.conf): every key this engine writes has a TTL, and new anonymous sessions the "
    "shortest, so they are evicted first."
)


def check_redis_deployment(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Under Sentinel, asks the sentinels for the primary and its replicas; on a Redis Cluster
    (``MEMSESSION_REDIS_CLUSTER``), the URL's node for the cluster's state, primaries and
    replicas, and each primary for its eviction policy; else pings Redis (which refuses a node
    of a Redis Cluster, see ``client.py``) and reads its eviction policy (``check --deploy``
    only)."""
    if not _engine_in_use() or conf.problems():
        return []
    config = conf.store_settings()
    if config.cluster:
        return _cluster_findings(config)
    found: list[CheckMessage] = []
    if config.sentinels is not None:
        found = _sentinel_findings(config)
        if any(isinstance(message, Error) for message in found):
            return found
    return found + _server_findings(config)


def _server(address: tuple[Any, Any]) -> str:
    host, port = address
    host = host.decode() if isinstance(host, bytes) else host
    return f"{host}:{port}"


def _sentinel_findings(config: conf.StoreSettings) -> list[CheckMessage]:
    """Ask the sentinels for the service's primary and its live replicas, and say what they
    answered."""
    import redis

    from .client import discover

    sentinels = ", ".join(_server(pair) for pair in config.sentinels or ())
    try:
        primary, replicas = discover(config)
    except redis.RedisError as exc:
        return [
            Error(
                f"The sentinels ({sentinels}) name no primary of the service "
                f"{config.service_name!r} that is up: {exc}.",
                hint="Check that the URL's host is the name in 'sentinel monitor <name> ...', "
                "that the sentinels run and this machine may reach them "
                "(MEMSESSION_REDIS_SENTINEL_OPTIONS: password, TLS): every request that uses "
                "the session will be a 503.",
                id="memsession.E115",
            )
        ]
    found: list[CheckMessage] = [
        Info(
            f"Sentinel: the service {config.service_name!r} has its primary at "
            f"{_server(primary)} and {len(replicas)} live replica(s)"
            + (f": {', '.join(_server(r) for r in replicas)}." if replicas else "."),
            id="memsession.I101",
        )
    ]
    if not replicas:
        found.append(
            Warning(
                f"The sentinels know no live replica of the service {config.service_name!r}: "
                "if its primary fails, there is nothing to fail over to.",
                hint="Run at least one replica (replicaof <primary> in its redis.conf); the "
                "sentinels find it through the primary.",
                id="memsession.W106",
            )
        )
    return found


def _server_findings(config: conf.StoreSettings) -> list[CheckMessage]:
    import redis

    from .client import ClusterNode
    from .exceptions import SessionBackendUnavailable
    from .store import RedisStore

    store = RedisStore(config)
    try:
        try:
            store.ping()
        except (SessionBackendUnavailable, redis.RedisError) as exc:
            if isinstance(exc.__cause__, ClusterNode) or isinstance(exc, ClusterNode):
                return [
                    Error(
                        f"Redis at {conf.redacted(config.url)} is a node of a Redis Cluster "
                        "(cluster_enabled:1), and MEMSESSION_REDIS_CLUSTER is not True: every "
                        "request that uses the session would be a 503.",
                        hint="Set MEMSESSION_REDIS_CLUSTER = True (MEMSESSION_REDIS_URL may "
                        "name any node of the cluster), or point MEMSESSION_REDIS_URL at a "
                        "standalone Redis server.",
                        id="memsession.E110",
                    )
                ]
            reason = (
                exc.reason if isinstance(exc, SessionBackendUnavailable) else type(exc).__name__
            )
            return [
                Error(
                    f"Redis at {conf.redacted(config.url)} does not answer: {reason}.",
                    hint="Check MEMSESSION_REDIS_URL, that Redis runs, and that this machine "
                    "may reach it: every request that uses the session will be a 503.",
                    id="memsession.E107",
                )
            ]
        try:
            policy = store.client.config_get("maxmemory-policy").get("maxmemory-policy")
        except redis.RedisError:
            policy = None
    finally:
        store.close()
    return _policy_findings(policy)


def _policy_findings(policy: str | None, where: str = "") -> list[CheckMessage]:
    """What an eviction policy means for sessions (``where``: which nodes run it, on a
    cluster)."""
    if not policy:
        return [
            Warning(
                "Could not tell Redis's maxmemory-policy: CONFIG GET is not allowed for this "
                "connection (managed Redis services often block it).",
                hint=f"Make sure it is volatile-ttl in your provider's settings. {POLICY_HINT}",
                id="memsession.W104",
            )
        ]
    if policy == "volatile-ttl":
        return []
    family = "noeviction" if policy == "noeviction" else policy.split("-", 1)[0]
    found = POLICY_WARNINGS.get(family)
    if found is None:
        return []
    check_id, message = found
    text = message.format(policy=policy)
    if where:
        text = text.replace("Redis runs", f"Redis ({where}) runs", 1)
    return [Warning(text, hint=POLICY_HINT, id=check_id)]


# -- a Redis Cluster --------------------------------------------------------------------------

SLOTS = 16384


def _cluster_findings(config: conf.StoreSettings) -> list[CheckMessage]:
    """Ask the URL's node what it knows of the cluster (``CLUSTER INFO``, ``CLUSTER NODES``),
    say what it answered, and read each primary's eviction policy."""
    import redis

    from .client import node_client

    parts = urlsplit(config.url)
    where = conf.redacted(config.url)
    client = node_client(config, parts.hostname or "", parts.port or 6379)
    try:
        try:
            enabled = client.info("cluster").get("cluster_enabled")
            info = client.execute_command("CLUSTER", "INFO") if enabled else b""
            nodes = client.execute_command("CLUSTER", "NODES") if enabled else b""
        except redis.RedisError as exc:
            return [
                Error(
                    f"Redis at {where} does not answer: {type(exc).__name__}: {exc}.",
                    hint="Check MEMSESSION_REDIS_URL (any node of the cluster), that the node "
                    "runs, and that this machine may reach it: every request that uses the "
                    "session will be a 503.",
                    id="memsession.E107",
                )
            ]
    finally:
        client.close()
    if not enabled:
        return [
            Error(
                f"MEMSESSION_REDIS_CLUSTER = True, and Redis at {where} is not a node of a Redis "
                "Cluster (cluster_enabled:0): the engine cannot use it.",
                hint="Point MEMSESSION_REDIS_URL at a node of the cluster, or set "
                "MEMSESSION_REDIS_CLUSTER = False for a standalone Redis server.",
                id="memsession.E118",
            )
        ]
    state = _fields(info)
    primaries, replicas = _cluster_nodes(nodes)
    covered = sum(len(slots) for slots in primaries.values())
    described = ", ".join(
        f"{address} ({len(slots)} slots, replicas: "
        + (", ".join(sorted(replicas.get(address, []))) or "none")
        + ")"
        for address, slots in sorted(primaries.items())
    )
    found: list[CheckMessage] = [
        Info(
            f"Redis Cluster, as {where} sees it: cluster_state:{state.get('cluster_state')}, "
            f"{len(primaries)} primaries with {covered} of {SLOTS} slots, "
            f"{sum(map(len, replicas.values()))} live replica(s): {described}.",
            id="memsession.I102",
        )
    ]
    uncovered = SLOTS - covered
    if state.get("cluster_state") != "ok" or uncovered:
        found.append(
            Error(
                f"The Redis Cluster is not ok, as {where} sees it: "
                f"cluster_state:{state.get('cluster_state')}, "
                f"{uncovered} of {SLOTS} slots with no live primary"
                f" (cluster_slots_fail:{state.get('cluster_slots_fail', '?')}).",
                hint="Every request for a session in a slot no live primary holds will be a "
                "503. Assign every slot (redis-cli --cluster fix), bring the failed primaries "
                "back or let their replicas take over (CLUSTER FAILOVER on a replica).",
                id="memsession.E117",
            )
        )
        return found
    alone = sorted(address for address in primaries if not replicas.get(address))
    if alone:
        found.append(
            Warning(
                f"The Redis Cluster's primaries {', '.join(alone)} have no live replica: if "
                "one fails, its slots have nothing to fail over to, and every request for a "
                "session in them is a 503 until it is back.",
                hint="Give each primary a replica (CLUSTER REPLICATE <primary's id> on a new "
                "node, or redis-cli --cluster add-node --cluster-slave).",
                id="memsession.W107",
            )
        )
    return found + _cluster_policy_findings(config, sorted(primaries))


def _fields(info: Any) -> dict[str, str]:
    text = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _cluster_nodes(text: Any) -> tuple[dict[str, set[int]], dict[str, list[str]]]:
    """``CLUSTER NODES``: each live primary's address and slots; each live primary's live
    replicas' addresses."""
    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    lines = [line.split() for line in text.splitlines() if line.strip()]
    failed = {"fail", "fail?", "handshake", "noaddr"}
    address_of = {fields[0]: fields[1].split("@", 1)[0] for fields in lines}
    primaries: dict[str, set[int]] = {}
    replicas: dict[str, list[str]] = {}
    for fields in lines:
        flags = set(fields[2].split(","))
        if flags & failed or fields[7] != "connected":
            continue
        if "master" in flags:
            slots: set[int] = set()
            for part in fields[8:]:
                if not part.startswith("["):  # a slot being migrated or imported
                    first, _, last = part.partition("-")
                    slots.update(range(int(first), int(last or first) + 1))
            if slots:
                primaries[address_of[fields[0]]] = slots
        elif fields[3] in address_of:
            replicas.setdefault(address_of[fields[3]], []).append(address_of[fields[0]])
    return primaries, replicas


def _cluster_policy_findings(
    config: conf.StoreSettings, primaries: list[str]
) -> list[CheckMessage]:
    """Each primary's ``maxmemory-policy``: what a policy means, once per policy, naming the
    primaries that run it."""
    import redis

    from .client import node_client

    policies: dict[str | None, list[str]] = {}
    for address in primaries:
        host, _, port = address.rpartition(":")
        client = node_client(config, host, int(port))
        try:
            policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
        except redis.RedisError:
            policy = None
        finally:
            client.close()
        policies.setdefault(policy, []).append(address)
    found: list[CheckMessage] = []
    for policy, addresses in policies.items():
        found += _policy_findings(policy, ", ".join(addresses))
    return found
