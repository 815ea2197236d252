"""Outcomes depend on the record: the prediction tasks are learnable."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

SEPSIS = r"^DIAGNOSIS//ICD//10//A41"


def _per_subject(df: pl.DataFrame) -> pl.DataFrame:
    """A few per-patient features and the label 'died in hospital'."""
    code = pl.col("code")
    birth = df.filter(code == "MEDS_BIRTH").select("subject_id", pl.col("time").alias("birth"))
    first = (df.filter(code.str.starts_with("HOSPITAL_ADMISSION//"))
             .group_by("subject_id").agg(pl.col("time").min().alias("admit"),
                                         pl.len().alias("stays")))
    feats = df.group_by("subject_id").agg(
        code.str.contains(SEPSIS).any().alias("sepsis"),
        code.str.contains(r"//(I50\d*)$").any().alias("hf"),
        code.str.contains(r"//(N18\d*)$").any().alias("ckd"),
        pl.col("numeric_value").filter(code == "LAB//2524-7//mmol/L").max().alias("lactate"),
        pl.col("numeric_value").filter(code == "LAB//2160-0//mg/dL").max().alias("creatinine"),
        (code == "MEDS_DEATH").any().alias("died"),
    )
    return (feats.join(birth, on="subject_id").join(first, on="subject_id")
            .with_columns(((pl.col("admit") - pl.col("birth")).dt.total_days() / 365.25)
                          .alias("age"), pl.col("lactate").fill_null(1.0))
            .sort("subject_id"))


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    ranks = np.empty(len(score))
    ranks[np.argsort(score, kind="stable")] = np.arange(1, len(score) + 1)
    pos = label.sum()
    return float((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * (len(label) - pos)))


def _fit_logistic(x: np.ndarray, y: np.ndarray, steps: int = 2000) -> np.ndarray:
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-x @ w))
        w -= 0.5 * x.T @ (p - y) / len(y)
    return w


def test_death_is_more_common_with_sepsis_and_high_lactate(events):
    data = pl.concat([_per_subject(events[n]) for n in ("hospital_a", "hospital_b")])
    septic = data.filter(pl.col("sepsis") & (pl.col("lactate") >= 4.0))
    others = data.filter(~pl.col("sepsis"))
    assert septic.height >= 20
    assert septic["died"].mean() > 2 * others["died"].mean()


def test_logistic_regression_on_a_few_features_predicts_death_better_than_chance(events):
    data = pl.concat([_per_subject(events[n]) for n in ("hospital_a", "hospital_b")])
    cols = ["age", "sepsis", "hf", "ckd", "lactate", "creatinine", "stays"]
    x = data.select([pl.col(c).cast(pl.Float64) for c in cols]).to_numpy()
    x[:, cols.index("creatinine")] = np.log(x[:, cols.index("creatinine")])
    x = (x - x.mean(0)) / x.std(0)
    x = np.hstack([np.ones((len(x), 1)), x])
    y = data["died"].to_numpy()
    rng = np.random.default_rng(0)
    test = rng.random(len(y)) < 0.3
    w = _fit_logistic(x[~test], y[~test].astype(float))
    assert _auc(x[test] @ w, y[test]) > 0.7


def _stays(df: pl.DataFrame) -> pl.DataFrame:
    code = pl.col("code")
    adm = df.filter(code.str.starts_with("HOSPITAL_ADMISSION//")).select(
        "subject_id", pl.col("time").alias("admit")).sort("subject_id", "admit")
    dis = df.filter(code.str.starts_with("HOSPITAL_DISCHARGE//")).select(
        "subject_id", pl.col("time").alias("discharge"), code.alias("disposition")
    ).sort("subject_id", "discharge")
    icu = df.filter(code.str.starts_with("ICU_ADMISSION//")).select(
        "subject_id", pl.col("time").alias("icu"))
    stays = adm.hstack(dis.drop("subject_id")).with_columns(
        pl.col("admit").shift(-1).over("subject_id").alias("next_admit"))
    in_icu = (stays.join(icu, on="subject_id")
              .filter(pl.col("icu").is_between(pl.col("admit"), pl.col("discharge")))
              .select("subject_id", "admit", pl.lit(True).alias("icu")).unique())
    return stays.join(in_icu, on=["subject_id", "admit"], how="left").with_columns(
        pl.col("icu").fill_null(False))


def test_summary_outcome_rates_match_the_written_record(hospitals, events):
    _, summaries = hospitals
    for s in summaries:
        stays = _stays(events[s.name])
        died = stays["disposition"] == "HOSPITAL_DISCHARGE//DIED"
        los = (stays["discharge"] - stays["admit"]).dt.total_seconds() / 86_400
        gap = (stays["next_admit"] - stays["discharge"]).dt.total_seconds() / 86_400
        readmit = (gap <= 30).fill_null(False)
        assert stays.height == s.stays
        assert died.mean() == pytest.approx(s.death_rate)
        assert (los > 7).mean() == pytest.approx(s.long_stay_rate)
        assert stays["icu"].mean() == pytest.approx(s.icu_transfer_rate)
        assert readmit.filter(~died).mean() == pytest.approx(s.readmission_30d_rate)
