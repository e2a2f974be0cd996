"""Codecs: a session dict to the bytes the store keeps, and back.

Any ``SESSION_SERIALIZER`` other than Django's JSONSerializer is called unchanged. For Django's
JSONSerializer (the default) a faster codec gives the same values and raises the same exception
types as ``django.core.signing.JSONSerializer``, i.e. as ``json.dumps(obj, separators=(",", ":"))``
and ``json.loads``:

* ``StdlibJSONCodec`` writes exactly Django's bytes, but skips the encoder ``json.dumps`` builds
  on every call and the regex passes ``json.loads`` makes around the C scanner.
* ``OrjsonJSONCodec`` (when orjson is installed) uses orjson wherever its result is provably the
  one ``json`` gives, and falls back to the stdlib codec everywhere else.

The stored format is JSON text in UTF-8. The stdlib codec writes ASCII (Django's exact bytes);
orjson writes non-ASCII characters as raw UTF-8, which is more compact. So ``loads`` reads UTF-8,
where Django's ``loads`` reads latin-1: they agree on every byte string Django's ``dumps`` can
produce (ASCII) and on every byte string that is not valid UTF-8 (read as latin-1 here too).
"""

from __future__ import annotations

import functools
import gc
import json
import math
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring_ascii
from types import ModuleType
from typing import Any, Protocol

from django.conf import settings
from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

orjson: ModuleType | None
try:
    import orjson
except ImportError:  # a dependency on CPython; absent on other implementations
    orjson = None

__all__ = [
    "Codec",
    "OrjsonJSONCodec",
    "SerializerCodec",
    "StdlibJSONCodec",
    "current_codec",
    "get_codec",
]


class Codec(Protocol):
    def dumps(self, session_dict: dict[str, Any]) -> bytes: ...

    def loads(self, data: bytes) -> dict[str, Any]: ...


@functools.cache
def get_codec(serializer_path: str) -> Codec:
    """The codec for ``settings.SESSION_SERIALIZER``; one instance per path, shared by threads."""
    serializer_class = import_string(serializer_path)
    # Both documented paths name the same class; an alias of it resolves to it as well.
    if serializer_class is signing.JSONSerializer:
        return OrjsonJSONCodec() if orjson is not None else StdlibJSONCodec()
    return SerializerCodec(serializer_class())


_current: Codec | None = None


def current_codec() -> Codec:
    """The codec for ``settings.SESSION_SERIALIZER``, without reading settings on every request.

    Reading a setting through Django's lazy settings object costs about 0.25 µs, a twentieth of a
    whole session load; the setting does not change in a running site, and when a test changes
    it, ``setting_changed`` makes the next call look again.
    """
    global _current
    codec = _current
    if codec is None:
        codec = _current = get_codec(settings.SESSION_SERIALIZER)
    return codec


def _serializer_changed(*, setting: str, **kwargs: Any) -> None:
    global _current
    if setting == "SESSION_SERIALIZER":
        _current = None


setting_changed.connect(_serializer_changed)


class SerializerCodec:
    """A custom serializer, called unchanged: its own semantics and its own exceptions."""

    __slots__ = ("serializer",)

    def __init__(self, serializer: Any) -> None:
        self.serializer = serializer

    def dumps(self, session_dict: dict[str, Any]) -> bytes:
        return self.serializer.dumps(session_dict)

    def loads(self, data: bytes) -> dict[str, Any]:
        return self.serializer.loads(data)


class StdlibJSONCodec:
    """Django's JSONSerializer, minus the per-call setup of ``json.dumps`` and ``json.loads``."""

    __slots__ = ("_encode", "_scan_once")

    def __init__(self) -> None:
        self._encode = _compact_encoder()
        self._scan_once = json.JSONDecoder().scan_once

    def dumps(self, session_dict: dict[str, Any]) -> bytes:
        try:
            return self._encode(session_dict)
        except RecursionError:
            # The fast encoder does not track the containers it is inside, so a circular
            # reference recurses until Python stops it. json.dumps tracks them and raises the
            # ValueError Django raises; a structure that is merely too deep fails there too.
            pass
        return _django_dumps(session_dict)

    def loads(self, data: bytes) -> dict[str, Any]:
        text = _decode_text(data)
        try:
            value, end = self._scan_once(text, 0)
        except (StopIteration, ValueError):
            end = -1
        if end != len(text):
            # Malformed, surrounded by whitespace, or followed by extra data: json.loads decides,
            # and raises exactly what Django's loads raises.
            return json.loads(text)
        return value


class OrjsonJSONCodec(StdlibJSONCodec):
    """orjson where it provably gives json's result; the stdlib codec everywhere else.

    What orjson does differently, and how each case ends up with json's behaviour:

    * writes NaN and ±Infinity as ``null``: checked after encoding, then the stdlib codec;
    * encodes UUID, Enum members and ``orjson.Fragment`` (json raises TypeError): the encoded
      object graph is checked to hold only the exact types json encodes natively;
    * refuses non-str keys, subclasses of json's types, ints beyond 64 bits, lone surrogates,
      nesting deeper than its limit, circular references, datetime, dataclasses…: it raises,
      and the stdlib codec encodes the value or raises json's own exception;
    * reads integers beyond 64 bits as floats, silently: data with a run of 19 or more digits
      goes to the stdlib codec (ints of up to 18 digits always fit in 64 bits);
    * refuses NaN/Infinity literals, lone surrogate escapes, numbers that overflow to infinity
      and other input json accepts or rejects differently: it raises, then the stdlib codec.
    """

    __slots__ = ()

    def __init__(self) -> None:
        if orjson is None:
            raise ImproperlyConfigured("OrjsonJSONCodec needs orjson: pip install orjson.")
        super().__init__()

    def dumps(self, session_dict: dict[str, Any]) -> bytes:
        try:
            data = orjson.dumps(session_dict, option=_ORJSON_OPTIONS)
        except orjson.JSONEncodeError:
            return super().dumps(session_dict)
        if _orjson_wrote_what_json_would(session_dict, data):
            return data
        return super().dumps(session_dict)

    def loads(self, data: bytes) -> dict[str, Any]:
        if _LONG_DIGIT_RUN not in data.translate(_DIGITS_TO_ZERO):
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass
        return super().loads(data)


def _django_dumps(session_dict: dict[str, Any]) -> bytes:
    return json.dumps(session_dict, separators=(",", ":")).encode("latin-1")


def _compact_encoder() -> Callable[[Any], bytes]:
    """``json.dumps(obj, separators=(",", ":"))`` with the encoder built once, not per call.

    ``check_circular=False`` drops the set of containers being encoded (see
    ``StdlibJSONCodec.dumps`` for how circular references still raise json's ValueError); it
    also makes the encoder stateless, so one instance is safe to share between threads.
    """
    encoder = json.JSONEncoder(separators=(",", ":"), check_circular=False)
    try:
        # The arguments JSONEncoder.iterencode() passes when it builds this on every call.
        c_encoder = c_make_encoder(
            None, encoder.default, encode_basestring_ascii, None, ":", ",", False, False, True
        )
    except TypeError:  # no _json accelerator (c_make_encoder is None), or a new signature
        return lambda obj: encoder.encode(obj).encode("ascii")
    return lambda obj: "".join(c_encoder(obj, 0)).encode("ascii")


def _decode_text(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        # Not written by us; read it the way Django's JSONSerializer reads everything.
        return data.decode("latin-1")


_JSON_NATIVE_TYPES = frozenset({dict, list, tuple, str, int, float, bool, type(None)})
_JSON_NATIVE_TYPES_BUT_FLOAT = _JSON_NATIVE_TYPES - {float}

if orjson is not None:
    # Make orjson raise (and so fall back) on types it would encode where json raises.
    _ORJSON_OPTIONS = (
        orjson.OPT_PASSTHROUGH_DATACLASS
        | orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_SUBCLASS
    )

# Every digit becomes "0", nothing else does: a run of zeros in the result is a run of digits.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGIT_RUN = b"0" * 19


def _orjson_wrote_what_json_would(session_dict: dict[str, Any], data: bytes) -> bool:
    """Whether ``data`` (orjson's encoding of ``session_dict``) decodes to json's encoding of it.

    True when every object in the graph is of an exact type json encodes natively, and no float
    in it is NaN or infinite. The graph is walked a level at a time with ``gc.get_referents``,
    which stays in C for a whole level: two to four times cheaper than a recursive Python walk.
    CPython leaves out a dict's keys when all are exact str, which is fine: orjson rejects any
    other key. orjson encoded this graph, so it is acyclic and only as deep as orjson allows:
    the walk ends.
    """
    has_float = False
    level: list[Any] = [session_dict]
    while level:
        if not _JSON_NATIVE_TYPES_BUT_FLOAT.issuperset(map(type, level)):
            # That stopped at the first float or foreign type; now look at the whole level.
            if not _JSON_NATIVE_TYPES.issuperset(map(type, level)):
                return False
            has_float = True
        level = gc.get_referents(*level)
    # orjson writes NaN and ±Infinity as null (json writes NaN, Infinity, -Infinity).
    return not (has_float and b"null" in data and _has_non_finite_float(session_dict))


def _has_non_finite_float(session_dict: dict[str, Any]) -> bool:
    level: list[Any] = [session_dict]
    while level:
        if any(type(obj) is float and not math.isfinite(obj) for obj in level):
            return True
        level = gc.get_referents(*level)
    return False
