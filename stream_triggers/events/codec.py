"""Avro single-object encoding of every stream record, readable without a schema registry.

Why single-object encoding: a record starts with ``0xC3 0x01`` and the 8-byte
little-endian CRC-64-AVRO fingerprint of its writer schema's Parsing Canonical Form,
so any reader holding ``schemas/*.avsc`` knows the type and can decode the Avro body.

Why a history: schemas evolve (new fields with defaults).  Older versions live in
``schemas/history/<Name>.v<N>.avsc``; their fingerprints are known too, and their
records are resolved to the current (reader) schema, so a new worker reads what an
old producer wrote.

Why it is fast: every schema is parsed and fingerprinted once, at import; encode and
decode are one dict lookup plus fastavro's compiled schemaless writer/reader.
Failures are always :class:`CodecError`, never a raw fastavro exception.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import validate

from stream_triggers.events.errors import CodecError

__all__ = [
    "HEADER_SIZE",
    "HISTORY_DIR",
    "MAGIC",
    "NO_DEFAULT",
    "SCHEMA_DIR",
    "SCHEMA_NAMES",
    "CodecError",
    "decode",
    "encode",
    "field_defaults",
    "schema_fingerprint",
]

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
HISTORY_DIR = SCHEMA_DIR / "history"
MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
NO_DEFAULT: Any = object()
"""Marks a field without a default in :func:`field_defaults`."""

_HISTORY_FILE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[0-9]+)\.avsc$")


def schema_fingerprint(schema: Any) -> bytes:
    """The 8 header bytes: CRC-64-AVRO of the Parsing Canonical Form, little-endian."""
    # fastavro returns those bytes hex-encoded, already in little-endian order (as Java does).
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


@dataclass(frozen=True, slots=True)
class _Writer:
    header: bytes  # MAGIC + fingerprint
    schema: Any  # parsed


@dataclass(frozen=True, slots=True)
class _Reader:
    name: str
    writer: Any  # parsed writer schema
    reader: Any  # parsed current schema, or None when the writer is the current one
    version: str  # "current" or "v<N>", for messages


def _load(path: Path) -> tuple[str, dict[str, Any]]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or raw.get("type") != "record" or not isinstance(raw.get("name"), str):
        raise RuntimeError(f"{path}: not an Avro record schema")
    return raw["name"].rpartition(".")[2], raw


def _build(
    schema_dir: Path, history_dir: Path
) -> tuple[dict[str, _Writer], dict[bytes, _Reader], dict[str, Mapping[str, Any]]]:
    """Parse current and historical schemas; fails loudly at import on any inconsistency."""
    writers: dict[str, _Writer] = {}
    readers: dict[bytes, _Reader] = {}
    defaults: dict[str, Mapping[str, Any]] = {}
    for path in sorted(schema_dir.glob("*.avsc")):
        name, raw = _load(path)
        if path.stem != name:
            raise RuntimeError(f"{path}: file name must be the record name {name!r}")
        fp = schema_fingerprint(raw)
        if fp in readers:
            raise RuntimeError(f"{path}: same fingerprint as {readers[fp].name}")
        parsed = parse_schema(raw)  # each schema gets its own named-type space
        writers[name] = _Writer(MAGIC + fp, parsed)
        readers[fp] = _Reader(name, parsed, None, "current")
        defaults[name] = MappingProxyType({f["name"]: f.get("default", NO_DEFAULT) for f in raw["fields"]})
    for path in sorted(history_dir.glob("*.avsc")) if history_dir.is_dir() else []:
        match = _HISTORY_FILE.match(path.name)
        name, raw = _load(path)
        if match is None or match["name"] != name or name not in writers:
            raise RuntimeError(f"{path}: expected <Name>.v<N>.avsc of a current schema, record name {name!r}")
        fp = schema_fingerprint(raw)
        if fp in readers:
            if readers[fp].name != name:
                raise RuntimeError(f"{path}: same fingerprint as {readers[fp].name}")
            continue  # only docs changed: identical canonical form
        readers[fp] = _Reader(name, parse_schema(raw), writers[name].schema, f"v{match['version']}")
    return writers, readers, defaults


_WRITERS, _READERS, _DEFAULTS = _build(SCHEMA_DIR, HISTORY_DIR)
SCHEMA_NAMES: frozenset[str] = frozenset(_WRITERS)
"""Record type names (without namespace) this version writes."""


def _unknown_type(type_name: str) -> CodecError:
    return CodecError("unknown_schema", f"no schema named {type_name!r}; known: {', '.join(sorted(SCHEMA_NAMES))}")


def field_defaults(type_name: str) -> Mapping[str, Any]:
    """Field name -> default (``NO_DEFAULT`` when required) of the current schema, in order."""
    try:
        return _DEFAULTS[type_name]
    except KeyError:
        raise _unknown_type(type_name) from None


def encode(type_name: str, record: Mapping[str, Any]) -> bytes:
    """Single-object-encode ``record`` with the current schema of ``type_name``.

    Missing fields take their schema default; a missing required field, an unknown field
    or a value of the wrong type raises :class:`CodecError` (``invalid_payload``).
    """
    writer = _WRITERS.get(type_name)
    if writer is None:
        raise _unknown_type(type_name)
    out = BytesIO()
    out.write(writer.header)
    try:
        schemaless_writer(out, writer.schema, record, strict_allow_default=True)
    except Exception as exc:  # fastavro raises TypeError/ValueError/OverflowError/...
        raise CodecError("invalid_payload", f"{type_name}: {_explain(writer.schema, record, exc)}") from exc
    return out.getvalue()


def _explain(schema: Any, record: Any, exc: Exception) -> str:
    """A precise complaint naming the field (error path only, so it may be slow)."""
    if not isinstance(record, Mapping):
        return f"a record must be a mapping, not {type(record).__name__}"
    if "field" in str(exc).lower():  # fastavro already names it
        return str(exc)
    for field in schema["fields"]:
        name = field["name"]
        if name in record and not validate(record[name], field["type"], raise_errors=False):
            return f"field {name!r}: {record[name]!r:.80} does not fit {_describe(field['type'])} ({exc})"
    return f"{type(exc).__name__}: {exc}"


def _describe(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return " | ".join(map(_describe, avro_type))
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "enum":
            return f"enum {avro_type['name'].rpartition('.')[2]} {{{', '.join(avro_type['symbols'])}}}"
        return str(avro_type.get("type"))
    return str(avro_type)


def decode(data: bytes | bytearray | memoryview) -> tuple[str, dict[str, Any]]:
    """``(type name, record)`` of a single-object-encoded record, resolved to the current schema.

    Raises :class:`CodecError`: ``undecodable`` (no magic, too short, corrupt body or
    trailing bytes) or ``unknown_schema`` (a fingerprint no current or historical schema has).
    """
    if len(data) < HEADER_SIZE or data[:2] != MAGIC:
        raise CodecError(
            "undecodable",
            f"not an Avro single-object record: {len(data)} bytes starting {bytes(data[:HEADER_SIZE]).hex() or '-'}",
        )
    entry = _READERS.get(bytes(data[2:HEADER_SIZE]))
    if entry is None:
        raise CodecError("unknown_schema", f"no known schema has fingerprint {bytes(data[2:HEADER_SIZE]).hex()}")
    body = BytesIO(data)
    body.seek(HEADER_SIZE)
    try:
        record = schemaless_reader(body, entry.writer, entry.reader)
    except Exception as exc:  # EOFError, UnicodeDecodeError, IndexError, SchemaResolutionError, ...
        raise CodecError(
            "undecodable", f"corrupt {entry.name} ({entry.version}) body: {type(exc).__name__}: {exc}"
        ) from exc
    if body.tell() != len(data):
        raise CodecError(
            "undecodable", f"{entry.name} ({entry.version}) body has {len(data) - body.tell()} trailing bytes"
        )
    return entry.name, record
