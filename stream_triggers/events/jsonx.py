"""JSON for the ``*_json`` fields of the Avro records, exact for the Python types metadata carries.

Why: kwargs, results and metadata are free-form maps that travel as JSON strings inside
Avro records.  Plain ``json`` rejects datetimes, turns tuples into lists and sets into
errors; the engine keeps timestamps in instance metadata, so they must come back equal
and of the same type (naive stays naive, an aware value keeps its UTC offset).  Types
JSON lacks travel as tagged objects ``{"$st": <tag>, "v": <value>}`` that any JSON
reader can still parse:

=========== =====================================================
tag         ``v``
=========== =====================================================
datetime    ``isoformat()`` (offset kept; naive has none)
date, time  ``isoformat()``
timedelta   ``[days, seconds, microseconds]``
decimal     ``str(value)``
uuid        canonical string
bytes       base64
set,        items (sets sorted when their items allow it, so the
frozenset,  same set always gives the same text)
tuple
float       ``"nan"``, ``"inf"`` or ``"-inf"`` (JSON has no literal)
dict        ``[[key, value], ...]``: a user dict that itself has a
            ``"$st"`` key, so it is never mistaken for a tag
=========== =====================================================

Subclasses of str/int/float/dict/list (enums, OrderedDict, ...) travel as their base
type, as with ``json``.  Anything else, and non-string dict keys, raise
:class:`CodecError` with reason ``invalid_payload`` and the path of the culprit.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

from stream_triggers.events.errors import CodecError

__all__ = ["TAG", "dumps", "loads"]

TAG = "$st"
_SEPARATORS = (",", ":")


class _Unsupported(Exception):
    """Internal: a value jsonx cannot carry; containers add their key while it unwinds."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []

    def message(self) -> str:
        where = "$" + "".join(reversed(self.path))
        return f"jsonx cannot carry {self.problem} at {where}"


def _items(values: Any) -> list[Any]:
    out = []
    for i, item in enumerate(values):
        try:
            out.append(_encode(item))
        except _Unsupported as exc:
            exc.path.append(f"[{i}]")
            raise
    return out


def _encode_dict(value: Mapping[Any, Any]) -> Any:
    out = {}
    for key, item in value.items():
        if type(key) is not str:
            if not isinstance(key, str):
                raise _Unsupported(f"the dict key {key!r} ({type(key).__name__}; keys must be strings)")
            key = str.__str__(key)
        try:
            out[key] = _encode(item)
        except _Unsupported as exc:
            exc.path.append(f"[{key!r}]")
            raise
    if TAG in out:
        return {TAG: "dict", "v": [[k, v] for k, v in out.items()]}
    return out


def _collection(tag: str, value: set[Any] | frozenset[Any]) -> dict[str, Any]:
    try:
        ordered: Any = sorted(value)
    except TypeError:
        ordered = value  # mixed, unorderable items: iteration order
    return {TAG: tag, "v": _items(ordered)}


def _float(value: float) -> Any:
    if math.isfinite(value):
        return value
    return {TAG: "float", "v": repr(value)}


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    datetime: lambda v: {TAG: "datetime", "v": v.isoformat()},
    date: lambda v: {TAG: "date", "v": v.isoformat()},
    time: lambda v: {TAG: "time", "v": v.isoformat()},
    timedelta: lambda v: {TAG: "timedelta", "v": [v.days, v.seconds, v.microseconds]},
    Decimal: lambda v: {TAG: "decimal", "v": str(v)},
    UUID: lambda v: {TAG: "uuid", "v": str(v)},
    bytes: lambda v: {TAG: "bytes", "v": base64.b64encode(v).decode("ascii")},
    set: lambda v: _collection("set", v),
    frozenset: lambda v: _collection("frozenset", v),
    tuple: lambda v: {TAG: "tuple", "v": _items(v)},
    float: _float,
    dict: _encode_dict,
    list: _items,
}
# Subclass fallback, most specific first (datetime is a date).
_BASES: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (str, str.__str__),
    (int, int),
    (float, lambda v: _float(float(v))),
    (datetime, _ENCODERS[datetime]),
    *((t, f) for t, f in _ENCODERS.items() if t not in (datetime, float)),
    (Mapping, _encode_dict),
)


def _encode(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    encoder = _ENCODERS.get(kind)
    if encoder is not None:
        return encoder(value)
    for base, encoder in _BASES:
        if isinstance(value, base):
            return encoder(value)
    raise _Unsupported(f"a {kind.__module__}.{kind.__qualname__} ({value!r:.80})")


def dumps(obj: Any) -> str:
    """Compact JSON text for ``obj``; :func:`loads` gives back an equal value of the same types."""
    try:
        tree = _encode(obj)
    except _Unsupported as exc:
        raise CodecError("invalid_payload", exc.message()) from None
    except RecursionError:
        raise CodecError("invalid_payload", "jsonx cannot carry a circular or too deeply nested value") from None
    return json.dumps(tree, separators=_SEPARATORS, ensure_ascii=False, allow_nan=False)


def _float_tag(v: str) -> float:
    if v not in ("nan", "inf", "-inf"):
        raise ValueError(f"not a non-finite float: {v!r}")
    return float(v)


def _timedelta(v: list[int]) -> timedelta:
    days, seconds, micros = v
    return timedelta(days=days, seconds=seconds, microseconds=micros)


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "timedelta": _timedelta,
    "decimal": Decimal,
    "uuid": UUID,
    "bytes": lambda v: base64.b64decode(v, validate=True),
    "set": set,
    "frozenset": frozenset,
    "tuple": tuple,
    "float": _float_tag,
    "dict": dict,
}


def _decode_object(obj: dict[str, Any]) -> Any:
    if TAG not in obj:
        return obj
    tag = obj[TAG]
    decoder = _DECODERS.get(tag) if isinstance(tag, str) else None
    if decoder is None or len(obj) != 2 or "v" not in obj:
        raise CodecError("invalid_payload", f"jsonx: malformed tagged object {obj!r:.120}")
    try:
        return decoder(obj["v"])
    except (ValueError, TypeError, AttributeError, InvalidOperation, binascii.Error) as exc:
        raise CodecError("invalid_payload", f"jsonx: bad {tag} value {obj['v']!r:.80}: {exc}") from None


_plain_loads = json.JSONDecoder().decode


def loads(text: str | bytes) -> Any:
    """The value :func:`dumps` encoded; :class:`CodecError` (``invalid_payload``) if ``text`` is not one."""
    try:
        if isinstance(text, str) and TAG not in text:
            # No tagged object inside: the C decoder alone, without a per-object hook.
            return _plain_loads(text)
        return json.loads(text, object_hook=_decode_object)
    except CodecError:
        raise
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise CodecError("invalid_payload", f"jsonx: not JSON text: {exc}") from None
    except RecursionError:
        raise CodecError("invalid_payload", "jsonx: JSON text nested too deeply") from None
