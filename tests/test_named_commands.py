"""Every `fedehr ...` command that a message, hint or help text names exists
(issue 18, section 5: a hint named `fedehr data inspect`, which never existed)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from fedehr.shared.cli import build_command

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("shared", "client", "server")
# A command as a message names it: in backticks, in parentheses, or after "run"/"Example:".
NAMED = re.compile(r"(?:`|\(|\brun |Example: )fedehr((?: [a-z][a-z0-9-]*)+)")


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    found = {path}
    for name, sub in getattr(command, "commands", {}).items():
        found |= _commands(sub, (*path, name))
    return found


def _named_in_sources() -> dict[tuple[str, ...], str]:
    named = {}
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for match in NAMED.finditer(line):
                    words = tuple(match.group(1).split())
                    named.setdefault(words, f"{path.relative_to(ROOT)}:{line_no}")
    return named


def _resolves(words: tuple[str, ...], known: set[tuple[str, ...]]) -> bool:
    """The longest command prefix of `words` must be a command, and the word after a
    group (if any) must be one of its commands (the rest are arguments)."""
    groups = {c[:-1] for c in known if c}
    prefix: tuple[str, ...] = ()
    for word in words:
        if (*prefix, word) in known:
            prefix = (*prefix, word)
        elif prefix in groups:
            return False  # a group followed by a word that is none of its commands
        else:
            break
    return bool(prefix)


def test_every_command_a_message_names_exists():
    known = _commands(build_command())
    named = _named_in_sources()
    assert len(named) > 30, "the scan finds the hints it is meant to check"
    missing = {" ".join(words): where for words, where in named.items()
               if not _resolves(words, known)}
    assert missing == {}
