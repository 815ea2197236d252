"""`fedehr data ...`: commands for hospital IT to import, check and inspect MEDS data."""

from __future__ import annotations

import typer

app = typer.Typer(help="Import, synthesize, validate and inspect MEDS datasets.",
                  no_args_is_help=True)
