"""Which engine a worker runs (``stream_triggers.engine.native``): runs with or without the extension."""

from __future__ import annotations

import pytest

from stream_triggers.engine import native


def test_the_default_is_native_exactly_when_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.ENGINE_ENV, raising=False)
    assert native.choose() == ("native" if native.available() else "python")
    assert native.describe().startswith("engine: native" if native.available() else "engine: python")


def test_python_can_always_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENGINE_ENV, "python")
    assert native.choose() == "python"
    assert native.choose("python", manager="custom") == "python"


def test_a_custom_manager_runs_on_python_and_native_cannot_be_forced_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.ENGINE_ENV, raising=False)
    assert native.choose(manager="custom") == "python"
    with pytest.raises(native.NativeUnavailable):
        native.choose("native", manager="custom")


def test_native_forced_where_it_is_missing_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "_native", None)
    monkeypatch.setenv(native.ENGINE_ENV, "native")
    with pytest.raises(native.NativeUnavailable, match="not installed"):
        native.choose()
    with pytest.raises(native.NativeUnavailable):
        native.new_core("default", "r", "t", "s")
    monkeypatch.delenv(native.ENGINE_ENV)
    assert native.choose() == "python"


def test_an_unknown_engine_name_is_refused() -> None:
    with pytest.raises(ValueError, match="engine must be one of"):
        native.choose("rust")
