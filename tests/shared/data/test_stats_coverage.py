"""`fedehr data stats` measures how much of a dataset a vocabulary covers (issue 19)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from fedehr.shared.data import schema as S
from fedehr.shared.data.cli import app
from fedehr.shared.data.stats import render_coverage, vocabulary_coverage
from fedehr.shared.data.writer import MEDSWriter
from fedehr.shared.tokenizer.vocabulary import Vocabulary

T0 = datetime(2020, 1, 1)
SCHEMA = {S.SUBJECT_ID: pl.Int64, S.TIME: pl.Datetime("us"), S.CODE: pl.String,
          S.NUMERIC_VALUE: pl.Float32, S.TEXT_VALUE: pl.String}
# code -> events: creatinine maps to LOINC through codes.parquet, the smear has no parent,
# the diagnosis maps by its ICD pattern.
PLANTED = {"LAB//50912//mg/dL": 6, "LAB//51266//UNK": 2, "DIAGNOSIS//ICD//10//E119": 2}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coverage") / "meds"
    rows = [(1 + i % 2, T0 + timedelta(hours=i), code, None, None)
            for code, n in PLANTED.items() for i in range(n)]
    rows.append((1, T0, S.BIRTH_CODE, None, None))  # left out: it becomes the age token
    with MEDSWriter(root, dataset_name="tiny", etl_name="test", seed=1) as writer:
        writer.add_events(pl.DataFrame(rows, schema=SCHEMA, orient="row"))
        writer.add_codes(["LAB//50912//mg/dL", "LAB//51266//UNK"],
                         ["Creatinine (Blood, Chemistry)", "Platelet Smear"],
                         [["LOINC/2160-0"], None])
    return root


@pytest.fixture(scope="module")
def vocabulary(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vocab") / "vocabulary.json"
    Vocabulary.build({"LOINC/2160-0//mg/dL": 50, "ICD10CM/E11.9": 50}, min_count=5).to_json(path)
    return path


def test_coverage_counts_events_and_lab_events_inside_the_vocabulary(dataset, vocabulary):
    cov = vocabulary_coverage(dataset, Vocabulary.from_json(vocabulary), "given")
    assert (cov.events, cov.covered) == (10, 8)
    assert (cov.lab_events, cov.lab_covered) == (8, 6)


def test_uncovered_codes_are_named_in_clinical_words(dataset, vocabulary):
    cov = vocabulary_coverage(dataset, Vocabulary.from_json(vocabulary), "given")
    assert cov.top_uncovered == [("LAB//51266//UNK", "Platelet Smear", 2)]


def test_a_share_below_80_percent_warns_and_80_percent_does_not(dataset, vocabulary):
    cov = vocabulary_coverage(dataset, Vocabulary.from_json(vocabulary), "given")
    assert cov.share == pytest.approx(0.8) and cov.lab_share == pytest.approx(0.75)
    assert len(cov.warnings) == 1 and "lab events" in cov.warnings[0]
    console = Console(width=200, record=True)
    console.print(render_coverage(cov))
    assert "warning: only 75.0% of lab events" in console.export_text()


def test_stats_command_prints_coverage_against_a_given_vocabulary(dataset, vocabulary, tmp_path):
    result = CliRunner().invoke(app, ["stats", str(dataset), "--vocabulary", str(vocabulary),
                                      "--plot", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert "Vocabulary coverage" in result.output and "80.0%" in result.output
