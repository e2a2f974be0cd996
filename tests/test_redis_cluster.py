"""``MEMSESSION_REDIS_CLUSTER = True``: its system check (E116), what it does to the option
names (E109) and the store's settings, the clients ``redis/client.py`` builds for it, and the
deploy check on a cluster (I102, E117, W107, E118), against a real cluster of six nodes on
loopback (tests/cluster_servers.py).

What the engine does with those clients (sessions, the user index, the near cache over the
cluster) is tested with the store's slot-safe round trips, not here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import redis.asyncio.cluster
import redis.cluster
from cluster_servers import SHARDS, RedisCluster, ask, wait_for
from redis_server import RedisServer, _free_port

from django_memsession.redis import conf
from django_memsession.redis import store as redis_store
from django_memsession.redis.checks import check_redis_deployment, check_redis_settings
from django_memsession.redis.client import async_client, node_client, sync_client
from django_memsession.redis.latency import recorder

NODE_URL = "redis://10.0.0.1:6379/0"


def ids() -> list[str]:
    return [message.id for message in check_redis_settings()]


# -- the setting's checks (no server) ------------------------------------------------------------


@pytest.fixture
def cluster_settings(settings) -> None:
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = NODE_URL
    settings.MEMSESSION_REDIS_CLUSTER = True


@pytest.mark.usefixtures("cluster_settings")
def test_the_cluster_setting_with_a_nodes_url_passes():
    assert ids() == []


@pytest.mark.usefixtures("cluster_settings")
@pytest.mark.parametrize("value", ["yes", 1, None, "True"])
def test_a_cluster_setting_that_is_not_true_or_false_is_e116(value, settings):
    settings.MEMSESSION_REDIS_CLUSTER = value
    (message,) = check_redis_settings()
    assert message.id == "memsession.E116"
    assert repr(value) in message.msg
    assert "Write True" in message.hint


@pytest.mark.usefixtures("cluster_settings")
def test_the_near_cache_on_a_cluster_is_e119(settings):
    settings.MEMSESSION_REDIS_NEAR_CACHE = "16M"
    (message,) = check_redis_settings()
    assert message.id == "memsession.E119"
    assert "Remove MEMSESSION_REDIS_NEAR_CACHE" in message.hint


@pytest.mark.usefixtures("cluster_settings")
def test_a_store_on_a_cluster_with_the_near_cache_refuses_to_start(settings):
    from django.core.exceptions import ImproperlyConfigured

    from django_memsession.redis.conf import store_settings

    settings.MEMSESSION_REDIS_NEAR_CACHE = "16M"
    with pytest.raises(ImproperlyConfigured, match="E119"):
        store_settings()


@pytest.mark.usefixtures("cluster_settings")
def test_the_cluster_with_sentinels_is_e116_saying_which_to_remove(settings):
    settings.MEMSESSION_REDIS_SENTINELS = [("10.0.0.2", 26379)]
    (message,) = check_redis_settings()
    assert message.id == "memsession.E116"
    assert "remove MEMSESSION_REDIS_SENTINELS" in message.hint
    assert "remove MEMSESSION_REDIS_CLUSTER" in message.hint


@pytest.mark.usefixtures("cluster_settings")
@pytest.mark.parametrize("url", ["unix:///tmp/redis.sock", "redis:///0"])
def test_a_cluster_url_naming_no_node_is_e116_alone(url, settings):
    settings.MEMSESSION_REDIS_URL = url
    (message,) = check_redis_settings()  # not E101 as well
    assert message.id == "memsession.E116"
    assert NODE_URL in message.hint


@pytest.mark.usefixtures("cluster_settings")
@pytest.mark.parametrize("url", ["redis://10.0.0.1:6379/1", "redis://10.0.0.1:6379/0?db=2"])
def test_a_cluster_url_naming_a_database_other_than_0_is_e116(url, settings):
    settings.MEMSESSION_REDIS_URL = url
    (message,) = check_redis_settings()
    assert message.id == "memsession.E116"
    assert "database 0 only" in message.msg


@pytest.mark.usefixtures("cluster_settings")
@pytest.mark.parametrize("url", ["redis://10.0.0.1:6379", "redis://10.0.0.1:6379/0?db=0"])
def test_a_cluster_url_with_database_0_or_none_passes(url, settings):
    settings.MEMSESSION_REDIS_URL = url
    assert ids() == []


def test_a_unix_url_without_the_cluster_setting_passes(settings):
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = "unix:///tmp/redis.sock?db=3"
    assert ids() == []


@pytest.mark.usefixtures("cluster_settings")
def test_the_cluster_clients_own_options_are_accepted_with_the_setting(settings):
    settings.MEMSESSION_REDIS_OPTIONS = {
        "require_full_coverage": False,
        "reinitialize_steps": 1,
        "max_connections": 20,
        "socket_timeout": 0.5,
    }
    assert ids() == []


def test_the_cluster_clients_own_options_are_e109_without_the_setting(settings):
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = NODE_URL
    settings.MEMSESSION_REDIS_OPTIONS = {"require_full_coverage": False}
    (message,) = check_redis_settings()
    assert message.id == "memsession.E109"
    assert "'require_full_coverage'" in message.msg


@pytest.mark.usefixtures("cluster_settings")
def test_an_option_the_cluster_clients_do_not_take_is_e109_saying_so(settings):
    settings.MEMSESSION_REDIS_OPTIONS = {"health_check_interval": 10}
    (message,) = check_redis_settings()
    assert message.id == "memsession.E109"
    assert "'health_check_interval' (redis-py's RedisCluster clients do not take it)" in (
        message.msg
    )
    assert "require_full_coverage" in message.hint


def test_an_option_named_cluster_is_e109_pointing_at_the_setting(settings):
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = NODE_URL
    settings.MEMSESSION_REDIS_OPTIONS = {"cluster": True}
    (message,) = check_redis_settings()
    assert "'cluster' (for a Redis Cluster, set MEMSESSION_REDIS_CLUSTER = True)" in message.msg


@pytest.mark.usefixtures("cluster_settings")
def test_the_store_settings_say_cluster_and_leave_out_health_checks():
    config = conf.store_settings()
    assert config.cluster is True
    assert "health_check_interval" not in config.options
    assert config.options["socket_timeout"] == 1.0


def test_the_store_settings_say_no_cluster_by_default(settings):
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = NODE_URL
    config = conf.store_settings()
    assert config.cluster is False
    assert config.options["health_check_interval"] == 0


# -- the clients, on a real cluster --------------------------------------------------------------


@pytest.fixture
def on_the_cluster(cluster: RedisCluster, settings) -> Iterator[RedisCluster]:
    """An empty cluster, and the Redis engine's settings pointing at its first primary."""
    cluster.reset()
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = cluster.url
    settings.MEMSESSION_REDIS_CLUSTER = True
    redis_store.reset()
    yield cluster
    redis_store.reset()


def keys_on_every_primary(cluster: RedisCluster) -> list[str]:
    """Keys whose slots are on each primary, a few each."""
    keys = [f"memsession:{number:032d}" for number in range(60)]
    assert {cluster.node_for(key).port for key in keys} == {p.port for p in cluster.primaries()}
    return keys


def test_the_sync_client_is_a_redis_cluster_writing_each_key_on_its_slots_primary(on_the_cluster):
    client = sync_client(conf.store_settings())
    try:
        assert isinstance(client, redis.cluster.RedisCluster)
        keys = keys_on_every_primary(on_the_cluster)
        for key in keys:
            client.set(key, key)
        for key in keys:
            assert ask(on_the_cluster.node_for(key), "GET", key) == key.encode()
            assert client.get(key) == key.encode()
    finally:
        client.close()


async def test_the_async_client_is_an_asyncio_redis_cluster_on_every_primary(on_the_cluster):
    client = async_client(conf.store_settings())
    try:
        assert isinstance(client, redis.asyncio.cluster.RedisCluster)
        keys = keys_on_every_primary(on_the_cluster)
        for key in keys:
            await client.set(key, key)
        for key in keys:
            assert ask(on_the_cluster.node_for(key), "GET", key) == key.encode()
            assert await client.get(key) == key.encode()
    finally:
        await client.aclose()


def test_the_clients_take_the_settings_options(on_the_cluster, settings):
    settings.MEMSESSION_REDIS_OPTIONS = {"socket_timeout": 0.7, "max_connections": 7}
    client = sync_client(conf.store_settings())
    try:
        client.ping()
        for node in client.get_primaries():
            pool = node.redis_connection.connection_pool
            assert pool.connection_kwargs["socket_timeout"] == 0.7
            assert pool.max_connections == 7
    finally:
        client.close()


def test_the_clients_time_their_round_trips(on_the_cluster):
    client = sync_client(conf.store_settings())
    try:
        before = recorder.round_trips
        client.get("memsession:x")
        client.set("memsession:y", 1)
        assert recorder.round_trips == before + 2
    finally:
        client.close()


def test_the_sync_client_follows_moved_slots(on_the_cluster):
    client = sync_client(conf.store_settings())
    try:
        keys = keys_on_every_primary(on_the_cluster)
        for key in keys:
            client.set(key, key)
        source, target = on_the_cluster.primaries()[:2]
        on_the_cluster.move_slots(300, source, target)
        assert [client.get(key) for key in keys] == [key.encode() for key in keys]
    finally:
        client.close()


async def test_the_async_client_follows_a_planned_failover(on_the_cluster):
    client = async_client(conf.store_settings())
    try:
        keys = keys_on_every_primary(on_the_cluster)
        for key in keys:
            await client.set(key, key)
        _, new = on_the_cluster.failover(on_the_cluster.node_for(keys[0]))
        assert [await client.get(key) for key in keys] == [key.encode() for key in keys]
        await client.set(keys[0], "after")
        assert ask(new, "GET", keys[0]) == b"after"
    finally:
        await client.aclose()


def test_node_client_talks_to_the_one_node_it_names(on_the_cluster):
    primaries = on_the_cluster.primaries()
    assert len(primaries) == SHARDS
    config = conf.store_settings()
    for primary in primaries:
        client = node_client(config, "127.0.0.1", primary.port)
        try:
            myid = client.execute_command("CLUSTER", "MYID").decode()
            assert on_the_cluster.ids[myid] is primary
        finally:
            client.close()


# -- the deploy check on a cluster ---------------------------------------------------------------


@pytest.fixture
def volatile_ttl(on_the_cluster: RedisCluster) -> Iterator[RedisCluster]:
    """Every node runs maxmemory-policy volatile-ttl for the test (noeviction after)."""
    for server in on_the_cluster.servers:
        ask(server, "CONFIG", "SET", "maxmemory-policy", "volatile-ttl")
    yield on_the_cluster
    for server in on_the_cluster.live:
        ask(server, "CONFIG", "SET", "maxmemory-policy", "noeviction")


def test_the_deploy_check_reports_the_clusters_state_primaries_and_replicas(volatile_ttl):
    (message,) = check_redis_deployment()
    assert message.id == "memsession.I102"
    assert "cluster_state:ok" in message.msg
    assert f"{SHARDS} primaries with 16384 of 16384 slots, {SHARDS} live replica(s)" in message.msg
    for primary in volatile_ttl.primaries():
        replica = volatile_ttl.replica_of(primary)
        slots = len(volatile_ttl.slots_of(primary))
        assert (
            f"127.0.0.1:{primary.port} ({slots} slots, replicas: 127.0.0.1:{replica.port})"
            in message.msg
        )


def test_the_deploy_check_names_the_primaries_whose_policy_evicts_logged_in_users(
    on_the_cluster, settings
):
    primary = on_the_cluster.primaries()[1]
    ask(primary, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    try:
        found = {message.id: message for message in check_redis_deployment()}
    finally:
        ask(primary, "CONFIG", "SET", "maxmemory-policy", "noeviction")
    assert sorted(found) == ["memsession.I102", "memsession.W101", "memsession.W102"]
    assert f"Redis (127.0.0.1:{primary.port}) runs maxmemory-policy allkeys-lru" in (
        found["memsession.W102"].msg
    )
    others = sorted(f"127.0.0.1:{p.port}" for p in on_the_cluster.primaries() if p is not primary)
    assert f"Redis ({', '.join(others)}) runs maxmemory-policy noeviction" in (
        found["memsession.W101"].msg
    )


def test_a_slot_with_no_primary_is_e117(volatile_ttl):
    node = volatile_ttl.primaries()[0]  # the URL's node
    slot = min(volatile_ttl.slots_of(node))
    ask(node, "CLUSTER", "DELSLOTS", slot)
    try:
        found = wait_for(
            lambda: [m for m in check_redis_deployment() if m.id == "memsession.E117"],
            10,
            "the deploy check to see the slot uncovered",
        )
    finally:
        ask(node, "CLUSTER", "ADDSLOTS", slot)
        volatile_ttl.wait_ok()
    (message,) = found
    assert "cluster_state:fail" in message.msg
    assert "1 of 16384 slots with no live primary" in message.msg
    assert "503" in message.hint


def test_a_primary_without_a_live_replica_is_w107(volatile_ttl):
    primary = volatile_ttl.primaries()[2]
    volatile_ttl.replica_of(primary).kill()
    try:
        found = wait_for(
            lambda: [m for m in check_redis_deployment() if m.id == "memsession.W107"],
            15,
            "the deploy check to see the replica gone",
        )
    finally:
        volatile_ttl.reset()  # starts the replica again
    (message,) = found
    assert f"primaries 127.0.0.1:{primary.port} have no live replica" in message.msg


def test_a_server_that_is_not_a_cluster_node_is_e118(redis_server: RedisServer, settings):
    redis_server.reset()
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = redis_server.url
    settings.MEMSESSION_REDIS_CLUSTER = True
    (message,) = check_redis_deployment()
    assert message.id == "memsession.E118"
    assert "MEMSESSION_REDIS_CLUSTER = False" in message.hint


@pytest.mark.redis
def test_a_cluster_node_that_does_not_answer_is_e107(settings):
    settings.SESSION_ENGINE = "django_memsession.redis"
    settings.MEMSESSION_REDIS_URL = f"redis://:s3cret@127.0.0.1:{_free_port()}/0"
    settings.MEMSESSION_REDIS_CLUSTER = True
    (message,) = check_redis_deployment()
    assert message.id == "memsession.E107"
    assert "s3cret" not in message.msg
