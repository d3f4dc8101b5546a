"""Checks at the edge: configurations and JSON payloads, with messages that name the culprit."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from stream_triggers.engine.errors import InvalidConfiguration, InvalidPayload
from stream_triggers.engine.inputs import (
    ConfigurationUpdated,
    Input,
    LogsResolved,
    MetadataUpdated,
    ReplayRequested,
    RetryRequested,
    SkipRequested,
    StatusReported,
    StatusUpdated,
    TriggerFired,
)
from stream_triggers.engine.payloads import (
    ENVELOPE_DEPTHS,
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_DEPTH,
    Weigher,
    check_configuration_weight,
    checked_payload,
    checked_value,
    clipped_repr,
    plain_weight,
)
from stream_triggers.types import TaskConfig, TaskInstance

__all__ = ["build_task_configs", "checked_input", "checked_instance", "json_mapping"]

_SCALARS = (str, int, float, bool, type(None))


def build_task_configs(configuration: Any) -> dict[str, TaskConfig]:
    """Validate a whole ``update_configuration`` payload and build its TaskConfigs.

    Either every task is valid or :class:`InvalidConfiguration` is raised before
    anything is built, so a bad payload never half-applies.  A configuration too deep
    or too heavy (see :mod:`stream_triggers.engine.payloads`) raises :class:`InvalidPayload`.  TaskConfigs are
    immutable, so sessions configured alike share them (see ``_shared``).
    """
    if not isinstance(configuration, Mapping):
        raise InvalidPayload(
            f"A configuration must be a mapping of task name to directives, not {type(configuration).__name__}."
        )
    key = _shared_key(configuration)
    source, configs = _shared.get(key, (None, None)) if key is not None else (None, None)
    # JSON text alone would mistake {1: ...} for {"1": ...}: the source must be equal too.
    if configs is None or source != configuration:
        check_configuration_weight(configuration)  # (a configuration seen before passed already)
        configs = {}
        for name, directives in configuration.items():
            if not isinstance(name, str) or not name:
                raise InvalidConfiguration(repr(name), "<name>", "task names must be non-empty strings")
            configs[name] = build_task_config(name, directives)
        _share_trigger_sets(configs.values())
        if key is not None:
            if len(_shared) >= _SHARED_MAX:
                _shared.clear()
            _shared[key] = (json.loads(key), configs)
    return dict(configs)


# Configurations built lately, by their JSON text: usually every session of an
# application gets the same one, and sharing its TaskConfigs saves the time to build
# them and the memory of a copy per session.
_SHARED_MAX = 256
_shared: dict[str, tuple[Any, dict[str, TaskConfig]]] = {}


def _share_trigger_sets(configs: Any) -> None:
    """Tasks waiting for the same triggers get the same ``after``/``unless`` set object.

    The engine compares such sets by identity to treat alike instances in one go.
    (The configs are still being built here; nothing else holds them yet.)
    """
    pool: dict[frozenset[str], frozenset[str]] = {}
    for config in configs:
        config.after = pool.setdefault(config.after, config.after)
        config.unless = pool.setdefault(config.unless, config.unless)


def _shared_key(configuration: Mapping[str, Any]) -> str | None:
    # Not sort_keys: task order decides the order a fire settles tasks in, so a
    # configuration equal to an earlier one but in another order must not share its configs.
    try:
        return json.dumps(configuration, allow_nan=False)
    except (TypeError, ValueError, RecursionError):  # not plain JSON: build it afresh, let validation speak
        return None


def build_task_config(name: str, directives: Any) -> TaskConfig:
    if not isinstance(directives, Mapping):
        raise InvalidConfiguration(name, "<task>", f"must be a mapping of directives, not {type(directives).__name__}")
    for required in ("after", "run"):
        if required not in directives:
            raise InvalidConfiguration(name, required, "is required")
    after = _trigger_list(name, "after", directives["after"])
    if not after and not directives.get("andEvery"):
        raise InvalidConfiguration(name, "after", "must name at least one trigger")
    run = directives["run"]
    if not isinstance(run, str) or not run:
        raise InvalidConfiguration(name, "run", f"must be a task name (string), not {clipped_repr(run)}")
    unless = directives.get("unless")
    unless = _trigger_list(name, "unless", unless) if unless is not None else []
    and_every = directives.get("andEvery")
    if and_every is not None and (not isinstance(and_every, str) or not and_every):
        raise InvalidConfiguration(
            name, "andEvery", f"must be a single trigger name (string), not {clipped_repr(and_every)}"
        )
    using = directives.get("using")
    if using is not None and (not isinstance(using, str) or not using):
        raise InvalidConfiguration(name, "using", f"must be a task runner name, not {clipped_repr(using)}")
    with_params = directives.get("withParams")
    if with_params is not None:
        if not isinstance(with_params, Mapping) or not all(
            isinstance(k, str) and isinstance(v, Mapping) for k, v in with_params.items()
        ):
            raise InvalidConfiguration(
                name,
                "withParams",
                "must be a dict of dicts (trigger name -> kwargs), e.g. {'scoring': {'model': 'Psych 01'}}",
            )
        with_params = {k: json_mapping(v, f"task {name!r} withParams[{k!r}]") for k, v in with_params.items()}
    extras = {}
    for key, value in directives.items():
        if key in ("after", "run", "unless", "andEvery", "using", "withParams"):
            continue
        if not isinstance(key, str):
            raise InvalidConfiguration(name, repr(key), "directive names must be strings")
        extras[key] = checked_value(value, f"task {name!r} directive {key!r}")
    return TaskConfig(
        name=name,
        after=after,
        run=run,
        unless=unless,
        using=using,
        withParams=with_params,
        andEvery=and_every,
        **extras,
    )


def _trigger_list(task: str, directive: str, value: Any) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
        raise InvalidConfiguration(
            task, directive, f"must be a list of trigger names, not {type(value).__name__} {clipped_repr(value)}"
        )
    for item in value:
        if not isinstance(item, str) or not item:
            raise InvalidConfiguration(
                task, directive, f"must contain only non-empty strings; found {clipped_repr(item)}"
            )
    return list(value)


def json_mapping(value: Any, what: str) -> dict[str, Any]:
    """A copy of ``value`` if it follows the payload rules (:mod:`stream_triggers.engine.payloads`),
    else :class:`InvalidPayload` naming the path and type of the culprit.

    Copying protects the session state from a caller that later mutates its dict.
    """
    if value is None:
        return {}
    if type(value) is not dict and not isinstance(value, Mapping):  # (a plain dict skips the ABC check)
        kind = type(value).__name__
        raise InvalidPayload(f"{_capital(what)} must be a mapping (dict), not {kind}: {clipped_repr(value)}")
    try:
        return _plain_dict(value, 1)
    except _Unusual:
        # Something other than plain JSON types, or nested too deep: the payload rules
        # normalise it (subclasses, other mappings) or name the culprit in their error.
        return _copied(checked_payload(value, what))


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _copied(value: Any) -> Any:
    """A copy of a checked payload's containers (its leaves are immutable)."""
    kind = type(value)
    if kind is dict:
        return {key: _copied(item) for key, item in value.items()}
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        return kind(_copied(item) for item in value)
    return value


# The fast path (every fire() copies its kwargs): exact built-in types only, and no
# per-value description strings - those are built only when something is unusual.
_PLAIN_SCALARS = frozenset({str, int, bool, type(None)})


class _Unusual(Exception):
    """Not plain JSON types: let the thorough copy decide."""


def _plain_dict(value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
    # Copy in C first, then replace only the nested containers: most values are
    # scalars and stay as they are.  (Assigning existing keys while iterating is safe.)
    if depth > MAX_PAYLOAD_DEPTH:
        raise _Unusual
    out = dict(value)
    for key, item in out.items():
        if type(key) is not str:
            raise _Unusual
        kind = type(item)
        if kind in _PLAIN_SCALARS:
            continue
        if kind is dict:
            out[key] = _plain_dict(item, depth + 1)
        else:
            out[key] = _plain_value(item, depth + 1)
    return out


def _plain_value(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return value
    if kind is dict:
        return _plain_dict(value, depth)
    if kind is list or kind is tuple:  # (a tuple stays one, as the payload rules keep it)
        if depth > MAX_PAYLOAD_DEPTH:
            raise _Unusual
        return kind([_plain_value(item, depth + 1) for item in value])
    if kind is float and math.isfinite(value):
        return value
    raise _Unusual


# Per input type: its payload fields, each with how to name it in a message.
_Fields = tuple[tuple[str, Callable[[Any], str]], ...]
_PAYLOADS: dict[type, _Fields] = {
    TriggerFired: (("kwargs", lambda e: f"kwargs of trigger {e.trigger!r}"),),
    StatusReported: (
        ("metadata", lambda e: f"metadata reported for {e.instance!r}"),
        ("result", lambda e: f"result reported for {e.instance!r}"),
    ),
    RetryRequested: (
        ("metadata", lambda e: f"metadata of the retry of {e.instance!r}"),
        ("replacement_kwargs", lambda e: f"replacement kwargs for {e.instance!r}"),
    ),
    ReplayRequested: (("replacement_kwargs", lambda e: f"replacement kwargs for {e.instance!r}"),),
    SkipRequested: (("result", lambda e: f"result for skipped {e.instance!r}"),),
    StatusUpdated: (
        ("metadata", lambda e: f"metadata for {e.instance!r}"),
        ("cascade_kwargs", lambda e: f"cascade kwargs for {e.instance!r}"),
    ),
    MetadataUpdated: (("metadata", lambda e: f"metadata for {e.instance!r}"),),
    LogsResolved: (),
}


def checked_input(event: Input) -> Input:
    """``event`` if its payloads follow the rules (a copy with them normalised if needed).

    Raises :class:`InvalidPayload` otherwise (rules: :mod:`stream_triggers.engine.payloads`).
    A configuration is checked whole by :func:`build_task_configs`.  The weight of an input is the sum over its
    payloads of the UTF-8 bytes of every string (keys included) and ``bytes`` value,
    plus ``_ITEM_BYTES`` for every other value and every container: close to the size
    of their JSON text, and cheap to count.  What a runner's report echoes back is
    counted once (``_echoed_weight``).
    """
    kind = type(event)
    if kind is TriggerFired:  # (the hot path: one payload, usually a small map of plain values)
        kwargs = event.kwargs
        if type(kwargs) is dict and 0 <= plain_weight(kwargs, 1) <= MAX_PAYLOAD_BYTES:
            return event
        weigher = Weigher()
        checked = checked_payload(kwargs, f"kwargs of trigger {event.trigger!r}", weigher)
        if weigher.size > MAX_PAYLOAD_BYTES:
            raise _too_heavy(event, weigher.size)
        return event if checked is kwargs else TriggerFired(event.trigger, checked, event.at)
    if kind is ConfigurationUpdated:
        build_task_configs(event.configuration)  # (cached: sessions are configured alike)
        return event
    fields = _PAYLOADS.get(kind)
    if fields is None:
        raise TypeError(f"not an engine input: {clipped_repr(event)}")
    weigher = Weigher()
    changes = {}
    for field, what in fields:
        value = getattr(event, field)
        envelope = ENVELOPE_DEPTHS if field == "metadata" else None
        checked = checked_payload(value, what(event), weigher, envelope=envelope)
        if checked is not value:
            changes[field] = checked
    if kind is StatusReported and event.metadata:  # type: ignore[union-attr]
        weigher.size -= _echoed_weight(event)  # type: ignore[arg-type]
    if weigher.size > MAX_PAYLOAD_BYTES:
        raise _too_heavy(event, weigher.size)
    if not changes:
        return event
    values = {name: getattr(event, name) for name in event.__slots__}  # type: ignore[union-attr]
    values.update(changes)
    return kind(**values)


def _echoed_weight(report: StatusReported) -> int:
    """What a runner's report echoes back is not weighed again: the instance's own kwargs
    (``actualKwargs``, each weighed when it was fired) and the result it carries twice
    (in ``metadata`` and as ``result``).  The copies are compared by value: a report
    decoded from a record (Kafka, the RocksDB log) holds two equal copies, and must weigh
    what it weighed when it was first applied."""
    metadata = report.metadata or {}
    echoed = [metadata.get(TaskInstance.META_ACTUAL_KWARGS)]
    result = report.result
    if result is not None:
        copy = metadata.get(TaskInstance.META_RESULT)
        if copy is result or (type(copy) is type(result) and copy == result):
            echoed.append(result)
    weigher = Weigher()
    for value in echoed:
        if value is not None:
            weigher.value(value, 0)  # (checked already: weighed only)
    return weigher.size


def _too_heavy(event: Input, size: int) -> InvalidPayload:
    names = " and ".join(field for field, _ in _PAYLOADS[type(event)])
    return InvalidPayload(
        f"The {names} of this {type(event).__name__} weigh {size:,} bytes, more than the "
        f"{MAX_PAYLOAD_BYTES:,} a single input may carry (MAX_PAYLOAD_BYTES)."
    )


def checked_instance(instance: TaskInstance) -> TaskInstance:
    """``instance`` if its kwargs and metadata follow the payload rules (normalised if needed).

    For edits made outside ``step`` (an instance changed under ``acquire_lock()``, one
    created by hand), so that they meet the rules inputs meet.  Raises
    :class:`InvalidPayload`.  No size limit here: an instance gathers the kwargs of many
    inputs, each of which was weighed.
    """
    name = instance.name
    weigher = Weigher()
    # (kwargs map each trigger to its payload; metadata wraps a result and actualKwargs)
    kwargs = checked_payload(instance.kwargs, f"kwargs of instance {name!r}", weigher, depth=0)
    metadata = checked_payload(instance.metadata, f"metadata of instance {name!r}", weigher, envelope=ENVELOPE_DEPTHS)
    if kwargs is instance.kwargs and metadata is instance.metadata:
        return instance
    return instance.evolve(kwargs=kwargs, metadata=metadata)
