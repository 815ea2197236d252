"""The site's vocabulary releases: charged once, stored, resent for the same round."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fedehr.client import site_handlers as H
from fedehr.client.config import PrivacyConfig, SiteConfig
from fedehr.shared import messages as M
from fedehr.shared.data.synth import synthesize


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> SiteConfig:
    root = tmp_path_factory.mktemp("site")
    (summary,) = synthesize(root / "h", sites=1, patients=120, seed=1)
    return SiteConfig(name="hospital_a", data=Path(summary.path), state_dir=root / "state",
                      insecure=True, privacy=PrivacyConfig(vocab_threshold=5.0))


def _counts(site, round_id="fed/vocab-counts"):
    return H.release_counts(site, {M.ROUND_ID: round_id,
                                   M.CANDIDATES: json.dumps(["GENDER//F", "GENDER//M",
                                                             "LOINC/2160-0//mg/dL"])})


def test_a_count_release_is_charged_once_and_resent_for_the_same_round(site):
    first = _counts(site)
    again = _counts(site)
    ledger = H.open_ledger(site)
    assert first == again
    assert [e.purpose for e in ledger.entries] == ["vocab-release"]
    assert set(first["counts"]) <= {"GENDER//F", "GENDER//M", "LOINC/2160-0//mg/dL"}


def test_a_value_release_covers_only_the_requested_codes(site):
    payload = H.release_values(site, {M.ROUND_ID: "fed/vocab-values",
                                      M.SKETCH_CODES: json.dumps(["LOINC/2160-0//mg/dL"]),
                                      M.VALUE_GRID: json.dumps([0.5, 1.0, 2.0, 4.0])})
    assert list(payload["histograms"]) == ["LOINC/2160-0//mg/dL"]
    assert len(payload["histograms"]["LOINC/2160-0//mg/dL"]) == 5
    assert H.open_ledger(site).spent() > 0


def test_the_dataset_fingerprint_is_rehashed_only_when_a_file_changes(site, monkeypatch):
    from fedehr.client.site_data import cached_fingerprint
    from fedehr.shared.data.dataset import MEDSDataset

    dataset = MEDSDataset.open(site.data)
    first = cached_fingerprint(dataset, site.cache_dir)
    assert first == dataset.fingerprint()
    monkeypatch.setattr(MEDSDataset, "fingerprint", lambda self: "rehashed")
    assert cached_fingerprint(dataset, site.cache_dir) == first
    codes = site.data / "metadata" / "codes.parquet"
    codes.write_bytes(codes.read_bytes())  # same bytes, new mtime: hash again
    os.utime(codes, ns=(1, 1))
    assert cached_fingerprint(dataset, site.cache_dir) == "rehashed"
