"""The evaluation report: markdown with PNG plots, and the numbers as JSON.

    <out>/
        report.md             summary table, one section per task
        results.json          every score of every run (EvaluationResult.to_dict)
        <task>-roc.png        ROC curves: zero-shot, probe (all), counts (all)
        <task>-reliability.png   reliability diagram of the same methods
        <task>-auroc-vs-k.png    AUROC (mean and spread over seeds) against k

Files are written atomically (temp file + rename).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from fedehr.shared.atomic import write_bytes, write_text
from fedehr.shared.clinical.evaluate import EvaluationResult, MethodResult, TaskResult
from fedehr.shared.clinical.metrics import reliability, roc_points


def _fmt(mean: float, std: float | None = None) -> str:
    if mean is None or math.isnan(mean):
        return "n/a"
    return f"{mean:.3f}" if not std else f"{mean:.3f} ± {std:.3f}"


def summary_rows(result: EvaluationResult) -> list[list[str]]:
    """[task, method, n test (pos), AUROC, AUPRC, ECE] per method, for tables."""
    rows = []
    for task in result.tasks:
        for m in task.methods:
            rows.append([task.task, m.label, f"{task.n_test} ({task.positives_test})",
                         _fmt(m.mean("auroc"), m.std("auroc")),
                         _fmt(m.mean("auprc"), m.std("auprc")),
                         _fmt(m.mean("ece"), m.std("ece"))])
    return rows


def headline(task: TaskResult) -> list[MethodResult]:
    """The methods the ROC and reliability plots show: zero-shot and the k = all fits."""
    picks = [task.method("zero-shot"), task.method("probe", "all"), task.method("counts", "all")]
    return [m for m in picks if m is not None]


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    write_bytes(path, buffer.getvalue())


def plot_roc(task: TaskResult, path: Path) -> bool:
    import matplotlib.pyplot as plt

    curves = [(m, *roc_points(m.y_true, m.probability)) for m in headline(task)]
    curves = [c for c in curves if len(c[1])]
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for m, fpr, tpr in curves:
        ax.plot(fpr, tpr, label=f"{m.label} (AUROC {_fmt(m.runs[0].auroc)})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=f"{task.title}: ROC (held-out)")
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)
    plt.close(fig)
    return True


def plot_reliability(task: TaskResult, path: Path) -> bool:
    import matplotlib.pyplot as plt

    methods = headline(task)
    if not methods:
        return False
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for m in methods:
        curve = reliability(m.y_true, m.probability)
        ax.plot(curve.predicted, curve.observed, marker="o", ms=3,
                label=f"{m.label} (ECE {_fmt(m.runs[0].ece)})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", xlim=(0, 1),
           ylim=(0, 1), title=f"{task.title}: reliability")
    ax.legend(fontsize=7, loc="upper left")
    _save(fig, path)
    plt.close(fig)
    return True


def plot_auroc_vs_k(task: TaskResult, path: Path) -> bool:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    drawn = False
    n_all = task.n_train
    for method, color in (("probe", "C0"), ("counts", "C1")):
        points = [(n_all if m.k == "all" else int(m.k), m.mean("auroc"), m.std("auroc"))
                  for m in task.methods if m.method == method and not math.isnan(m.mean("auroc"))]
        if not points:
            continue
        points.sort()
        ks, means, stds = zip(*points, strict=True)
        ax.errorbar(ks, means, yerr=stds, marker="o", capsize=3, color=color,
                    label=f"{method} (mean ± sd over seeds)")
        drawn = True
    zs = task.method("zero-shot")
    if zs is not None and not math.isnan(zs.mean("auroc")):
        ax.axhline(zs.mean("auroc"), color="C2", ls="--", label="zero-shot (no labels)")
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xscale("log", base=2)
    ax.set(xlabel=f"labelled training examples k (all = {n_all})", ylabel="AUROC (held-out)",
           title=f"{task.title}: AUROC vs k")
    ax.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)
    return True


def write_report(result: EvaluationResult, out: str | Path) -> Path:
    """Write report.md, results.json and the plots into `out`; returns report.md."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.json", json.dumps(result.to_dict(), indent=2))
    lines = [
        "# fedehr model evaluate",
        "",
        f"- data: `{result.data}`",
        f"- checkpoint: `{result.checkpoint or '(in memory)'}`",
        f"- split: {result.settings.get('split')}; probes: logistic regression (C = "
        f"{result.settings.get('probe_C')}) on frozen embeddings, k = "
        f"{', '.join(str(k) for k in result.settings.get('ks', []))}, "
        f"{result.settings.get('seeds')} seeds per k; count baseline: the same model on "
        f"log1p code counts ({result.settings.get('count_codes')} codes); zero-shot: "
        f"{result.settings.get('zero_shot_samples')} generated futures per row",
        f"- time: {result.seconds:.1f} s",
        "",
        "| task | method | test rows (positive) | AUROC | AUPRC | ECE |",
        "|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(result)]
    for task in result.tasks:
        lines += ["", f"## {task.title} (`{task.task}`)", "",
                  f"Train rows {task.n_train} ({task.positives_train} positive), test rows "
                  f"{task.n_test} ({task.positives_test} positive)."]
        lines += [f"- note: {n}" for n in task.notes]
        for kind, plot in (("roc", plot_roc), ("reliability", plot_reliability),
                           ("auroc-vs-k", plot_auroc_vs_k)):
            name = f"{task.task}-{kind}.png"
            if plot(task, out / name):
                lines += ["", f"![{task.title} {kind}]({name})"]
    write_text(out / "report.md", "\n".join(lines) + "\n")
    return out / "report.md"
