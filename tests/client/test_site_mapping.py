"""The site's code mapping: its harmonisation file on top of codes.parquet's parents."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest
import yaml

from fedehr.client.config import SiteConfig
from fedehr.client.site_data import site_mapping
from fedehr.shared.data import schema as S
from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.writer import MEDSWriter
from fedehr.shared.errors import ConfigError

LOCAL_CREATININE = "LAB//CREAT_S//umol/L"
HARMONISATION = {  # as the synthetic hospitals write it: only code_map is read
    "site": "hospital_c",
    "code_map": {LOCAL_CREATININE: "LOINC/2160-0", "LAB//GLU_S//mmol/L": "LOINC/2345-7"},
    "unit_conversions": {LOCAL_CREATININE: {"from_unit": "umol/L", "to_unit": "mg/dL",
                                            "multiply_by": 0.01131}},
}


@pytest.fixture
def dataset(tmp_path) -> MEDSDataset:
    root = tmp_path / "hospital_c"
    events = pl.DataFrame({
        S.SUBJECT_ID: [1, 1, 2],
        S.TIME: [datetime(2020, 1, 1, 8), datetime(2020, 1, 2, 8), datetime(2021, 3, 4, 9)],
        S.CODE: [LOCAL_CREATININE, "DIAGNOSIS//ICD//10//N179", LOCAL_CREATININE],
        S.NUMERIC_VALUE: [176.84, None, 88.42],
    })
    with MEDSWriter(root, dataset_name="hospital_c", etl_name="test") as writer:
        writer.add_events(events)
    return MEDSDataset.open(root)


def site(tmp_path, harmonisation) -> SiteConfig:
    return SiteConfig(name="hospital_c", data=tmp_path / "hospital_c",
                      state_dir=tmp_path / "state", harmonisation=harmonisation, insecure=True)


def test_harmonisation_file_maps_local_lab_to_loinc_in_mg_per_dl(tmp_path, dataset):
    path = tmp_path / "hospital_c.harmonisation.yaml"
    path.write_text(yaml.safe_dump(HARMONISATION))

    mapping = site_mapping(site(tmp_path, path), dataset)
    mapped = mapping.apply(dataset.scan().collect()).filter(
        pl.col(S.CODE).str.starts_with("LOINC/"))

    assert mapped[S.CODE].unique().to_list() == ["LOINC/2160-0//mg/dL"]
    assert sorted(mapped[S.NUMERIC_VALUE].to_list()) == pytest.approx([1.0, 2.0], rel=1e-5)


def test_missing_harmonisation_file_is_a_config_error_naming_it(tmp_path, dataset):
    with pytest.raises(ConfigError, match="no-such-map.yaml"):
        site_mapping(site(tmp_path, tmp_path / "no-such-map.yaml"), dataset)
