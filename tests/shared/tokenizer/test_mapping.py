"""Code mapping: site harmonisation, parent mapping to standard codes, units, coverage."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from fedehr.shared.errors import ConfigError
from fedehr.shared.tokenizer.encode import encode_events
from fedehr.shared.tokenizer.mapping import CodeMapping, coverage
from fedehr.shared.tokenizer.merge import vocabulary_from_public
from tests.shared.tokenizer.meds_builders import STANDARD_PARENTS, event_rows, write_meds


def _token_strings(vocab, encoded) -> set[str]:
    return {vocab.tokens[i] for i in np.unique(encoded.tokens)}


def test_harmonisation_pattern_changes_tokens():
    events = event_rows(5, creat_code="LAB//CREAT_S//umol/L", creat_scale=88.42)
    plain = CodeMapping()
    harmonised = CodeMapping.from_config({"code_map": {"LAB//CREAT_S//*": "LOINC/2160-0"}})
    assert plain.map_code("LAB//CREAT_S//umol/L").code == "LAB//CREAT_S//umol/L"
    assert harmonised.map_code("LAB//CREAT_S//umol/L").code == "LOINC/2160-0//mg/dL"
    mapped = harmonised.apply(events)
    assert "LAB//CREAT_S//umol/L" not in mapped["code"].to_list()


def test_exact_harmonisation_entry_wins_over_a_pattern():
    mapping = CodeMapping(site_map={"LAB//*": "LOINC/0000-0", "LAB//K_S//mmol/L": "LOINC/2823-3"})
    assert mapping.map_code("LAB//K_S//mmol/L").code == "LOINC/2823-3//mmol/L"


def test_bad_harmonisation_config_names_the_key_and_the_fix():
    with pytest.raises(ConfigError, match="code_map.*Fix"):
        CodeMapping.from_config({"code_map": {"LAB//X": 3}}, where="site.yaml")


def test_parent_mapping_gives_shared_tokens_between_two_differently_coded_datasets(tmp_path):
    anchor_like = event_rows(30, seed=1, creat_code="LAB//50912//mg/dL",
                             dx_code="DIAGNOSIS//ICD//10//I509")
    anchor = write_meds(tmp_path / "anchor", anchor_like,
                        {"LAB//50912//mg/dL": ["LOINC/2160-0"],
                         "DIAGNOSIS//ICD//10//I509": ["ICD10CM/I50.9"]})
    site = write_meds(tmp_path / "site", event_rows(30, seed=2), STANDARD_PARENTS)
    m_anchor = CodeMapping.from_config({}, anchor.codes())
    m_site = CodeMapping.from_config({}, site.codes())
    vocab = vocabulary_from_public(m_anchor.apply(anchor.scan().collect()), min_count=5)
    tok_anchor = _token_strings(vocab, encode_events(anchor.scan(), vocab, m_anchor))
    tok_site = _token_strings(vocab, encode_events(site.scan(), vocab, m_site))
    assert {"LOINC/2160-0//mg/dL", "ICD10CM/I50.9"} <= tok_anchor & tok_site
    assert "[UNK]" not in tok_site


def test_creatinine_in_umol_per_l_is_converted_to_mg_per_dl():
    mapping = CodeMapping(site_map={"LAB//CREAT_S//umol/L": "LOINC/2160-0"})
    events = event_rows(20, creat_code="LAB//CREAT_S//umol/L", creat_scale=88.42)
    site_values = events.filter(pl.col("code") == "LAB//CREAT_S//umol/L")["numeric_value"]
    mapped = mapping.apply(events).filter(pl.col("code") == "LOINC/2160-0//mg/dL")
    np.testing.assert_allclose(mapped["numeric_value"].to_numpy(),
                               site_values.to_numpy() / 88.42, rtol=1e-5)


def test_a_unit_without_a_conversion_keeps_its_own_token():
    mapping = CodeMapping(parents={"LAB//1//mg/dL": ["LOINC/9999-9"],
                                   "LAB//2//mmol/L": ["LOINC/9999-9"]})
    assert mapping.map_code("LAB//1//mg/dL").code == "LOINC/9999-9//mg/dL"
    assert mapping.map_code("LAB//2//mmol/L").code == "LOINC/9999-9//mmol/L"


def test_icd_event_codes_without_parents_map_by_pattern():
    assert CodeMapping().map_code("DIAGNOSIS//ICD//10//I509").code == "ICD10CM/I50.9"
    assert CodeMapping().map_code("DIAGNOSIS//ICD//9//70723").code == "ICD9CM/707.23"


def test_mapping_hash_changes_with_the_harmonisation_map():
    assert CodeMapping().hash != CodeMapping(site_map={"A": "LOINC/1-1"}).hash


def test_coverage_report_rises_after_mapping(site_dataset):
    mapping = CodeMapping.from_config({}, site_dataset.codes())
    events = site_dataset.scan().collect()
    vocab = vocabulary_from_public(mapping.apply(events), min_count=1)
    report = coverage(events, vocab, mapping)
    n_lab_dx = events.filter(pl.col("code").str.starts_with("LAB//")
                             | pl.col("code").str.starts_with("DIAGNOSIS//")).height
    assert report.events == events.filter(pl.col("code") != "MEDS_BIRTH").height
    assert report.covered_after == report.events
    assert report.covered_before == report.events - n_lab_dx
    assert report.after > report.before
