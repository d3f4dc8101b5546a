"""What the tests share: processes, the broker, topic readers, waits, the application side.

Test modules import from here (``from tests.support import ...``); the conftest files
only turn these into fixtures.
"""

from .app import App, describe, uid_on_partition
from .brokers import PARTITIONS, drop_shared_producers, fresh_topics, running_broker
from .cli_settings import worker_settings
from .faults import RestartableBroker, projection
from .inprocess import BACKENDS, Session, SessionFactory, StorageFactory
from .inthread import worker_in_thread
from .pipeline import CRASH_SESSION_TIMEOUT_MS, SESSION_TIMEOUT_MS, Pipeline
from .processes import CLI, Proc, cli_env, run_cli
from .readers import (
    Readers,
    Record,
    TopicReader,
    committed_offset,
    committed_offsets,
    drain,
    end_offsets,
    kwargs_of,
    latest_snapshots,
    newest_snapshots,
    read_topic,
)
from .waits import WAIT_S, wait_until

__all__ = [
    "worker_in_thread",
    "worker_settings",
    "BACKENDS",
    "CLI",
    "PARTITIONS",
    "SESSION_TIMEOUT_MS",
    "WAIT_S",
    "App",
    "CRASH_SESSION_TIMEOUT_MS",
    "Pipeline",
    "Proc",
    "Readers",
    "Record",
    "RestartableBroker",
    "Session",
    "SessionFactory",
    "StorageFactory",
    "TopicReader",
    "cli_env",
    "committed_offset",
    "committed_offsets",
    "describe",
    "drain",
    "drop_shared_producers",
    "end_offsets",
    "fresh_topics",
    "kwargs_of",
    "latest_snapshots",
    "newest_snapshots",
    "projection",
    "read_topic",
    "run_cli",
    "running_broker",
    "uid_on_partition",
    "wait_until",
]
