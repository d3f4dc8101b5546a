"""The payload rules: what an input's kwargs, results and metadata may hold, for every storage.

Why here: every storage and every shell applies inputs through the engine - ``step``
checks each input (:func:`~stream_triggers.engine.validation.checked_input`) before
applying it, and the ``kafka`` storage encodes inputs with
:func:`~stream_triggers.events.records.record_from_input`, which checks them too - so one
check refuses a payload before anything is stored or published, and memory, RocksDB and
Kafka accept exactly the same payloads.

A payload (an input's ``kwargs``, ``result``, ``metadata``, ``replacement_kwargs``,
``cascade_kwargs``) is ``None`` or a mapping with string keys whose values are:

* JSON values: ``str`` (valid Unicode), ``int`` (64-bit: from -2**63 to 2**64 - 1),
  ``float`` (``nan`` and infinities included), ``bool``, ``None``, lists and mappings
  with string keys;
* the Python values both encodings carry exactly: ``datetime``, ``date``, ``time``,
  ``timedelta``, ``Decimal``, ``UUID``, ``bytes``, ``tuple``, ``set``, ``frozenset``.

Subclasses of ``str``, ``int``, ``float``, ``dict``, ``list``, ``tuple``, ``set`` and
``frozenset`` (enums, ``OrderedDict``, named tuples...) and other mappings are stored as
their base type - what a round trip through RocksDB or Kafka gives back anyway.
Containers nest at most :data:`MAX_PAYLOAD_DEPTH` deep in the user's own payload: the
levels a report wraps around it (an instance's kwargs by trigger, ``result`` and
``actualKwargs`` in a report's metadata, see :data:`ENVELOPE_DEPTHS`) do not count, so
what a task was fired with or returned is never refused once wrapped.  The payloads of one input
weigh at most :data:`MAX_PAYLOAD_BYTES` (see ``checked_input`` for how they are
weighed).  Anything else raises :class:`InvalidPayload` naming the input, the field and
the path of the culprit.  Configurations are checked by ``build_task_configs``; here
only their depth and size.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from stream_triggers.engine.errors import InvalidPayload
from stream_triggers.types import TaskInstance

__all__ = [
    "ENVELOPE_DEPTHS",
    "MAX_PAYLOAD_BYTES",
    "MAX_PAYLOAD_DEPTH",
    "clipped_repr",
    "Weigher",
    "check_configuration_weight",
    "checked_payload",
    "checked_value",
    "plain_weight",
]

MAX_PAYLOAD_BYTES = 512 * 1024
"""The most the payloads of one input may weigh (well under Kafka's default 1 MiB message)."""

MAX_PAYLOAD_DEPTH = 64
"""The deepest containers may nest in a payload (the payload mapping itself is level 1)."""

ENVELOPE_DEPTHS: dict[str, int] = {TaskInstance.META_RESULT: 1, TaskInstance.META_ACTUAL_KWARGS: 0}
"""Metadata keys whose value is a user payload of its own, by the level it starts at: a
task's result is a payload (level 1), the kwargs it ran with map each trigger to its
payload (level 0, as an instance's kwargs)."""

_CLIP = 80
"""Characters of a value a message quotes at most."""

_reprs: dict[int, reprlib.Repr] = {}

_ITEM_BYTES = 8
"""What a number, bool, None or container counts for (strings count their UTF-8 bytes)."""

_INT_MIN, _INT_END = -(2**63), 2**64
_EXACT_LEAVES = frozenset({datetime, date, time, timedelta, Decimal, UUID, bytes})
_BASE_LEAVES = (datetime, date, time, timedelta, Decimal, UUID, bytes)
_KINDS = (
    "JSON values (str, int, float, bool, None, lists, mappings with string keys), "
    "datetime, date, time, timedelta, Decimal, UUID, bytes, tuple, set or frozenset"
)


class _Refused(Exception):
    """Internal: the culprit's problem; containers add their key while it unwinds."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []

    def where(self) -> str:
        return "".join(reversed(self.path))


class Weigher:
    """Walks one input's payloads: checks every value, adds up their weight."""

    __slots__ = ("size", "strict")

    def __init__(self, strict: bool = True) -> None:
        self.size = 0
        self.strict = strict  # False for configurations: types are build_task_configs' business

    def mapping(self, value: Mapping[Any, Any], depth: int) -> Mapping[Any, Any]:
        """``value``, or a plain-dict copy of it if anything inside needed normalising."""
        if depth > MAX_PAYLOAD_DEPTH:
            raise _Refused(f"nests containers more than {MAX_PAYLOAD_DEPTH} deep")
        out: dict[str, Any] | None = None if type(value) is dict else {}
        size = _ITEM_BYTES
        for key, item in value.items():
            if type(key) is not str:
                original, key = key, self._key(key)
                if out is None:  # the keys so far were plain: copy up to this one
                    out = {}
                    for before, before_item in value.items():
                        if before is original:
                            break
                        out[before] = before_item
            size += len(key) if key.isascii() else _utf8_size(key, "has a key that")
            kind = type(item)
            try:
                # (The usual leaves inlined: most payloads are flat maps of scalars.)
                if kind is str:
                    size += len(item) if item.isascii() else _utf8_size(item)
                    new = item
                elif kind is int:
                    if not _INT_MIN <= item < _INT_END:
                        raise _Refused(f"is {_clipped_int(item)}, outside the 64-bit range storages carry")
                    size += _ITEM_BYTES
                    new = item
                elif kind is bool or kind is float or item is None:
                    size += _ITEM_BYTES
                    new = item
                else:
                    new = self.value(item, depth + 1)
            except _Refused as exc:
                exc.path.append(f"[{key!r}]")
                raise
            if out is not None:
                out[key] = new
            elif new is not item:
                out = dict(value)
                out[key] = new
        self.size += size
        return value if out is None else out

    def _key(self, key: Any) -> str:
        if isinstance(key, str):
            return str.__str__(key)
        if not self.strict:
            return repr(key)  # (weighed only; build_task_configs names the bad key)
        raise _Refused(f"has the key {clipped_repr(key)} ({type(key).__name__}); keys must be strings")

    def value(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            self.size += len(value) if value.isascii() else _utf8_size(value)
            return value
        if kind is bool or kind is float or value is None:
            self.size += _ITEM_BYTES
            return value
        if kind is int:
            if not _INT_MIN <= value < _INT_END:
                raise _Refused(f"is {_clipped_int(value)}, outside the 64-bit range storages carry")
            self.size += _ITEM_BYTES
            return value
        if kind is dict:
            return self.mapping(value, depth)
        if kind is list or kind is tuple or kind is set or kind is frozenset:
            return self.items(kind, value, depth)
        if kind in _EXACT_LEAVES:
            self.size += len(value) if kind is bytes else _ITEM_BYTES
            return value
        return self.unusual(value, depth)

    def items(self, kind: type, value: Any, depth: int) -> Any:
        if depth > MAX_PAYLOAD_DEPTH:
            raise _Refused(f"nests containers more than {MAX_PAYLOAD_DEPTH} deep")
        self.size += _ITEM_BYTES
        changed = False
        new_items = []
        for index, item in enumerate(value):
            try:
                new = self.value(item, depth + 1)
            except _Refused as exc:
                exc.path.append(f"[{index}]" if kind is list or kind is tuple else f"{{{clipped_repr(item, 40)}}}")
                raise
            changed = changed or new is not item
            new_items.append(new)
        return kind(new_items) if changed else value

    def unusual(self, value: Any, depth: int) -> Any:
        """Subclasses and other mappings, stored as their base type; anything else refused."""
        if isinstance(value, str):
            return self.value(str.__str__(value), depth)
        if isinstance(value, int):
            return self.value(int(value), depth)
        if isinstance(value, float):
            return self.value(float(value), depth)
        if isinstance(value, Mapping):
            return dict(self.mapping(value, depth))
        for base in (list, tuple, set, frozenset):
            if isinstance(value, base):
                return base(self.items(base, value, depth))
        if isinstance(value, _BASE_LEAVES):
            self.size += len(value) if isinstance(value, bytes) else _ITEM_BYTES
            return value
        if not self.strict:
            self.size += _ITEM_BYTES
            return value
        kind = type(value)
        raise _Refused(
            f"is a {kind.__module__}.{kind.__qualname__} ({clipped_repr(value)}); a payload holds only {_KINDS}"
        )


def plain_weight(value: dict[Any, Any], depth: int) -> int:
    """The weight of a dict of plain JSON values in ASCII, or -1 for anything more (the fast path:
    the thorough :class:`Weigher` then decides)."""
    if depth > MAX_PAYLOAD_DEPTH:
        return -1
    size = _ITEM_BYTES
    for key, item in value.items():
        if type(key) is not str or not key.isascii():
            return -1
        size += len(key)
        kind = type(item)
        if kind is str:
            if not item.isascii():
                return -1
            size += len(item)
        elif kind is int:
            if not _INT_MIN <= item < _INT_END:
                return -1
            size += _ITEM_BYTES
        elif kind is bool or kind is float or item is None:
            size += _ITEM_BYTES
        elif kind is dict:
            nested = plain_weight(item, depth + 1)
            if nested < 0:
                return -1
            size += nested
        else:
            return -1
    return size


def _utf8_size(text: str, what: str = "is a string that") -> int:
    try:
        return len(text.encode())
    except UnicodeEncodeError as exc:
        raise _Refused(
            f"{what} is not valid Unicode ({exc.reason} at position {exc.start}): {clipped_repr(text, 40)}"
        ) from None


def checked_payload(
    value: Any, what: str, weigher: Weigher | None = None, depth: int = 1, envelope: Mapping[str, int] | None = None
) -> Any:
    """``value`` (or its normalised copy) if it is an acceptable payload; else :class:`InvalidPayload`.

    ``what`` names it in the message (e.g. ``"kwargs of trigger 'go'"``).  ``depth`` is
    the level ``value`` itself is at (0 for a mapping of payloads, such as an instance's
    kwargs); ``envelope`` names keys whose values are payloads of their own, by the level
    they start at (:data:`ENVELOPE_DEPTHS` for metadata).  Only the depth and each value
    are checked here; the size limit applies to a whole input.
    """
    if value is None:
        return None
    weigher = weigher if weigher is not None else Weigher()
    if not isinstance(value, Mapping):
        raise InvalidPayload(
            f"{_capital(what)} must be a mapping (dict), not {type(value).__name__}: {clipped_repr(value)}"
        )
    try:
        if envelope is None or envelope.keys().isdisjoint(value):
            return weigher.mapping(value, depth)
        return _enveloped(value, depth, envelope, weigher)
    except _Refused as exc:
        raise InvalidPayload(f"{_capital(what)}{exc.where()} {exc.problem}.") from None


def checked_value(value: Any, what: str, depth: int = 2) -> Any:
    """One value inside a payload (``depth``: its level), checked and normalised like one."""
    try:
        return Weigher().value(value, depth)
    except _Refused as exc:
        raise InvalidPayload(f"{_capital(what)}{exc.where()} {exc.problem}.") from None


def _enveloped(value: Mapping[Any, Any], depth: int, envelope: Mapping[str, int], weigher: Weigher) -> Any:
    """A mapping checked as a whole but for its ``envelope`` keys, whose values start afresh."""
    inner = {key: value[key] for key in envelope if key in value}
    rest = {key: item for key, item in value.items() if key not in inner}
    checked_rest = weigher.mapping(rest, depth)
    changed = checked_rest is not rest or type(value) is not dict
    checked_inner = {}
    for key, item in inner.items():
        weigher.size += len(key)
        try:
            checked_inner[key] = new = weigher.value(item, envelope[key])
        except _Refused as exc:
            exc.path.append(f"[{key!r}]")
            raise
        changed = changed or new is not item
    if not changed:
        return value
    return {**checked_rest, **checked_inner}


def clipped_repr(value: Any, limit: int = _CLIP) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages (never a whole huge value)."""
    bounded = _reprs.get(limit)
    if bounded is None:
        bounded = _reprs[limit] = reprlib.Repr()  # (abbreviates containers: never builds a huge text)
        bounded.maxstring = bounded.maxother = bounded.maxlong = limit
    try:
        text = bounded.repr(value)
    except Exception:  # (a repr that fails must not hide the refusal)
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _clipped_int(value: int) -> str:
    """An int's digits, clipped (int->str of a huge int is slow, and refused above 4,300 digits)."""
    if value.bit_length() > 256:
        return f"a {value.bit_length()}-bit integer"
    return clipped_repr(value)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def check_configuration_weight(configuration: Mapping[str, Any]) -> None:
    """Refuse a configuration nested too deep or too heavy (its directives are checked by
    ``build_task_configs``, which calls this)."""
    weigher = Weigher(strict=False)
    checked_payload(configuration, "the configuration", weigher)
    if weigher.size > MAX_PAYLOAD_BYTES:
        raise InvalidPayload(
            f"The configuration weighs {weigher.size:,} bytes, more than the {MAX_PAYLOAD_BYTES:,} "
            "a single input may carry (MAX_PAYLOAD_BYTES)."
        )
