"""`fedehr audit`: check and read a hash-chained audit log (fedehr.shared.audit), and
recompute a checkpoint's privacy from its model card (`fedehr audit privacy`).

The server's log is `<workdir>/audit.jsonl`; a site's is `<state_dir>/audit.jsonl`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from fedehr.shared import audit

app = typer.Typer(help="Check and read the hash-chained audit logs of the server and the "
                  "sites.\n\nExample: fedehr audit verify federation/audit.jsonl",
                  no_args_is_help=True)

_SHOWN_ELSEWHERE = {"seq", "time", "event", "prev", "hash"}


@app.command("privacy")
def privacy_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint folder (or its model_card.json)."),
) -> None:
    """Recompute every site's epsilon from the model card with the RDP and PRV accountants;
    exit 1 if a reported epsilon is below its recomputation (or cannot be checked).

    Example: fedehr audit privacy federation/checkpoints/round-3
    """
    from fedehr.shared.checkpoint.card import ModelCard
    from fedehr.shared.checkpoint.format import CARD
    from fedehr.shared.errors import DataError
    from fedehr.shared.privacy.card_audit import audit_card

    path = checkpoint / CARD if checkpoint.is_dir() else checkpoint
    if not path.is_file():
        raise DataError("no model card here", where=str(checkpoint),
                        fix="pass a checkpoint folder (it holds model_card.json)")
    card = ModelCard.from_json(path.read_bytes(), where=str(path))
    audits = audit_card(card.privacy)
    table = Table(title=f"privacy of {checkpoint} (recomputed from the card)")
    for column in ("site", "delta", "accountant", "reported", "RDP", "PRV", "verdict"):
        table.add_column(column, justify="left" if column in ("site", "verdict") else "right")
    for a in audits:
        table.add_row(a.site, f"{a.delta:g}", a.accountant, f"{a.reported:.4f}",
                      "-" if a.rdp is None else f"{a.rdp:.4f}",
                      "-" if a.prv is None else f"{a.prv:.4f}", a.problem or "ok")
    Console(width=160).print(table)
    if not audits:
        typer.echo("no site's privacy spend is recorded on this card (no DP round yet)")
    if any(not a.ok for a in audits):
        raise typer.Exit(1)


@app.command("verify")
def verify_command(
    path: Path = typer.Argument(..., help="The audit log (audit.jsonl)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="A checkpoint of this "
                                    "federation: its signed model card anchors the log's head "
                                    "(training.audit_head), so a cut or rewritten log is found."),
) -> None:
    """Walk the hash chain; exit 1 naming the first edited, missing, moved or cut line.

    Example: fedehr audit verify fed/audit.jsonl --checkpoint fed/checkpoints/round-0003
    """
    report = audit.verify(path, anchor=_anchored_head(checkpoint) if checkpoint else None)
    if report.ok:
        typer.echo(f"{path}: {report.summary()}")
        return
    typer.echo(f"{path}: TAMPERED at {report.summary()} ({report.first_bad_line - 1} lines "
               "before it are intact)", err=True)
    raise typer.Exit(1)


def _anchored_head(checkpoint: Path) -> str:
    """The audit head a checkpoint's model card recorded; the card's signature is checked."""
    from fedehr.shared.checkpoint import verify
    from fedehr.shared.errors import DataError

    head = verify(checkpoint).training.get("audit_head")
    if not isinstance(head, str):
        raise DataError("the model card anchors no audit head (training.audit_head)",
                        where=str(checkpoint), fix="give a checkpoint the federation wrote")
    return head


@app.command("show")
def show_command(
    path: Path = typer.Argument(..., help="The audit log (audit.jsonl)."),
    last: int | None = typer.Option(None, "--last", "-n", min=1, help="Only the last N lines."),
) -> None:
    """Print the log as a table (it does not verify it: run `fedehr audit verify`).

    Example: fedehr audit show federation/audit.jsonl --last 20
    """
    lines = audit.read(path)
    if last is not None:
        lines = lines[-last:]
    table = Table(title=str(path))
    for column in ("seq", "time", "event", "details", "hash"):
        table.add_column(column, overflow="fold")
    for line in lines:
        details = {k: v for k, v in line.items() if k not in _SHOWN_ELSEWHERE}
        table.add_row(str(line.get("seq", "")), str(line.get("time", "")),
                      str(line.get("event", "")),
                      json.dumps(details, sort_keys=True, default=str),
                      str(line.get("hash", ""))[:12])
    Console().print(table)
