"""The eviction policy: three LRU segments, the coldest evicted first (see :class:`SegmentedLRU`).

Not thread-safe: the store calls it with its lock held.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from itertools import islice

from ..sizing import table_size

__all__ = ["AUTHENTICATED", "PROBATION", "RETURNING", "SEGMENT_NAMES", "SegmentedLRU"]

# Segments, coldest first: eviction takes from the first non-empty one.
PROBATION, RETURNING, AUTHENTICATED = 0, 1, 2
SEGMENT_NAMES = ("probation", "returning", "authenticated")

_EMPTY_FRONTS = len(SEGMENT_NAMES) * table_size(OrderedDict())


class SegmentedLRU:
    """The eviction policy: three LRU segments, the coldest evicted first.

    - *probation*: sessions that were created but never came back; a flood of new anonymous
      sessions only ever competes with itself here;
    - *returning*: anonymous sessions that were loaded again in a later request (a real cart);
    - *authenticated*: sessions carrying Django's auth keys.

    Within a segment, the least recently used goes first. A later segment is touched only when
    every earlier one is empty, so anonymous traffic cannot evict logged-in users while they fit.

    Each segment is two ``OrderedDict`` s, *front* and *back*, whose order is front then back;
    outside a prune pass the front is empty. A pass walks the back from its cold end in chunks,
    dropping expired entries and moving the others, in order, to the end of the front, so the
    lock is released between chunks without losing the walk's place (an ``OrderedDict``
    iterator dies at the first change, and copying a million keys up front holds the lock for
    a quarter of a second). Hits and writes always go to the end of the back, so the order stays
    exact LRU throughout. When the back is empty the two swap.

    ``table_bytes`` is the exact size of the containers beyond their entries' list nodes
    (:func:`~django_memsession.sizing.table_size`), kept up to date by every method that adds or
    removes an entry. It is not a per-entry constant: a table's share per entry swings by a
    factor of two with its fill, and under steady churn (new sessions in, old ones out) a table
    settles at up to three slots per live entry. ``front_bytes`` is the part of it in the fronts:
    during a walk, how far the second table of the segment being walked has grown; it is freed
    when the walk is through.
    """

    __slots__ = ("front_bytes", "fronts", "segments", "table_bytes")

    def __init__(self) -> None:
        self.segments: tuple[OrderedDict[str, bytes], ...] = tuple(
            OrderedDict() for _ in SEGMENT_NAMES
        )
        self.fronts: list[OrderedDict[str, bytes]] = [OrderedDict() for _ in SEGMENT_NAMES]
        self.table_bytes = self.measure_tables()
        self.front_bytes = 0

    def find(self, key: str) -> tuple[int, bytes] | tuple[None, None]:
        # Authenticated first: on the sites this is built for, most requests are logged in.
        for index in (AUTHENTICATED, RETURNING, PROBATION):
            value = self.segments[index].get(key)
            if value is None and self.fronts[index]:
                value = self.fronts[index].get(key)
            if value is not None:
                return index, value
        return None, None

    def _insert(self, container: OrderedDict[str, bytes], key: str, value: bytes) -> None:
        before = table_size(container)
        container[key] = value
        self.table_bytes += table_size(container) - before

    def _pop(self, key: str, index: int) -> bytes:
        container = self.segments[index]
        in_front = key not in container
        if in_front:
            container = self.fronts[index]
        before = table_size(container)
        value = container.pop(key)
        self.table_bytes += table_size(container) - before
        if in_front:
            self.measure_fronts()
        return value

    def touch(self, key: str, index: int) -> bool:
        """A hit: most recently used; a probation entry that comes back is promoted.

        Returns whether the entry now sits in another table under the ``key`` object given
        (rather than the one stored before): the user index must point at the same object.
        """
        back = self.segments[index]
        if index == PROBATION:
            self._insert(self.segments[RETURNING], key, self._pop(key, PROBATION))
            return True
        if key in back:
            back.move_to_end(key)
            return False
        self._insert(back, key, self._pop(key, index))
        return True

    def segment_for_write(self, previous: int | None, authenticated: bool) -> int:
        """Where a saved session goes, given the segment it was in (None: it is new)."""
        if authenticated:
            return AUTHENTICATED
        if previous is None:
            return PROBATION
        return RETURNING if previous == AUTHENTICATED else previous

    def put(self, key: str, value: bytes, index: int, old_index: int | None) -> bool:
        """Store ``value``; whether it is stored under the ``key`` object given (see
        :meth:`touch`): an update in place keeps the object stored before."""
        back = self.segments[index]
        if old_index == index and key in back:
            # In place: a new entry slot per update would make the table resize (O(n)) every
            # few hundred thousand updates of a large store.
            back[key] = value
            back.move_to_end(key)
            return False
        if old_index is not None:
            self._pop(key, old_index)
        self._insert(back, key, value)
        return True

    def remove(self, key: str, index: int) -> None:
        self._pop(key, index)

    def _ordered(self, index: int) -> Iterator[tuple[str, bytes]]:
        yield from self.fronts[index].items()
        yield from self.segments[index].items()

    def coldest(self, limit: int) -> Iterator[tuple[int, str, bytes]]:
        """Up to ``limit`` entries of each segment from its cold end, coldest segment first."""
        for index in range(len(SEGMENT_NAMES)):
            for taken, (key, value) in enumerate(self._ordered(index)):
                if taken >= limit:
                    break
                yield index, key, value

    def victim(self, spare: str | None) -> tuple[int, str, bytes] | None:
        """The entry to evict next: the LRU of the coldest non-empty segment, never ``spare``.

        ``spare`` (the entry just written) sits at its segment's hot end, so skipping it costs at
        most one step.
        """
        for index in range(len(SEGMENT_NAMES)):
            for key, value in self._ordered(index):
                if key != spare:
                    return index, key, value
        return None

    def scan(self, index: int, limit: int, expired: Callable[[str, bytes], bool]) -> bool:
        """One chunk of a prune walk over segment ``index``: up to ``limit`` entries from the
        cold end of its back; those for which ``expired(key, value)`` is true are dropped, the
        rest move to the end of the front. Returns whether the walk is through."""
        back, front = self.segments[index], self.fronts[index]
        back_before, front_before = table_size(back), table_size(front)
        # Keys, not items: a tuple per entry would be a GC-tracked allocation, and a collection
        # started inside the chunk would traverse every table of the store with the lock held.
        for key in list(islice(back, limit)):
            value = back.pop(key)
            if not expired(key, value):
                front[key] = value
        through = not back
        if through:
            # The front becomes the segment, and the old back goes with its table, which is as
            # large as the segment ever was (dicts never shrink).
            self.segments = tuple(
                front if i == index else segment for i, segment in enumerate(self.segments)
            )
            back = self.fronts[index] = OrderedDict()  # the new front
        self.table_bytes += table_size(back) + table_size(front) - back_before - front_before
        self.measure_fronts()
        return through

    def measure_fronts(self) -> None:
        self.front_bytes = sum(map(table_size, self.fronts)) - _EMPTY_FRONTS

    def items(self) -> Iterator[tuple[str, bytes]]:
        for index in range(len(SEGMENT_NAMES)):
            yield from self._ordered(index)

    def measure_tables(self) -> int:
        """``table_bytes`` measured afresh (for tests: it must equal the running figure)."""
        return sum(map(table_size, (*self.segments, *self.fronts)))

    def __len__(self) -> int:
        return sum(len(segment) for segment in self.segments) + sum(map(len, self.fronts))

    def sizes(self) -> dict[str, int]:
        return {
            name: len(self.segments[index]) + len(self.fronts[index])
            for index, name in enumerate(SEGMENT_NAMES)
        }
