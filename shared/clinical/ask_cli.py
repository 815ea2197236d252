"""`fedehr model ask`: put a clinical question to a checkpoint, zero-shot.

One patient: the prompt is resolved to codes and shown back in clinical words
(confirm, or --yes), the patient's history up to the prediction time is
continued `--samples` times by the model, and the answer is the share of
continuations in which the outcome happens in the window, with a 95 % Wilson
interval and the history events that moved it most (leave-one-out with common
random numbers, explain.py).

Cohort: `--cohort` asks for every prediction time the compiled task defines
(ACES over the dataset, one split), `--patients FILE` for the listed subjects
(parquet or CSV: subject_id, optional prediction_time). Predictions are
written as parquet in the MEDS label schema plus the prediction
(MEDS-DEV's column names): subject_id, prediction_time, boolean_value (the
true label where known), predicted_boolean_value, predicted_boolean_probability,
ci_low, ci_high.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import polars as pl
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedehr.shared.clinical.query import prediction_time
from fedehr.shared.errors import ConfigError, DataError

app = typer.Typer(help="Train, verify and use fedehr models.", no_args_is_help=True)
console = Console()

EXAMPLE = """Examples:

  fedehr model ask --checkpoint ckpt --data hospital_a --patient 10000029 \\
      --prompt "death within 30 days after discharge"

  fedehr model ask --checkpoint ckpt --data hospital_a --patient 10000029 --yes \\
      --prompt "creatinine above 2 mg/dL within 48 hours of ICU admission"

  fedehr model ask --checkpoint ckpt --data hospital_a --prompt-file mortality.yaml \\
      --cohort --split held_out --out predictions.parquet --yes

Prompt forms: OUTCOME (above/below X UNIT) within DURATION after INDEX
(for patients with CONCEPT), or OUTCOME before END_EVENT after INDEX; the
parts in parentheses are optional.
"""


@app.command("ask", help=f"Ask a checkpoint a clinical question, zero-shot.\n\n{EXAMPLE}")
def ask(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint folder."),
    data: Path = typer.Option(..., "--data", help="MEDS dataset with the patients."),
    prompt: str = typer.Option(None, "--prompt", help="The question in clinical words."),
    prompt_file: Path = typer.Option(None, "--prompt-file", help="A saved prompt (YAML)."),
    patient: int = typer.Option(None, "--patient", min=0, max=2**63 - 1,
                                help="subject_id of one patient."),
    at: datetime = typer.Option(None, "--at", help="Prediction time (default: the latest "
                                "index event, or the last event)."),
    cohort: bool = typer.Option(False, "--cohort", help="Ask for every prediction time the "
                                "task defines in --split."),
    patients_file: Path = typer.Option(None, "--patients", help="Parquet/CSV of subject_id "
                                       "[, prediction_time] to ask about."),
    split: str = typer.Option("held_out", help="With --cohort: the split to use."),
    out: Path = typer.Option(None, "--out", help="Cohort mode: predictions parquet to write."),
    samples: int = typer.Option(32, "--samples", min=1, help="Continuations per patient."),
    explain_groups: int = typer.Option(8, "--explain", min=0, help="Event groups to leave out "
                                       "for the explanation (0: no explanation)."),
    top: int = typer.Option(5, min=1, help="Events shown in the explanation."),
    max_new_tokens: int = typer.Option(None, min=1, help="Token budget per continuation (default: "
                                       "read from the question's horizon and the data)."),
    batch_size: int = typer.Option(256, min=1, help="Continuations generated together."),
    seed: int = typer.Option(0, min=0, help="Sampling seed (same seed, same answer)."),
    threads: int = typer.Option(0, min=0, help="CPU threads (0 = torch default)."),
    trusted_key: Path = typer.Option(None, "--trusted-key", help="The consortium's public key: "
                                     "the checkpoint must be signed by it."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Skip the confirmation (scripts)."),
) -> None:
    import torch

    from fedehr.shared.checkpoint import load
    from fedehr.shared.clinical.concepts import CodeIndex
    from fedehr.shared.clinical.query import outcome_from_task
    from fedehr.shared.clinical.zero_shot import open_dataset

    if threads:
        torch.set_num_threads(threads)
    modes = sum([patient is not None, cohort, patients_file is not None])
    if modes != 1:
        raise ConfigError("choose one of --patient, --cohort and --patients", where="ask",
                          fix="e.g. --patient 10000029")
    if patient is None:  # found out before the model loads, not after the work
        _check_out(out, inputs=(data, checkpoint, prompt_file, patients_file, trusted_key))
    dataset = open_dataset(data)
    model, vocab, card = load(checkpoint, trusted_public_key=trusted_key)
    index = CodeIndex.for_dataset(dataset.codes(), extra_codes=vocab.tokens)
    resolved = _resolve(prompt, prompt_file, index)
    task = resolved.task_config()
    outcome = outcome_from_task(task)
    _show_resolution(resolved, outcome)
    _confirm(yes)
    if patient is not None:
        _ask_one(model, vocab, dataset, outcome, resolved, index, patient, at,
                 samples=samples, seed=seed, explain_groups=explain_groups, top=top,
                 max_new_tokens=max_new_tokens)
    else:
        if cohort and resolved.index is None:
            raise ConfigError("a cohort needs an index event to place prediction times",
                              where="--cohort", fix='add one, e.g. "... within 30 days after '
                              'discharge", or list the times with --patients')
        labels = (_cohort_labels(dataset, task, split) if cohort
                  else _file_labels(patients_file, dataset, resolved, at))
        _ask_many(model, vocab, dataset, outcome, labels, out, samples=samples, seed=seed,
                  batch_size=batch_size, max_new_tokens=max_new_tokens)


# -- prompt and confirmation ---------------------------------------------------------

def _resolve(prompt: str | None, prompt_file: Path | None, index):
    from fedehr.shared.clinical.prompt import load_prompt_file, parse_prompt, resolve_prompt

    if (prompt is None) == (prompt_file is None):
        raise ConfigError("give exactly one of --prompt and --prompt-file", where="ask",
                          fix='e.g. --prompt "death within 30 days after discharge"')
    parsed = parse_prompt(prompt) if prompt is not None else load_prompt_file(prompt_file)
    return resolve_prompt(parsed, index)


def _show_resolution(resolved, outcome) -> None:
    table = Table(title="The question, resolved", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, text in resolved.confirmation_lines():
        table.add_row(label, escape(text))
    table.add_row("compiled window", escape(outcome.clinical_words()))
    console.print(table)


def _confirm(yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError("the resolved codes need a confirmation", where="ask",
                          fix="check them above and pass --yes to run without asking")
    if not typer.confirm("Use these codes?", default=True):
        raise typer.Exit(1)


# -- one patient -----------------------------------------------------------------------

def _ask_one(model, vocab, dataset, outcome, resolved, index, patient, at, *, samples, seed,
             explain_groups, top, max_new_tokens) -> None:
    import numpy as np

    from fedehr.shared.clinical.zero_shot import predict_detailed

    when = prediction_time(dataset, patient, resolved, at)
    labels = pl.DataFrame({"subject_id": [patient], "prediction_time": [when]},
                          schema={"subject_id": pl.Int64, "prediction_time": pl.Datetime("us")})
    with console.status(f"sampling {samples} continuations"):
        result = predict_detailed(model, vocab, dataset, labels, outcome, samples=samples,
                                  seed=seed, max_new_tokens=max_new_tokens)
    _show_mapping_notes(result.outcome_tokens)
    row = result.frame.row(0, named=True)
    history = int((result.prompts.tokens[0] != 0).sum())
    sim = result.simulation
    answer = Table(title=f"Patient {patient} at {when:%Y-%m-%d %H:%M}", show_header=False,
                   title_justify="left")
    answer.add_column(style="bold")
    answer.add_column()
    answer.add_row("question", escape(outcome.clinical_words()))
    answer.add_row("probability", answer_words(row))
    answer.add_row("decided", f"{row['decided']} of {samples} continuations reached the end "
                   f"of the window (up to {sim.max_new_tokens:,} tokens each)")
    if stay := stay_words(row):
        answer.add_row("known stay", stay)
    if row["truncated"]:
        undecided = ~sim.decided_per_sample[0]
        reached = float(np.median(sim.reach_days[0][undecided]))
        window = outcome.horizon.total_seconds() / 86400 + float(result.prompts.gap_days[0])
        answer.add_row("undecided", f"{row['truncated']} ran out of tokens before the window "
                       f"closed (their clocks reached a median {reached:.1f} of {window:.1f} "
                       "days); left out of the probability. A model whose continuations "
                       "advance time slowly needs more tokens (--max-new-tokens) or training")
    answer.add_row("history used", f"{history} tokens (context {model.config.max_len})")
    answer.add_row("time", f"{sim.seconds:.1f} s, {sim.generated_tokens:,} tokens generated")
    console.print(answer)
    if explain_groups and not row["decided"]:
        console.print("No explanation: no continuation was decided, so there is no answer "
                      "to attribute.")
    elif explain_groups:
        _explain_one(model, vocab, result, outcome, index, samples=samples, seed=seed,
                     groups=explain_groups, top=top, max_new_tokens=sim.max_new_tokens)


def answer_words(row: dict) -> str:
    """The probability line of one answer: p, its interval, how many continuations."""
    if not row["decided"]:
        return (f"[bold]undecided[/]: none of {row['samples']} continuations reached the end "
                "of the window")
    return (f"[bold]{row['probability']:.2f}[/]  (95% CI {row['ci_low']:.2f}-"
            f"{row['ci_high']:.2f}; the outcome's chance averaged over {row['decided']} "
            "decided continuations)")


def stay_words(row: dict) -> str:
    """How the known stay shaped an answer (a row of `predict_detailed`'s frame), in
    words; empty where it did not."""
    if row["rejected"]:
        return (f"{row['rejected']} put a discharge, death or the outcome before the "
                "prediction time, against the history; left out")
    if not row["decided"] or row["left_early"] < 0.005:
        return ""
    return (f"the model gave a {row['left_early']:.0%} chance that the patient had left "
            "(discharge, death) or had the outcome before the prediction time, against the "
            "history; those events were ruled out there and each continuation weighted by "
            f"its chance of staying (effective count {row['effective']:.1f} of "
            f"{row['decided']})")


def _show_mapping_notes(otoks) -> None:
    for note in otoks.notes:
        console.print(f"[yellow]note[/] {escape(note)}")
    if otoks.value_words:
        console.print(f"[yellow]value condition, as the model's value bins allow:[/] "
                      f"{escape(otoks.value_words)}")


def _explain_one(model, vocab, result, outcome, index, *, samples, seed, groups, top,
                 max_new_tokens) -> None:
    from fedehr.shared.clinical.explain import explain

    columns = (TextColumn("leaving events out"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total} continuations"), TimeElapsedColumn())
    n_groups = _count_groups(result, vocab, groups)
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("explain", total=(n_groups + 1) * samples)
        expl = explain(model, vocab, result.prompts, 0, outcome, result.outcome_tokens, index,
                       samples=samples, seed=seed, max_groups=groups,
                       max_new_tokens=max_new_tokens,
                       progress=lambda n: bar.advance(task, n))
    if not expl.moved:
        console.print(f"What moved it: no history event moved the probability by 0.001 or "
                      f"more ({expl.groups_tried} event groups left out one at a time, "
                      f"{expl.decided} of {samples} continuations decided, p = "
                      f"{expl.probability:.3f} with the full history). Nothing to attribute at "
                      "this number of continuations; ask with more --samples.")
        return
    table = Table(title=f"What moved it most (each group left out, {samples} continuations, "
                  "same random numbers)", title_justify="left")
    for col in ("history event", "times", "p without", "change", "+/- se"):
        table.add_column(col, justify="left" if col == "history event" else "right")
    for inf in expl.moved[:top]:
        colour = "red" if inf.delta > 0 else "green"
        table.add_row(escape(inf.description), str(inf.occurrences),
                      f"{inf.probability_without:.3f}", f"[{colour}]{inf.delta:+.3f}[/]",
                      f"{inf.stderr:.3f}")
    console.print(table)
    still = expl.groups_tried - len(expl.moved)
    console.print(f"{expl.groups_tried} event groups tried in {expl.seconds:.1f} s"
                  + (f" ({still} changed nothing)" if still else "") + "; change = "
                  "p(full history) - p(without the events), over continuations decided both "
                  "ways; red raised the probability.")
    console.print(expl.noise_words(top))


def _count_groups(result, vocab, max_groups: int) -> int:
    from fedehr.shared.clinical.explain import event_groups

    tokens, _ = result.prompts.row(0)
    return len(event_groups(tokens, int(result.prompts.prefix_len[0]), vocab, max_groups))


# -- many patients ------------------------------------------------------------------------

def _cohort_labels(dataset, task: dict, split: str) -> pl.DataFrame:
    """Prediction times (and true labels) of the compiled task over one split, by ACES."""
    import yaml

    from fedehr.shared.clinical.labels import extract_labels

    with tempfile.TemporaryDirectory(prefix="fedehr-ask-") as tmp:
        task_path = Path(tmp) / "task.yaml"
        pred_path = Path(tmp) / "predicates.yaml"
        task_path.write_text(yaml.safe_dump(task, sort_keys=False))
        pred_path.write_text(yaml.safe_dump({"predicates": task["predicates"]}))
        labels = extract_labels(dataset, task_path, pred_path, split=split)
    if labels.is_empty():
        raise DataError(f"the task defines no prediction times in split {split!r}",
                        where=str(dataset.root), fix="try another --split or prompt")
    return labels


def _file_labels(path: Path, dataset, resolved, at: datetime | None) -> pl.DataFrame:
    try:
        frame = pl.read_csv(path, try_parse_dates=True) if path.suffix == ".csv" \
            else pl.read_parquet(path)
    except (FileNotFoundError, OSError, pl.exceptions.PolarsError) as exc:
        raise DataError(f"cannot read the patient list ({exc})", where=str(path),
                        fix="give a parquet or CSV file with a subject_id column") from None
    if "subject_id" not in frame.columns:
        raise DataError("no subject_id column", where=str(path), fix="add subject_id")
    if "prediction_time" not in frame.columns:
        times = [prediction_time(dataset, int(s), resolved, at)
                 for s in frame["subject_id"].to_list()]
        frame = frame.with_columns(pl.Series("prediction_time", times))
    return frame.with_columns(pl.col("subject_id").cast(pl.Int64),
                              pl.col("prediction_time").cast(pl.Datetime("us")))


def _check_out(out: Path | None, inputs: tuple) -> None:
    from fedehr.shared.atomic import refuse_overlap

    if out is None:
        raise ConfigError("cohort mode writes a parquet file", where="ask",
                          fix="pass --out predictions.parquet")
    if out.is_dir():
        raise ConfigError("is a folder, not a file to write", where=str(out),
                          fix="pass a file name, e.g. --out predictions.parquet")
    refuse_overlap(out, inputs)
    if out.exists() and not _is_predictions(out):  # replace only an earlier answer
        raise ConfigError("exists and is not a predictions file `fedehr model ask` wrote",
                          where=str(out), fix="choose a new --out, or move that file away")


def _is_predictions(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(path).names)
    except Exception:  # any unreadable file is simply not ours  # noqa: BLE001
        return False
    return {"subject_id", "prediction_time", "predicted_boolean_probability"} <= names


def _ask_many(model, vocab, dataset, outcome, labels: pl.DataFrame, out: Path | None, *,
              samples, seed, batch_size, max_new_tokens) -> None:
    from fedehr.shared.atomic import write_bytes
    from fedehr.shared.clinical.zero_shot import predict_detailed

    columns = (TextColumn("zero-shot"), BarColumn(), TextColumn("{task.completed}/{task.total} "
               "continuations"), TimeElapsedColumn())
    started = time.perf_counter()
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("zero-shot", total=labels.height * samples)
        result = predict_detailed(model, vocab, dataset, labels, outcome, samples=samples,
                                  seed=seed, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                  progress=lambda n: bar.advance(task, n))
    elapsed = time.perf_counter() - started
    _show_mapping_notes(result.outcome_tokens)
    frame = prediction_frame(labels, result.frame)
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    write_bytes(out, buffer.getvalue())
    summary = Table(title=f"fedehr model ask -> {out}", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("patients (prediction times)", f"{frame.height:,}")
    summary.add_row("continuations per patient", str(samples))
    summary.add_row("mean predicted probability",
                    f"{frame['predicted_boolean_probability'].mean():.3f}")
    if frame["boolean_value"].null_count() < frame.height:
        summary.add_row("observed rate", f"{frame['boolean_value'].cast(pl.Float64).mean():.3f}")
    undecided = int(result.frame["truncated"].sum())
    summary.add_row("undecided continuations (left out)",
                    f"{undecided:,} of {labels.height * samples:,} "
                    f"({undecided / max(1, labels.height * samples):.1%}; budget "
                    f"{result.simulation.max_new_tokens} tokens)")
    unanswered = int(result.frame["decided"].eq(0).sum())
    if unanswered:
        summary.add_row("patients with no decided continuation", f"{unanswered:,} (no answer)")
    summary.add_row("generation time", f"{result.simulation.seconds:.1f} s")
    summary.add_row("patients / s (generation)", f"{result.patients_per_second:.2f}")
    summary.add_row("patients / s (end to end)", f"{frame.height / elapsed:.2f}")
    console.print(summary)


def prediction_frame(labels: pl.DataFrame, predicted: pl.DataFrame) -> pl.DataFrame:
    """MEDS label schema + MEDS-DEV prediction columns + the interval, in label order."""
    truth = (labels["boolean_value"].cast(pl.Boolean) if "boolean_value" in labels.columns
             else pl.Series("boolean_value", [None] * labels.height, dtype=pl.Boolean))
    return pl.DataFrame({
        "subject_id": predicted["subject_id"],
        "prediction_time": predicted["prediction_time"],
        "boolean_value": truth,
        "predicted_boolean_value": predicted.select(  # no answer: null, not "no"
            pl.when(pl.col("probability").is_nan()).then(None)
            .otherwise(pl.col("probability") >= 0.5)).to_series(),
        "predicted_boolean_probability": predicted["probability"].cast(pl.Float32),
        "ci_low": predicted["ci_low"].cast(pl.Float32),
        "ci_high": predicted["ci_high"].cast(pl.Float32),
    })

