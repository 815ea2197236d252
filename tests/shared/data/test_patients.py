"""`fedehr site patients` finds a patient id for `fedehr model ask` without reading parquet
by hand: by id, or by a cohort predicate on codes or their descriptions (issue 17, defect 7)."""

from __future__ import annotations

import polars as pl
import pytest
from typer.testing import CliRunner

from fedehr.shared.cli import build_app
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.patients import find_patients
from fedehr.shared.data.synth import synthesize
from fedehr.shared.errors import DataError


@pytest.fixture(scope="module")
def meds(tmp_path_factory):
    (summary,) = synthesize(tmp_path_factory.mktemp("meds"), sites=1, patients=40, seed=3)
    return summary.path


def test_a_description_predicate_finds_only_patients_with_such_an_event(meds):
    found = find_patients(meds, description="Creatinine", split="held_out", limit=100)
    codes = MEDSDataset.open(meds).codes()
    creatinine = codes.filter(pl.col("description").str.to_lowercase()
                              .str.contains("creatinine"))["code"].to_list()
    events = MEDSDataset.open(meds).scan().filter(pl.col("code").is_in(creatinine)).collect()
    expected = set(events["subject_id"]) & set(
        MEDSDataset.open(meds).subject_splits().filter(pl.col("split") == "held_out")
        ["subject_id"])
    assert found.height > 0 and set(found["subject_id"]) == expected
    assert (found["matches"] > 0).all()


def test_an_id_shows_that_patient_with_split_and_record_span(meds):
    first = find_patients(meds, limit=1)["subject_id"][0]
    (row,) = find_patients(meds, subject_id=first).iter_rows(named=True)
    assert row["subject_id"] == first and row["split"] in ("train", "tuning", "held_out")
    assert row["events"] > 0 and row["first"] <= row["last"]


def test_words_no_description_has_are_an_error_naming_codes_parquet(meds):
    with pytest.raises(DataError, match="no code description matches"):
        find_patients(meds, description="unobtainium")


def test_the_command_lists_patients_matching_a_code_pattern(meds):
    result = CliRunner().invoke(build_app(), ["site", "patients", "--data", str(meds),
                                              "--code", "^LAB//", "--limit", "3"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "3 patient(s) (at most 3)" in result.output and "matches" in result.output
