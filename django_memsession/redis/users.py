"""The Redis user index's public names, from where they were: the index now lives in
``redis/index.py`` (:class:`~django_memsession.redis.index.RedisUserIndex`, held by the store as
``store.index``)."""

from .index import (
    LAST_USED_INTERVAL,
    ImportedSession,
    IndexedSession,
    IndexPrune,
    facts_text,
)

__all__ = ["LAST_USED_INTERVAL", "ImportedSession", "IndexPrune", "IndexedSession", "facts_text"]
