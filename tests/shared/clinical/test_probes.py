"""Probes learn a planted signal; histories stop at the prediction time; counts count."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
import torch

from fedehr.shared.clinical.baseline import CountFeatures
from fedehr.shared.clinical.history import history_events, history_windows
from fedehr.shared.clinical.metrics import auroc
from fedehr.shared.clinical.probes import embed, probe_predictions, stratified_sample
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.writer import MEDSWriter
from fedehr.shared.model import EHRModel, ModelConfig
from fedehr.shared.tokenizer.batch import PAD_ID
from fedehr.shared.tokenizer.vocabulary import BOS, Vocabulary

T0 = datetime(2022, 5, 1, 8, 0)


def planted_embeddings(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """32-d noise; the outcome depends on two directions only (prevalence ~ 20 %)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 32)).astype(np.float32)
    logit = 2.5 * x[:, 3] - 2.0 * x[:, 17] - 2.0
    y = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    return x, y


def test_probe_learns_a_planted_signal_and_improves_with_k():
    x_tr, y_tr = planted_embeddings(1500, 0)
    x_te, y_te = planted_embeddings(1000, 1)
    by_k = {}
    for k in (16, 64, 256, "all"):
        runs = probe_predictions(x_tr, y_tr, x_te, k, seeds=3)
        assert len(runs) == (1 if k == "all" else 3)
        by_k[k] = np.mean([auroc(y_te, p) for p in runs])
    assert by_k["all"] > 0.85
    assert by_k[256] > 0.8
    assert by_k[16] > 0.6  # 16 examples still beat chance on a strong signal
    assert by_k[16] < by_k["all"]


def test_a_probe_on_noise_is_near_chance():
    x_tr, _ = planted_embeddings(800, 2)
    x_te, _ = planted_embeddings(800, 3)
    rng = np.random.default_rng(4)
    y_tr, y_te = rng.uniform(size=800) < 0.3, rng.uniform(size=800) < 0.3
    (p,) = probe_predictions(x_tr, y_tr, x_te, "all")
    assert abs(auroc(y_te, p) - 0.5) < 0.08


def test_stratified_sample_keeps_prevalence_and_both_classes():
    y = np.zeros(1000, dtype=bool)
    y[:50] = True
    idx = stratified_sample(y, 16, seed=0)
    assert len(idx) == 16 and len(set(idx.tolist())) == 16
    assert y[idx].sum() == 1  # round(16 * 0.05) = 1
    assert y[stratified_sample(y, 256, seed=1)].sum() == 13
    assert not np.array_equal(stratified_sample(y, 64, 0), stratified_sample(y, 64, 1))
    assert stratified_sample(np.zeros(10, dtype=bool), 4, 0) is None


@pytest.fixture
def two_stays(tmp_path) -> MEDSDataset:
    """Patient 1: a stay with a diagnosis and two labs, then a second stay 40 days later."""
    rows = [(1, None, "GENDER//F", None), (1, T0 - timedelta(days=365 * 70), "MEDS_BIRTH", None),
            (1, T0, "HOSPITAL_ADMISSION//EMERGENCY", None),
            (1, T0 + timedelta(hours=2), "LAB//A", 1.0),
            (1, T0 + timedelta(hours=30), "LAB//A", 2.0),
            (1, T0 + timedelta(days=3), "DIAGNOSIS//X", None),
            (1, T0 + timedelta(days=3), "HOSPITAL_DISCHARGE//HOME", None),
            (1, T0 + timedelta(days=40), "HOSPITAL_ADMISSION//EMERGENCY", None),
            (1, T0 + timedelta(days=40, hours=1), "LAB//B", 5.0),
            (2, None, "GENDER//M", None), (2, T0 - timedelta(days=365 * 50), "MEDS_BIRTH", None),
            (2, T0, "HOSPITAL_ADMISSION//ELECTIVE", None)]
    frame = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"),
                                       "code": pl.String, "numeric_value": pl.Float32},
                         orient="row")
    with MEDSWriter(tmp_path / "meds", dataset_name="t", etl_name="tests") as writer:
        writer.add_events(frame)
    return MEDSDataset.open(tmp_path / "meds")


QUERIES = pl.DataFrame({"subject_id": [1, 1, 2],
                        "prediction_time": [T0 + timedelta(days=1), T0 + timedelta(days=40),
                                            T0]}).with_columns(
    pl.col("prediction_time").cast(pl.Datetime("us")))


def test_history_stops_at_the_prediction_time(two_stays):
    events = history_events(two_stays, QUERIES)
    codes = {row: events.filter(pl.col("subject_id") == row)["code"].to_list() for row in (0, 1, 2)}
    assert "DIAGNOSIS//X" not in codes[0] and codes[0].count("LAB//A") == 1
    assert "DIAGNOSIS//X" in codes[1] and "LAB//B" not in codes[1]  # LAB//B is 1 h later
    assert codes[2] == ["GENDER//M", "MEDS_BIRTH", "HOSPITAL_ADMISSION//ELECTIVE"]


def test_count_features_count_each_history(two_stays):
    events = history_events(two_stays, QUERIES)
    features = CountFeatures.fit(events, np.array([0, 1]))
    x = features.transform(events, 3)
    col = features.codes.index("LAB//A")
    assert x[:, col].tolist() == pytest.approx(np.log1p([1, 2, 0]).tolist())
    assert "LAB//B" not in features.codes  # never seen before a prediction time


def test_history_windows_keep_the_latest_tokens_and_embed(two_stays):
    codes = ["GENDER//F", "GENDER//M", "HOSPITAL_ADMISSION//EMERGENCY",
             "HOSPITAL_ADMISSION//ELECTIVE", "LAB//A", "LAB//B", "DIAGNOSIS//X",
             "HOSPITAL_DISCHARGE//HOME"]
    vocab = Vocabulary.build({c: 5 for c in codes}, min_count=1)
    windows = history_windows(two_stays, QUERIES, vocab, max_len=8)
    tokens = windows[1][0].tolist()
    assert tokens[0] == vocab.id(BOS) and PAD_ID not in tokens
    assert tokens[-1] == vocab.id("HOSPITAL_ADMISSION//EMERGENCY")  # the latest event last
    assert vocab.id("LAB//B") not in tokens
    model = EHRModel(ModelConfig.tiny(len(vocab), max_len=8, note_dim=0, image_dim=0))
    torch.manual_seed(0)
    x = embed(model, windows, batch_size=2)  # the last position, then the mean
    assert x.shape == (3, 2 * model.config.d_model) and np.isfinite(x).all()
    np.testing.assert_array_equal(embed(model, windows, batch_size=2, pooling="last"),
                                  x[:, :model.config.d_model])


class FakeNoteEncoder:
    """Stands in for MiniLM: a note's vector is its length, in every dimension."""

    dim = 4

    def encode(self, texts):
        return torch.tensor([[float(len(t))] * self.dim for t in texts])


def test_history_notes_get_encoder_vectors_at_their_markers(tmp_path):
    rows = [(7, None, "GENDER//F", None), (7, T0, "HOSPITAL_ADMISSION//EMERGENCY", None),
            (7, T0 + timedelta(days=2), "NOTE//DISCHARGE_SUMMARY", "seven chars"),
            (7, T0 + timedelta(days=9), "NOTE//DISCHARGE_SUMMARY", "later")]
    frame = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"),
                                       "code": pl.String, "text_value": pl.String},
                         orient="row")
    with MEDSWriter(tmp_path / "notes", dataset_name="t", etl_name="tests") as writer:
        writer.add_events(frame)
    codes = ["GENDER//F", "HOSPITAL_ADMISSION//EMERGENCY", "NOTE//DISCHARGE_SUMMARY"]
    vocab = Vocabulary.build({c: 5 for c in codes}, min_count=1)
    query = pl.DataFrame({"subject_id": [7], "prediction_time": [T0 + timedelta(days=3)]})
    windows = history_windows(MEDSDataset.open(tmp_path / "notes"), query, vocab, max_len=16,
                              note_dim=4, note_encoder=FakeNoteEncoder())
    tokens, _, note_emb, *_ = windows[0]
    marked = torch.nonzero(note_emb.abs().sum(1)).flatten().tolist()
    assert len(marked) == 1  # only the note before the prediction time
    assert note_emb[marked[0]].tolist() == [11.0] * 4
    assert tokens[marked[0]] == vocab.id("[NOTE]")


def test_a_history_does_not_depend_on_the_other_histories_built_with_it(two_stays):
    together = history_events(two_stays, QUERIES)
    alone = history_events(two_stays, QUERIES[1:2])
    codes = together.filter(pl.col("subject_id") == 1)["code"].to_list()
    assert codes == alone["code"].to_list()
    # events that share a time keep the dataset's order (the diagnosis, then the discharge)
    assert codes.index("DIAGNOSIS//X") + 1 == codes.index("HOSPITAL_DISCHARGE//HOME")
