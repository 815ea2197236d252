"""A FHIR letter's LOINC document type must not turn its note into a plain code."""

from __future__ import annotations

import polars as pl

from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.etl import fhir
from fedehr.shared.tokenizer.mapping import CodeMapping
from tests.fixtures.fhir_fixture import write_mii_hospital


def test_german_letters_keep_their_note_code_through_the_mapping(tmp_path):
    export = write_mii_hospital(tmp_path / "export", patients=3, seed=1)
    fhir.convert(export, tmp_path / "meds")
    dataset = MEDSDataset(tmp_path / "meds")
    codes = dataset.codes()
    note_parents = codes.filter(pl.col(S.CODE) == "NOTE//DISCHARGE_SUMMARY")["parent_codes"]
    assert note_parents.to_list() == [["LOINC/18842-5"]]  # the parent that renamed notes
    mapping = CodeMapping.from_config(None, codes)
    assert mapping.map_code("NOTE//DISCHARGE_SUMMARY").code == "NOTE//DISCHARGE_SUMMARY"
    assert mapping.map_code("ICD10GM/I50.01").code != "NOTE//DISCHARGE_SUMMARY"
    events = pl.concat([pl.read_parquet(f) for f in sorted((tmp_path / "meds" / "data")
                                                           .rglob("*.parquet"))])
    mapped = mapping.apply(events.select(S.SUBJECT_ID, S.TIME, S.CODE, S.NUMERIC_VALUE,
                                         S.TEXT_VALUE))
    letters = mapped.filter(pl.col(S.CODE).str.starts_with("NOTE//"))[S.TEXT_VALUE]
    assert len(letters) > 0 and all("brief" in t or "bericht" in t for t in letters)
