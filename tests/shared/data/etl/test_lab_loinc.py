"""MIMIC-IV lab items get LOINC parents when d_labitems has no loinc_code (issue 19, section 0)."""

from __future__ import annotations

import polars as pl

from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.etl.lab_loinc import TABLE_PATH, labitem_loinc, table_from_codes
from fedehr.shared.data.etl.mimic_iv import convert
from tests.fixtures.mimic_iv_fixture import DEMO_22_SHAPE, write_mimic_iv_fixture


def _parents(dest) -> dict[str, list[str] | None]:
    codes = MEDSDataset.open(dest).codes()
    return dict(codes.select("code", "parent_codes").iter_rows())


def test_the_shipped_table_maps_the_common_chemistry_items():
    table = labitem_loinc()
    assert TABLE_PATH.is_file() and len(table) > 400
    # creatinine, potassium, sodium, glucose: the labs issue 19 found as [UNK]
    assert {k: table[k] for k in (50912, 50971, 50983, 50931)} == {
        50912: "2160-0", 50971: "2823-3", 50983: "2951-2", 50931: "2345-7"}


def test_demo_22_shape_without_loinc_code_gets_lab_parents(tmp_path):
    fixture = write_mimic_iv_fixture(tmp_path / "src", drop_columns=DEMO_22_SHAPE)
    header = (fixture.root / "hosp" / "d_labitems.csv").read_text().splitlines()[0]
    assert "loinc_code" not in header
    convert(fixture.root, tmp_path / "meds")
    parents = _parents(tmp_path / "meds")
    assert parents["LAB//50912//mg/dL"] == ["LOINC/2160-0"]
    assert parents["LAB//50931//mg/dL"] == ["LOINC/2345-7"]


def test_the_exports_own_loinc_code_wins_over_the_shipped_table(tmp_path):
    fixture = write_mimic_iv_fixture(tmp_path / "src")
    path = fixture.root / "hosp" / "d_labitems.csv"
    path.write_text(path.read_text().replace("2160-0", "38483-4"))
    convert(fixture.root, tmp_path / "meds")
    assert _parents(tmp_path / "meds")["LAB//50912//mg/dL"] == ["LOINC/38483-4"]


def test_table_is_derived_from_lab_parent_codes_one_row_per_itemid():
    codes = pl.DataFrame({
        "code": ["LAB//1//mg/dL", "LAB//1//umol/L", "LAB//1//g", "LAB//2//UNK", "LAB//3//%",
                 "DIAGNOSIS//ICD//10//I10"],
        "description": ["Creatinine", "Creatinine", "Creatinine", "Smear", None, "Hypertension"],
        "parent_codes": [["LOINC/2160-0"], ["LOINC/2160-0"], ["LOINC/38483-4"], [None],
                         ["SNOMEDCT/1", "LOINC/26510-8"], ["ICD10CM/I10"]],
    })
    table = table_from_codes(codes)
    assert table.rows() == [(1, "2160-0", "Creatinine"), (3, "26510-8", None)]
