"""One small set of synthetic hospitals, generated once for the module's read-only tests."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from fedehr.shared.data.dataset import MEDSDataset
from fedehr.shared.data.synth import synthesize


@pytest.fixture(scope="session")
def hospitals(tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("synth")
    return out, synthesize(out, sites=3, patients=1800, seed=7)


@pytest.fixture(scope="session")
def events(hospitals) -> dict[str, pl.DataFrame]:
    out, summaries = hospitals
    return {s.name: MEDSDataset.open(s.path).scan().collect() for s in summaries}
