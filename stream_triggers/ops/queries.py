"""Interactive queries over HTTP: a worker serves its sessions' committed state.

``GET /sessions/<uid>?partitions=<N>`` on a worker's HTTP port (the ``--metrics-port``
server; ``N`` is the ``events`` partition count, so the worker can tell which partition
the session belongs to) answers with JSON:

* 200 ``{"found": true, "session_uid", "partition", "epoch", "applied_offset", "state"}``
  - ``state`` is the session's committed state record bytes (base64), exactly what the
  changelog holds; the reader decodes it like a changelog record;
* 200 ``{"found": false, ...}`` - the worker owns the partition and has no such session;
* 404 ``{"error": "not_owner", ...}`` - the worker does not own that partition (any more);
* 503 ``{"error": "restoring", ...}`` - it owns it but is still restoring it.

Only committed state is served: the worker's RocksDB store, which is written after the
changelog acknowledged the state (stream/checkpoint.py, step 3), never the batch in
hand.  So a reader never sees a state that a crash could still take back.

This module is transport only: the server side reads a worker through the small
:class:`SessionSource` protocol (ops/ sits below stream/), the client side returns
the raw record for the caller to decode.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from stream_triggers.exceptions import StreamTriggersError

__all__ = [
    "SESSIONS_PATH",
    "CommittedSession",
    "NotOwner",
    "OwnerAnswer",
    "OwnerUnavailable",
    "Restoring",
    "SessionSource",
    "ask_owner",
    "session_route",
]

SESSIONS_PATH = "/sessions/"

Route = Callable[[str, dict[str, list[str]]], tuple[int, str, bytes]]
"""(path, query) -> (status, content type, body)."""


@dataclass(frozen=True, slots=True)
class CommittedSession:
    """A session's committed record as its owner holds it (``state`` None: no such session)."""

    partition: int
    epoch: int
    applied_offset: int = -1
    state: bytes | None = None


class NotOwner(StreamTriggersError, LookupError):
    """The worker does not own the session's partition."""


class Restoring(StreamTriggersError, LookupError):
    """The worker owns the partition but has not restored it yet."""


class SessionSource(Protocol):
    def committed_session(self, uid: str, partitions: int | None) -> CommittedSession:
        """The committed record of ``uid``; raises :class:`NotOwner` or :class:`Restoring`."""
        ...


def _json(code: int, document: dict[str, Any]) -> tuple[int, str, bytes]:
    return code, "application/json", json.dumps(document).encode() + b"\n"


def session_route(source: SessionSource) -> Route:
    """The ``/sessions/<uid>`` handler for the worker's HTTP server."""

    def handle(path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        uid = urllib.parse.unquote(path[len(SESSIONS_PATH) :])
        if not uid:
            return _json(400, {"error": "bad_request", "detail": "GET /sessions/<uid>?partitions=<N>"})
        try:
            partitions = int(query["partitions"][0]) if "partitions" in query else None
            if partitions is not None and partitions < 1:
                raise ValueError(partitions)
        except ValueError:
            return _json(400, {"error": "bad_request", "detail": "partitions must be a positive integer"})
        try:
            found = source.committed_session(uid, partitions)
        except NotOwner as exc:
            return _json(404, {"error": "not_owner", "session_uid": uid, "detail": str(exc)})
        except Restoring as exc:
            return _json(503, {"error": "restoring", "session_uid": uid, "detail": str(exc)})
        document: dict[str, Any] = {
            "found": found.state is not None,
            "session_uid": uid,
            "partition": found.partition,
            "epoch": found.epoch,
        }
        if found.state is None:
            document["detail"] = "not found: the owner of this partition has no committed state for it"
        else:
            document["applied_offset"] = found.applied_offset
            document["state"] = base64.b64encode(found.state).decode()
        return _json(200, document)

    return handle


# -- the reader's side ------------------------------------------------------------------------


class OwnerUnavailable(StreamTriggersError, RuntimeError):
    """The advertised owner did not give an answer (down, moved on, restoring, or garbled)."""


@dataclass(frozen=True, slots=True)
class OwnerAnswer:
    """What the owner said: the record (``state`` None: it has no such session)."""

    partition: int
    epoch: int
    applied_offset: int = -1
    state: bytes | None = None


def ask_owner(endpoint: str, uid: str, partitions: int, timeout_s: float) -> OwnerAnswer:
    """Ask the worker at ``endpoint`` (``host:port``) for ``uid``'s committed record."""
    url = f"http://{endpoint}{SESSIONS_PATH}{urllib.parse.quote(uid, safe='')}?partitions={partitions}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace").strip()
        raise OwnerUnavailable(f"{endpoint} answered {exc.code}: {detail}") from exc
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections
        raise OwnerUnavailable(f"{endpoint} did not answer: {getattr(exc, 'reason', exc)}") from exc
    try:
        document = json.loads(body)
        answer = OwnerAnswer(int(document["partition"]), int(document["epoch"]))
        if document["found"]:
            state = base64.b64decode(document["state"], validate=True)
            answer = OwnerAnswer(answer.partition, answer.epoch, int(document["applied_offset"]), state)
    except (ValueError, TypeError, KeyError) as exc:
        raise OwnerUnavailable(f"{endpoint} answered something else than a session query: {body[:80]!r}") from exc
    return answer
