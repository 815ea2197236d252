"""The OMOP CDM 5.4 import: concepts become the prefixed codes of the other ETLs."""

from __future__ import annotations

import polars as pl
import pytest

from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.etl import omop
from fedehr.shared.data.etl.summary import DUPLICATE_EVENTS
from fedehr.shared.data.validate import validate
from fedehr.shared.errors import DataError
from tests.fixtures.omop_fixture import DIRTY, write_omop_fixture


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("omop")
    summary = omop.convert(write_omop_fixture(root / "src"), root / "meds", chunk_rows=2)
    return summary, root / "meds"


def _events(dest) -> pl.DataFrame:
    return MEDSDataset.open(dest).scan().collect()


def test_every_planted_drop_is_counted(converted):
    summary, _ = converted
    assert {k: v for k, v in summary.rows_dropped.items() if k != DUPLICATE_EVENTS} == DIRTY


def test_concepts_become_their_vocabulary_codes_and_unmapped_ones_their_source_value(converted):
    _, dest = converted
    codes = set(_events(dest)[S.CODE])
    assert {"SNOMEDCT/44054006", "RxNorm/315971", "MEDICATION_END//RxNorm/315971",
            "SNOMEDCT/40701008", "CONDITION_OCCURRENCE//I50.01", "OMOP/999999"} <= codes
    assert {"ENCOUNTER//inpatient", "HOSPITAL_ADMISSION//inpatient", "MEDS_DEATH"} <= codes


def test_measurements_keep_value_and_unit_with_the_loinc_parent(converted):
    _, dest = converted
    krea = _events(dest).filter(pl.col(S.CODE) == "LOINC/2160-0//mg/dL")
    assert krea[S.NUMERIC_VALUE].to_list() == pytest.approx([1.3])
    meta = {r["code"]: r for r in MEDSDataset.open(dest).codes().iter_rows(named=True)}
    assert meta["LOINC/2160-0//mg/dL"]["parent_codes"] == ["LOINC/2160-0"]
    assert meta["LOINC/2160-0"]["description"].startswith("Creatinine")


def test_notes_carry_their_text_under_a_note_code(converted):
    _, dest = converted
    notes = _events(dest).filter(pl.col(S.CODE).str.starts_with("NOTE//"))
    assert notes[S.CODE].to_list() == ["NOTE//OMOP/32835"]
    assert notes[S.TEXT_VALUE].to_list() == ["Entlassung in gutem Allgemeinzustand."]


def test_the_import_is_valid_meds(converted):
    _, dest = converted
    assert [p for p in validate(dest) if p.severity == "error"] == []


def test_without_person_the_import_stops_and_writes_nothing(tmp_path):
    src = write_omop_fixture(tmp_path / "src")
    (src / "person.csv").unlink()
    with pytest.raises(DataError, match="person"):
        omop.convert(src, tmp_path / "meds")
    assert not (tmp_path / "meds").exists()
