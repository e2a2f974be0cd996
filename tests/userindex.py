"""A check the tests share: the user index and the sessions agree, both ways."""

from __future__ import annotations

from django_memsession.memory import index as facts
from django_memsession.memory.lru import AUTHENTICATED
from django_memsession.memory.store import MemoryStore


def index_problems(store: MemoryStore) -> list[str]:
    """Every disagreement between the index and the stored sessions (empty: none). Takes the
    store's lock: call it when no other thread is writing."""
    problems = []
    with store.lock:
        policy, index = store._policy, store._users
        for user, held in index.users.items():
            for key in [held] if isinstance(held, str) else held:
                segment, value = policy.find(key)
                if value is None:
                    problems.append(f"indexed key of user {user} is not stored")
                elif segment != AUTHENTICATED:
                    problems.append(f"indexed key of user {user} is not logged in")
                elif facts.user_key(facts.user_of(value).decode()) != user:
                    problems.append(f"key indexed under user {user} belongs to another")
        for key, value in list(policy.segments[AUTHENTICATED].items()) + list(
            policy.fronts[AUTHENTICATED].items()
        ):
            user = facts.user_of(value).decode()
            if user and key not in index.keys(facts.user_key(user)):
                problems.append(f"logged-in session of user {user} is not indexed")
    return problems
