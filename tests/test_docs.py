"""The docs cannot drift silently from the repository and the command line.

README.md and docs/*.md name files (``stream_triggers/kafka/partitioning.py``,
``examples/questionnaire.json``), link to each other's sections, and show
``stream-triggers`` commands.  These tests check that every named file exists, every
relative link and its ``#anchor`` resolve, and every command names real subcommands,
as ``stream-triggers --help`` lists them (in process, through click's CliRunner).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from click.testing import CliRunner

from stream_triggers.cli import cli

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "stream_triggers"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`((?:[^`\n]|\n(?!\s*\n))+)`")  # a code span may wrap, not cross a blank line
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
_COMMAND = re.compile(r"(?<![\w./`-])stream-triggers(?![\w:./`-])")
_FILE_SUFFIXES = (".py", ".md", ".yml", ".yaml", ".json", ".sh", ".avsc", ".toml", ".txt")
_SKIPPED_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache"}


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _fences(text: str) -> list[tuple[str, str]]:
    """``(info string, body)`` of each fenced code block."""
    return [(info.strip(), body) for info, body in _FENCE.findall(text)]


def _shell_words(text: str) -> Iterator[str]:
    """The words of every line of the shell blocks, comments dropped."""
    for info, body in _fences(text):
        if info not in ("", "bash", "sh", "shell", "console"):
            continue
        for line in body.splitlines():
            try:
                yield from shlex.split(line, comments=True)
            except ValueError:  # an unbalanced quote: not a command line
                continue


def _prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return _FENCE.sub("", text)


def _spans(text: str) -> list[str]:
    """Inline code spans outside fenced blocks, a wrapped one joined into one line."""
    return [" ".join(span.split()) for span in _INLINE.findall(_prose(text))]


@cache
def _repository_files() -> frozenset[str]:
    """Base names of every file in the checkout (virtualenvs and caches left out)."""
    names: set[str] = set()
    stack = [ROOT]
    while stack:
        folder = stack.pop()
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                if entry.name not in _SKIPPED_DIRS and not entry.name.endswith(".egg-info"):
                    stack.append(entry)
            else:
                names.add(entry.name)
    return frozenset(names)


def _path_candidate(token: str) -> bool:
    """Whether an inline code span or a shell word reads as a path in this repository."""
    if not re.fullmatch(r"[\w.*/-]+", token) or token.startswith(("/", "-", "..")) or "//" in token:
        return False
    first = token.split("/", 1)[0]
    if first in _SKIPPED_DIRS:  # made by set-up (.venv/bin/pip), not part of the repository
        return False
    if "/" in token:
        return (ROOT / first).exists() or (PACKAGE / first).is_dir()
    return token.endswith(_FILE_SUFFIXES) and not token.startswith(".")


def _path_exists(token: str, doc: Path) -> bool:
    for base in (ROOT, doc.parent, PACKAGE):
        if "*" in token:
            if any(base.glob(token)):
                return True
        elif (base / token).exists():
            return True
    return "/" not in token and token in _repository_files()


def _named_paths(doc: Path) -> Iterator[str]:
    text = doc.read_text(encoding="utf-8")
    for token in [*_spans(text), *_shell_words(text)]:
        token = token.removeprefix("./")
        if _path_candidate(token):
            yield token


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def _anchors(doc: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in _HEADING.findall(_prose(doc.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(anchors)


def _links(doc: Path) -> Iterator[str]:
    for target in _LINK.findall(_prose(doc.read_text(encoding="utf-8"))):
        if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # not http:, https:, mailto:
            yield target


def _commands(doc: Path) -> Iterator[list[str]]:
    """Each ``stream-triggers ...`` shown: its words up to the end of the line or code span."""
    text = doc.read_text(encoding="utf-8")
    lines = [re.split(r"\s#", line)[0] for _, block in _fences(text) for line in block.splitlines()]
    lines += _spans(text)
    for line in lines:
        for match in _COMMAND.finditer(line):
            rest = re.split(r"\s#|\s[|;&>]", line[match.end() :])[0]
            try:
                yield shlex.split(rest)
            except ValueError:  # an unbalanced quote: words up to it still count
                yield rest.split()


@cache
def _subcommands(*group: str) -> frozenset[str] | None:
    """The commands ``stream-triggers GROUP --help`` lists; None when it is not a group."""
    result = CliRunner().invoke(cli, [*group, "--help"], prog_name="stream-triggers")
    assert result.exit_code == 0, result.output
    if "\nCommands:\n" not in result.output:
        return None
    section = result.output.split("\nCommands:\n", 1)[1]
    return frozenset(m.group(1) for m in re.finditer(r"^  (\S+)", section, re.M))


def _unknown_subcommand(words: list[str]) -> str | None:
    """The first word that should name a subcommand and does not, if any."""
    path: list[str] = []
    for word in words:
        commands = _subcommands(*path)
        if commands is None or word.startswith("-") or word.isupper():  # a leaf, an option, a placeholder
            return None
        if word not in commands:
            return " ".join(["stream-triggers", *path, word])
        path.append(word)
    return None


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_every_file_path_named_exists(doc: Path) -> None:
    missing = sorted({token for token in _named_paths(doc) if not _path_exists(token, doc)})
    assert not missing, f"{_id(doc)} names files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_every_relative_link_and_anchor_resolves(doc: Path) -> None:
    broken = []
    for target in _links(doc):
        path_part, _, anchor = target.partition("#")
        linked = (doc.parent / path_part).resolve() if path_part else doc
        missing_anchor = bool(anchor) and linked.suffix == ".md" and anchor not in _anchors(linked)
        if not linked.exists() or missing_anchor:
            broken.append(target)
    assert not broken, f"{_id(doc)} links to missing files or sections: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_every_command_shown_is_a_real_subcommand(doc: Path) -> None:
    unknown = sorted({name for words in _commands(doc) if (name := _unknown_subcommand(words))})
    assert not unknown, f"{_id(doc)} shows commands that stream-triggers does not have: {unknown}"


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """A made-up path, link, anchor and subcommand are each reported."""
    doc = tmp_path / "made-up.md"
    doc.write_text(
        "# Title\n\nSee `stream_triggers/no_such_module.py` and [x](nowhere.md), [y](#no-such-section).\n"
        "```bash\nstream-triggers topics explode --partitions 4\nstream-triggers workr\n"
        "stream-triggers configure s1 examples/nothing.json  # examples/comment.json\n```\n",
        encoding="utf-8",
    )
    assert list(_named_paths(doc)) == ["stream_triggers/no_such_module.py", "examples/nothing.json"]
    assert not _path_exists("stream_triggers/no_such_module.py", doc)
    assert _path_exists("stream_triggers/kafka/partitioning.py", doc)
    assert list(_links(doc)) == ["nowhere.md", "#no-such-section"]
    assert "no-such-section" not in _anchors(doc) and "title" in _anchors(doc)
    assert [_unknown_subcommand(words) for words in _commands(doc)] == [
        "stream-triggers topics explode",
        "stream-triggers workr",
        None,
    ]
    assert _unknown_subcommand(["dead-letters", "replay", "--reason", "x"]) is None


def test_slugs_follow_github() -> None:
    assert _slug("Replication and `min.insync.replicas`") == "replication-and-mininsyncreplicas"
    assert _slug("Client settings: reaching a secured cluster") == "client-settings-reaching-a-secured-cluster"
    assert _slug("Docker Compose (one host)") == "docker-compose-one-host"


def test_the_quickstart_configuration_is_the_demo_questionnaire() -> None:
    """examples/questionnaire.json is what the README's quickstart configures."""
    from stream_triggers.cli.demo_tasks import QUESTIONNAIRE
    from stream_triggers.engine import build_task_configs

    configuration = json.loads((ROOT / "examples" / "questionnaire.json").read_text(encoding="utf-8"))
    assert configuration == QUESTIONNAIRE
    assert build_task_configs(configuration)
    assert "examples/questionnaire.json" in (ROOT / "README.md").read_text(encoding="utf-8")
