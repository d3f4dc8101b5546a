"""Where a worker's main thread spends its CPU, stage by stage (a profiling aid, not a test).

Put this folder on ``PYTHONPATH`` and every ``stream-triggers worker`` started from that
environment (e.g. by ``bench/stream.py``) wraps the stages of its loop with
``time.thread_time()``: the main thread's CPU only (librdkafka's and RocksDB's threads,
and time spent waiting, are not counted).  When the worker exits it writes
``stage-costs-<pid>.json`` into ``$STAGE_COSTS_DIR`` (default: the current folder):
``{stage: [calls, cpu seconds]}``; nested stages are counted in their callers too.

    PYTHONPATH=bench/stagecost STAGE_COSTS_DIR=/tmp/stages \\
        python bench/stream.py --rate 2000 --duration 30
    python bench/stagecost/report.py /tmp/stages/stage-costs-*.json --events 60000
"""

from __future__ import annotations

import sys

if sys.argv and sys.argv[0].endswith("stream-triggers") and "worker" in sys.argv[1:2]:
    import atexit
    import functools
    import json
    import os
    import time
    from typing import Any

    from stream_triggers.stream import checkpoint, native_engine, store, worker

    _totals: dict[str, list[float]] = {}

    def _wrap(owner: Any, name: str) -> None:
        inner = getattr(owner, name)
        label = f"{getattr(owner, '__name__', 'module')}.{name}"

        @functools.wraps(inner)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                total = _totals.setdefault(label, [0, 0.0])
                total[0] += 1
                total[1] += time.thread_time() - started

        setattr(owner, name, timed)

    _wrap(worker, "take_batch")
    for _name in ("run", "_process", "_checkpoint_now", "_finish_checkpoint", "heartbeat"):
        _wrap(worker.StreamWorker, _name)
    for _name in ("apply_batch", "_apply_native", "encode", "settle"):
        _wrap(native_engine.NativeApplier, _name)
    for _name in ("begin", "complete", "write_store"):
        _wrap(checkpoint.Checkpoint, _name)
    for _name in ("write_parts", "lookup"):
        _wrap(store.PartitionStore, _name)

    def _write() -> None:
        folder = os.environ.get("STAGE_COSTS_DIR", ".")
        with open(os.path.join(folder, f"stage-costs-{os.getpid()}.json"), "w") as out:
            json.dump(_totals, out)

    atexit.register(_write)
