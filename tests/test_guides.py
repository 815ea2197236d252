"""The guides stay true: every `fedehr ...` line in docs/ and README.md parses
against the real CLI, and every command they teach is run by some test.

"Run by a test" means a test invokes the CLI with that command path (as a list
of arguments: ``["pki", "init", ...]``), so the check reads tests/ for such
invocations. Commands that only `make demo` runs do not count: the demo calls
the same functions, not the CLI parser.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import typer

from fedehr.shared.cli import build_app

REPO = Path(__file__).resolve().parents[1]
GUIDES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
FENCE = re.compile(r"^```")


def guide_commands() -> list[tuple[str, int, list[str]]]:
    """(file, line number, argv after `fedehr`) for each command line in a code block."""
    found = []
    for path in GUIDES:
        in_block, pending, start = False, "", 0
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if FENCE.match(line.strip()):
                in_block = not in_block
                continue
            if not in_block:
                continue
            text = (pending + " " + line.strip()) if pending else line.strip()
            start = start if pending else number
            if text.endswith("\\"):
                pending = text[:-1]
                continue
            pending = ""
            for part in re.split(r"&&|;", text):
                part = part.strip().removeprefix("$ ")
                if part.startswith("fedehr "):
                    found.append((path.name, start, shlex.split(part, comments=True)[1:]))
    return found


COMMANDS = guide_commands()
ROOT = typer.main.get_command(build_app())


def resolve(argv: list[str]) -> tuple[list[str], click.Command, list[str]]:
    """Walk the command groups; returns (command path, command, its own arguments)."""
    command, path, rest = ROOT, [], list(argv)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        if sub is None:
            raise AssertionError(f"no command {' '.join([*path, rest[0]])!r}")
        command, path, rest = sub, [*path, rest.pop(0)], rest
    return path, command, rest


def test_the_guides_teach_commands():
    assert len(COMMANDS) > 30
    assert {path for path, _, _ in COMMANDS} >= {"README.md", "federation.md", "site.md",
                                                 "researchers.md", "pki.md"}


@pytest.mark.parametrize("where,argv", [(f"{f}:{n}", argv) for f, n, argv in COMMANDS],
                         ids=[f"{f}:{n}" for f, n, _ in COMMANDS])
def test_a_guide_command_parses_against_the_cli(where, argv):
    path, command, rest = resolve(argv)
    assert not isinstance(command, click.Group), f"{where}: `{' '.join(path)}` needs a command"
    # Options and arity only: the guides name files that do not exist here.
    ctx = click.Context(command, info_name=" ".join(path))
    try:
        command.make_parser(ctx).parse_args(rest)
    except click.UsageError as exc:
        pytest.fail(f"{where}: fedehr {' '.join(argv)}: {exc.format_message()}")


def _test_sources() -> str:
    return "\n".join(p.read_text() for p in (REPO / "tests").rglob("*.py")
                     if p.name != Path(__file__).name)


def test_every_command_the_guides_teach_is_run_by_a_test():
    sources = _test_sources()
    untested = set()
    for _, _, argv in COMMANDS:
        path, _, _ = resolve(argv)
        pattern = r"\s*,\s*".join(f"[\"']{re.escape(word)}[\"']" for word in path)
        if not re.search(pattern, sources):
            untested.add(" ".join(path))
    assert not untested, f"guide commands no test runs: {sorted(untested)}"
