"""`fedehr model evaluate`: score a checkpoint on clinical tasks and write a report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedehr.shared.errors import ConfigError

app = typer.Typer(help="Train, verify and use fedehr models.", no_args_is_help=True)
console = Console()

EXAMPLE = """For each task: zero-shot answers (K generated futures per patient), logistic
probes on frozen embeddings trained on k = 16, 64, 256 and all labelled
examples, and a count-feature baseline, scored on the held-out patients
(AUROC, AUPRC, ECE). Writes report.md with ROC, reliability and AUROC-vs-k
plots, and results.json.

  fedehr model evaluate --checkpoint global-model --data hospitals/hospital_a \\
      --tasks mortality,readmission_30d,long_los,icu_transfer --out eval-a

  fedehr model evaluate --checkpoint global-model --data mimic-meds \\
      --predicates mimic_iv --zero-shot-samples 0 --ks 16,64,all

Tasks are ACES configs: mortality, readmission_30d, long_los, icu_transfer, or
the path of your own task YAML. --predicates binds them to the dataset's
codes (synthetic, mimic_iv, anchor, or a YAML; detected when omitted).
"""


def _ks(text: str) -> list[int | str]:
    out: list[int | str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "all":
            out.append("all")
        elif part.isdigit() and int(part) >= 2:
            out.append(int(part))
        else:
            raise ConfigError(f"cannot read k {part!r}", where="--ks",
                              fix="give whole numbers of at least 2 and/or 'all', e.g. 16,64,all")
    if not out:
        raise ConfigError("no k given", where="--ks", fix="e.g. --ks 16,64,256,all")
    return out


def _mapping(harmonisation: Path | None, data: Path):
    if harmonisation is None:
        return None
    import yaml

    from fedehr.shared.data.dataset import MEDSDataset
    from fedehr.shared.tokenizer.mapping import CodeMapping

    if not harmonisation.is_file():
        raise ConfigError("no such harmonisation file", where=str(harmonisation),
                          fix="give the site's harmonisation YAML (code_map: ...)")
    loaded = yaml.safe_load(harmonisation.read_text()) or {}
    return CodeMapping.from_config({"code_map": loaded.get("code_map", {})},
                                   MEDSDataset.open(data).codes(), where=str(harmonisation))


@app.command("evaluate", help=f"Evaluate a checkpoint on clinical tasks.\n\n{EXAMPLE}")
def evaluate_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint folder."),
    data: Path = typer.Option(..., "--data", help="MEDS dataset folder."),
    tasks: str = typer.Option("mortality,readmission_30d,long_los,icu_transfer", "--tasks",
                              help="Comma-separated task names or ACES task YAML paths."),
    predicates: str = typer.Option(None, "--predicates",
                                   help="synthetic, mimic_iv, anchor or a predicates YAML "
                                        "(default: detected from the dataset)."),
    out: Path = typer.Option(Path("evaluation"), "--out", help="Report folder."),
    zero_shot_samples: int = typer.Option(8, "--zero-shot-samples", min=0,
                                          help="Generated futures per test row (0: skip)."),
    zero_shot_max_tokens: int = typer.Option(None, "--zero-shot-max-tokens", min=1,
                                             help="Token budget of each generated future "
                                             "(default: read from the task's horizon and "
                                             "the data)."),
    ks: str = typer.Option("16,64,256,all", "--ks", help="Probe training-set sizes."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Repeats per k."),
    harmonisation: Path = typer.Option(None, "--harmonisation",
                                       help="The site's harmonisation YAML (local codes)."),
    trusted_key: Path = typer.Option(None, "--trusted-key",
                                     help="Public key the checkpoint must be signed with."),
    notes: bool = typer.Option(True, "--notes/--no-notes",
                               help="Encode notes with the bundled MiniLM when the model "
                                    "reads notes (--no-notes: zero vectors, faster)."),
    pooling: str = typer.Option(None, "--pooling",
                                help="The probes' patient vector: 'last+mean' (default: the "
                                "last position's hidden state and the mean over the history) "
                                "or 'last'."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Histories per forward."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads (0 = torch default)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of zero-shot sampling and of the split "
                                               "when the dataset has none."),
) -> None:
    import torch

    from fedehr.shared.atomic import refuse_overlap
    from fedehr.shared.clinical.evaluate import evaluate
    from fedehr.shared.clinical.report import summary_rows, write_report

    if out.exists() and not out.is_dir():  # found out now, not after the work
        raise ConfigError("is a file, not a report folder", where=str(out),
                          fix="choose a folder, e.g. --out evaluation")
    refuse_overlap(out, (checkpoint, data), inside_only=True)  # never write into them
    if threads:
        torch.set_num_threads(threads)
    from fedehr.shared.clinical.probes import DEFAULT_POOLING, POOLINGS

    pooling = pooling or DEFAULT_POOLING
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}", where="--pooling",
                          fix=f"use one of {', '.join(POOLINGS)}")
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    if not task_list:
        raise ConfigError("no task given", where="--tasks", fix="e.g. --tasks mortality")
    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        bars: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            key = "tasks" if stage.startswith("task") else stage
            if key not in bars:
                bars[key] = bar.add_task(stage, total=max(total, 1))
            bar.update(bars[key], completed=done, total=max(total, 1), description=stage)

        result = evaluate(checkpoint, data, task_list, predicates=predicates, ks=_ks(ks),
                          seeds=seeds, zero_shot_samples=zero_shot_samples,
                          zero_shot_max_tokens=zero_shot_max_tokens,
                          mapping=_mapping(harmonisation, data), seed=seed,
                          batch_size=batch_size, notes=notes, pooling=pooling,
                          trusted_public_key=trusted_key,
                          progress=progress)
    report = write_report(result, out)

    table = Table(title=f"fedehr model evaluate ({result.settings['split']})")
    for name, justify in (("task", "left"), ("method", "left"), ("test (pos)", "right"),
                          ("AUROC", "right"), ("AUPRC", "right"), ("ECE", "right")):
        table.add_column(name, justify=justify)
    for row in summary_rows(result):
        table.add_row(*row)
    console.print(table)
    for task in result.tasks:
        for note in task.notes:
            console.print(f"[yellow]{task.task}:[/] {note}")
    console.print(f"report: {report} ({result.seconds:.1f} s)", soft_wrap=True)
