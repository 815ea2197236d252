"""The `fedehr` command.

The root command knows no command group by name: each side of the system
declares its groups under the ``fedehr.commands`` entry point (pyproject.toml),
so a site-only install simply has no `server` group, and fedehr.shared never
imports fedehr.client or fedehr.server.
"""

from __future__ import annotations

import math
import os
import sys
from importlib.metadata import entry_points

import click
import typer
from rich.console import Console
from rich.markup import escape

from fedehr.shared import __version__, logs
from fedehr.shared.errors import FedEHRError

HELP = """Federated, differentially private pretraining of clinical foundation models.

Groups by user:

  hospital IT       fedehr data ..., fedehr site ...
  operators         fedehr pki ..., fedehr server ..., fedehr run ...
  researchers       fedehr model ...

Start with `fedehr demo` (or `make demo`) to run the whole system locally.
"""

err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fedehr {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(help=HELP, no_args_is_help=True, rich_markup_mode="rich",
                      pretty_exceptions_enable=False)

    @app.callback()
    def _root(
        version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                     help="Print the version and exit."),
        log_format: str = typer.Option(
            None, "--log-format", envvar=logs.ENV, show_default="text",
            help="json: the daemons (`site start`, `server start`) write one JSON object "
                 "per line on stdout, for journald/Loki/Fluent Bit; errors too (stderr)."),
    ) -> None:
        if log_format is not None:
            logs.set_log_format(log_format)

    for name, groups in _command_groups().items():
        if len(groups) == 1 and not isinstance(groups[0], typer.Typer):
            app.command(name)(groups[0])  # a plain function is a top-level command
        else:
            app.add_typer(_merge(groups, name), name=name)
    return app


def _command_groups() -> dict[str, list]:
    """Entry points by command name; ``model:client`` and ``model:server`` both add to `model`.

    A command group may take commands from both sides (e.g. `fedehr model
    train-local` is site code, `fedehr model pull` is researcher code).
    """
    groups: dict[str, list] = {}
    for ep in sorted(entry_points(group="fedehr.commands"), key=lambda e: e.name):
        try:
            target = ep.load()
        except ImportError:  # a side that is not installed (e.g. a site-only install)
            continue
        groups.setdefault(ep.name.split(":")[0], []).append(target)
    return groups


def _merge(groups: list[typer.Typer], name: str) -> typer.Typer:
    if len(groups) == 1:
        return groups[0]
    merged = typer.Typer(help=groups[0].info.help, no_args_is_help=True, name=name)
    for group in groups:
        merged.registered_commands += group.registered_commands
        merged.registered_groups += group.registered_groups
    return merged


class FiniteFloat(click.ParamType):
    """A float option's own type (and range), refusing nan and inf: `--lr nan` passes every
    range check (nan compares false) and only fails, with a traceback, deep in the work."""

    name = "float"

    def __init__(self, inner: click.ParamType):
        self.inner = inner

    def convert(self, value, param, ctx):
        number = self.inner.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number

    def get_metavar(self, param, ctx=None):
        return self.inner.get_metavar(param, ctx)

    def __repr__(self) -> str:
        return f"FiniteFloat({self.inner!r})"


def finite_floats(command: click.Command) -> click.Command:
    """Every float option and argument of `command` and its subcommands refuses nan/inf."""
    for param in command.params:
        if isinstance(param.type, click.types.FloatParamType):
            param.type = FiniteFloat(param.type)
    for sub in getattr(command, "commands", {}).values():
        finite_floats(sub)
    return command


def build_command() -> click.Command:
    """The `fedehr` click command, as the console entry point runs it."""
    return finite_floats(typer.main.get_command(build_app()))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line and a non-zero exit."""
    command = build_command()
    try:
        result = command.main(args=argv, prog_name="fedehr", standalone_mode=False)
    except FedEHRError as exc:
        _report(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except OSError as exc:
        if not exc.filename:  # not about a path the user gave: a bug, keep the traceback
            raise
        # A path the user gave is a file where a folder is needed, unwritable, full, ...
        _report(FedEHRError(exc.strerror or type(exc).__name__, where=str(exc.filename),
                            fix="check the path: a folder or file of that name, its "
                            "permissions and free space"))
        sys.exit(1)
    except SystemExit:
        raise
    except Exception as exc:  # click's usage errors arrive here in non-standalone mode
        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise
    if isinstance(result, int) and result != 0:  # typer.Exit(code) in non-standalone mode
        sys.exit(result)


def _report(exc: FedEHRError) -> None:
    if os.environ.get(logs.ENV, "").strip().lower() == "json":
        print(logs.error_line(exc.message, where=exc.where, fix=exc.fix), file=sys.stderr)
    else:
        # A message quotes paths and values ("ckpt [x]", a card's "[bold]"): text, not markup.
        err_console.print(f"[bold red]error:[/] {escape(exc.one_line())}", highlight=False,
                          soft_wrap=True)


if __name__ == "__main__":
    main()
