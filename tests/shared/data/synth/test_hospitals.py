"""Site layout: sizes, ids, determinism, local codes and units, overwrite, progress."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from rich.progress import Progress

from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.synth import site_profiles, synthesize
from fedehr.shared.data.synth.hospitals import allocate
from fedehr.shared.errors import ConfigError, DataError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "dataset.json"}


def _dataset_json(root: Path) -> list[dict]:
    import json

    metas = [json.loads(p.read_text()) for p in sorted(root.rglob("dataset.json"))]
    for meta in metas:
        meta.pop("created_at")
    return metas


def test_same_seed_gives_identical_bytes_except_created_at(tmp_path):
    synthesize(tmp_path / "one", patients=60, seed=3)
    synthesize(tmp_path / "two", patients=60, seed=3)
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    assert _dataset_json(tmp_path / "one") == _dataset_json(tmp_path / "two")


def test_different_seed_gives_different_data(tmp_path):
    synthesize(tmp_path / "one", patients=60, seed=3)
    synthesize(tmp_path / "two", patients=60, seed=4)
    assert _files(tmp_path / "one") != _files(tmp_path / "two")


def test_three_sites_have_sizes_three_two_one(hospitals):
    _, summaries = hospitals
    assert [s.name for s in summaries] == ["hospital_a", "hospital_b", "hospital_c"]
    sizes = [MEDSDataset.open(s.path).subject_splits().height for s in summaries]
    assert sizes == [s.subjects for s in summaries]
    assert sizes[0] / sizes[2] == pytest.approx(3.0, rel=0.02)
    assert sizes[1] / sizes[2] == pytest.approx(2.0, rel=0.02)


def test_n_sites_get_shares_n_to_one():
    profiles = site_profiles(4)
    assert [p.size_share for p in profiles] == pytest.approx([0.4, 0.3, 0.2, 0.1])
    assert allocate(1000, [p.size_share for p in profiles]) == [400, 300, 200, 100]
    assert sum(allocate(7, [p.size_share for p in profiles])) == 7


def test_only_the_smallest_site_uses_local_codes():
    assert [p.local_codes for p in site_profiles(3)] == [False, False, True]
    assert [p.local_codes for p in site_profiles(5)] == [False] * 4 + [True]


def test_subject_ids_are_unique_across_sites(events):
    ids = [set(df["subject_id"].unique().to_list()) for df in events.values()]
    assert sum(len(s) for s in ids) == len(set().union(*ids))


def test_local_lab_codes_only_at_hospital_c(events):
    labs = {name: set(df.filter(pl.col("code").str.starts_with("LAB//"))["code"].unique())
            for name, df in events.items()}
    loinc_like = {name: {c for c in s if c.split("//")[1][0].isdigit()} for name, s in labs.items()}
    assert loinc_like["hospital_a"] == labs["hospital_a"]
    assert loinc_like["hospital_b"] == labs["hospital_b"]
    assert loinc_like["hospital_c"] == set()
    assert labs["hospital_c"].isdisjoint(labs["hospital_a"])


def test_local_site_codes_parquet_has_no_loinc_parents(hospitals):
    _, summaries = hospitals
    for s in summaries:
        codes = MEDSDataset.open(s.path).codes().filter(pl.col("code").str.starts_with("LAB//"))
        has_parent = codes["parent_codes"].is_not_null()
        assert codes["description"].is_not_null().all()
        assert (not has_parent.any()) if s.local_codes else has_parent.all()


def test_harmonisation_file_maps_each_local_lab_code_to_a_loinc_parent_of_other_sites(hospitals):
    out, summaries = hospitals
    local = [s for s in summaries if s.local_codes]
    assert [s.name for s in local] == ["hospital_c"]
    assert local[0].harmonisation == out / "hospital_c.harmonisation.yaml"
    assert not (local[0].path / "hospital_c.harmonisation.yaml").exists()
    mapping = yaml.safe_load(local[0].harmonisation.read_text())["code_map"]
    used = set(MEDSDataset.open(local[0].path).codes()
               .filter(pl.col("code").str.starts_with("LAB//"))["code"])
    assert used <= set(mapping)
    parents_a = {p for ps in MEDSDataset.open(summaries[0].path).codes()["parent_codes"]
                 if ps is not None for p in ps}
    assert {mapping[c] for c in used} <= parents_a


def _median(df: pl.DataFrame, code: str) -> float:
    return float(df.filter(pl.col("code") == code)["numeric_value"].median())


def test_local_site_reports_creatinine_and_glucose_in_si_units_converted_consistently(
        hospitals, events):
    out, _ = hospitals
    conv = yaml.safe_load((out / "hospital_c.harmonisation.yaml").read_text())["unit_conversions"]
    for local, standard in (("LAB//CREAT_S//umol/L", "LAB//2160-0//mg/dL"),
                            ("LAB//GLU_S//mmol/L", "LAB//2345-7//mg/dL")):
        assert conv[local]["to_code"] == standard
        raw_c = _median(events["hospital_c"], local)
        ref = _median(events["hospital_a"], standard)
        converted = raw_c * conv[local]["multiply_by"]
        assert abs(np.log(raw_c / ref)) > np.log(2.5)  # the units really differ
        assert converted == pytest.approx(ref, rel=0.25)  # and convert to the same scale


def test_existing_output_is_refused_without_overwrite(tmp_path):
    synthesize(tmp_path, sites=2, patients=20)
    with pytest.raises(DataError, match="already exists"):
        synthesize(tmp_path, sites=2, patients=20)
    again = synthesize(tmp_path, sites=2, patients=20, seed=1, overwrite=True)
    assert [s.subjects for s in again] == [13, 7]


def test_bad_arguments_are_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        synthesize(tmp_path, sites=0)
    with pytest.raises(ConfigError):
        synthesize(tmp_path, sites=3, patients=2)


def test_progress_advances_once_per_site(tmp_path):
    with Progress(disable=True) as progress:
        synthesize(tmp_path, sites=2, patients=20, progress=progress)
        (task,) = progress.tasks
        assert task.completed == task.total == 2


def test_summary_rates_are_plausible_probabilities(hospitals):
    _, summaries = hospitals
    for s in summaries:
        for rate in (s.death_rate, s.readmission_30d_rate, s.long_stay_rate,
                     s.icu_transfer_rate):
            assert 0.01 < rate < 0.5
        assert s.events > s.subjects * 10
