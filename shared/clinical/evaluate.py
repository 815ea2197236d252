"""Evaluate a checkpoint on clinical tasks: zero-shot, few-shot probes, count baseline.

`evaluate(checkpoint_or_model, data, tasks)` is the importable core of
`fedehr model evaluate` (and of the federated-vs-central benchmark):

1. labels of every task on the dataset (`labels.extract_many`, ACES);
2. subjects split into train and test: the dataset's subject_splits
   (train / held_out), else a seeded 80/20 split of subjects;
3. one history per distinct (subject, prediction time) across all tasks, so
   tasks that share prediction times (mortality and long stay) embed once;
4. per task, on the test rows: zero-shot answers (`zero_shot.predict`, K
   generated futures per row), a logistic probe on frozen embeddings trained
   on k training rows for each k (repeated over seeds), and the count
   baseline trained on the same k rows.

Every method is scored on the same test rows with AUROC, AUPRC, ECE and Brier
(`metrics.score`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fedehr.shared.clinical import labels as L
from fedehr.shared.clinical.baseline import CountFeatures
from fedehr.shared.clinical.history import ROW, history_events, history_windows
from fedehr.shared.clinical.metrics import Scores, score
from fedehr.shared.clinical.probes import (
    DEFAULT_C,
    DEFAULT_KS,
    DEFAULT_POOLING,
    embed,
    probe_predictions,
)
from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.errors import ConfigError, DataError
from fedehr.shared.tokenizer.mapping import CodeMapping

Progress = Callable[[str, int, int], None]  # (stage, done, total)
METRICS = ("auroc", "auprc", "ece", "brier")


@dataclass
class MethodResult:
    """One method at one k on one task: the scores of each run, and the first run's
    predictions (for the plots)."""

    method: str  # "zero-shot", "probe" or "counts"
    k: int | str | None
    runs: list[Scores]
    y_true: np.ndarray = field(repr=False)
    probability: np.ndarray = field(repr=False)

    @property
    def label(self) -> str:
        return self.method if self.k is None else f"{self.method} k={self.k}"

    def mean(self, metric: str) -> float:
        values = [getattr(r, metric) for r in self.runs]
        return float(np.nanmean(values)) if values and not np.all(np.isnan(values)) else np.nan

    def std(self, metric: str) -> float:
        values = np.array([getattr(r, metric) for r in self.runs], dtype=float)
        values = values[~np.isnan(values)]
        return float(values.std(ddof=1)) if len(values) > 1 else 0.0

    def to_dict(self) -> dict:
        return {"method": self.method, "k": self.k, "runs": [r.to_dict() for r in self.runs],
                "mean": {m: _json_float(self.mean(m)) for m in METRICS},
                "std": {m: _json_float(self.std(m)) for m in METRICS}}


@dataclass
class TaskResult:
    task: str
    title: str
    n_train: int
    n_test: int
    positives_train: int
    positives_test: int
    methods: list[MethodResult]
    notes: list[str] = field(default_factory=list)

    def method(self, name: str, k: int | str | None = None) -> MethodResult | None:
        return next((m for m in self.methods if m.method == name and m.k == k), None)

    def to_dict(self) -> dict:
        return {"task": self.task, "title": self.title, "n_train": self.n_train,
                "n_test": self.n_test, "positives_train": self.positives_train,
                "positives_test": self.positives_test, "notes": self.notes,
                "methods": [m.to_dict() for m in self.methods]}


@dataclass
class EvaluationResult:
    data: str
    checkpoint: str | None
    settings: dict[str, Any]
    tasks: list[TaskResult]
    seconds: float = 0.0

    def task(self, name: str) -> TaskResult:
        return next(t for t in self.tasks if t.task == name)

    def to_dict(self) -> dict:
        return {"data": self.data, "checkpoint": self.checkpoint, "settings": self.settings,
                "seconds": round(self.seconds, 2), "tasks": [t.to_dict() for t in self.tasks]}


def _json_float(value: float) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 6)


# -- inputs --------------------------------------------------------------------

def _model_and_vocab(checkpoint_or_model, trusted_public_key) -> tuple[Any, Any, str | None]:
    if isinstance(checkpoint_or_model, (str, Path)):
        from fedehr.shared.checkpoint import load

        model, vocab, _ = load(checkpoint_or_model, trusted_public_key=trusted_public_key)
        return model, vocab, str(checkpoint_or_model)
    if isinstance(checkpoint_or_model, tuple) and len(checkpoint_or_model) >= 2:
        return checkpoint_or_model[0], checkpoint_or_model[1], None
    raise ConfigError("give a checkpoint folder or a (model, vocabulary) pair",
                      where="evaluate",
                      fix="evaluate('ckpt/', ...) or evaluate((model, vocab), ...)")


def subject_split(dataset: MEDSDataset, subjects: np.ndarray, *, train_split: str = S.TRAIN,
                  test_split: str = S.HELD_OUT, seed: int = 0) -> tuple[set[int], set[int], str]:
    """(train subjects, test subjects, how they were split)."""
    splits = dataset.subject_splits()
    if not splits.is_empty() and {train_split, test_split} <= set(splits["split"].to_list()):
        train = set(splits.filter(pl.col("split") == train_split)[S.SUBJECT_ID].to_list())
        test = set(splits.filter(pl.col("split") == test_split)[S.SUBJECT_ID].to_list())
        return train, test, f"subject_splits: {train_split} / {test_split}"
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(np.unique(subjects))
    cut = int(round(0.8 * len(shuffled)))
    return (set(shuffled[:cut].tolist()), set(shuffled[cut:].tolist()),
            f"seeded 80/20 split of subjects (seed {seed})")


# -- the evaluation ----------------------------------------------------------------

def evaluate(checkpoint_or_model, data: str | Path | MEDSDataset,
             tasks: Sequence[str | Path] = L.TASKS, *, predicates: str | Path | None = None,
             ks: Sequence[int | str] = DEFAULT_KS, seeds: int = 5,
             zero_shot_samples: int = 0, mapping: CodeMapping | None = None,
             train_split: str = S.TRAIN, test_split: str = S.HELD_OUT, seed: int = 0,
             batch_size: int = 64, zero_shot_batch: int = 256,
             zero_shot_max_tokens: int | None = None, c: float = DEFAULT_C,
             note_encoder=None, notes: bool = True, pooling: str = DEFAULT_POOLING,
             trusted_public_key=None, progress: Progress | None = None) -> EvaluationResult:
    """Score zero-shot answers, few-shot probes and the count baseline on each task.

    `checkpoint_or_model`: a checkpoint folder (verified with `trusted_public_key`
    when given) or a (model, vocabulary) pair. `mapping`: the site's code
    mapping (e.g. a harmonisation map); default codes.parquet parents.
    `zero_shot_samples` 0 skips zero-shot; `zero_shot_batch` counts generated rows
    (patients x samples) per forward, `zero_shot_max_tokens` caps each generated
    future (None: a budget read from the task's horizon and the data; an undecided
    future is left out of its row's probability), `batch_size` counts histories
    per embedding forward. A model that reads notes (note_dim > 0) gets note
    vectors from `note_encoder`, by default the bundled MiniLM the sites use;
    `notes=False` gives it zeros instead (faster, and what a site with notes off sends).
    `pooling`: the probes' patient vector (`EHRModel.embed`), "last" or "last+mean".
    """
    started = time.perf_counter()
    say = progress or (lambda *_: None)
    model, vocab, ckpt = _model_and_vocab(checkpoint_or_model, trusted_public_key)
    dataset = data if isinstance(data, MEDSDataset) else MEDSDataset.open(data)
    mapping = mapping or CodeMapping.from_config(None, dataset.codes())
    loaded = [L.load_task(t) for t in tasks]
    if not loaded:
        raise ConfigError("no task given", where="tasks", fix=f"e.g. {', '.join(L.TASKS)}")
    pred_path = L.predicates_path(predicates, dataset)

    say("labels", 0, 1)
    all_labels = L.extract_many(dataset, loaded, pred_path)
    say("labels", 1, 1)
    subjects = np.concatenate([lab[L.SUBJECT_ID].to_numpy() for lab in all_labels]) \
        if all_labels else np.zeros(0, np.int64)
    train_ids, test_ids, split_note = subject_split(dataset, subjects, train_split=train_split,
                                                    test_split=test_split, seed=seed)
    keep = train_ids | test_ids
    all_labels = [lab.filter(pl.col(L.SUBJECT_ID).is_in(list(keep))) for lab in all_labels]

    queries = _distinct_queries(all_labels)
    if queries.is_empty():
        raise DataError("no task has any labelled row", where=str(dataset.root),
                        fix="check the predicates (--predicates) and the tasks")
    events = history_events(dataset, queries)
    cfg = model.config
    if notes and cfg.note_dim and note_encoder is None:
        from fedehr.shared.model.encoders import NoteEncoder

        note_encoder = NoteEncoder()
    windows = history_windows(dataset, queries, vocab, max_len=cfg.max_len, mapping=mapping,
                              note_dim=cfg.note_dim, image_dim=cfg.image_dim,
                              note_encoder=note_encoder, events=events)
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        say("embeddings", done[0], len(windows))

    x_all = embed(model, windows, batch_size=batch_size, pooling=pooling, progress=step)
    train_rows = np.flatnonzero(queries[L.SUBJECT_ID].is_in(list(train_ids)).to_numpy())
    counts = CountFeatures.fit(events, train_rows, mapping=mapping)
    c_all = counts.transform(events, queries.height, mapping=mapping)

    results = []
    for i, (task, lab) in enumerate(zip(loaded, all_labels, strict=True)):
        say(f"task {task.name}", i, len(loaded))
        results.append(_evaluate_task(
            task, lab, queries, x_all, c_all, train_ids, test_ids, ks=ks, seeds=seeds, c=c,
            zero_shot=_ZeroShot(model, vocab, dataset, mapping, pred_path, zero_shot_samples,
                                seed, zero_shot_batch, zero_shot_max_tokens, say)))
        say(f"task {task.name}", i + 1, len(loaded))
    settings = {"tasks": [t.name for t in loaded], "predicates": str(pred_path),
                "split": split_note, "ks": list(ks), "seeds": seeds, "probe_C": c,
                "zero_shot_samples": zero_shot_samples, "count_codes": len(counts.codes),
                "histories": queries.height, "embedding_dim": int(x_all.shape[1]),
                "max_len": cfg.max_len, "pooling": pooling,
                "notes": bool(cfg.note_dim and note_encoder is not None and notes)}
    return EvaluationResult(data=str(dataset.root), checkpoint=ckpt, settings=settings,
                            tasks=results, seconds=time.perf_counter() - started)


def _distinct_queries(all_labels: list[pl.DataFrame]) -> pl.DataFrame:
    frames = [lab.select(L.SUBJECT_ID, L.PREDICTION_TIME) for lab in all_labels]
    return (pl.concat(frames).unique().sort([L.SUBJECT_ID, L.PREDICTION_TIME])
            if frames else pl.DataFrame())


def _evaluate_task(task: L.Task, lab: pl.DataFrame, queries: pl.DataFrame, x_all: np.ndarray,
                   c_all: np.ndarray, train_ids: set[int], test_ids: set[int], *,
                   ks: Sequence[int | str], seeds: int, c: float,
                   zero_shot: _ZeroShot) -> TaskResult:
    rows = lab.join(queries.with_row_index(ROW), on=[L.SUBJECT_ID, L.PREDICTION_TIME],
                    how="left", maintain_order="left")
    is_train = rows[L.SUBJECT_ID].is_in(list(train_ids)).to_numpy()
    is_test = rows[L.SUBJECT_ID].is_in(list(test_ids)).to_numpy()
    y = rows[L.BOOLEAN_VALUE].to_numpy().astype(bool)
    idx = rows[ROW].to_numpy().astype(np.int64)
    tr, te = idx[is_train], idx[is_test]
    y_tr, y_te = y[is_train], y[is_test]
    result = TaskResult(task=task.name, title=task.title, n_train=int(is_train.sum()),
                        n_test=int(is_test.sum()), positives_train=int(y_tr.sum()),
                        positives_test=int(y_te.sum()), methods=[])
    if result.n_test == 0:
        result.notes.append("no test rows: nothing to score")
        return result
    if not 0 < result.positives_test < result.n_test:
        result.notes.append("the test rows hold one class only: AUROC/AUPRC are undefined")

    zs = zero_shot.score(task, lab.filter(pl.Series(is_test)), y_te)
    if isinstance(zs, MethodResult):
        result.methods.append(zs)
    elif zs:
        result.notes.append(zs)
    for method, features in (("probe", x_all), ("counts", c_all)):
        for k in ks:
            if k != "all" and int(k) > len(y_tr):
                result.notes.append(f"{method} k={k}: only {len(y_tr)} training rows")
                continue
            runs = probe_predictions(features[tr], y_tr, features[te], k, seeds=seeds, c=c)
            if not runs:
                result.notes.append(f"{method} k={k}: the training rows lack a class")
                continue
            result.methods.append(MethodResult(method, k, [score(y_te, p) for p in runs],
                                               y_te, runs[0]))
    return result


@dataclass
class _ZeroShot:
    """What zero-shot scoring needs besides the task (`samples` 0: skip it)."""

    model: Any
    vocab: Any
    dataset: MEDSDataset
    mapping: CodeMapping
    predicates: Path
    samples: int
    seed: int
    batch_size: int
    max_tokens: int | None
    say: Progress

    def score(self, task: L.Task, test_labels: pl.DataFrame,
              y_test: np.ndarray) -> MethodResult | str | None:
        """Zero-shot scores, or a note saying why there are none."""
        if self.samples <= 0:
            return None
        try:
            from fedehr.shared.clinical import zero_shot
            from fedehr.shared.clinical.query import outcome_from_task
        except ImportError as exc:
            return f"zero-shot unavailable ({exc})"
        outcome = outcome_from_task(task.config,
                                    predicates=L.dataset_predicates(self.predicates))
        total, done = test_labels.height * self.samples, [0]

        def step(n: int) -> None:
            done[0] += n
            self.say(f"zero-shot {task.name}", done[0], total)

        preds = zero_shot.predict(self.model, self.vocab, self.dataset, test_labels, outcome,
                                  samples=self.samples, seed=self.seed,
                                  batch_size=self.batch_size, mapping=self.mapping,
                                  max_new_tokens=self.max_tokens, progress=step)
        joined = test_labels.join(
            preds.select(L.SUBJECT_ID, pl.col(L.PREDICTION_TIME).cast(pl.Datetime("us")),
                         "probability"),
            on=[L.SUBJECT_ID, L.PREDICTION_TIME], how="left", maintain_order="left")
        prob = joined["probability"].cast(pl.Float64).to_numpy()
        if np.isnan(prob).any():
            return (f"zero-shot answered {int((~np.isnan(prob)).sum())} of {len(prob)} test "
                    "rows (the others had no continuation that reached the end of its window; "
                    "not scored)")
        if task.label_negated:  # the label window asks the complement (see labels.py)
            prob = 1.0 - prob
        return MethodResult("zero-shot", None, [score(y_test, prob)], y_test, prob)
