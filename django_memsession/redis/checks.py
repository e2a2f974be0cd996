"""System checks for the Redis engine: its settings (at startup), and Redis itself (``check
--deploy``). Only when ``SESSION_ENGINE`` is ``"django_memsession.redis"``; nothing here imports
redis unless the deploy check runs for that engine.
"""

from __future__ import annotations

from typing import Any

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
    """Under Sentinel, asks the sentinels for the primary and its replicas; pings Redis (which
    refuses a node of a Redis Cluster, see ``client.py``) and reads its eviction policy
    (``check --deploy`` only)."""
    if not _engine_in_use() or conf.problems():
        return []
    config = conf.store_settings()
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
    return [Warning(message.format(policy=policy), hint=POLICY_HINT, id=check_id)]
