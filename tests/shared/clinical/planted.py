"""A tiny world with a planted answer, shared by the zero-shot, explanation and CLI tests.

Every patient has two clinic visits with a lab value, then one procedure:
"Alpha procedure" (even subject ids) is always followed one hour later by a
"Cardiac arrest"; "Beta procedure" (odd ids) always by an "Uneventful
recovery", never by a cardiac arrest; a clinic visit follows two months
later. A small model trained briefly on this learns the rule, so zero-shot
P(cardiac arrest within 1 day after the procedure) must be high after alpha
and low after beta.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import torch

from fedehr.shared.checkpoint import ModelCard, generate_signing_key, save
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.writer import MEDSWriter
from fedehr.shared.model import EHRModel, ModelConfig
from fedehr.shared.tokenizer.cache import load_or_build
from fedehr.shared.tokenizer.mapping import CodeMapping
from fedehr.shared.tokenizer.vocabulary import Vocabulary, quantile_edges
from fedehr.shared.tokenizer.windows import PatientWindows
from fedehr.shared.training import train

T0 = datetime(2023, 3, 1, 8, 0)
N_PATIENTS = 160
DESCRIPTIONS = {
    "GENDER//F": "Administrative sex: female",
    "GENDER//M": "Administrative sex: male",
    "MEDS_BIRTH": "Birth",
    "VISIT//CLINIC": "Clinic visit",
    "LAB//7777-7//mg/dL": "Widget level [Mass/volume] in Serum",
    "PROC//ALPHA": "Alpha procedure",
    "PROC//BETA": "Beta procedure",
    "EVENT//CARDIAC_ARREST": "Cardiac arrest",
    "EVENT//RECOVERY": "Uneventful recovery",
}


def index_time(subject: int) -> datetime:
    return T0 + timedelta(days=subject % 7, hours=20)


def events() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(1, N_PATIENTS + 1):
        start = T0 + timedelta(days=s % 7)
        rows += [(s, None, "GENDER//F" if s % 3 else "GENDER//M", None),
                 (s, start - timedelta(days=365 * (40 + s % 30)), "MEDS_BIRTH", None)]
        for visit in range(2):
            at = start + timedelta(hours=8 * visit)
            rows += [(s, at, "VISIT//CLINIC", None),
                     (s, at + timedelta(minutes=30), "LAB//7777-7//mg/dL",
                      float(rng.normal(1.0, 0.3)))]
        alpha = s % 2 == 0
        rows += [(s, index_time(s), "PROC//ALPHA" if alpha else "PROC//BETA", None),
                 (s, index_time(s) + timedelta(hours=1),
                  "EVENT//CARDIAC_ARREST" if alpha else "EVENT//RECOVERY", None),
                 # a follow-up two months later, so the model learns that the day after
                 # the procedure holds nothing more
                 (s, index_time(s) + timedelta(days=60), "VISIT//CLINIC", None)]
    return pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"),
                                      "code": pl.String, "numeric_value": pl.Float32},
                        orient="row")


@dataclass
class World:
    dataset: MEDSDataset
    model: EHRModel
    vocab: Vocabulary
    checkpoint: Path


def build_world(root: Path, steps: int = 200) -> World:
    frame = events()
    with MEDSWriter(root / "meds", dataset_name="planted", etl_name="tests") as writer:
        writer.add_events(frame)
        writer.add_codes(list(DESCRIPTIONS), list(DESCRIPTIONS.values()))
    dataset = MEDSDataset.open(root / "meds")
    counts = frame.group_by("code").agg(pl.col("subject_id").n_unique())
    lab = frame.filter(pl.col("code") == "LAB//7777-7//mg/dL")["numeric_value"].to_numpy()
    vocab = Vocabulary.build(dict(counts.iter_rows()), min_count=1,
                             bin_edges={"LAB//7777-7//mg/dL": quantile_edges(lab)})
    mapping = CodeMapping.from_config(None, dataset.codes())
    cache = load_or_build(dataset, vocab, mapping, root / "cache")
    config = ModelConfig(vocab_size=len(vocab), d_model=32, n_layers=2, n_heads=4, max_len=24,
                         dropout=0.0, note_dim=0, image_dim=0, pro_dim=0)
    # seed 1: at 200 steps, start 0 had not yet tied the procedure to its outcome
    # (starts 1-3 had, and start 0 did by 400 steps)
    torch.manual_seed(1)
    model = EHRModel(config)
    train(model, PatientWindows(cache, vocab, config.max_len), steps=steps, batch_size=32,
          lr=1e-2, dp=None, seed=0)
    model.eval()
    key = generate_signing_key(root / "signer.key")
    save(root / "ckpt", model, vocab, ModelCard(architecture=config.to_dict()), key)
    return World(dataset, model, vocab, root / "ckpt")


_WORLD: World | None = None


def world(tmp_path_factory) -> World:
    """One trained world per test session (training takes a few seconds)."""
    global _WORLD
    if _WORLD is None:
        _WORLD = build_world(tmp_path_factory.mktemp("planted"))
    return _WORLD


def labels(subjects: list[int]) -> pl.DataFrame:
    """Prediction at each subject's procedure (the history includes it)."""
    return pl.DataFrame({"subject_id": subjects,
                         "prediction_time": [index_time(s) for s in subjects]},
                        schema={"subject_id": pl.Int64, "prediction_time": pl.Datetime("us")})
