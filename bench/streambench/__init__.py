"""The stream benchmark behind ``bench/stream.py`` (see its docstring for what it measures)."""
