"""The cluster the tests start (tests/cluster_servers.py) is what it says: six nodes, three
primaries with a replica each, every slot covered; and its faults do what they say."""

from __future__ import annotations

import pytest
from cluster_servers import SHARDS, SLOTS, RedisCluster, ask
from redis.cluster import key_slot


@pytest.fixture
def empty_cluster(cluster: RedisCluster) -> RedisCluster:
    cluster.reset()
    return cluster


def test_every_node_says_the_cluster_is_ok(empty_cluster: RedisCluster):
    for server in empty_cluster.servers:
        assert b"cluster_state:ok" in ask(server, "CLUSTER", "INFO")


def test_three_primaries_share_every_slot_and_each_has_a_replica(empty_cluster: RedisCluster):
    primaries = empty_cluster.primaries()
    assert len(primaries) == SHARDS
    slots = [empty_cluster.slots_of(primary) for primary in primaries]
    assert set().union(*slots) == set(range(SLOTS))
    assert sum(map(len, slots)) == SLOTS
    replicas = {empty_cluster.replica_of(primary).port for primary in primaries}
    assert replicas == {server.port for server in empty_cluster.replicas()}
    assert len(replicas) == SHARDS


def test_a_key_is_on_the_node_that_owns_its_slot(empty_cluster: RedisCluster):
    client = empty_cluster.client()
    try:
        for number in range(30):
            client.set(f"key:{number}", number)
    finally:
        client.close()
    for number in range(30):
        node = empty_cluster.node_for(f"key:{number}")
        assert ask(node, "GET", f"key:{number}") == str(number).encode()


def test_reset_empties_every_primary(empty_cluster: RedisCluster):
    client = empty_cluster.client()
    try:
        for number in range(30):
            client.set(f"key:{number}", number)
    finally:
        client.close()
    empty_cluster.reset()
    assert all(ask(primary, "DBSIZE") == 0 for primary in empty_cluster.primaries())


def test_moved_slots_take_their_keys_to_the_target(empty_cluster: RedisCluster):
    source, target = empty_cluster.primaries()[:2]
    client = empty_cluster.client()
    try:
        keys = [f"key:{n}" for n in range(2000)]
        for key in keys:
            client.set(key, key)
        moved = set(empty_cluster.move_slots(200, source, target))
        assert len(moved) == 200
        assert moved <= empty_cluster.slots_of(target)
        assert not moved & empty_cluster.slots_of(source)
        moved_keys = [key for key in keys if key_slot(key.encode()) in moved]
        assert moved_keys
        assert all(ask(target, "GET", key) == key.encode() for key in moved_keys)
        assert all(client.get(key) == key.encode() for key in keys)
    finally:
        client.close()


def test_a_planned_failover_swaps_a_primary_and_its_replica(empty_cluster: RedisCluster):
    client = empty_cluster.client()
    try:
        client.set("before", 1)
        old, new = empty_cluster.failover(empty_cluster.node_for("before"))
        assert new in empty_cluster.primaries()
        assert old not in empty_cluster.primaries()
        assert empty_cluster.replica_of(new) is old
        assert client.get("before") == b"1"
    finally:
        client.close()


@pytest.mark.heavy
def test_a_killed_primary_is_replaced_by_its_replica_and_rejoins_as_one(
    empty_cluster: RedisCluster,
):
    client = empty_cluster.client()
    try:
        client.set("before", 1)
        ask(empty_cluster.node_for("before"), "WAIT", 1, 5000)
        killed, promoted = empty_cluster.kill_primary(empty_cluster.node_for("before"))
        assert killed.process is None
        assert empty_cluster.node_for("before") is promoted
        assert ask(promoted, "GET", "before") == b"1"
        empty_cluster.revive(killed)
        assert empty_cluster.replica_of(promoted) is killed
    finally:
        client.close()
