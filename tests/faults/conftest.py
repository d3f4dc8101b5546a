"""The fault suite's fixtures: the stream and executor suites' processes and readers, reused.

Every test here names one fault; docs/faults.md has the whole table.
"""

from __future__ import annotations

from executor.conftest import pipeline  # noqa: F401 - fixture re-exported
from stream.conftest import _drop_shared_producers, app, readers, workers  # noqa: F401 - fixtures re-exported
