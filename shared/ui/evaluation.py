"""The Model page's evaluation section: the report `fedehr model evaluate --out DIR` wrote.

The numbers come from DIR/results.json (EvaluationResult.to_dict, clinical/evaluate.py),
not from parsing report.md; the plots are the PNG files report.md links, served
by name from DIR and nothing else there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from fedehr.shared.errors import ConfigError

RESULTS = "results.json"
REPORT = "report.md"
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([\w.-]+\.png)\)")  # the plots report.md links


@dataclass
class TaskTable:
    task: str
    title: str
    counts: str  # "train rows 224 (19 positive), test rows 24 (3 positive)"
    rows: list[dict]  # method, auroc, auprc, ece (text), best (highest mean AUROC)
    notes: list[str] = field(default_factory=list)
    plots: list[tuple[str, str]] = field(default_factory=list)  # (file name, alt text)


@dataclass
class EvaluationView:
    folder: Path
    checkpoint: str | None
    data: str
    settings: str  # one line: split, probes, k, seeds, zero-shot samples
    seconds: float
    tasks: list[TaskTable]
    other_checkpoint: bool  # the report scored a different checkpoint than the page serves


def read_evaluation(folder: Path, checkpoint: Path) -> EvaluationView:
    """The report in `folder`; ConfigError naming the file when it is missing or unreadable."""
    folder = Path(folder)
    path = folder / RESULTS
    try:
        result = json.loads(path.read_text())
        tasks = [_task_table(t, folder) for t in result["tasks"]]
        settings = result.get("settings") or {}
    except FileNotFoundError:
        raise ConfigError("no evaluation report here", where=str(path),
                          fix="give the --out folder of `fedehr model evaluate`") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read the evaluation results ({type(exc).__name__}: {exc})",
                          where=str(path), fix="run `fedehr model evaluate` again") from None
    scored = result.get("checkpoint")
    return EvaluationView(
        folder=folder, checkpoint=scored, data=str(result.get("data", "")),
        settings=_settings_line(settings), seconds=float(result.get("seconds") or 0.0),
        tasks=tasks, other_checkpoint=bool(scored) and _same(scored, checkpoint) is False)


def plot_names(folder: Path) -> set[str]:
    """The PNG files report.md links: the only files of the folder the page serves."""
    try:
        text = (Path(folder) / REPORT).read_text()
    except OSError:
        return set()
    return {name for _, name in _IMAGE.findall(text)}


def _task_table(task: dict, folder: Path) -> TaskTable:
    rows = []
    for m in task["methods"]:
        mean, std = m.get("mean") or {}, m.get("std") or {}
        rows.append({"method": m["method"] if m.get("k") is None
                     else f"{m['method']} k={m['k']}",
                     "auroc_value": mean.get("auroc"),
                     **{metric: _score(mean.get(metric), std.get(metric))
                        for metric in ("auroc", "auprc", "ece")}})
    scored = [r["auroc_value"] for r in rows if r["auroc_value"] is not None]
    for row in rows:
        row["best"] = bool(scored) and row["auroc_value"] == max(scored)
    plots = [(name, alt) for alt, name in _IMAGE.findall(_report_text(folder))
             if name.startswith(f"{task['task']}-") and (folder / name).is_file()]
    return TaskTable(task=task["task"], title=task.get("title") or task["task"], rows=rows,
                     counts=f"train rows {task.get('n_train')} ({task.get('positives_train')} "
                            f"positive), test rows {task.get('n_test')} "
                            f"({task.get('positives_test')} positive)",
                     notes=list(task.get("notes") or []), plots=plots)


def _report_text(folder: Path) -> str:
    try:
        return (folder / REPORT).read_text()
    except OSError:
        return ""


def _score(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std else "")


def _settings_line(settings: dict) -> str:
    ks = ", ".join(str(k) for k in settings.get("ks") or [])
    return (f"split {settings.get('split', '?')}; probes on frozen embeddings at k = {ks or '?'}, "
            f"{settings.get('seeds', '?')} seeds per k; zero-shot "
            f"{settings.get('zero_shot_samples', '?')} continuations per row")


def _same(scored: str, checkpoint: Path) -> bool | None:
    try:
        return Path(scored).resolve() == Path(checkpoint).resolve()
    except OSError:
        return None
