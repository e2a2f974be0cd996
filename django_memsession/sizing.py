"""Byte sizes: parsing ``"64M"``-style settings, and what one stored entry costs in memory.

Measuring every entry with ``pympler.asizeof.asizeof()`` on the request path costs 5-15 µs a call,
more than a whole JSON round trip of a small session. An entry here is always the same shape (a
``str`` key, a ``bytes`` value, a node in an ``OrderedDict``), so its size has a closed form
(:class:`EntrySizer`); the containers' tables are measured in O(1) (:func:`table_size`). The tests
hold the store's running total to ``asizeof`` of the whole store (exactly) and to ``tracemalloc``.
"""

from __future__ import annotations

import math
import re
import sys
from collections import OrderedDict
from typing import Any

__all__ = ["EntrySizer", "format_size", "parse_size", "table_size"]

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(value: object) -> int:
    """Return a byte count from an int or a string such as ``"64M"``, ``"512KiB"``, ``"1.5G"``.

    Every unit is binary: ``K``/``KB``/``KiB`` are 1024 bytes, ``M`` 1024², ``G`` 1024³, in either
    case. Raises ``ValueError`` with a message that says what to write instead.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size; write bytes as an int or a string like '64M'.")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"{value!r} is not a positive size; write e.g. 67108864 or '64M'.")
        return value
    if isinstance(value, float) and math.isfinite(value) and value > 0:
        return int(value)
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            number, unit = match.groups()
            size = int(float(number) * _UNITS[unit.upper()])
            if size > 0:
                return size
    raise ValueError(
        f"{value!r} is not a size; write bytes as a positive int, or a string such as "
        "'512K', '64M', '64MiB' or '1.5G' (units are powers of 1024)."
    )


def format_size(size: int) -> str:
    """``67108864`` -> ``"64.0 MiB"``: for log lines and error messages."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _align(size: int, alignment: int) -> int:
    return (size + alignment - 1) // alignment * alignment


class EntrySizer:
    """Closed-form sizes of the store's entries, as ``pympler.asizeof`` measures them.

    A stored session is a ``str`` key mapped to a ``bytes`` value in an ``OrderedDict``; a
    remembered (recently evicted) key is a ``str`` mapped to a ``float``. ``asizeof`` rounds every
    object up to its alignment, and charges a container ``sys.getsizeof(container)``: its hash
    table and node index, which grow in steps (see :func:`table_size`), plus one list node per
    entry. An entry's size here is its key, its value and its node: exactly what removing it
    frees. The tables are measured, not estimated, by the store.
    """

    def __init__(self) -> None:
        from pympler import asizeof

        self.alignment = 8  # asizeof's default ``align=8``: every object is rounded up to it
        self.str_header = sys.getsizeof("")  # a compact ASCII str; session keys are ASCII
        self.bytes_header = sys.getsizeof(b"")
        self.float_size = asizeof.asizeof(1.5)
        self.node_size = ODICT_NODE_SIZE

    def str_size(self, length: int) -> int:
        return _align(self.str_header + length, self.alignment)

    def bytes_size(self, length: int) -> int:
        return _align(self.bytes_header + length, self.alignment)

    def entry(self, key_length: int, value_length: int) -> int:
        """Bytes one stored session costs: its key, its value and its list node."""
        return self.str_size(key_length) + self.bytes_size(value_length) + self.node_size

    def entries(self, lengths: list[tuple[int, int]]) -> list[int]:
        """:meth:`entry` of many ``(key length, value length)`` at once (a restore's million)."""
        align = self.alignment - 1
        key_base, value_base = self.str_header + align, self.bytes_header + align
        node = self.node_size
        return [
            ((key_base + key) & ~align) + ((value_base + value) & ~align) + node
            for key, value in lengths
        ]

    def remembered(self, key_length: int) -> int:
        """Bytes one remembered evicted key costs: the key, its expiry and its list node."""
        return self.str_size(key_length) + self.float_size + self.node_size


_odict_sizeof = OrderedDict.__sizeof__  # a quarter of the cost of going through sys.getsizeof
_GC_HEADER = sys.getsizeof(OrderedDict()) - _odict_sizeof(OrderedDict())
# sys.getsizeof(OrderedDict) counts exactly one node (key, hash, two links) per entry.
ODICT_NODE_SIZE = sys.getsizeof(OrderedDict.fromkeys("ab")) - sys.getsizeof(
    OrderedDict.fromkeys("a")
)


def table_size(container: OrderedDict[Any, Any]) -> int:
    """What ``asizeof`` charges for an ``OrderedDict`` beyond one node per entry: its hash table
    and its node index.

    Measured, not estimated: a table grows in steps (doubling, and under steady churn of new
    keys in and old keys out it settles at up to three slots per live entry) and never shrinks.
    ``OrderedDict.__sizeof__`` is O(1).
    """
    return _odict_sizeof(container) + _GC_HEADER - len(container) * ODICT_NODE_SIZE
