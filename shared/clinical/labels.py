"""Task labels: ACES task configs run over a MEDS dataset, out in the MEDS label schema.

A task (``fedehr/shared/clinical/tasks/<name>.yaml``) is dataset-agnostic: it
names predicates (hospital_admission, hospital_discharge, death,
icu_admission) and chains windows off a trigger. A predicates file
(``fedehr/shared/clinical/predicates/<dataset>.yaml``) binds those names to a
dataset's codes. Extraction is ACES' own (the `es-aces` package: predicate
columns, then the recursive window query), so the same YAML gives the same
cohort with ``aces-cli``.

One fedehr extension: ``metadata.label_negated: true`` reports the complement
of the ACES label (ACES counts events and cannot say "no discharge within 7
days"; see tasks/long_los.yaml). ACES ignores ``metadata``.

Output: ``subject_id`` int64, ``prediction_time`` datetime[us],
``boolean_value`` bool, one row per (subject, prediction time), sorted: the
three label-schema columns the `meds` package defines (meds.LabelSchema).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import meds
import polars as pl
import yaml

from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.errors import ConfigError, DataError

TASKS = ("mortality", "readmission_30d", "long_los", "icu_transfer")
PREDICATE_SETS = ("synthetic", "mimic_iv", "anchor")

SUBJECT_ID = meds.LabelSchema.subject_id_name  # "subject_id"
PREDICTION_TIME = meds.LabelSchema.prediction_time_name  # "prediction_time"
BOOLEAN_VALUE = meds.LabelSchema.boolean_value_name  # "boolean_value"
LABEL_COLUMNS = (SUBJECT_ID, PREDICTION_TIME, BOOLEAN_VALUE)
LABEL_DTYPES = {SUBJECT_ID: pl.Int64, PREDICTION_TIME: pl.Datetime("us"),
                BOOLEAN_VALUE: pl.Boolean}


@dataclass(frozen=True)
class Task:
    """A task config file, its parsed YAML and what fedehr reads from its metadata."""

    name: str
    path: Path
    config: dict

    @property
    def title(self) -> str:
        return str(self.metadata.get("title") or self.name)

    @property
    def metadata(self) -> dict:
        return dict(self.config.get("metadata") or {})

    @property
    def label_negated(self) -> bool:
        return bool(self.metadata.get("label_negated", False))


def _package_file(package: str, name: str) -> Path:
    return Path(str(resources.files(f"fedehr.shared.clinical.{package}").joinpath(name)))


def _read_yaml(path: Path, what: str) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML ({exc})", where=str(path),
                          fix=f"fix the {what} file's syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"a {what} file must hold a mapping", where=str(path),
                          fix="see fedehr/shared/clinical/tasks/ for examples")
    return data


def load_task(task: str | Path) -> Task:
    """A built-in task by name (`TASKS`) or an ACES task YAML by path."""
    path = Path(task)
    if path.suffix not in (".yaml", ".yml"):
        if str(task) not in TASKS:
            raise ConfigError(f"unknown task {str(task)!r}", where="--tasks",
                              fix=f"use one of {', '.join(TASKS)} or the path of an ACES "
                                  "task YAML")
        path = _package_file("tasks", f"{task}.yaml")
    elif not path.is_file():
        raise ConfigError("no such task file", where=str(path),
                          fix="give an existing ACES task YAML")
    config = _read_yaml(path, "task")
    name = str((config.get("metadata") or {}).get("name") or path.stem)
    return Task(name=name, path=path, config=config)


def predicates_path(predicates: str | Path | None, dataset: MEDSDataset) -> Path:
    """The predicates file: a name (`PREDICATE_SETS`), a path, or None to detect it."""
    if predicates is None:
        predicates = detect_predicate_set(dataset)
    path = Path(predicates)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError("no such predicates file", where=str(path),
                              fix="give an existing ACES predicates YAML")
        return path
    if str(predicates) not in PREDICATE_SETS:
        raise ConfigError(f"unknown predicate set {str(predicates)!r}", where="--predicates",
                          fix=f"use one of {', '.join(PREDICATE_SETS)} or the path of an ACES "
                              "predicates YAML")
    return _package_file("predicates", f"{predicates}.yaml")


def detect_predicate_set(dataset: MEDSDataset) -> str:
    """synthetic for `fedehr data synth` output, anchor for the fetched public anchor,
    mimic_iv for other MIMIC-IV datasets; anything else must be named."""
    from fedehr.shared.data.anchor import PROVENANCE_FILE

    meta = dataset.metadata()
    if meta.get("etl_name") == "fedehr-synth":
        return "synthetic"
    if (dataset.root / PROVENANCE_FILE).exists():
        return "anchor"
    if "MIMIC" in str(meta.get("dataset_name", "")).upper():
        return "mimic_iv"
    raise ConfigError("cannot tell which codes this dataset uses", where=str(dataset.root),
                      fix=f"pass --predicates ({', '.join(PREDICATE_SETS)}) or the path of a "
                          "predicates YAML for your codes")


def dataset_predicates(path: Path) -> dict:
    """The ``predicates`` mapping of a predicates file (for `query.outcome_from_task`)."""
    return dict(_read_yaml(path, "predicates").get("predicates") or {})


def extract_labels(data: str | Path | MEDSDataset, task: str | Path | Task,
                   predicates: str | Path | None = None, *,
                   split: str | None = None) -> pl.DataFrame:
    """Labels of one task on a MEDS dataset, in the MEDS label schema.

    `predicates`: a predicate-set name, a predicates YAML, or None to detect it
    from the dataset's metadata. `split`: keep only that split's subjects (the
    whole record is always used, so windows see every event).
    """
    return extract_many(data, [task], predicates, split=split)[0]


def extract_many(data: str | Path | MEDSDataset, tasks: Sequence[str | Path | Task],
                 predicates: str | Path | None = None, *,
                 split: str | None = None) -> list[pl.DataFrame]:
    """`extract_labels` for several tasks, reading the dataset once."""
    dataset = data if isinstance(data, MEDSDataset) else MEDSDataset.open(data)
    pred_path = predicates_path(predicates, dataset)
    loaded = [t if isinstance(t, Task) else load_task(t) for t in tasks]
    keep = _split_subjects(dataset, split) if split else None
    with tempfile.TemporaryDirectory(prefix="fedehr-labels-") as tmp:
        events_path = Path(tmp) / "events.parquet"
        (dataset.scan().select(S.SUBJECT_ID, S.TIME, S.CODE, S.NUMERIC_VALUE)
         .collect().write_parquet(events_path))
        out = []
        for task in loaded:
            labels = _run_aces(task, pred_path, events_path)
            if keep is not None:
                labels = labels.filter(pl.col(SUBJECT_ID).is_in(keep))
            out.append(labels)
    return out


def _split_subjects(dataset: MEDSDataset, split: str) -> pl.Series:
    splits = dataset.subject_splits()
    if splits.is_empty() or split not in set(splits["split"].to_list()):
        raise DataError(f"no subjects in split {split!r}", where=str(dataset.root),
                        fix="check metadata/subject_splits.parquet or pass another split")
    return splits.filter(pl.col("split") == split)[S.SUBJECT_ID]


def _run_aces(task: Task, pred_path: Path, events_path: Path) -> pl.DataFrame:
    from aces import config as aces_config
    from aces import predicates as aces_predicates
    from aces import query as aces_query
    from omegaconf import DictConfig

    aces_log = logging.getLogger("aces")
    level = aces_log.level
    aces_log.setLevel(logging.WARNING)  # ACES logs every step at INFO
    try:
        cfg = aces_config.TaskExtractorConfig.load(config_path=task.path,
                                                   predicates_path=pred_path)
        frame = aces_predicates.get_predicates_df(
            cfg, DictConfig({"path": str(events_path), "standard": "meds"}))
        result = aces_query.query(cfg, frame)
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"ACES cannot run this task ({exc})", where=str(task.path),
                          fix=f"check the task against the predicates file {pred_path}") from None
    finally:
        aces_log.setLevel(level)
    return _to_label_schema(result, negate=task.label_negated)


def _to_label_schema(result: pl.DataFrame, *, negate: bool) -> pl.DataFrame:
    if result.is_empty() or "label" not in result.columns:
        return pl.DataFrame(schema=LABEL_DTYPES)
    label = pl.col("label").cast(pl.Int64) > 0
    return (result.select(
        pl.col("subject_id").cast(pl.Int64).alias(SUBJECT_ID),
        pl.col("index_timestamp").cast(pl.Datetime("us")).alias(PREDICTION_TIME),
        (~label if negate else label).alias(BOOLEAN_VALUE))
        .unique([SUBJECT_ID, PREDICTION_TIME], keep="first", maintain_order=True)
        .sort([SUBJECT_ID, PREDICTION_TIME]))
