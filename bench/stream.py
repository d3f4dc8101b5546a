#!/usr/bin/env python
"""The stream worker against the Quix Streams peer, same workload, same machine, same run.

A benchmark *script*: it prints figures (a table, and ``--json FILE`` writes them all
as one object) and never asserts timings.  The machine is shared and noisy, so only
ratios measured side by side in one invocation (``--compare-quix``) mean much.

The workload is the peer's: ``../shared/peers/quix/gen_workload.py`` is imported (not
copied) and its ``events(sessions, seed, concurrency)`` is encoded as our events -
20,000 sessions, seed 42, 1,000 live sessions, 160,000 events by default:

* ``configure`` -> ``ConfigurationUpdated``: each task name maps to
  ``{"after": [...], "run": "bench.noop", "using": "noop"}``.  The worker-side ``noop``
  runner finishes every instance at once with an empty result *inside the worker*, so
  a chain of tasks resolves on the same input event, exactly as in the peer;
* ``trigger`` -> ``TriggerFired`` with ``{}`` kwargs;
* envelope: ``event_id = str(seq)`` (so an output's ``cause_event_id`` gives the cause
  seq), ``session_uid``, ``produced_at`` = time of produce (µs since the epoch).

Records are keyed by session UID, produced with confluent-kafka (``murmur2_random``)
to ``<prefix>.events`` on a fresh embedded Tansu broker, topics made by
``stream.topics.create_topics`` (4 partitions).  Workers are ``stream-triggers worker``
subprocesses (the ``finalizing`` manager), stopped by PID (SIGTERM, SIGKILL after a
timeout).  ``bench/check_stream.py`` checks every output against the peer's
``expected()``: ``finished`` InstanceStatusChanged = ``("task-run", task)``,
SessionFinalized = ``("session-finalized", None)``, each exactly once with the
expected cause seq.

Modes:

* preload (default): produce everything, then start the worker(s) and drain.
  events/s = input events / (last - first applied event, from the worker's
  ``--stats-out``); CPU µs per event = worker process CPU between those two moments /
  events; peak RSS = the worker's own high-water mark (``VmHWM``); startup = process start
  to first event applied.
* paced (``--rate 2000 [--duration 30]``): workers start first, then events are produced
  at the rate; latency = receive time in the checker - the cause's ``produced_at``.
* ``--workers 2 --join-at S``: the second worker starts S s into the stream (after the
  generator starts when paced, after the first worker when preloading); the pause is
  the largest silence of the output stream after that moment.  ``--workers 2 --kill-at
  S``: ``kill -9`` of the last worker at S; failover gap = largest silence after it,
  duplicates = outputs whose (session, instance, status) was already seen.

Both sides also report ``engine`` (ours: what the worker says in its stats or log, else
"python"; the peer: "quixstreams") and the bytes of their changelog and output topics per
input event, read back from the topics after the run (key + value sizes).

``--compare-quix`` runs the peer's own ``bench.py`` the way ``../shared/peers/README.md``
says, on a fresh broker of its own (the same in-memory Tansu, started by us and given to
``bench.py --bootstrap`` so that its topics can be measured), in a virtualenv of its own
(``bench/.peer-venv``, made on first use: quixstreams 3.28.1 pins confluent-kafka<2.13).
If that cannot be made, the peer's figures are null with the reason.

    /work/venv/bin/python bench/stream.py --quick
    /work/venv/bin/python bench/stream.py --compare-quix --json runs/preload.json
    /work/venv/bin/python bench/stream.py --rate 2000 --duration 30 --compare-quix
    /work/venv/bin/python bench/stream.py --rate 2000 --duration 40 --workers 2 --kill-at 15
    /work/venv/bin/python bench/stream.py --e2e --sessions 300   # end to end, see bench/e2e.py

The code is in ``bench/streambench/``: ``workload`` (the events and their producer),
``processes`` (workers, sampling, stopping by PID), ``measurement`` (one run of ours and its
figures), ``peer`` (the Quix Streams run), ``topicsize`` (bytes in the topics), ``report``
(table, medians), ``cli`` (options, main).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # check_stream, e2e and the streambench package
from streambench.cli import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
