"""The repository's shape, checked: tests share helpers through tests.support, modules stay small."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 420


def test_test_modules_import_helpers_from_tests_support_not_from_conftest():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path.name != "conftest.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.match(r"\s*(from|import)\s+(\.+conftest|conftest|harness|tests\.\w+\.conftest)\b", line)
    ]
    assert offenders == []


def test_no_package_module_is_longer_than_about_400_lines():
    long = {
        str(path.relative_to(ROOT)): count
        for path in sorted((ROOT / "stream_triggers").rglob("*.py"))
        if (count := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}
