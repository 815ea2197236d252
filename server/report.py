"""The run report: per-round losses on the anchor and at the sites, epsilon per
site and participation, as markdown with PNG plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from fedehr.shared.atomic import write_text  # noqa: E402


def _series(history: list[dict], key: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for entry in history:
        for site, value in entry.get(key, {}).items():
            out.setdefault(site, []).append((entry["round"], value))
    return out


def plot_losses(history: list[dict], png: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    anchor = [(e["round"], e["anchor_loss"]) for e in history if "anchor_loss" in e]
    ax.plot(*zip(*anchor, strict=True), "k-o", label="public anchor (held out)")
    for site, points in sorted(_series(history, "site_eval_loss").items()):
        ax.plot(*zip(*points, strict=True), "--o", label=f"{site} (held out)")
    return _save(fig, ax, png, xlabel="round (0 = after the warm start on the anchor)",
                 ylabel="next-token loss (nats)", title="Global model loss per round")


def plot_epsilon(history: list[dict], privacy: dict[str, dict], png: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for site, points in sorted(_series(history, "epsilon").items()):
        line, = ax.plot(*zip(*points, strict=True), "-o", label=site)
        budget = privacy.get(site, {}).get("epsilon_budget")
        if budget:
            ax.axhline(budget, color=line.get_color(), ls=":", lw=1)
    return _save(fig, ax, png, xlabel="round", ylabel="cumulative epsilon (site ledger)",
                 title="Privacy spent per site (dotted: budget)")


def _save(fig, ax, png: Path, *, xlabel: str, ylabel: str, title: str) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def write_report(result: dict, out_dir: Path, *, title: str = "fedehr federated run",
                 extra: str = "") -> Path:
    """Markdown report with two PNG plots; returns the markdown's path."""
    history, privacy = result["history"], result["privacy"]
    loss_png = plot_losses(history, out_dir / "loss.png")
    eps_png = plot_epsilon(history, privacy, out_dir / "epsilon.png")
    lines = [f"# {title}", "", f"Checkpoint: `{result['checkpoint']}` "
             f"({result['rounds']} rounds)", "", extra, "",
             "## Loss per round", "", f"![loss]({loss_png.name})", "",
             "| round | sites | anchor loss | site held-out loss | seconds |",
             "|---|---|---|---|---|"]
    for e in history:
        evals = ", ".join(f"{s} {v:.3f}" for s, v in sorted(e.get("site_eval_loss", {}).items()))
        sites = ", ".join(e.get("participants", e.get("sites", [])))
        lines.append(f"| {e['round']} | {sites} | {e['anchor_loss']:.3f} | {evals or '-'} | "
                     f"{e.get('seconds', '-')} |")
    lines += ["", "## Privacy per site", "", f"![epsilon]({eps_png.name})", "",
              "| site | epsilon spent | budget | delta | last noise multiplier |",
              "|---|---|---|---|---|"]
    for site, p in sorted(privacy.items()):
        lines.append(f"| {site} | {p['epsilon']:.3f} | {p['epsilon_budget']:g} | "
                     f"{p['delta']:g} | {p['noise_multiplier']:.3f} |")
    rejected = [(e["round"], s, r) for e in history for s, r in e.get("rejected", {}).items()]
    failed = [(e["round"], r) for e in history for r in e.get("failed", [])]
    lines += ["", "## Participation", ""]
    if not rejected and not failed:
        lines.append("Every invited site replied in every round; no update was rejected.")
    lines += [f"- round {r}: update of {s} rejected: {why}" for r, s, why in rejected]
    lines += [f"- round {r}: {why}" for r, why in failed]
    path = out_dir / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path
