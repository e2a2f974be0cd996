"""The codecs give the values, and raise the exception types, of Django's JSONSerializer.

Every behaviour is checked against Django itself: ``signing.JSONSerializer().dumps`` then
``.loads`` is the reference, for both fast codecs (the stdlib one, and the orjson one when orjson
is installed). Values are compared by ``repr``, so 1 vs 1.0 vs True, -0.0 vs 0.0, NaN, key order
and list vs tuple all count. No database: plain pytest functions.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import json
import math
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.core import signing
from hypothesis import given, settings
from hypothesis import strategies as st

from django_memsession import serializers
from django_memsession.serializers import (
    Codec,
    OrjsonJSONCodec,
    SerializerCodec,
    StdlibJSONCodec,
    get_codec,
)

DJANGO = signing.JSONSerializer()

CODECS = [
    pytest.param(StdlibJSONCodec(), id="stdlib"),
    pytest.param(
        OrjsonJSONCodec() if serializers.orjson is not None else None,
        id="orjson",
        marks=pytest.mark.skipif(serializers.orjson is None, reason="orjson is not installed"),
    ),
]
needs_orjson = pytest.mark.skipif(serializers.orjson is None, reason="orjson is not installed")


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """("value", repr of the result) or ("raises", exception type): what a caller observes."""
    try:
        return ("value", repr(call()))
    except Exception as exc:
        return ("raises", type(exc))


def django_round_trip(value: Any) -> Any:
    return DJANGO.loads(DJANGO.dumps(value))


def codec_round_trip(codec: Codec, value: Any) -> Any:
    return codec.loads(codec.dumps(value))


# -- values that round-trip ----------------------------------------------------------------------


class Color(enum.Enum):
    RED = 1


class Size(enum.IntEnum):
    LARGE = 3


class Flavour(enum.StrEnum):
    VANILLA = "vanilla"


class Tag(str):
    pass


class Count(int):
    pass


class Ratio(float):
    pass


Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass
class Item:
    sku: str


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


shared = [1, 2]

ROUND_TRIPS = {
    "tuples_become_lists": {"t": (1, (2, (3,))), "empty": ()},
    "int_keys_become_strings": {1: "a", -2: "b", 10**30: "big"},
    "float_keys_become_strings": {2.5: "a", -0.0: "b", 1e16: "c", math.inf: "d", math.nan: "e"},
    "bool_and_none_keys_become_strings": {False: "f", None: "n"},
    "colliding_keys_keep_the_last": {1: "int", "1": "str"},
    "nan_and_infinities_stay_floats": {"nan": math.nan, "inf": math.inf, "-inf": -math.inf},
    "nan_next_to_none": {"none": None, "nan": math.nan, "price": 1.5},
    "none_next_to_finite_floats": {"none": None, "price": 19.99, "list": [None, 0.5]},
    "null_in_text_next_to_floats": {"nullable": "null", "price": 1.5},
    "ints_at_64_bit_edges": {
        "i64_max": 2**63 - 1,
        "i64_min": -(2**63),
        "u64_max": 2**64 - 1,
        "u64_max_plus_one": 2**64,
        "i64_min_minus_one": -(2**63) - 1,
        "googol": 10**100,
        "negative_googol": -(10**100),
    },
    "floats_at_the_edges": {
        "negative_zero": -0.0,
        "max": 1.7976931348623157e308,
        "big": 1e308,
        "min_normal": 2.2250738585072014e-308,
        "min_subnormal": 5e-324,
        "tenth": 0.1,
        "two_pow_53_plus": 9007199254740993.0,
        "many_digits": 123456789.12345679,
        "integral": 1e16,
    },
    "bools_stay_bools": {"yes": True, "no": False, "one": 1, "one_float": 1.0},
    "unicode_text": {
        "latin": "déjà vu",
        "cjk": "日本語",
        "astral": "😀 \U0010ffff",
        "nul_and_controls": "\x00\x01\x1f\x7f",
        "line_separators": "\u2028\u2029",
        "quotes_and_backslashes": '"\\/',
        "non_ascii_key_é": "x",
    },
    "lone_surrogates": {
        "high": "\ud800",
        "low": "\udfff",
        "reversed": "\ude00\ud83d",
        "k\udc80": 1,
    },
    "digit_runs_in_text": {"card": "4111111111111111111111", "id": "12345678901234567890"},
    "empty_containers": {"": "", "list": [], "dict": {}},
    "shared_substructure": {"a": shared, "b": shared},
    "deeper_than_orjson_allows": {"deep": nested_lists(300)},
    "subclasses_of_json_types": {
        "int_enum": Size.LARGE,
        "str_enum": Flavour.VANILLA,
        "str_subclass": Tag("t"),
        "int_subclass": Count(7),
        "float_subclass": Ratio(0.25),
        "namedtuple": Point(1, 2),
        "ordered_dict": collections.OrderedDict(b=1, a=2),
        "defaultdict": collections.defaultdict(list, x=[1]),
    },
    "str_subclass_keys": {Tag("k"): 1, Size.LARGE: "int enum key"},
    "realistic_session": {
        "_auth_user_id": "42",
        "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        "_auth_user_hash": "0f3b5c1d9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c",
        "_session_expiry": 1209600,
        "cart": [{"sku": f"SKU-{n}", "qty": n % 3 + 1, "price": 9.99 * n} for n in range(50)],
    },
}


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("value", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_value_round_trips_to_what_django_returns(codec: Codec, value: dict[str, Any]) -> None:
    assert repr(codec_round_trip(codec, value)) == repr(django_round_trip(value))


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("value", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_loads_reads_what_django_wrote(codec: Codec, value: dict[str, Any]) -> None:
    data = DJANGO.dumps(value)
    assert repr(codec.loads(data)) == repr(DJANGO.loads(data))


@pytest.mark.parametrize("value", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_stdlib_codec_writes_djangos_exact_bytes(value: dict[str, Any]) -> None:
    assert StdlibJSONCodec().dumps(value) == DJANGO.dumps(value)


def test_stdlib_codec_works_without_the_c_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serializers, "c_make_encoder", None)  # as on Pythons without _json
    value = ROUND_TRIPS["realistic_session"]
    assert StdlibJSONCodec().dumps(value) == DJANGO.dumps(value)


@pytest.mark.parametrize("codec", CODECS)
def test_dumps_returns_bytes(codec: Codec) -> None:
    assert type(codec.dumps({"a": 1})) is bytes


# -- values json rejects ---------------------------------------------------------------------------


def circular_dict() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


def circular_list() -> dict[str, Any]:
    inner: list[Any] = []
    inner.append({"back": inner})
    return {"cart": inner}


REJECTED = {
    "datetime": {"when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)},
    "date": {"day": datetime.date(2024, 1, 2)},
    "time": {"at": datetime.time(12, 30)},
    "timedelta": {"ttl": datetime.timedelta(seconds=5)},
    "decimal": {"total": decimal.Decimal("19.99")},
    "uuid": {"id": uuid.UUID("12345678-1234-5678-1234-567812345678")},
    "uuid_deep_in_a_cart": {"cart": [{"sku": "a"}, {"owner": [uuid.uuid4()]}]},
    "plain_enum": {"color": Color.RED},
    "plain_enum_next_to_nan": {"color": Color.RED, "nan": math.nan},
    "set": {"tags": {1, 2}},
    "frozenset": {"tags": frozenset()},
    "bytes": {"raw": b"abc"},
    "bytearray": {"raw": bytearray(b"abc")},
    "dataclass": {"item": Item("a")},
    "plain_object": {"obj": object()},
    "complex": {"z": 1j},
    "tuple_key": {(1, 2): "pair"},
    "enum_key": {Color.RED: 1},
    "uuid_key": {uuid.UUID(int=0): 1},
    "circular_dict": circular_dict(),
    "circular_list": circular_list(),
}
if serializers.orjson is not None and hasattr(serializers.orjson, "Fragment"):
    REJECTED["orjson_fragment"] = {"raw": serializers.orjson.Fragment(b"[1]")}


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("value", REJECTED.values(), ids=REJECTED.keys())
def test_rejected_value_raises_the_exception_django_raises(
    codec: Codec, value: dict[str, Any]
) -> None:
    with pytest.raises(Exception) as django_error:
        DJANGO.dumps(value)
    with pytest.raises(Exception) as codec_error:
        codec.dumps(value)
    assert type(codec_error.value) is type(django_error.value)
    assert str(codec_error.value) == str(django_error.value)


@pytest.mark.parametrize("codec", CODECS)
def test_uuid_error_says_what_is_not_serializable(codec: Codec) -> None:
    with pytest.raises(TypeError, match="Object of type UUID is not JSON serializable"):
        codec.dumps({"id": uuid.uuid4()})


@pytest.mark.parametrize("codec", CODECS)
def test_circular_reference_raises_value_error(codec: Codec) -> None:
    with pytest.raises(ValueError, match="Circular reference detected"):
        codec.dumps(circular_dict())


@pytest.mark.parametrize("codec", CODECS)
def test_nesting_too_deep_for_json_fails_like_django(codec: Codec) -> None:
    value = {"deep": nested_lists(100_000)}
    assert outcome(lambda: codec.dumps(value)[:0]) == outcome(lambda: DJANGO.dumps(value)[:0])


# -- reading JSON text ---------------------------------------------------------------------------

ACCEPTED_TEXTS = {
    "int_beyond_64_bits": b'{"n":123456789012345678901234567890}',
    "negative_int_beyond_64_bits": b'{"n":-9223372036854775809}',
    "u64_max_plus_one": b'{"n":18446744073709551616}',
    "nineteen_digit_int": b'{"n":9223372036854775807}',
    "long_mantissa": b'{"f":1.00000000000000000000000001}',
    "nan_and_infinity_literals": b'{"a":NaN,"b":Infinity,"c":-Infinity}',
    "overflow_to_infinity": b'{"a":1e400,"b":-1e400,"c":1.7976931348623159e308}',
    "underflow_to_zero": b'{"a":1e-400}',
    "negative_zero": b'{"i":-0,"f":-0.0}',
    "exponents": b'{"a":1E5,"b":1e+16,"c":0.1e1}',
    "lone_surrogate_escapes": b'{"a":"\\ud800","b":"\\udc00\\ud800"}',
    "surrogate_pair_escape": b'{"a":"\\ud83d\\ude00"}',
    "escaped_non_ascii": b'{"a":"\\u00e9\\u65e5"}',
    "duplicate_keys": b'{"a":1,"a":2}',
    "whitespace_around": b' \n{ "a" : [ 1 , 2 ] }\t ',
    "not_utf8_read_as_latin1": b'{"a":"\xe9"}',
    "not_a_dict": b"[1,2]",
}
REJECTED_TEXTS = {
    "empty": b"",
    "truncated": b'{"a":',
    "trailing_comma": b'{"a":1,}',
    "extra_data": b"{}{}",
    "leading_zero": b'{"a":01}',
    "bare_word": b"tru",
    "raw_control_character": b'{"a":"\x01"}',
    "utf8_bom": b"\xef\xbb\xbf{}",
    "single_quotes": b"{'a':1}",
}


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("data", ACCEPTED_TEXTS.values(), ids=ACCEPTED_TEXTS.keys())
def test_loads_reads_json_text_like_django(codec: Codec, data: bytes) -> None:
    assert outcome(lambda: codec.loads(data)) == outcome(lambda: DJANGO.loads(data))


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("data", REJECTED_TEXTS.values(), ids=REJECTED_TEXTS.keys())
def test_loads_rejects_malformed_text_like_django(codec: Codec, data: bytes) -> None:
    with pytest.raises(Exception) as django_error:
        DJANGO.loads(data)
    with pytest.raises(type(django_error.value)) as codec_error:
        codec.loads(data)
    assert type(codec_error.value) is type(django_error.value)


def orjson_limits_nesting() -> bool:
    try:
        serializers.orjson.loads(b"[" * 5000 + b"]" * 5000)
    except serializers.orjson.JSONDecodeError:
        return True
    return False


@pytest.mark.parametrize("codec", CODECS)
def test_loads_rejects_text_nested_too_deep_like_django(codec: Codec) -> None:
    if isinstance(codec, OrjsonJSONCodec) and not orjson_limits_nesting():
        # Before 3.9.15 orjson reads any depth (CVE-2024-27454) where json raises RecursionError.
        # Our dumps never writes such text, so only foreign input would tell the difference.
        pytest.skip(f"orjson {serializers.orjson.__version__} does not limit nesting")
    data = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(RecursionError):
        DJANGO.loads(data)
    with pytest.raises(RecursionError):
        codec.loads(data)


@pytest.mark.parametrize("codec", CODECS)
def test_loads_never_turns_a_big_int_into_a_float(codec: Codec) -> None:
    assert codec.loads(b'{"n":123456789012345678901234567890}') == {
        "n": 123456789012345678901234567890
    }


@pytest.mark.parametrize("codec", CODECS)
def test_loads_reads_utf8_where_django_reads_latin1(codec: Codec) -> None:
    # The one documented difference: our stored format is UTF-8 (orjson writes it). Django's
    # dumps never writes a non-ASCII byte, so no byte string Django wrote is read differently.
    assert codec.loads('{"a":"é"}'.encode()) == {"a": "é"}


# -- the orjson codec ----------------------------------------------------------------------------


@needs_orjson
def test_orjson_codec_writes_non_ascii_text_as_utf8() -> None:
    assert OrjsonJSONCodec().dumps({"name": "Zoë 日本"}) == '{"name":"Zoë 日本"}'.encode()


@needs_orjson
def test_orjson_codec_output_for_a_plain_session_is_orjsons() -> None:
    session = ROUND_TRIPS["realistic_session"]
    assert OrjsonJSONCodec().dumps(session) == serializers.orjson.dumps(session)


def test_orjson_codec_cannot_be_built_without_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.setattr(serializers, "orjson", None)
    with pytest.raises(ImproperlyConfigured, match="pip install orjson"):
        OrjsonJSONCodec()


# -- choosing the codec --------------------------------------------------------------------------

DJANGO_JSON_PATHS = [
    "django.contrib.sessions.serializers.JSONSerializer",
    "django.core.signing.JSONSerializer",
]


@pytest.mark.parametrize("path", DJANGO_JSON_PATHS)
def test_get_codec_gives_djangos_json_serializer_the_fast_codec(path: str) -> None:
    assert isinstance(get_codec(path), StdlibJSONCodec)


@needs_orjson
def test_get_codec_uses_orjson_when_installed() -> None:
    assert isinstance(get_codec("django.core.signing.JSONSerializer"), OrjsonJSONCodec)


def test_get_codec_uses_the_stdlib_codec_without_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serializers, "orjson", None)
    codec = get_codec.__wrapped__("django.core.signing.JSONSerializer")  # bypass the cache
    assert type(codec) is StdlibJSONCodec


def test_get_codec_is_cached_per_path() -> None:
    path = "django.core.signing.JSONSerializer"
    assert get_codec(path) is get_codec(path)


class ReversingError(Exception):
    pass


class ReversingSerializer:
    """A custom serializer with its own format and its own exception."""

    def dumps(self, obj: dict[str, Any]) -> bytes:
        return json.dumps(obj).encode()[::-1]

    def loads(self, data: bytes) -> dict[str, Any]:
        if not data.endswith(b"{"):
            raise ReversingError("not reversed JSON")
        return json.loads(data[::-1])


class UppercaseKeysJSONSerializer(signing.JSONSerializer):
    def dumps(self, obj: dict[str, Any]) -> bytes:
        return super().dumps({key.upper(): value for key, value in obj.items()})


def test_custom_serializer_is_called_unchanged() -> None:
    codec = get_codec("test_serializers.ReversingSerializer")
    assert type(codec) is SerializerCodec
    assert codec.dumps({"a": 1}) == b'}1 :"a"{'
    assert codec.loads(b'}1 :"a"{') == {"a": 1}


def test_custom_serializer_raises_its_own_exceptions() -> None:
    with pytest.raises(ReversingError):
        get_codec("test_serializers.ReversingSerializer").loads(b"{}")


def test_subclass_of_djangos_json_serializer_is_called_unchanged() -> None:
    codec = get_codec("test_serializers.UppercaseKeysJSONSerializer")
    assert type(codec) is SerializerCodec
    assert codec.dumps({"a": 1}) == b'{"A":1}'


# -- generated values ------------------------------------------------------------------------------

# Text includes lone surrogates (hypothesis leaves them out unless asked).
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | any_text
)
keys = any_text | st.integers() | st.floats() | st.booleans() | st.none()
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.tuples(children, children)
        | st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=40,
)
sessions = st.dictionaries(any_text, json_values, max_size=8)
unserializable = st.sampled_from(
    [uuid.UUID(int=1), Color.RED, datetime.date(2024, 1, 1), decimal.Decimal(1), {1}, b"x"]
)


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=150, deadline=None)
@given(session=sessions)
def test_generated_session_round_trips_to_what_django_returns(
    codec: Codec, session: dict[str, Any]
) -> None:
    assert outcome(lambda: codec_round_trip(codec, session)) == outcome(
        lambda: django_round_trip(session)
    )


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=300, deadline=None)
@given(number=st.floats() | st.integers() | st.integers(min_value=2**62, max_value=2**66))
def test_generated_number_round_trips_exactly(codec: Codec, number: float | int) -> None:
    assert repr(codec_round_trip(codec, {"n": [number]})) == repr({"n": [number]})


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=50, deadline=None)
@given(session=sessions, key=any_text, bad=unserializable, depth=st.integers(0, 3))
def test_generated_session_with_an_unserializable_value_raises_like_django(
    codec: Codec, session: dict[str, Any], key: str, bad: Any, depth: int
) -> None:
    for _ in range(depth):
        bad = [{"item": bad}]
    session[key] = bad
    assert outcome(lambda: codec.dumps(session)) == outcome(lambda: DJANGO.dumps(session))
