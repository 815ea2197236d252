"""`fedehr model card`: a model card as a person reads it.

What a researcher checks before using a checkpoint: how many rounds, which
sites trained it and the privacy each spent (epsilon, delta, accountant,
budget), the data fingerprints, and how the losses moved over the rounds
(the card's ``training.history``: per round ``anchor_loss`` on the public
anchor and ``site_eval_loss`` per site).
"""

from __future__ import annotations

import math
from statistics import fmean
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fedehr.shared.checkpoint import ModelCard

HISTORY_ROWS = 12


def render(card: ModelCard, console: Console, *, title: str = "") -> None:
    """Every value comes from another party's file: printed as text, never as markup."""
    arch = card.architecture
    shape = ", ".join(f"{k}={arch[k]}" for k in ("vocab_size", "d_model", "n_layers", "n_heads",
                                                 "max_len") if k in arch)
    console.print(f"[bold]{escape(title or 'model card')}[/]")
    console.print(Text(f"  rounds        {card.rounds}"))
    console.print(Text(f"  created       {card.created_at} (fedehr {card.software_version})"))
    console.print(Text(f"  architecture  {shape or '(custom)'}"))
    console.print(Text(f"  vocabulary    {card.vocab_file} sha256:{card.vocab_hash[:16]}..."))
    training = card.training or {}
    for key in ("federation", "strategy"):
        if key in training:
            console.print(Text(f"  {key:<13} {training[key]}"))
    history = [h for h in training.get("history", []) if isinstance(h, dict)]
    console.print(_privacy_table(card, history))
    if card.data_fingerprints:
        console.print("[bold]data fingerprints[/]")
        for name, value in sorted(card.data_fingerprints.items()):
            console.print(Text(f"  {name:<13} {value}"))
    if history:
        console.print(_history_table(history))
        console.print(_history_summary(history))
    if card.notes:
        console.print(Text(str(card.notes), style="dim"))


def _privacy_table(card: ModelCard, history: list[dict]) -> Table:
    table = Table(title="privacy spent per site (cumulative)", title_justify="left")
    for column in ("site", "epsilon", "delta", "budget", "accountant", "rounds joined"):
        table.add_column(column, justify="left" if column in ("site", "accountant") else "right")
    joined: dict[str, int] = {}
    for entry in history:
        for site in entry.get("participants", []):
            joined[site] = joined.get(site, 0) + 1
    if not card.privacy:
        table.add_row("(none: no private site trained this model)", "", "", "", "", "")
    for site, spent in sorted(card.privacy.items()):
        table.add_row(Text(site + (" (TRIAL ledger)" if spent.get("trial") else "")),
                      _num(spent.get("epsilon")), _num(spent.get("delta"), "g"),
                      _num(spent.get("epsilon_budget")), Text(str(spent.get("accountant", ""))),
                      str(joined.get(site, "")) if history else "")
    return table


def _history_table(history: list[dict]) -> Table:
    shown = history if len(history) <= HISTORY_ROWS else history[-HISTORY_ROWS:]
    title = "history" if shown is history else f"history (last {len(shown)} of {len(history)})"
    table = Table(title=title, title_justify="left")
    for column in ("round", "anchor loss", "site eval loss (mean)", "sites"):
        table.add_column(column, justify="right")
    for entry in shown:
        table.add_row(str(entry.get("round", "")), _num(entry.get("anchor_loss")),
                      _num(_mean(entry.get("site_eval_loss"))),
                      str(len(entry.get("participants", []))) if "participants" in entry else "")
    return table


def _history_summary(history: list[dict]) -> str:
    parts = []
    for key, label in (("anchor_loss", "anchor loss"), ("site_eval_loss", "site eval loss")):
        values = [(e.get("round"), _mean(e.get(key))) for e in history]
        values = [(r, v) for r, v in values if v is not None]
        if values:
            best = min(values, key=lambda rv: rv[1])
            parts.append(f"{label} {_num(values[0][1])} -> {_num(values[-1][1])} "
                         f"(best {_num(best[1])} at round {best[0]})")
    return "; ".join(parts)


def _mean(value: Any) -> float | None:
    if isinstance(value, dict):
        numbers = [v for v in value.values() if _finite(v)]
        return fmean(numbers) if numbers else None
    return float(value) if _finite(value) else None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: Any, fmt: str = ".3f") -> str:
    return format(value, fmt) if _finite(value) else "-"
