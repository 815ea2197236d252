"""A MIMIC-IV export in the demo 2.2 shape gets the codes the public anchor's vocabulary holds
(issue 19, section 0): chart events, prescriptions and procedure events coded as the community
MIMIC_IV_MEDS conversion codes them, infusions with the anchor's RxNorm parents. Before, chart
events (79% of the real demo's events) were `CHARTEVENT//...` and fell outside as [UNK]."""

from __future__ import annotations

import csv

import polars as pl
import pytest

from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.etl.lab_loinc import (
    RXNORM_COLUMNS,
    RXNORM_TABLE_PATH,
    inputitem_rxnorm,
    table_from_codes,
)
from fedehr.shared.data.etl.mimic_iv import convert
from tests.fixtures.mimic_iv_fixture import DEMO_22_SHAPE, S1, write_mimic_iv_fixture

NOREPINEPHRINE = 221906  # an infusion item the anchor maps to RxNorm


@pytest.fixture(scope="module")
def demo_shape(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo22")
    fixture = write_mimic_iv_fixture(root / "src", drop_columns=DEMO_22_SHAPE)
    path = fixture.root / "icu" / "inputevents.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    extra = dict(rows[0], itemid=str(NOREPINEPHRINE), rate="0.08", rateuom="mcg/kg/min")
    with path.open("a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n").writerow(extra)
    convert(fixture.root, root / "meds")
    ds = MEDSDataset.open(root / "meds")
    return ds.scan().collect(), dict(ds.codes().select("code", "parent_codes").iter_rows())


def _subject_codes(events: pl.DataFrame) -> set[str]:
    return set(events.filter(pl.col("subject_id") == S1)["code"].to_list())


def test_chart_events_are_coded_lab_itemid_unit_as_the_anchor_codes_them(demo_shape):
    codes = _subject_codes(demo_shape[0])
    assert "LAB//220045//bpm" in codes
    assert not any(c.startswith("CHARTEVENT//") for c in codes)


def test_prescriptions_and_procedure_events_use_the_anchors_start_codes(demo_shape):
    codes = _subject_codes(demo_shape[0])
    assert {"MEDICATION//START//Furosemide", "PROCEDURE//START//225459"} <= codes
    assert "MEDICATION//Furosemide" not in codes and "PROCEDURE_START//225459" not in codes


def test_infusions_get_the_anchors_rxnorm_parent(demo_shape):
    _, parents = demo_shape
    expected = [f"RxNorm/{inputitem_rxnorm()[NOREPINEPHRINE]}"]
    assert parents[f"INFUSION_START//{NOREPINEPHRINE}"] == expected
    assert parents[f"INFUSION_END//{NOREPINEPHRINE}"] == expected


def test_the_shipped_rxnorm_table_is_derived_from_infusion_parent_codes():
    codes = pl.DataFrame({
        "code": ["INFUSION_START//7", "INFUSION_END//7", "INFUSION_START//8", "LAB//7//mg"],
        "description": ["heparin Injection", "heparin Injection", None, "x"],
        "parent_codes": [["RxNorm/1857598"], ["RxNorm/1857598"], [None], ["LOINC/1-1"]],
    })
    table = table_from_codes(codes, "INFUSION_START//", "RxNorm/", RXNORM_COLUMNS)
    assert table.rows() == [(7, "1857598", "heparin Injection")]
    assert RXNORM_TABLE_PATH.is_file() and len(inputitem_rxnorm()) > 100
