"""Fault: an unusable state dir (a file in its place, read-only, or a full disk).

No worker can serve from such a dir, so what must hold is: a clear error naming the
dir and the reason, a non-zero exit code, and no input lost - nothing is committed past
what reached the changelog, so a worker restarted on a usable dir produces every
expected output.  A restart on the same unusable dir fails the same way, without
committing anything (a crash loop that loses nothing, until the operator fixes the dir).

A read-only dir and a full disk need mounts: the worker runs inside a private mount
namespace (``unshare -m``), where a read-only bind mount or a tiny tmpfs covers its dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.stream import workload
from tests.support import App, Pipeline, Proc, Readers, committed_offsets, newest_snapshots, wait_until

EXIT_FAILURE, EXIT_USAGE, EXIT_INPUT = 1, 2, 5
"""The README's exit codes: 1 failure, 2 usage (click's code for a bad option value), 5 invalid input
(the CLI's own check that the state dir is writable)."""
BIG_FIRES = 150


def _mounts_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not _mounts_work(), reason="needs `unshare -m` (a private mount namespace)")


def start_under_mount(workers: Pipeline, name: str, state_dir: Path, mount: str) -> Proc:
    """A worker whose state dir is covered by ``mount`` (shell commands, ``$D`` = the dir) first."""
    script = f'D="$1"; shift; {mount} || exit 97; exec "$@"'
    wrapper = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(state_dir)]
    return workers.worker(name, state_dir=str(state_dir), wrapper=wrapper)


def _exits(worker: Proc, timeout: float = 90.0) -> int:
    try:
        return worker.process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{worker.name} kept running on an unusable state dir:\n{worker.tail()}") from None


def _nothing_committed(app: App, workers: Pipeline) -> None:
    committed = committed_offsets(app.bootstrap, app.topics.events, workers.group, range(4))
    assert all(offset < 0 for offset in committed.values()), f"offsets committed: {committed}"


def _a_usable_dir_recovers_everything(workers: Pipeline, readers: Readers, app: App, sessions: int) -> None:
    good = workers.worker("usable-dir")
    results, finalized = readers["task-results"], readers["sessions"]
    results.wait_count(sum(len(workload.expected_results(i)) for i in range(sessions)), timeout=90)
    finalized.wait_count(sessions, timeout=60)
    for reader in (results, finalized):
        reader.settle(quiet_s=1.0)
    assert good.terminate() == 0
    workload.check_outputs(sessions, results.records, finalized.records)
    snapshots, _stale = newest_snapshots(app)
    events = [r for r in readers["events"].read_to_end() if (r.session or "").startswith("load-")]
    workload.check_state(sessions, snapshots, events)


@pytest.mark.broker
@pytest.mark.slow
def test_state_dir_is_a_file_exits_2_with_a_clear_error(workers: Pipeline, readers: Readers, app: App) -> None:
    """Fault: a file where the state dir should be: exit 2 naming it, nothing applied, nothing lost."""
    sessions = 10
    workload.publish(app, workload.schedule(sessions), rate=1000)
    path = workers.tmp_path / "not-a-dir"
    path.write_text("")
    worker = workers.worker("file-dir", state_dir=str(path))
    assert _exits(worker) == EXIT_USAGE
    assert str(path) in worker.log() and "is a file" in worker.log(), worker.tail()
    _nothing_committed(app, workers)
    _a_usable_dir_recovers_everything(workers, readers, app, sessions)


@pytest.mark.broker
@pytest.mark.slow
@needs_mounts
def test_state_dir_read_only_exits_non_zero_with_a_clear_error(workers: Pipeline, readers: Readers, app: App) -> None:
    """Fault: a read-only state dir: a clear error and a non-zero exit, again on a restart; nothing lost."""
    sessions = 10
    workload.publish(app, workload.schedule(sessions), rate=1000)
    state_dir = workers.tmp_path / "read-only"
    state_dir.mkdir()
    read_only = 'mount --bind "$D" "$D" && mount -o remount,bind,ro "$D"'
    for attempt in range(2):  # the restart of a crash loop fails the same way
        worker = start_under_mount(workers, f"read-only-{attempt}", state_dir, read_only)
        assert _exits(worker) == EXIT_INPUT, worker.tail()
        assert "Read-only file system" in worker.log() and str(state_dir) in worker.log(), worker.tail()
        _nothing_committed(app, workers)
    _a_usable_dir_recovers_everything(workers, readers, app, sessions)


@pytest.mark.broker
@pytest.mark.slow
@needs_mounts
def test_state_dir_disk_full_mid_stream_says_so_and_loses_nothing(
    workers: Pipeline, readers: Readers, app: App
) -> None:
    """Fault: the state dir's disk fills up while the worker applies inputs (a 1 MB tmpfs).

    Large inputs (300 KB of random hex each, kept as the trigger's latest kwargs; 45 MB in
    all) fill the stores' 4 MB memtables, whose flushes cannot fit.  RocksDB reports that
    to a later write (the worker exits 1: that batch is in the changelog, its offsets not
    committed) or, in some runs, only when the store is flushed on close (the worker
    serves from memory, and a SIGTERM exit logs that the store could not be closed).
    Either way the log says "No space left on device", and a worker on a usable dir
    serves everything: the store is only a cache of the changelog.
    """
    sessions = 10
    state_dir = workers.tmp_path / "full"
    state_dir.mkdir()
    tiny = 'mount -t tmpfs -o size=1m tmpfs "$D"'
    worker = start_under_mount(workers, "disk-full", state_dir, tiny)
    worker.wait_assigned()
    blobs = [os.urandom(150_000).hex() for _ in range(BIG_FIRES)]  # incompressible: SST files stay large
    for k, blob in enumerate(blobs):
        app.fire(f"big-{k}", "big", {"blob": blob})
    workload.publish(app, workload.schedule(sessions), rate=1000)
    results = readers["task-results"]
    expected = sum(len(workload.expected_results(i)) for i in range(sessions))

    def stopped_or_served() -> bool:
        results.poll()
        return not worker.running or len(results.records) >= expected

    wait_until(stopped_or_served, "the worker to exit, or to serve every output", 120)
    if worker.running:
        assert worker.terminate() == 0
    else:
        assert worker.process.returncode == EXIT_FAILURE, worker.tail()
    assert "No space left on device" in worker.log(), worker.tail()
    _a_usable_dir_recovers_everything(workers, readers, app, sessions)
    snapshots, _stale = newest_snapshots(app)
    assert all(snapshots[f"big-{k}"]["state"].latest_kwargs["big"] == {"blob": blob} for k, blob in enumerate(blobs))
