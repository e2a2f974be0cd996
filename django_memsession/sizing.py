"""Byte sizes: parsing ``"64M"``-style settings, and what one stored entry costs in memory.

Measuring every entry with ``pympler.asizeof.asizeof()`` on the request path costs 5-15 µs a call,
more than a whole JSON round trip of a small session. An entry here is always the same shape (a
``str`` key, a ``bytes`` value, a slot in an ``OrderedDict``), so its size has a closed form. The
parts of that form are *measured with asizeof* once per process (:class:`EntrySizer`), and the
tests hold the closed form to ``asizeof`` and ``tracemalloc`` on varied sessions.
"""

from __future__ import annotations

import math
import re
import sys
from collections import OrderedDict
from functools import cache

__all__ = ["EntrySizer", "format_size", "parse_size"]

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
    """Closed-form sizes of the store's entries, calibrated against ``pympler.asizeof``.

    An entry is a ``str`` key mapped to a ``bytes`` value inside an ``OrderedDict``; a remembered
    (recently evicted) key is a ``str`` mapped to a ``float``. ``asizeof`` rounds every object up to
    its alignment and charges a container's table and nodes (``sys.getsizeof`` of the container)
    to the container; we share that charge out per slot, averaged over the fill levels an
    ``OrderedDict`` passes through as it grows (its table doubles, so the share per slot moves by
    about ±10 %).
    """

    def __init__(self) -> None:
        from pympler import asizeof

        self.alignment = 8  # asizeof's default ``align=8``: every object is rounded up to it
        self.str_header = sys.getsizeof("")  # a compact ASCII str; session keys are ASCII
        self.bytes_header = sys.getsizeof(b"")
        self.float_size = asizeof.asizeof(1.5)
        self.slot_size = _calibrate_slot_size()

    def str_size(self, length: int) -> int:
        return _align(self.str_header + length, self.alignment)

    def bytes_size(self, length: int) -> int:
        return _align(self.bytes_header + length, self.alignment)

    def entry(self, key_length: int, value_length: int) -> int:
        """Bytes one stored session costs: its key, its value and its share of the container."""
        return self.str_size(key_length) + self.bytes_size(value_length) + self.slot_size

    def remembered(self, key_length: int) -> int:
        """Bytes one remembered evicted key costs: the key, its expiry and its slot."""
        return self.str_size(key_length) + self.float_size + self.slot_size


@cache
def _calibrate_slot_size() -> int:
    """Average charge of one ``OrderedDict`` slot (its share of the table, its node).

    ``asizeof`` charges a container exactly ``sys.getsizeof(container)`` on top of its items (the
    tests check this), so the share is measured here with ``sys.getsizeof`` while one container
    grows through two doublings of its table: about 3 ms, once per process. The keys must be
    ``str``: a dict whose keys are all ``str`` uses a smaller entry (no stored hash per slot)
    than one with other keys, a difference of about 12 bytes per slot.
    """
    container: OrderedDict[str, None] = OrderedDict()
    empty = sys.getsizeof(container)
    samples = []
    for count in range(1, 8193):
        container[str(count)] = None
        if count >= 2048:
            samples.append((sys.getsizeof(container) - empty) / count)
    return round(sum(samples) / len(samples))
